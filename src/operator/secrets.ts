/**
 * Key Secrets: what the operator does with a policy's Secret, as a pure plan. It generates a
 * crypto-random key when the Secret is missing, rotates it when rotation.period has passed
 * since the netoken.io/rotated-at annotation (previous := current, current := new), and leaves
 * a user's Secret alone unless the policy asks for rotation. A Secret the operator made and
 * whose key no longer fits the mode (the policy switched between Static and Keyed) is
 * regenerated; a user's Secret with a bad key is reported, never rewritten.
 *
 * Plans hold key bytes: execute them, never log them.
 */
import { randomBytes } from 'node:crypto';
import { decodeKeys, parseDuration } from '../lib/policy.js';
import { type TokenPolicy, keyLength } from '../lib/types.js';

export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const MANAGED_BY_VALUE = 'netoken-operator';
export const ROTATED_AT_ANNOTATION = 'netoken.io/rotated-at';

/** The parts of a Secret read here; list results carry Dates where watch events carry strings. */
export interface SecretLike {
  metadata?: {
    name?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    creationTimestamp?: Date | string;
  };
  type?: string;
  data?: Record<string, string>;
}

export interface NewSecret {
  apiVersion: 'v1';
  kind: 'Secret';
  metadata: { name: string; namespace: string; labels: Record<string, string>; annotations: Record<string, string> };
  type: 'Opaque';
  data: { current: string };
}

export interface SecretPatch {
  metadata: { resourceVersion: string; annotations: Record<string, string> };
  data: { current: string; previous: string | null };
}

export type SecretPlan =
  | { action: 'create'; secret: NewSecret; nextRotationAt?: number }
  | { action: 'patch'; why: 'rotation' | 'regenerate'; patch: SecretPatch; nextRotationAt?: number }
  | { action: 'none'; nextRotationAt?: number }
  | { action: 'invalid'; message: string };

/** RFC 3339 in whole seconds, as Kubernetes writes times. */
export function timestamp(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');
}

function toMs(v: Date | string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const ms = v instanceof Date ? v.getTime() : Date.parse(v);
  return Number.isFinite(ms) ? ms : undefined;
}

/** The rotation period of a policy in ms, or undefined when it does not rotate. */
export function rotationPeriodMs(policy: TokenPolicy): number | undefined {
  const period = policy.spec.token.rotation?.period;
  if (period === undefined) return undefined;
  const s = parseDuration(period);
  return s === null ? undefined : s * 1000;
}

/**
 * When the key in `secret` is due for rotation: the rotated-at annotation (else the Secret's
 * creation time) plus the period. A Secret with neither is due now.
 */
export function rotationDueAt(secret: SecretLike, periodMs: number): number {
  const since = toMs(secret.metadata?.annotations?.[ROTATED_AT_ANNOTATION]) ?? toMs(secret.metadata?.creationTimestamp) ?? 0;
  return since + periodMs;
}

export function isManaged(secret: SecretLike): boolean {
  return secret.metadata?.labels?.[MANAGED_BY_LABEL] === MANAGED_BY_VALUE;
}

export interface PlanInput {
  policy: TokenPolicy;
  namespace: string;
  secret: SecretLike | undefined;
  now: number;
  /** Key bytes source; it defaults to crypto.randomBytes. */
  random?: (n: number) => Buffer;
}

export function planSecret(input: PlanInput): SecretPlan {
  const { policy, namespace, secret, now } = input;
  const random = input.random ?? randomBytes;
  const mode = policy.spec.token.mode;
  const name = policy.spec.token.secretRef.name;
  const len = keyLength(mode);
  const period = rotationPeriodMs(policy);
  const next = period === undefined ? {} : { nextRotationAt: now + period };

  if (!secret) {
    return {
      action: 'create',
      secret: {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: {
          name,
          namespace,
          labels: { [MANAGED_BY_LABEL]: MANAGED_BY_VALUE },
          annotations: { [ROTATED_AT_ANNOTATION]: timestamp(now) },
        },
        type: 'Opaque',
        data: { current: random(len).toString('base64') },
      },
      ...next,
    };
  }

  const resourceVersion = secret.metadata?.resourceVersion ?? '';
  let current: Buffer;
  try {
    current = decodeKeys(secret, mode, `namespace ${namespace}`).current;
  } catch (err) {
    if (!isManaged(secret)) return { action: 'invalid', message: (err as Error).message };
    // Ours, but the key no longer fits (the mode changed): the old key is useless to every
    // verifier of the new mode, so start afresh without a previous key.
    return {
      action: 'patch',
      why: 'regenerate',
      patch: {
        metadata: { resourceVersion, annotations: { [ROTATED_AT_ANNOTATION]: timestamp(now) } },
        data: { current: random(len).toString('base64'), previous: null },
      },
      ...next,
    };
  }

  if (period === undefined) return { action: 'none' };
  const due = rotationDueAt(secret, period);
  if (now < due) return { action: 'none', nextRotationAt: due };
  return {
    action: 'patch',
    why: 'rotation',
    patch: {
      metadata: { resourceVersion, annotations: { [ROTATED_AT_ANNOTATION]: timestamp(now) } },
      data: { current: random(len).toString('base64'), previous: current.toString('base64') },
    },
    ...next,
  };
}
