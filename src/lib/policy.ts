/**
 * Validation and defaulting of TokenPolicy objects and their key Secrets, from
 * whatever a user wrote (YAML documents, API objects). The same rules the CRD
 * schema and CEL enforce at `kubectl apply`, so standalone mode rejects what a
 * cluster would, plus the key checks only the agent can make.
 */
import { NT_MAX_PORTS, NT_OPT_EXID_DEFAULT, NT_OPT_KIND_DEFAULT } from './abi.js';
import { parseCidr } from './cidr.js';
import {
  API,
  BIND_FIELDS,
  DEFAULT_CLOCK_SKEW_SECONDS,
  KEY_GENERATION_ANNOTATION,
  type BindField,
  type Destination,
  type KeyRotationSpec,
  type LabelSelector,
  type TokenKeys,
  type TokenMode,
  type TokenPolicy,
  type TokenPolicySpec,
  keyLength,
} from './types.js';

export const MAX_EPOCH_SECONDS = 86400;
/** spec.token.clockSkewSeconds: an hour of clock difference is more than any working fleet has */
export const MAX_CLOCK_SKEW_SECONDS = 3600;

/** One problem in one field: `path` in the form spec.egress.destinations[0].cidr. */
export interface FieldError {
  path: string;
  message: string;
}

function formatFields(fields: readonly FieldError[]): string {
  return fields.map((f) => (f.path ? `${f.path}: ${f.message}` : f.message)).join('; ');
}

export class PolicyError extends Error {
  constructor(
    readonly object: string,
    readonly fields: FieldError[],
  ) {
    super(`${object}: ${formatFields(fields)}`);
    this.name = 'PolicyError';
  }

  /** The field errors as one line, without the object prefix. */
  get detail(): string {
    return formatFields(this.fields);
  }
}

type Obj = Record<string, unknown>;

class Checker {
  readonly errors: FieldError[] = [];

  fail(path: string, message: string): undefined {
    this.errors.push({ path, message });
    return undefined;
  }

  obj(v: unknown, path: string, allowed: readonly string[]): Obj | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'object' || Array.isArray(v)) return this.fail(path, `must be an object, got ${kindOf(v)}`);
    for (const k of Object.keys(v)) {
      if (!allowed.includes(k)) this.fail(join(path, k), `unknown field (allowed: ${allowed.join(', ')})`);
    }
    return v as Obj;
  }

  str(v: unknown, path: string): string | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') return this.fail(path, `must be a string, got ${kindOf(v)}`);
    return v;
  }

  int(v: unknown, path: string, min: number, max: number): number | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v)) return this.fail(path, `must be an integer, got ${kindOf(v)}`);
    if (v < min || v > max) return this.fail(path, `must be between ${min} and ${max}, got ${v}`);
    return v;
  }

  list<T>(v: unknown, path: string, item: (x: unknown, p: string) => T | undefined, maxItems?: number): T[] {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) {
      this.fail(path, `must be a list, got ${kindOf(v)}`);
      return [];
    }
    if (maxItems !== undefined && v.length > maxItems) this.fail(path, `at most ${maxItems} items, got ${v.length}`);
    const out: T[] = [];
    v.forEach((x, i) => {
      const r = item(x, `${path}[${i}]`);
      if (r !== undefined) out.push(r);
    });
    return out;
  }

  oneOf<T extends string>(v: unknown, path: string, values: readonly T[]): T | undefined {
    const s = this.str(v, path);
    if (s === undefined) return undefined;
    if (!(values as readonly string[]).includes(s)) return this.fail(path, `must be one of ${values.join(', ')}, got "${s}"`);
    return s as T;
  }
}

function join(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

function kindOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  return typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v)}`;
}

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const IFNAME = /^[^\s/:]{1,15}$/;
const DURATION = /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/;

/** Parse a Go-style duration ("24h", "1h30m") into seconds; null if malformed. */
/** What a rotation takes besides the epoch and the clock skew: time to publish the new key to every node, and a margin before the old one goes. */
export const ROTATION_OVERHEAD_SECONDS = 120;

/** The shortest rotation period a policy may ask for. */
export function minRotationSeconds(epochSeconds: number, clockSkewSeconds: number): number {
  return epochSeconds + clockSkewSeconds + ROTATION_OVERHEAD_SECONDS;
}

/** 185 -> "3m5s", as Go prints a duration. */
export function formatSeconds(secs: number): string {
  const h = Math.floor(secs / 3600);
  const m = Math.floor((secs % 3600) / 60);
  const s = Math.round(secs % 60);
  return `${h ? `${h}h` : ''}${m ? `${m}m` : ''}${s || (!h && !m) ? `${s}s` : ''}`;
}

export function parseDuration(text: string): number | null {
  if (!DURATION.test(text)) return null;
  const unit: Record<string, number> = { ns: 1e-9, us: 1e-6, µs: 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 };
  let total = 0;
  for (const m of text.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) total += Number(m[1]) * (unit[m[2] as string] ?? 0);
  return total;
}

function checkName(c: Checker, v: unknown, path: string): string | undefined {
  const s = c.str(v, path);
  if (s === undefined) return c.fail(path, 'is required');
  if (s.length > 253 || !DNS_SUBDOMAIN.test(s))
    return c.fail(path, `"${s}" is not a valid name (lowercase letters, digits, '-' and '.')`);
  return s;
}

function checkSelector(c: Checker, v: unknown, path: string): LabelSelector {
  const o = c.obj(v, path, ['matchLabels', 'matchExpressions']);
  if (!o) return {};
  const sel: LabelSelector = {};
  const ml = c.obj(o.matchLabels, join(path, 'matchLabels'), Object.keys((o.matchLabels as Obj | undefined) ?? {}));
  if (ml) {
    sel.matchLabels = {};
    for (const [k, val] of Object.entries(ml)) {
      const s = c.str(val, join(join(path, 'matchLabels'), k));
      if (s !== undefined) sel.matchLabels[k] = s;
    }
  }
  const exprs = c.list(o.matchExpressions, join(path, 'matchExpressions'), (x, p) => {
    const e = c.obj(x, p, ['key', 'operator', 'values']);
    if (!e) return undefined;
    const key = c.str(e.key, join(p, 'key')) ?? c.fail(join(p, 'key'), 'is required');
    const operator = c.oneOf(e.operator, join(p, 'operator'), ['In', 'NotIn', 'Exists', 'DoesNotExist'] as const);
    const values = c.list(e.values, join(p, 'values'), (y, q) => c.str(y, q));
    if (key === undefined || operator === undefined) return undefined;
    if ((operator === 'In' || operator === 'NotIn') && values.length === 0)
      return c.fail(join(p, 'values'), `must not be empty for operator ${operator}`);
    if ((operator === 'Exists' || operator === 'DoesNotExist') && values.length > 0)
      return c.fail(join(p, 'values'), `must be empty for operator ${operator}`);
    return { key, operator, values };
  });
  if (exprs.length) sel.matchExpressions = exprs;
  return sel;
}

function checkPort(c: Checker, x: unknown, p: string): number | undefined {
  return c.int(x, p, 1, 65535);
}

function checkCidr(c: Checker, x: unknown, p: string): string | undefined {
  const s = c.str(x, p);
  if (s === undefined) return undefined;
  try {
    return parseCidr(s).text;
  } catch (err) {
    return c.fail(p, (err as Error).message);
  }
}

/**
 * Validate one TokenPolicy object and apply defaults. Throws PolicyError naming
 * every bad field; `where` prefixes the message (e.g. "policy.yaml document 2").
 */
export function validatePolicy(raw: unknown, where = 'TokenPolicy'): TokenPolicy {
  const c = new Checker();
  const top = c.obj(raw, '', ['apiVersion', 'kind', 'metadata', 'spec', 'status']);
  if (!top) throw new PolicyError(where, [{ path: '', message: 'must be an object' }]);
  if (top.apiVersion !== API) c.fail('apiVersion', `must be ${API}, got ${JSON.stringify(top.apiVersion)}`);
  if (top.kind !== 'TokenPolicy') c.fail('kind', `must be TokenPolicy, got ${JSON.stringify(top.kind)}`);
  const meta = (top.metadata ?? {}) as Obj;
  const name = checkName(c, meta.name, 'metadata.name');
  const label = name ? `${where} (TokenPolicy "${name}")` : where;

  const spec = c.obj(top.spec, 'spec', ['nodeSelector', 'interfaces', 'token', 'option', 'egress', 'ingress']);
  if (!spec) {
    c.fail('spec', 'is required');
    throw new PolicyError(label, c.errors);
  }

  const nodeSelector = checkSelector(c, spec.nodeSelector, 'spec.nodeSelector');

  const ifs = c.obj(spec.interfaces, 'spec.interfaces', ['names', 'patterns']) ?? {};
  const names = c.list(
    ifs.names,
    'spec.interfaces.names',
    (x, p) => {
      const s = c.str(x, p);
      if (s !== undefined && !IFNAME.test(s))
        return c.fail(p, `"${s}" is not an interface name (1-15 characters, no spaces, '/' or ':')`);
      return s;
    },
    64,
  );
  const patterns = c.list(
    ifs.patterns,
    'spec.interfaces.patterns',
    (x, p) => {
      const s = c.str(x, p);
      if (s !== undefined && (s.length === 0 || s.length > 64)) return c.fail(p, 'must be 1-64 characters');
      return s;
    },
    64,
  );

  const tok = c.obj(spec.token, 'spec.token', ['mode', 'secretRef', 'epochSeconds', 'clockSkewSeconds', 'bind', 'rotation']);
  let token: TokenPolicySpec['token'] | undefined;
  if (!tok) c.fail('spec.token', 'is required');
  else {
    const mode = c.oneOf(tok.mode ?? 'Static', 'spec.token.mode', ['Static', 'Keyed'] as const);
    const ref = c.obj(tok.secretRef, 'spec.token.secretRef', ['name']);
    const secretName = ref ? checkName(c, ref.name, 'spec.token.secretRef.name') : c.fail('spec.token.secretRef', 'is required');
    const epochSeconds = c.int(tok.epochSeconds, 'spec.token.epochSeconds', 1, MAX_EPOCH_SECONDS);
    if (mode === 'Keyed' && epochSeconds === undefined && tok.epochSeconds === undefined) {
      c.fail('spec.token.epochSeconds', 'is required when mode is Keyed (the token changes every epochSeconds)');
    }
    if (mode === 'Static' && tok.epochSeconds !== undefined)
      c.fail('spec.token.epochSeconds', 'is only valid when mode is Keyed');
    const clockSkewSeconds = c.int(tok.clockSkewSeconds, 'spec.token.clockSkewSeconds', 0, MAX_CLOCK_SKEW_SECONDS);
    if (mode === 'Static' && tok.clockSkewSeconds !== undefined)
      c.fail('spec.token.clockSkewSeconds', 'is only valid when mode is Keyed');
    else if (clockSkewSeconds !== undefined && epochSeconds !== undefined && clockSkewSeconds > epochSeconds) {
      c.fail(
        'spec.token.clockSkewSeconds',
        `${clockSkewSeconds} must not exceed epochSeconds (${epochSeconds}): a verifier looks one epoch either side of its own`,
      );
    }
    let bind = c.list(tok.bind, 'spec.token.bind', (x, p) => c.oneOf(x, p, BIND_FIELDS), BIND_FIELDS.length);
    if (tok.bind !== undefined && mode === 'Static') c.fail('spec.token.bind', 'is only valid when mode is Keyed');
    if (bind.length === 0) bind = [...BIND_FIELDS];
    bind = BIND_FIELDS.filter((f) => bind.includes(f)) as BindField[];
    const rot = c.obj(tok.rotation, 'spec.token.rotation', ['period', 'stallTimeout', 'onStall']);
    let rotation: KeyRotationSpec | undefined;
    if (rot) {
      const period = c.str(rot.period, 'spec.token.rotation.period');
      const secs = period === undefined ? null : parseDuration(period);
      // A rotation publishes the new key, switches markers to it, then keeps the old one for an epoch, the skew and a margin.
      const needed = minRotationSeconds(
        epochSeconds ?? 0,
        mode === 'Keyed' ? (clockSkewSeconds ?? Math.min(DEFAULT_CLOCK_SKEW_SECONDS, epochSeconds ?? 0)) : 0,
      );
      if (period === undefined) c.fail('spec.token.rotation.period', 'is required');
      else if (secs === null) c.fail('spec.token.rotation.period', `"${period}" must be a duration, like 24h or 90m`);
      else if (secs < needed)
        c.fail(
          'spec.token.rotation.period',
          `"${period}" is shorter than a rotation takes: at least ${formatSeconds(needed)} (epochSeconds + clockSkewSeconds + ${ROTATION_OVERHEAD_SECONDS} s to publish the new key to every node and retire the old one)`,
        );
      const stallTimeout = c.str(rot.stallTimeout, 'spec.token.rotation.stallTimeout');
      const stallSecs = stallTimeout === undefined ? null : parseDuration(stallTimeout);
      if (stallTimeout !== undefined && (stallSecs === null || stallSecs < 10))
        c.fail('spec.token.rotation.stallTimeout', `"${stallTimeout}" must be a duration of at least 10s, like 10m`);
      const onStall =
        rot.onStall === undefined ? undefined : c.oneOf(rot.onStall, 'spec.token.rotation.onStall', ['Proceed', 'Wait'] as const);
      if (period !== undefined && secs !== null && secs >= needed) {
        rotation = { period };
        if (stallTimeout !== undefined && stallSecs !== null && stallSecs >= 10) rotation.stallTimeout = stallTimeout;
        if (onStall) rotation.onStall = onStall;
      }
    }
    if (mode && secretName) {
      token = { mode, secretRef: { name: secretName }, bind };
      if (epochSeconds !== undefined) token.epochSeconds = epochSeconds;
      if (clockSkewSeconds !== undefined) token.clockSkewSeconds = clockSkewSeconds;
      if (rotation) token.rotation = rotation;
    }
  }

  const opt = c.obj(spec.option, 'spec.option', ['kind', 'experimentId']) ?? {};
  const kind = c.int(opt.kind ?? NT_OPT_KIND_DEFAULT, 'spec.option.kind', 253, 254);
  const experimentId = c.int(opt.experimentId ?? NT_OPT_EXID_DEFAULT, 'spec.option.experimentId', 0, 0xffff);

  let egress: TokenPolicySpec['egress'];
  if (spec.egress !== undefined && spec.egress !== null) {
    const eg = c.obj(spec.egress, 'spec.egress', ['destinations']) ?? {};
    const destinations = c.list(
      eg.destinations,
      'spec.egress.destinations',
      (x, p): Destination | undefined => {
        const d = c.obj(x, p, ['cidr', 'ports']);
        if (!d) return undefined;
        const cidr = d.cidr === undefined ? c.fail(join(p, 'cidr'), 'is required') : checkCidr(c, d.cidr, join(p, 'cidr'));
        const ports = c.list(d.ports, join(p, 'ports'), (y, q) => checkPort(c, y, q), NT_MAX_PORTS);
        return cidr === undefined ? undefined : { cidr, ports: [...new Set(ports)].sort((a, b) => a - b) };
      },
      10000,
    );
    egress = { destinations };
  }

  let ingress: TokenPolicySpec['ingress'];
  if (spec.ingress !== undefined && spec.ingress !== null) {
    const ing = c.obj(spec.ingress, 'spec.ingress', ['action', 'ports', 'exemptSources', 'replayLimit']) ?? {};
    const action = c.oneOf(ing.action ?? 'Monitor', 'spec.ingress.action', ['Monitor', 'Enforce'] as const);
    const ports = c.list(ing.ports, 'spec.ingress.ports', (y, q) => checkPort(c, y, q), 64);
    const exemptSources = c.list(ing.exemptSources, 'spec.ingress.exemptSources', (y, q) => checkCidr(c, y, q), 256);
    const replayLimit = c.int(ing.replayLimit, 'spec.ingress.replayLimit', 1, 1000000);
    if (ing.replayLimit !== undefined && token?.mode !== 'Keyed')
      c.fail('spec.ingress.replayLimit', 'is only valid when token.mode is Keyed');
    if (action) {
      ingress = { action, ports: [...new Set(ports)].sort((a, b) => a - b), exemptSources };
      if (replayLimit !== undefined) ingress.replayLimit = replayLimit;
    }
  }
  if (!egress && !ingress) c.fail('spec', 'needs egress (to mark), ingress (to verify), or both');
  if (kind === 254 && experimentId !== undefined) {
    // Nothing more to check: our length is always 12, never the TOA lengths 8 or 20.
  }

  if (c.errors.length || !token || kind === undefined || experimentId === undefined || !name) {
    throw new PolicyError(label, c.errors.length ? c.errors : [{ path: 'spec', message: 'is invalid' }]);
  }
  const metadata: TokenPolicy['metadata'] = { name };
  if (typeof meta.generation === 'number') metadata.generation = meta.generation;
  if (typeof meta.uid === 'string') metadata.uid = meta.uid;
  if (typeof meta.resourceVersion === 'string') metadata.resourceVersion = meta.resourceVersion;
  const out: TokenPolicy = {
    apiVersion: API,
    kind: 'TokenPolicy',
    metadata,
    spec: {
      nodeSelector,
      interfaces: { names, patterns },
      token,
      option: { kind, experimentId },
    },
  };
  if (egress) out.spec.egress = egress;
  if (ingress) out.spec.ingress = ingress;
  return out;
}

/**
 * One key of a policy's Secret (data: base64, stringData: text), or undefined when the Secret
 * does not hold it. Throws an Error that names the Secret and key but never shows their content.
 */
export function readSecretKey(secret: unknown, key: string, mode: TokenMode, where: string): Buffer | undefined {
  const s = (secret ?? {}) as Obj;
  const name = ((s.metadata ?? {}) as Obj).name;
  const label = `${where} (Secret "${String(name)}")`;
  const data = (s.data ?? {}) as Obj;
  const stringData = (s.stringData ?? {}) as Obj;
  const want = keyLength(mode);
  let buf: Buffer | undefined;
  if (typeof data[key] === 'string') {
    const text = (data[key] as string).replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text)) throw new Error(`${label}: data.${key} is not valid base64`);
    buf = Buffer.from(text, 'base64');
  } else if (typeof stringData[key] === 'string') {
    buf = Buffer.from(stringData[key] as string, 'utf8');
  } else if (data[key] !== undefined || stringData[key] !== undefined) {
    throw new Error(`${label}: ${key} must be a string`);
  }
  if (buf && buf.length !== want) {
    throw new Error(`${label}: ${key} holds ${buf.length} bytes; a ${mode} token needs exactly ${want}`);
  }
  return buf;
}

/**
 * Decode a policy's key material from a Secret (data: base64, stringData: text).
 * Throws an Error that names the Secret and key but never shows their content.
 */
export function decodeKeys(secret: unknown, mode: TokenMode, where: string): TokenKeys {
  const current = readSecretKey(secret, 'current', mode, where);
  if (!current) {
    const name = (((secret ?? {}) as Obj).metadata as Obj | undefined)?.name;
    throw new Error(
      `${where} (Secret "${String(name)}"): has no "current" key (want ${keyLength(mode)} bytes for a ${mode} token)`,
    );
  }
  const keys: TokenKeys = { current };
  const previous = readSecretKey(secret, 'previous', mode, where);
  if (previous) keys.previous = previous;
  const next = readSecretKey(secret, 'next', mode, where);
  if (next) keys.next = next;
  const meta = (((secret ?? {}) as Obj).metadata ?? {}) as Obj;
  const gen = ((meta.annotations ?? {}) as Obj)[KEY_GENERATION_ANNOTATION];
  if (gen !== undefined) {
    if (typeof gen !== 'string' || !/^\d{1,15}$/.test(gen)) {
      throw new Error(
        `${where} (Secret "${String(meta.name)}"): annotation ${KEY_GENERATION_ANNOTATION} must be a whole number, got ${JSON.stringify(gen).slice(0, 40)}`,
      );
    }
    keys.generation = Number(gen);
  }
  return keys;
}
