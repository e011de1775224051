/**
 * Key Secrets: what the operator does with a policy's Secret, as a pure plan. It generates a
 * crypto-random key (generation 1) when the Secret is missing. A Secret the operator made and
 * whose key no longer fits the mode (the policy switched between Static and Keyed) is
 * regenerated as the next generation with no old key; a user's Secret with a bad key is
 * reported, never rewritten. Rotation of a valid Secret is planned in rotation.ts.
 *
 * Plans hold key bytes: execute them (applySecretPlan, below), never log them.
 */
import { randomBytes } from 'node:crypto';
import { ApiException, type CallOptions, type CoreV1Api, PatchStrategy } from '../lib/kube-client.js';
import { requestOptions } from '../lib/kube.js';
import { secretError } from './errors.js';
import { decodeKeys, parseDuration } from '../lib/policy.js';
import { KEY_GENERATION_ANNOTATION, type TokenPolicy, keyLength } from '../lib/types.js';
import { isoSeconds } from '../lib/time.js';

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
  metadata: { resourceVersion: string; annotations: Record<string, string | null> };
  data: { current: string; previous: null; next: null };
}

export type SecretPlan =
  | { action: 'create'; secret: NewSecret }
  | { action: 'regenerate'; patch: SecretPatch }
  | { action: 'none' }
  | { action: 'invalid'; message: string };

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
          annotations: { [ROTATED_AT_ANNOTATION]: isoSeconds(now), [KEY_GENERATION_ANNOTATION]: '1' },
        },
        type: 'Opaque',
        data: { current: random(len).toString('base64') },
      },
    };
  }

  const generation = secret.metadata?.annotations?.[KEY_GENERATION_ANNOTATION];
  try {
    decodeKeys(secret, mode, `namespace ${namespace}`);
    return { action: 'none' };
  } catch (err) {
    // A bad annotation is not a reason to throw keys away, even our own.
    const badGeneration = generation !== undefined && !/^\d{1,15}$/.test(generation);
    if (!isManaged(secret) || badGeneration) return { action: 'invalid', message: (err as Error).message };
  }
  // Ours, but the keys no longer fit (the mode changed): old keys are useless to every verifier
  // of the new mode, so start afresh with the next generation and no old key.
  const g = Number(generation);
  return {
    action: 'regenerate',
    patch: {
      metadata: {
        resourceVersion: secret.metadata?.resourceVersion ?? '',
        annotations: {
          [ROTATED_AT_ANNOTATION]: isoSeconds(now),
          [KEY_GENERATION_ANNOTATION]: String(Number.isSafeInteger(g) && g >= 0 ? g + 1 : 1),
        },
      },
      data: { current: random(len).toString('base64'), previous: null, next: null },
    },
  };
}

/** What carrying out a plan did (never the key itself). */
export type SecretOutcome =
  | { done: 'none' | 'created' | 'regenerated' }
  /** the Secret changed since it was read (another policy sharing it made or wrote it): look again soon */
  | { done: 'raced'; recheckAt: number }
  | { done: 'invalid'; message: string };

/**
 * Carries out a plan against the API server: creates the Secret or patches it (guarded by the
 * resourceVersion the plan was made from). Errors name the Secret, never its content. `signal`
 * aborts the write in flight (the operator's write fence).
 */
export async function applySecretPlan(
  core: CoreV1Api,
  namespace: string,
  name: string,
  plan: SecretPlan,
  signal?: AbortSignal,
  now = Date.now(),
): Promise<SecretOutcome> {
  const opts = (contentType?: string): CallOptions => requestOptions({ contentType, signal });
  switch (plan.action) {
    case 'none':
      return { done: 'none' };
    case 'invalid':
      return { done: 'invalid', message: plan.message };
    case 'create':
      try {
        await core.createNamespacedSecret({ namespace, body: plan.secret }, opts());
      } catch (err) {
        if (err instanceof ApiException && err.code === 409) return { done: 'raced', recheckAt: now + 1000 };
        throw secretError('creating', name, err);
      }
      return { done: 'created' };
    case 'regenerate':
      try {
        await core.patchNamespacedSecret({ namespace, name, body: plan.patch }, opts(PatchStrategy.MergePatch));
      } catch (err) {
        // Changed since the plan was made: a quiet retry from the newer version.
        if (err instanceof ApiException && err.code === 409) throw err;
        throw secretError('regenerating', name, err);
      }
      return { done: 'regenerated' };
  }
}
