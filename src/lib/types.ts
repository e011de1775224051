/**
 * The TokenPolicy API (netoken.io/v1alpha1) as the agent and operator see it,
 * after validation and defaulting (see policy.ts). Field docs live in crds/.
 */

export const API_GROUP = 'netoken.io';
export const API_VERSION = 'v1alpha1';
export const API = `${API_GROUP}/${API_VERSION}`;

export type TokenMode = 'Static' | 'Keyed';
export type IngressAction = 'Monitor' | 'Enforce';
export type BindField = 'SourceAddress' | 'DestinationAddress' | 'SourcePort' | 'DestinationPort' | 'Sequence';
export const BIND_FIELDS: readonly BindField[] = [
  'SourceAddress',
  'DestinationAddress',
  'SourcePort',
  'DestinationPort',
  'Sequence',
];

export interface LabelSelectorRequirement {
  key: string;
  operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
  values?: string[];
}

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: LabelSelectorRequirement[];
}

export interface Destination {
  cidr: string;
  /** empty = every port */
  ports: number[];
}

/** spec.token.rotation: how the operator replaces the key (see src/operator/rotation.ts). */
export interface KeyRotationSpec {
  /** time between rotations, a Go duration */
  period: string;
  /** how long a step may wait for nodes before the rotation counts as stalled (default 10m) */
  stallTimeout?: string;
  /** what a stalled rotation does after stallTimeout: go on without the silent nodes (default), or wait for them */
  onStall?: 'Proceed' | 'Wait';
}

export interface TokenPolicySpec {
  nodeSelector: LabelSelector;
  interfaces: { names: string[]; patterns: string[] };
  token: {
    mode: TokenMode;
    secretRef: { name: string };
    epochSeconds?: number;
    /** Keyed only: seconds of clock difference a verifier tolerates (see effectiveSkewSeconds) */
    clockSkewSeconds?: number;
    bind: BindField[];
    rotation?: KeyRotationSpec;
  };
  option: { kind: number; experimentId: number };
  egress?: { destinations: Destination[] };
  ingress?: { action: IngressAction; ports: number[]; exemptSources: string[]; replayLimit?: number };
}

export interface ObjectMeta {
  name: string;
  namespace?: string;
  generation?: number;
  uid?: string;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  deletionTimestamp?: string;
  finalizers?: string[];
}

export interface TokenPolicy {
  apiVersion: typeof API;
  kind: 'TokenPolicy';
  metadata: ObjectMeta;
  spec: TokenPolicySpec;
}

/**
 * Key material of one policy, decoded from its Secret. Never log it.
 * Markers sign with `current`; verifiers accept `current`, `next` (a key published before
 * markers switch to it) and `previous` (a key being retired); when both are there, `next`
 * is accepted and `previous` is not (a verifier holds two keys).
 */
export interface TokenKeys {
  current: Buffer;
  previous?: Buffer;
  next?: Buffer;
  /** the generation of `current` (Secret annotation netoken.io/key-generation), when the Secret says */
  generation?: number;
}

/** The Secret annotation that numbers `current`: `next` is one more, `previous` one less. */
export const KEY_GENERATION_ANNOTATION = 'netoken.io/key-generation';

/** The key a verifier accepts beside `current`: the published `next`, else the retired `previous`. */
export function secondKey(keys: TokenKeys): Buffer | undefined {
  return keys.next ?? keys.previous;
}

/**
 * Which key generations a node with these keys signs with and accepts, for its report to the
 * operator; undefined when the Secret numbers none.
 */
export function keyGenerations(keys: TokenKeys): { signs: number; accepts: number[] } | undefined {
  const g = keys.generation;
  if (g === undefined) return undefined;
  const accepts = [g];
  if (keys.next) accepts.push(g + 1);
  else if (keys.previous && g > 0) accepts.unshift(g - 1);
  return { signs: g, accepts };
}

/** The clock skew a verifier tolerates when a Keyed policy does not say. */
export const DEFAULT_CLOCK_SKEW_SECONDS = 5;

/**
 * The clock skew a Keyed policy's verifier tolerates: token.clockSkewSeconds, by default 5
 * seconds or epochSeconds when that is shorter; 0 for Static tokens (no time in them).
 */
export function effectiveSkewSeconds(token: TokenPolicySpec['token']): number {
  if (token.mode !== 'Keyed' || !token.epochSeconds) return 0;
  return Math.min(token.clockSkewSeconds ?? DEFAULT_CLOCK_SKEW_SECONDS, token.epochSeconds);
}

/** The length the key Secret's values must have for a mode. */
export function keyLength(mode: TokenMode): number {
  return mode === 'Static' ? 8 : 16;
}

/** Does a label set satisfy a metav1.LabelSelector? An empty selector selects everything. */
export function selectorMatches(sel: LabelSelector, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) {
    if (labels[k] !== v) return false;
  }
  for (const req of sel.matchExpressions ?? []) {
    const has = Object.prototype.hasOwnProperty.call(labels, req.key);
    const val = labels[req.key];
    switch (req.operator) {
      case 'In':
        if (!has || !(req.values ?? []).includes(val as string)) return false;
        break;
      case 'NotIn':
        if (has && (req.values ?? []).includes(val as string)) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
    }
  }
  return true;
}
