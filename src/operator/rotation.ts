/**
 * Key rotation that refuses no good connection, as a pure plan: given a policy, its key
 * Secret, what every node that takes part reports about the keys it holds, and the time,
 * what to write and say next. Agents on different nodes learn of a Secret change at
 * different times, so a rotation goes in steps, each waiting until every node has caught up:
 *
 *   Idle        Secret {current: G}. Due (rotation.period since rotated-at) or asked for
 *               (TokenPolicy annotation netoken.io/rotate with a value not yet handled):
 *               publish a new key as `next` (G+1).
 *   Publishing  {current: G, next: G+1}: verifiers accept both, markers sign with G. Once
 *               every node reports accepting G+1: switch.
 *   Retiring    {current: G+1, previous: G}: markers sign with G+1, verifiers accept both.
 *               Once every node reports signing with G+1 (noted as switched-at), and an
 *               epoch, the clock skew and a margin later: drop `previous`, Idle again.
 *
 * A step whose nodes stay silent past rotation.stallTimeout stalls: Degraded /
 * KeyRotationStalled names them, and rotation.onStall decides: Proceed (default) goes on
 * without them, Wait keeps waiting. netoken.io/revoke on the TokenPolicy (a leaked key)
 * replaces the key at once and keeps no old one: SYNs signed with it are refused from then on.
 *
 * The operator drives these steps for the Secrets it made and for any Secret whose policy
 * sets spec.token.rotation. A Secret of the user's without rotation is staged by hand with
 * the same data keys; the plan then only reports progress (`drive: false`).
 *
 * The Secret carries the state (data keys and annotations), so a new leader picks it up
 * where the last one left it. Plans hold key bytes: execute them, never log them.
 */
import { randomBytes } from 'node:crypto';
import { parseDuration } from '../lib/policy.js';
import { KEY_GENERATION_ANNOTATION, type TokenKeys, type TokenPolicy, effectiveSkewSeconds, keyLength } from '../lib/types.js';
import { ROTATED_AT_ANNOTATION, type SecretLike, rotationDueAt, rotationPeriodMs } from './secrets.js';
import { isoSeconds } from '../lib/time.js';

/** On the TokenPolicy: a new value starts a rotation now. */
export const ROTATE_ANNOTATION = 'netoken.io/rotate';
/** On the TokenPolicy: a new value replaces the key at once, keeping no old one. */
export const REVOKE_ANNOTATION = 'netoken.io/revoke';
/** On the Secret: per policy, the last netoken.io/rotate value acted on (a JSON object). */
export const ROTATE_HANDLED_ANNOTATION = 'netoken.io/rotate-handled';
/** On the Secret: per policy, the last netoken.io/revoke value acted on (a JSON object). */
export const REVOKE_HANDLED_ANNOTATION = 'netoken.io/revoke-handled';
/** On the Secret: when the present step began (what stallTimeout counts from). */
export const STEP_SINCE_ANNOTATION = 'netoken.io/step-since';
/** On the Secret, after a revocation until the next rotation: when the old keys were revoked. */
export const REVOKED_AT_ANNOTATION = 'netoken.io/revoked-at';
/** On the Secret, while retiring: when every node was first seen signing with the current key. */
export const SWITCHED_AT_ANNOTATION = 'netoken.io/switched-at';

export const DEFAULT_STALL_TIMEOUT_MS = 10 * 60_000;
/**
 * How long the retired key stays accepted after every node signs with the new one, besides an
 * epoch and the skew: for SYNs already on their way (a retransmitted SYN leaves through the
 * marker again and is signed afresh).
 */
export const DEFAULT_RETIRE_MARGIN_MS = 60_000;

export type RotationStep = 'Idle' | 'Publishing' | 'Retiring';

/** What one node reports about a policy's keys (TokenNodeState); undefined: nothing yet. */
export interface NodeKeys {
  signs: number;
  accepts: number[];
}

export interface RotationInput {
  policy: TokenPolicy;
  /** the TokenPolicy's annotations (netoken.io/rotate, netoken.io/revoke) */
  annotations: Readonly<Record<string, string>>;
  /** the key Secret, holding a valid current key (decoded in `keys`) */
  secret: SecretLike;
  keys: TokenKeys;
  /** the nodes that take part (selected by a policy using the Secret, running an agent), with their reports */
  nodes: ReadonlyMap<string, NodeKeys | undefined>;
  /** false: a Secret of the user's, staged by hand; the plan reports progress and writes nothing */
  drive: boolean;
  now: number;
  retireMarginMs?: number;
  random?: (n: number) => Buffer;
}

/** A merge patch for the Secret: data keys to set (base64) or remove (null), annotations likewise. */
export interface RotationPatch {
  metadata: { resourceVersion: string; annotations: Record<string, string | null> };
  data?: Record<string, string | null>;
}

export interface RotationEvent {
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
}

export interface RotationCondition {
  status: 'True' | 'False';
  reason: string;
  message: string;
}

export interface RotationPlan {
  /** the step the Secret is in once the patch (if any) is written */
  step: RotationStep;
  patch?: RotationPatch;
  /** what the patch does, for the operator's log and metrics */
  action?: 'number' | 'publish' | 'switch' | 'mark-switched' | 'retire' | 'revoke';
  events: RotationEvent[];
  /** the TokenPolicy's KeyRotation condition: True while a rotation is under way */
  condition: RotationCondition;
  /** nodes behind the present step past its stallTimeout (Degraded, KeyRotationStalled) */
  stalled: string[];
  /** when to look again without an event */
  requeueAt?: number;
}

function ms(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const t = Date.parse(v);
  return Number.isFinite(t) ? t : undefined;
}

export function listNodes(list: readonly string[], max = 10): string {
  return list.length <= max ? list.join(', ') : `${list.slice(0, max).join(', ')} and ${list.length - max} more`;
}

/** The step a Secret is in: its data keys say. */
export function rotationStep(keys: TokenKeys): RotationStep {
  if (keys.next) return 'Publishing';
  if (keys.previous) return 'Retiring';
  return 'Idle';
}

/** A per-policy map kept in a Secret annotation; a bad value reads as empty. */
export function handledMap(secret: SecretLike, annotation: string): Record<string, string> {
  const raw = secret.metadata?.annotations?.[annotation];
  if (!raw) return {};
  try {
    const v = JSON.parse(raw) as unknown;
    if (!v || typeof v !== 'object' || Array.isArray(v)) return {};
    return Object.fromEntries(Object.entries(v as Record<string, unknown>).filter(([, x]) => typeof x === 'string')) as Record<
      string,
      string
    >;
  } catch {
    return {};
  }
}

function withHandled(secret: SecretLike, annotation: string, policy: string, value: string): string {
  return JSON.stringify({ ...handledMap(secret, annotation), [policy]: value });
}

export function stallTimeoutMs(policy: TokenPolicy): number {
  const s = policy.spec.token.rotation?.stallTimeout;
  const sec = s === undefined ? null : parseDuration(s);
  return sec === null ? DEFAULT_STALL_TIMEOUT_MS : sec * 1000;
}

/** How long `previous` stays after every node signs with `current`: an epoch, the skew, and the margin. */
export function retireWindowMs(policy: TokenPolicy, marginMs = DEFAULT_RETIRE_MARGIN_MS): number {
  const t = policy.spec.token;
  return ((t.mode === 'Keyed' ? (t.epochSeconds ?? 0) : 0) + effectiveSkewSeconds(t)) * 1000 + marginMs;
}

export function planRotation(input: RotationInput): RotationPlan {
  const { policy, secret, keys, nodes, now, drive } = input;
  const random = input.random ?? randomBytes;
  const name = policy.metadata.name;
  const len = keyLength(policy.spec.token.mode);
  const ann = secret.metadata?.annotations ?? {};
  const policyAnn = input.annotations;
  const rv = secret.metadata?.resourceVersion ?? '';
  const stallMs = stallTimeoutMs(policy);
  const proceed = (policy.spec.token.rotation?.onStall ?? 'Proceed') === 'Proceed';
  const since = ms(ann[STEP_SINCE_ANNOTATION]) ?? ms(ann[ROTATED_AT_ANNOTATION]) ?? now;
  const stepOver = now - since >= stallMs;
  const total = nodes.size;
  const key = (): string => random(len).toString('base64');
  const patch = (annotations: Record<string, string | null>, data?: Record<string, string | null>): RotationPatch => ({
    metadata: { resourceVersion: rv, annotations },
    ...(data ? { data } : {}),
  });
  const behind = (ok: (r: NodeKeys) => boolean): string[] =>
    [...nodes]
      .filter(([, r]) => !r || !ok(r))
      .map(([n]) => n)
      .sort();
  const step = rotationStep(keys);
  const waits = drive ? 'the rotation waits for them (rotation.onStall: Wait)' : 'the rotation staged by hand waits for them';
  const ignored = (what: string): RotationEvent => ({
    type: 'Warning',
    reason: 'RotationIgnored',
    message: `${what} ignored: Secret "${policy.spec.token.secretRef.name}" is not managed by netoken and the policy sets no spec.token.rotation, so its keys are staged by hand (see the README)`,
  });

  // A Secret that does not number its keys yet (made before numbering, or the user's): number it first.
  if (keys.generation === undefined) {
    if (!drive) {
      return {
        step,
        events: [],
        condition: {
          status: 'False',
          reason: 'Unnumbered',
          message: `the Secret has no ${KEY_GENERATION_ANNOTATION} annotation; number its keys there to follow a rotation staged by hand in this condition`,
        },
        stalled: [],
      };
    }
    return {
      step,
      action: 'number',
      patch: patch({ [KEY_GENERATION_ANNOTATION]: '1', [STEP_SINCE_ANNOTATION]: isoSeconds(now) }),
      events: [],
      condition: { status: step === 'Idle' ? 'False' : 'True', reason: step, message: 'numbering the keys (generation 1)' },
      stalled: [],
    };
  }
  const g = keys.generation;

  // A leaked key: replace it now, keep nothing old.
  const revoke = policyAnn[REVOKE_ANNOTATION];
  if (revoke !== undefined && revoke !== handledMap(secret, REVOKE_HANDLED_ANNOTATION)[name]) {
    if (!drive) {
      const condition: RotationCondition =
        step === 'Idle'
          ? idleCondition(g, ann[REVOKED_AT_ANNOTATION])
          : { status: 'True', reason: step, message: `a rotation staged by hand is under way (${step})` };
      return { step, events: [ignored(`annotation ${REVOKE_ANNOTATION}=${revoke}`)], condition, stalled: [] };
    }
    const gen = (keys.next ? g + 1 : g) + 1;
    const dropped = [g, ...(keys.next ? [g + 1] : []), ...(keys.previous ? [g - 1] : [])].sort((a, b) => a - b);
    const rotate = policyAnn[ROTATE_ANNOTATION];
    return {
      step: 'Idle',
      action: 'revoke',
      patch: patch(
        {
          [KEY_GENERATION_ANNOTATION]: String(gen),
          [ROTATED_AT_ANNOTATION]: isoSeconds(now),
          [STEP_SINCE_ANNOTATION]: isoSeconds(now),
          [SWITCHED_AT_ANNOTATION]: null,
          [REVOKED_AT_ANNOTATION]: isoSeconds(now),
          [REVOKE_HANDLED_ANNOTATION]: withHandled(secret, REVOKE_HANDLED_ANNOTATION, name, revoke),
          // A rotation asked for alongside is done by the revocation.
          ...(rotate !== undefined
            ? { [ROTATE_HANDLED_ANNOTATION]: withHandled(secret, ROTATE_HANDLED_ANNOTATION, name, rotate) }
            : {}),
        },
        { current: key(), previous: null, next: null },
      ),
      events: [
        {
          type: 'Warning',
          reason: 'KeyRevoked',
          message: `key generation${dropped.length > 1 ? 's' : ''} ${dropped.join(' and ')} revoked at once (annotation ${REVOKE_ANNOTATION}=${revoke}): generation ${gen} replaces ${dropped.length > 1 ? 'them' : 'it'} with no overlap; SYNs signed with a revoked key are refused, also those of nodes that have not seen generation ${gen} yet`,
        },
      ],
      condition: {
        status: 'False',
        reason: 'Revoked',
        message: `key generation${dropped.length > 1 ? 's' : ''} ${dropped.join(' and ')} revoked at ${isoSeconds(now)}; markers sign with generation ${gen} as soon as they see it`,
      },
      stalled: [],
    };
  }

  if (step === 'Publishing') {
    const waiting = behind((r) => r.accepts.includes(g + 1));
    const stalled = stepOver ? waiting : [];
    const msg = `key generation ${g + 1} published: ${total - waiting.length} of ${total} nodes accept it${waiting.length ? `; waiting for ${listNodes(waiting)}` : ''}`;
    if (drive && (waiting.length === 0 || (stalled.length > 0 && proceed))) {
      const events: RotationEvent[] = [];
      if (stalled.length > 0) events.push(stallEvent(stalled, `accept key generation ${g + 1}`, 'markers switch without them'));
      events.push({
        type: 'Normal',
        reason: 'KeySwitched',
        message: `markers sign with key generation ${g + 1}; generation ${g} stays accepted until every node signs with ${g + 1}`,
      });
      return {
        step: 'Retiring',
        action: 'switch',
        patch: patch(
          {
            [KEY_GENERATION_ANNOTATION]: String(g + 1),
            [ROTATED_AT_ANNOTATION]: isoSeconds(now),
            [STEP_SINCE_ANNOTATION]: isoSeconds(now),
            [SWITCHED_AT_ANNOTATION]: null,
          },
          { current: (keys.next as Buffer).toString('base64'), previous: keys.current.toString('base64'), next: null },
        ),
        events,
        condition: {
          status: 'True',
          reason: 'Switching',
          message: `markers switch to key generation ${g + 1}: 0 of ${total} nodes sign with it`,
        },
        stalled,
      };
    }
    return {
      step,
      events: stalled.length ? [stallEvent(stalled, `accept key generation ${g + 1}`, waits)] : [],
      condition: {
        status: 'True',
        reason: stalled.length ? 'Stalled' : 'Publishing',
        message: drive || waiting.length ? msg : `${msg}; make it current (and the current key previous) when you are ready`,
      },
      stalled,
      ...(drive && waiting.length ? { requeueAt: stalled.length ? now + stallMs : since + stallMs } : {}),
    };
  }

  if (step === 'Retiring') {
    const waiting = behind((r) => r.signs === g);
    const stalled = stepOver ? waiting : [];
    const windowMs = retireWindowMs(policy, input.retireMarginMs);
    const retiresAt = (at: number): RotationCondition => ({
      status: 'True',
      reason: 'Retiring',
      message: `${total - waiting.length} of ${total} nodes sign with key generation ${g}; generation ${g - 1} is retired at ${isoSeconds(at)}`,
    });
    if (waiting.length > 0 && !(drive && stalled.length > 0 && proceed)) {
      return {
        step,
        events: stalled.length ? [stallEvent(stalled, `sign with key generation ${g}`, waits)] : [],
        condition: {
          status: 'True',
          reason: stalled.length ? 'Stalled' : 'Switching',
          message: `markers switch to key generation ${g}: ${total - waiting.length} of ${total} nodes sign with it; waiting for ${listNodes(waiting)}`,
        },
        stalled,
        ...(drive ? { requeueAt: stalled.length ? now + stallMs : since + stallMs } : {}),
      };
    }
    if (!drive) {
      return {
        step,
        events: [],
        condition: {
          status: 'True',
          reason: 'Retiring',
          message: `all ${total} nodes sign with key generation ${g}; remove previous (generation ${g - 1}) once SYNs signed with it are done, ${Math.ceil(windowMs / 1000)} s after the last node switched`,
        },
        stalled: [],
      };
    }
    const switchedAt = ms(ann[SWITCHED_AT_ANNOTATION]);
    if (switchedAt === undefined) {
      return {
        step,
        action: 'mark-switched',
        patch: patch({ [SWITCHED_AT_ANNOTATION]: isoSeconds(now) }),
        events:
          stalled.length > 0
            ? [stallEvent(stalled, `sign with key generation ${g}`, `generation ${g - 1} is retired without them`)]
            : [],
        condition: retiresAt(now + windowMs),
        stalled,
        requeueAt: now + windowMs,
      };
    }
    if (now < switchedAt + windowMs) {
      return {
        step,
        events: [],
        condition: retiresAt(switchedAt + windowMs),
        stalled,
        requeueAt: switchedAt + windowMs,
      };
    }
    return {
      step: 'Idle',
      action: 'retire',
      patch: patch({ [STEP_SINCE_ANNOTATION]: isoSeconds(now), [SWITCHED_AT_ANNOTATION]: null }, { previous: null }),
      events: [
        {
          type: 'Normal',
          reason: 'KeyRetired',
          message: `key generation ${g - 1} retired; markers sign with generation ${g}${waiting.length ? ` (${listNodes(waiting)} did not report it)` : ''}`,
        },
      ],
      condition: idleCondition(g, ann[REVOKED_AT_ANNOTATION]),
      stalled,
    };
  }

  // Idle. A node whose report shows an older key past the stall timeout (cut off from the API
  // server since) is named; a node that reports no keys is a matter of its policy status.
  const stalled = stepOver
    ? [...nodes]
        .filter(([, r]) => r && (r.signs !== g || !r.accepts.includes(g)))
        .map(([n]) => n)
        .sort()
    : [];
  const ask = policyAnn[ROTATE_ANNOTATION];
  const asked = ask !== undefined && ask !== handledMap(secret, ROTATE_HANDLED_ANNOTATION)[name];
  const period = rotationPeriodMs(policy);
  const due = period === undefined ? undefined : rotationDueAt(secret, period);
  const lagging = stalled.length
    ? [
        {
          type: 'Warning' as const,
          reason: 'KeyRotationStalled',
          message: `${stalled.length} node(s) still report an older key than generation ${g} after rotation.stallTimeout (cut off from the API server?): ${listNodes(stalled)}`,
        },
      ]
    : [];
  if (asked && !drive)
    return {
      step,
      events: [...lagging, ignored(`annotation ${ROTATE_ANNOTATION}=${ask}`)],
      condition: idleCondition(g, ann[REVOKED_AT_ANNOTATION]),
      stalled,
    };
  if (drive && (asked || (due !== undefined && now >= due))) {
    return {
      step: 'Publishing',
      action: 'publish',
      patch: patch(
        {
          [STEP_SINCE_ANNOTATION]: isoSeconds(now),
          [SWITCHED_AT_ANNOTATION]: null,
          [REVOKED_AT_ANNOTATION]: null,
          ...(asked ? { [ROTATE_HANDLED_ANNOTATION]: withHandled(secret, ROTATE_HANDLED_ANNOTATION, name, ask) } : {}),
        },
        { next: key() },
      ),
      events: [
        {
          type: 'Normal',
          reason: 'RotationStarted',
          message: `key generation ${g + 1} published for verifiers to accept (${asked ? `annotation ${ROTATE_ANNOTATION}=${ask}` : `rotation.period ${policy.spec.token.rotation?.period} elapsed`}); markers switch to it once every node accepts it`,
        },
      ],
      condition: {
        status: 'True',
        reason: 'Publishing',
        message: `key generation ${g + 1} published: 0 of ${total} nodes accept it`,
      },
      stalled,
      requeueAt: now + stallMs,
    };
  }
  const behindNow = [...nodes].some(([, r]) => r && (r.signs !== g || !r.accepts.includes(g)));
  const requeue = [due, behindNow && !stepOver ? since + stallMs : undefined].filter((x): x is number => x !== undefined);
  return {
    step,
    events: lagging,
    condition: idleCondition(g, ann[REVOKED_AT_ANNOTATION]),
    stalled,
    ...(drive && requeue.length ? { requeueAt: Math.min(...requeue) } : {}),
  };
}

function idleCondition(g: number, revokedAt?: string): RotationCondition {
  if (revokedAt)
    return {
      status: 'False',
      reason: 'Revoked',
      message: `the keys before generation ${g} were revoked at ${revokedAt}; markers sign with key generation ${g}`,
    };
  return { status: 'False', reason: 'Idle', message: `no rotation under way; markers sign with key generation ${g}` };
}

function stallEvent(nodes: readonly string[], what: string, then: string): RotationEvent {
  return {
    type: 'Warning',
    reason: 'KeyRotationStalled',
    message: `${nodes.length} node(s) did not report that they ${what} within rotation.stallTimeout: ${listNodes(nodes)}; ${then}`,
  };
}
