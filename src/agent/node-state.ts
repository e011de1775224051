/**
 * TokenNodeState: this node's report, written only by this node's agent (owner: the Node, so
 * it goes with the Node). It is kept small, so that a thousand nodes reporting a thousand
 * policies each stay cheap to write, store and watch: per policy the generation applied, the
 * key generations it signs with and accepts, the interfaces it is on (names only), its errors
 * and its counters that are not zero; each hook's attach mode and program once per interface,
 * not once per policy. A per-policy entry takes new fields as the agent learns to report more.
 * On the wire, the policies with nothing of their own (no errors, no counters) are grouped by
 * what they share (`applied`: generation, interfaces, keys and the names), which makes a report of
 * a thousand policies about a quarter of the size; the API server spends its CPU per byte of a
 * report. Against a CRD older than `applied` (Helm never upgrades CRDs) the API server drops the
 * groups: the writer sees that in its response and writes every policy as an entry from then on.
 *
 * Writes are rate-limited and never overlap: one write at a time, always of the newest status;
 * a change other than counters is written at once, but no sooner than `minWriteIntervalMs`
 * after the last write (a burst of changes costs one write per interval), and counters alone at
 * most once per `counterIntervalMs`. The end of a burst is the exception: when the agent has
 * nothing more to apply (`update(s, settled)`), what it applied is written at once, sooner than
 * the interval, at most once per `settledWriteEveryMs` (default 10 s); so the last policies of a
 * `kubectl create` are reported without waiting out the interval, and a steady trickle of
 * changes still costs one write per interval. A write that fails is retried with a backoff.
 */
import { ApiException, CustomObjectsApi, type KubeConfig } from '../lib/kube-client.js';
import { release } from 'node:os';
import { MAX_POLICIES_PER_NODE } from '../lib/abi.js';
import { type Condition, setCondition } from '../lib/conditions.js';
import { describeError, mergePatch } from '../lib/kube.js';
import type { Logger } from '../lib/log.js';
import { VERSION } from '../lib/package.js';
import { API, API_GROUP, API_VERSION } from '../lib/types.js';
import type { AgentStatus } from './agent.js';
import { by } from '../lib/order.js';
import { isoSeconds } from '../lib/time.js';

/** Interfaces listed in a report at most (status.interfaces); past it they are counted, not listed. */
export const MAX_REPORTED_INTERFACES = 256;
/** What one policy's entry holds at most (the CRD's bounds): its interfaces, and its errors. */
const MAX_ENTRY_INTERFACES = 256;
const MAX_ENTRY_ERRORS = 16;

export interface NodeStateHook {
  direction: 'Egress' | 'Ingress';
  attachMode?: string;
  programId?: number;
  state: 'Attached' | 'Failed';
  reason?: string;
}

export interface NodeStateInterface {
  name: string;
  ifindex?: number;
  /** the programs on it (or failing to go on it) */
  hooks?: NodeStateHook[];
  /** its counters under no policy that are not zero */
  counters?: Record<string, number>;
}

export interface NodeStatePolicy {
  name: string;
  generation: number;
  /** the key generations this node signs with and accepts (when the Secret numbers its keys) */
  keys?: { signs: number; accepts: number[] };
  /** the interfaces its hooks are on */
  interfaces?: string[];
  /** its counters on this node that are not zero */
  counters?: Record<string, number>;
  errors?: { reason: string; message: string }[];
}

/** Policies applied with nothing of their own to report, sharing generation, interfaces and keys. */
export interface AppliedGroup {
  generation: number;
  keys?: { signs: number; accepts: number[] };
  interfaces?: string[];
  names: string[];
}

export interface NodeStateStatus {
  agent: { version: string; kernelRelease: string; tcx: boolean };
  conditions: Condition[];
  countersUpdatedAt?: string;
  policies: NodeStatePolicy[];
  /** policies selecting the node past the number it can apply: not applied, not listed */
  policiesOverLimit?: number;
  interfaces: NodeStateInterface[];
  /** hooked interfaces past MAX_REPORTED_INTERFACES: not listed */
  interfacesNotListed?: number;
}

function numbers(c: Record<string, string>): Record<string, number> | undefined {
  let out: Record<string, number> | undefined;
  for (const [k, v] of Object.entries(c)) {
    const n = Number(v);
    if (n !== 0) (out ??= {})[k] = n;
  }
  return out;
}

function listNames(names: string[], shown = 5): string {
  const head = names.slice(0, shown).join(', ');
  return names.length > shown ? `${head} and ${names.length - shown} more` : head;
}

/** Pure: the status a node reports for an agent status (policies not selecting it are left out). */
export function nodeStateStatus(s: AgentStatus, prev: Condition[], now = new Date()): NodeStateStatus {
  const policies: NodeStatePolicy[] = [];
  const overLimit: string[] = [];
  const hookErrorsOn = new Map<string, AgentStatus['hookErrors']>();
  for (const e of s.hookErrors) hookErrorsOn.set(e.name, [...(hookErrorsOn.get(e.name) ?? []), e]);
  for (const p of s.policies) {
    if (!p.selected) continue;
    if (p.id === 0 && p.errors.some((e) => e.reason === 'TooManyPolicies')) {
      overLimit.push(p.name);
      continue;
    }
    const errors = [...p.errors];
    for (const i of p.interfaces)
      for (const e of hookErrorsOn.get(i) ?? []) errors.push({ reason: e.reason, message: `${e.name}: ${e.message}` });
    const entry: NodeStatePolicy = { name: p.name, generation: p.generation, ...(p.keys ? { keys: p.keys } : {}) };
    if (p.interfaces.length) entry.interfaces = p.interfaces.slice(0, MAX_ENTRY_INTERFACES);
    const counters = numbers(p.counters);
    if (counters) entry.counters = counters;
    if (errors.length) {
      const kept = errors.slice(0, MAX_ENTRY_ERRORS).map((e) => ({ reason: e.reason, message: e.message }));
      const last = kept[kept.length - 1] as { message: string };
      if (errors.length > MAX_ENTRY_ERRORS) last.message += ` (and ${errors.length - MAX_ENTRY_ERRORS} more errors)`;
      entry.errors = kept;
    }
    policies.push(entry);
  }
  policies.sort(by((x) => x.name));
  // Never more than the report may hold: by construction at most MAX_POLICIES_PER_NODE have a slot.
  for (const p of policies.splice(MAX_POLICIES_PER_NODE)) overLimit.push(p.name);
  overLimit.sort();

  const byName = new Map<string, NodeStateInterface>();
  const iface = (name: string, ifindex: number): NodeStateInterface => {
    let i = byName.get(name);
    if (!i) byName.set(name, (i = { name, ifindex }));
    return i;
  };
  for (const h of s.hooks) {
    (iface(h.name, h.ifindex).hooks ??= []).push({
      direction: h.direction === 'egress' ? 'Egress' : 'Ingress',
      attachMode: h.mode,
      programId: h.progId,
      state: 'Attached',
    });
  }
  for (const e of s.hookErrors) {
    (iface(e.name, e.ifindex).hooks ??= []).push({
      direction: e.direction === 'egress' ? 'Egress' : 'Ingress',
      state: 'Failed',
      reason: e.reason,
    });
  }
  for (const c of s.interfaces) {
    const counters = numbers(c.counters);
    if (counters) iface(c.name, c.ifindex).counters = counters;
  }
  const interfaces = [...byName.values()].sort(by((x) => x.name));
  for (const i of interfaces) i.hooks?.sort(by((x) => x.direction));
  const notListed = interfaces.splice(MAX_REPORTED_INTERFACES).length;

  const failing = policies.filter((p) => p.errors?.length);
  const faults = [
    ...failing.map((p) => `${p.name}: ${(p.errors ?? []).map((e) => e.message).join(', ')}`),
    ...(overLimit.length
      ? [
          `${overLimit.length} more policies select this node than the ${MAX_POLICIES_PER_NODE} it can apply; not applied: ${listNames(overLimit)}`,
        ]
      : []),
  ];
  let conditions = setCondition(
    prev,
    failing.length || overLimit.length
      ? {
          type: 'Ready',
          status: 'False',
          reason: failing.length ? 'PoliciesFailing' : 'TooManyPolicies',
          message: [
            ...failing.map((p) => `${p.name}: ${p.errors?.[0]?.reason}`),
            ...(overLimit.length ? [`${overLimit.length} not applied: TooManyPolicies`] : []),
          ]
            .join('; ')
            .slice(0, 1000),
        }
      : {
          type: 'Ready',
          status: 'True',
          reason: 'AllPoliciesApplied',
          message: 'every policy that selects this node is applied',
        },
    now,
  );
  conditions = setCondition(
    conditions,
    faults.length
      ? {
          type: 'Degraded',
          status: 'True',
          reason: failing[0]?.errors?.[0]?.reason ?? 'TooManyPolicies',
          message: faults.join('; ').slice(0, 1000),
        }
      : { type: 'Degraded', status: 'False', reason: 'AsExpected', message: '' },
    now,
  );
  const out: NodeStateStatus = {
    agent: { version: VERSION, kernelRelease: release(), tcx: s.hooks.some((h) => h.mode === 'tcx') },
    conditions,
    policies,
    interfaces,
  };
  if (overLimit.length) out.policiesOverLimit = overLimit.length;
  if (notListed) out.interfacesNotListed = notListed;
  return out;
}

/**
 * Pure: the report as written, its plain entries grouped into `applied` (order kept: names sorted
 * within a group, groups in the order of their first name).
 */
export function groupedReport(s: NodeStateStatus): NodeStateStatus & { applied: AppliedGroup[] } {
  const own: NodeStatePolicy[] = [];
  const groups = new Map<string, AppliedGroup>();
  for (const p of s.policies) {
    if (p.counters || p.errors) {
      own.push(p);
      continue;
    }
    const id = JSON.stringify([p.generation, p.interfaces ?? [], p.keys ?? null]);
    let g = groups.get(id);
    if (!g) {
      g = {
        generation: p.generation,
        ...(p.keys ? { keys: p.keys } : {}),
        ...(p.interfaces ? { interfaces: p.interfaces } : {}),
        names: [],
      };
      groups.set(id, g);
    }
    g.names.push(p.name);
  }
  return { ...s, policies: own, applied: [...groups.values()] };
}

/** Pure: every policy a report lists, as entries (the `applied` groups expanded), by name. */
export function reportedPolicies(s: { policies?: NodeStatePolicy[]; applied?: AppliedGroup[] } | undefined): NodeStatePolicy[] {
  const out = [...(s?.policies ?? [])];
  for (const g of s?.applied ?? [])
    for (const name of g.names)
      out.push({
        name,
        generation: g.generation,
        ...(g.keys ? { keys: g.keys } : {}),
        ...(g.interfaces ? { interfaces: g.interfaces } : {}),
      });
  return out.sort(by((x) => x.name));
}

/** The report without its counters: what decides whether it must be written now. */
function shapeOf(s: NodeStateStatus): string {
  return JSON.stringify({
    ...s,
    countersUpdatedAt: undefined,
    policies: s.policies.map((p) => ({ ...p, counters: undefined })),
    interfaces: s.interfaces.map((i) => ({ ...i, counters: undefined })),
  });
}

function countersOf(s: NodeStateStatus): string {
  return JSON.stringify([s.policies.map((p) => p.counters), s.interfaces.map((i) => i.counters)]);
}

export interface NodeStateWriterOptions {
  kc: KubeConfig;
  nodeName: string;
  log: Logger;
  /** counters alone are written at most this often */
  counterIntervalMs: number;
  /** no two writes closer than this; it defaults to 2000 ms */
  minWriteIntervalMs?: number;
  /** ... except a write when the agent has settled, at most once per this; it defaults to 10000 ms */
  settledWriteEveryMs?: number;
  /** the Node object, for the owner reference, once known */
  node?: () => { metadata?: { uid?: string } } | undefined;
  /** called after each write with the bytes of its body (for metrics) */
  onWrite?: (bytes: number) => void;
}

export class NodeStateWriter {
  private readonly api: CustomObjectsApi;
  private lastShape = '';
  private lastCounters = '';
  private lastWriteAt = 0;
  private lastCounterWriteAt = 0;
  private conditions: Condition[] = [];
  private exists = false;
  private latest: AgentStatus | null = null;
  /** the agent had nothing more to apply when it made `latest` */
  private settled = false;
  /** when the last write sooner than the minimum interval was made (ms since the epoch) */
  private lastEarlyAt = -Infinity;
  private timer: NodeJS.Timeout | null = null;
  /** when the timer fires (ms since the epoch) */
  private timerAt = 0;
  private writing: Promise<void> | null = null;
  private failures = 0;
  private stopped = false;
  /** write plain entries grouped (`applied`); false once the API server's CRD turned out to drop them */
  private grouped = true;
  /** successful writes */
  writes = 0;

  constructor(private readonly o: NodeStateWriterOptions) {
    this.api = new CustomObjectsApi(o.kc);
  }

  /**
   * Takes the newest agent status; the report is written when due. `settled`: the agent has no
   * change waiting to be applied after this one. Never throws.
   */
  update(s: AgentStatus, settled = false): void {
    this.latest = s;
    this.settled = settled;
    this.schedule();
  }

  /** Writes what is pending now (waiting for a write in flight first); for a clean stop. */
  async flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.writing;
    if (this.due(Date.now()) !== undefined) await this.writeNow();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** When the pending status should be written (ms since the epoch), or undefined when it need not be. */
  private due(now: number): number | undefined {
    if (!this.latest) return undefined;
    const status = nodeStateStatus(this.latest, this.conditions, new Date(now));
    const shapeChanged = shapeOf(status) !== this.lastShape;
    const countersChanged = countersOf(status) !== this.lastCounters;
    const earliest = this.lastWriteAt + this.minIntervalMs + (this.failures ? Math.min(1000 * 2 ** this.failures, 60_000) : 0);
    if (shapeChanged) return this.mayWriteEarly(now) ? now : Math.max(now, earliest);
    if (countersChanged) return Math.max(now, earliest, this.lastCounterWriteAt + this.o.counterIntervalMs);
    return undefined;
  }

  private get minIntervalMs(): number {
    return this.o.minWriteIntervalMs ?? 2000;
  }

  /** A settled agent's change may be written before the minimum interval has passed (see the top). */
  private mayWriteEarly(now: number): boolean {
    return (
      this.settled &&
      this.failures === 0 &&
      this.lastWriteAt > 0 &&
      now - this.lastEarlyAt >= (this.o.settledWriteEveryMs ?? 10_000)
    );
  }

  private schedule(): void {
    if (this.stopped || this.writing) return;
    const now = Date.now();
    // A write due within the minimum interval between writes: a change now would be written at most that much sooner.
    if (this.timer && this.timerAt <= now + this.minIntervalMs && !this.mayWriteEarly(now)) return;
    const at = this.due(now);
    if (at === undefined) return;
    // A change pending behind a counters-only write (due a counter interval later) is written when it is due itself.
    if (this.timer) {
      if (this.timerAt <= at) return;
      clearTimeout(this.timer);
    }
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.writeNow();
    }, at - now);
    this.timer.unref();
  }

  private async writeNow(): Promise<void> {
    if (this.writing || !this.latest) return this.writing ?? undefined;
    this.writing = this.write(this.latest).finally(() => {
      this.writing = null;
      this.schedule();
    });
    return this.writing;
  }

  private async write(s: AgentStatus): Promise<void> {
    const now = Date.now();
    const status = nodeStateStatus(s, this.conditions, new Date(now));
    status.countersUpdatedAt = isoSeconds(now);
    const wire = this.grouped ? groupedReport(status) : null;
    const body = { status: wire ?? status };
    try {
      await this.ensureObject();
      const written = (await this.api.patchClusterCustomObjectStatus(
        { group: API_GROUP, version: API_VERSION, plural: 'tokennodestates', name: this.o.nodeName, body },
        mergePatch,
      )) as { status?: { applied?: unknown } };
      if (wire && wire.applied.length > 0 && !Array.isArray(written.status?.applied)) {
        // The CRD predates `applied` and the API server pruned it: write every policy as an entry.
        this.grouped = false;
        this.lastShape = '';
        this.lastWriteAt = now;
        this.o.log.warn(
          'the TokenNodeState CRD on this cluster predates grouped reports; writing every policy as an entry (apply crds/ of this version for smaller reports)',
          { node: this.o.nodeName },
        );
        return;
      }
      this.lastShape = shapeOf(status);
      this.lastCounters = countersOf(status);
      if (now < this.lastWriteAt + this.minIntervalMs) this.lastEarlyAt = now;
      this.lastWriteAt = now;
      this.lastCounterWriteAt = now;
      this.conditions = status.conditions;
      this.failures = 0;
      this.writes++;
      this.o.onWrite?.(JSON.stringify(body).length);
      this.o.log.debug('TokenNodeState written', { node: this.o.nodeName, policies: status.policies.length });
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) this.exists = false;
      this.failures++;
      this.lastWriteAt = now;
      this.o.log.warn('writing TokenNodeState failed; will retry', {
        node: this.o.nodeName,
        error: describeError(err),
        failures: this.failures,
      });
    }
  }

  private async ensureObject(): Promise<void> {
    if (this.exists) return;
    const metadata: Record<string, unknown> = {
      name: this.o.nodeName,
      labels: { 'app.kubernetes.io/managed-by': 'netoken-agent' },
    };
    const node = this.o.node?.();
    if (node?.metadata?.uid) {
      metadata.ownerReferences = [{ apiVersion: 'v1', kind: 'Node', name: this.o.nodeName, uid: node.metadata.uid }];
    }
    try {
      await this.api.createClusterCustomObject({
        group: API_GROUP,
        version: API_VERSION,
        plural: 'tokennodestates',
        body: { apiVersion: API, kind: 'TokenNodeState', metadata },
      });
    } catch (err) {
      if (!(err instanceof ApiException && err.code === 409)) throw err;
    }
    this.exists = true;
  }
}
