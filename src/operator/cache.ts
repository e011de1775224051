/**
 * What the operator's caches keep of TokenPolicies and TokenNodeStates (Nodes and Secrets:
 * lib/cached.ts): only the fields a reconcile or a mapping function reads. A node's
 * TokenNodeState shrinks to a table of the generation it applied per policy and the failures it
 * reported, so that a thousand reports of a thousand policies each fit in memory and one
 * policy's entry on one node is a map lookup.
 */
import type { KubernetesObject } from '../lib/kube-client.js';
import { type CachedMeta, cachedMeta, toMs } from '../lib/cached.js';
import type { Cacheable } from '../lib/informer.js';
import type { NodeKeys } from './rotation.js';
import type { LabelSelector } from '../lib/types.js';

/** A TokenPolicy as cached: the object without managedFields. */
export interface CachedPolicy extends Cacheable {
  apiVersion?: string;
  kind?: string;
  metadata: CachedMeta;
  spec?: { nodeSelector?: LabelSelector; token?: { mode?: string; secretRef?: { name?: string } } } & Record<string, unknown>;
  status?: unknown;
}

/** Why a node's entry for a policy counts as failed. */
export interface EntryFailure {
  reason: string;
  message: string;
}

/** A node's TokenNodeState as cached. */
export interface NodeReport extends Cacheable {
  metadata: CachedMeta;
  /** an agent wrote it (status.agent is set): the node runs one */
  agent: boolean;
  /** when it was last written (ms): the latest managed-field time, countersUpdatedAt or its creation */
  lastWrittenMs: number;
  /** policy name -> the generation this node applied */
  applied: Map<string, number>;
  /** policy name -> why it failed here (only policies that failed) */
  failures: Map<string, EntryFailure>;
  /** policy name -> the key generations this node signs with and accepts for it (rotation.ts) */
  keys: Map<string, NodeKeys>;
  /** policies that select the node beyond the number it can apply (not listed) */
  overLimit: number;
}

export function cachePolicy(o: KubernetesObject & { spec?: unknown; status?: unknown }): CachedPolicy {
  return {
    apiVersion: o.apiVersion,
    kind: o.kind,
    metadata: cachedMeta(o.metadata),
    spec: o.spec as CachedPolicy['spec'],
    status: o.status,
  };
}

/** A TokenNodeState as an agent writes it (and as older agents wrote it: interfaces as objects with a state). */
export interface RawNodeState extends KubernetesObject {
  metadata?: KubernetesObject['metadata'] & { managedFields?: { time?: string | Date }[] };
  status?: {
    agent?: unknown;
    countersUpdatedAt?: string;
    policiesOverLimit?: number;
    policies?: {
      name: string;
      generation?: number;
      keys?: { signs: number; accepts: number[] };
      interfaces?: (string | { name: string; direction?: string; state?: string; reason?: string })[];
      errors?: { reason: string; message?: string }[];
    }[];
    /** policies applied with nothing of their own, grouped (src/agent/node-state.ts groupedReport) */
    applied?: { generation?: number; keys?: { signs: number; accepts: number[] }; names?: string[] }[];
  };
}

/** Policy names repeat in every node's report: one string each instead of one per report. */
const names = new Map<string, string>();
function intern(s: string): string {
  const have = names.get(s);
  if (have !== undefined) return have;
  if (names.size > 100_000) names.clear();
  names.set(s, s);
  return s;
}

/** The few distinct key reports there are, one object each. */
const keyReports = new Map<string, NodeKeys>();
function internKeys(k: { signs: number; accepts: number[] }): NodeKeys {
  const id = `${k.signs}/${k.accepts.join(',')}`;
  let have = keyReports.get(id);
  if (!have) {
    if (keyReports.size > 10_000) keyReports.clear();
    keyReports.set(id, (have = { signs: k.signs, accepts: [...k.accepts] }));
  }
  return have;
}

/** Why a node's entry for a policy counts as failed, or undefined when it does not. */
export function entryFailure(
  entry: NonNullable<NonNullable<RawNodeState['status']>['policies']>[number],
): EntryFailure | undefined {
  const errors = entry.errors ?? [];
  const err = errors[0];
  if (err) {
    const more = errors.length > 1 ? ` (and ${errors.length - 1} more)` : '';
    return { reason: err.reason, message: `${err.message ?? err.reason}${more}` };
  }
  for (const i of entry.interfaces ?? []) {
    if (typeof i !== 'string' && i.state === 'Failed') {
      return { reason: i.reason || 'AttachFailed', message: `${i.name}${i.direction ? ` (${i.direction})` : ''}: not attached` };
    }
  }
  return undefined;
}

/** The cached form of a TokenNodeState. */
export function cacheNodeState(o: RawNodeState): NodeReport {
  const meta = cachedMeta(o.metadata);
  let last = toMs(o.metadata?.creationTimestamp);
  for (const f of o.metadata?.managedFields ?? []) last = Math.max(last, toMs(f.time));
  last = Math.max(last, toMs(o.status?.countersUpdatedAt));
  const applied = new Map<string, number>();
  const failures = new Map<string, EntryFailure>();
  const keys = new Map<string, NodeKeys>();
  for (const p of o.status?.policies ?? []) {
    const name = intern(p.name);
    applied.set(name, p.generation ?? 0);
    const f = entryFailure(p);
    if (f) failures.set(name, f);
    if (p.keys && Array.isArray(p.keys.accepts)) keys.set(name, internKeys(p.keys));
  }
  for (const g of o.status?.applied ?? []) {
    const k = g.keys && Array.isArray(g.keys.accepts) ? internKeys(g.keys) : undefined;
    for (const n of g.names ?? []) {
      const name = intern(n);
      applied.set(name, g.generation ?? 0);
      if (k) keys.set(name, k);
    }
  }
  return {
    metadata: meta,
    agent: o.status?.agent !== undefined && o.status.agent !== null,
    lastWrittenMs: last,
    applied,
    failures,
    keys,
    overLimit: o.status?.policiesOverLimit ?? 0,
  };
}

function sameFailure(a: EntryFailure | undefined, b: EntryFailure | undefined): boolean {
  return a?.reason === b?.reason && a?.message === b?.message;
}

/** The policies whose entry differs between two reports of one node (listed, generation, failure), and those whose keys differ. */
export function changedEntries(old: NodeReport | undefined, cur: NodeReport | undefined): { entries: string[]; keys: string[] } {
  const entries: string[] = [];
  const keys: string[] = [];
  const a = old?.applied ?? new Map<string, number>();
  const b = cur?.applied ?? new Map<string, number>();
  for (const [name, gen] of b) {
    if (a.get(name) !== gen || !sameFailure(old?.failures.get(name), cur?.failures.get(name))) entries.push(name);
    // Key reports are interned: the same report is the same object.
    if (old?.keys.get(name) !== cur?.keys.get(name)) keys.push(name);
  }
  for (const name of a.keys()) {
    if (b.has(name)) continue;
    entries.push(name);
    if (old?.keys.has(name)) keys.push(name);
  }
  return { entries, keys };
}
