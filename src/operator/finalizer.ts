/**
 * The cleanup finalizer on TokenPolicy. A deleted policy stays until every node reports it
 * removed (no TokenNodeState lists it any more), so `kubectl delete` returning means the hooks
 * and keys are gone from every node. A node that cannot answer must not block deletion for
 * ever: once the finalizer timeout has passed since the deletion, a node whose Node object is
 * gone, or whose TokenNodeState has not been written since the deletion began (or for a whole
 * timeout), is not waited for.
 */
import type { NodeReport } from './cache.js';
import { isoTime } from '../lib/time.js';

export const FINALIZER = 'netoken.io/cleanup';

export function hasFinalizer(meta: { finalizers?: string[] } | undefined): boolean {
  return (meta?.finalizers ?? []).includes(FINALIZER);
}

function toMs(v: string | Date | undefined): number | undefined {
  if (v === undefined) return undefined;
  const ms = v instanceof Date ? v.getTime() : Date.parse(v);
  return Number.isFinite(ms) ? ms : undefined;
}

export interface ReleaseInput {
  policy: string;
  /** the policy's metadata.deletionTimestamp */
  deletionTimestamp: string | Date;
  /** the nodes' reports (when each was last written: NodeReport.lastWrittenMs) */
  nodeStates: Iterable<NodeReport>;
  /** names of the Node objects that exist */
  nodeNames: ReadonlySet<string>;
  timeoutMs: number;
  now: number;
}

export interface ReleaseDecision {
  release: boolean;
  /** nodes still holding the policy (release false) */
  waitingOn: string[];
  /** nodes not waited for any more, with why (release true) */
  givenUp: { node: string; why: string }[];
  /** look again after this long (the timeout runs out), when not released */
  recheckAfterMs?: number;
}

export function releaseDecision(input: ReleaseInput): ReleaseDecision {
  const deletedAt = toMs(input.deletionTimestamp) ?? input.now;
  const deadline = deletedAt + input.timeoutMs;
  const timedOut = input.now >= deadline;
  const waitingOn: string[] = [];
  const givenUp: { node: string; why: string }[] = [];
  let recheckAt = timedOut ? Infinity : deadline;
  for (const ns of input.nodeStates) {
    const node = ns.metadata.name;
    if (!node || !ns.applied.has(input.policy)) continue;
    const written = ns.lastWrittenMs;
    // Silent means: nothing written since the deletion, or for a whole timeout since.
    const silentSince = Math.max(deletedAt, input.now - input.timeoutMs);
    if (timedOut && !input.nodeNames.has(node)) givenUp.push({ node, why: 'its Node no longer exists' });
    else if (timedOut && written < silentSince)
      givenUp.push({ node, why: `its TokenNodeState has not been written since ${isoTime(written)}` });
    else {
      waitingOn.push(node);
      if (timedOut) recheckAt = Math.min(recheckAt, written + input.timeoutMs);
    }
  }
  waitingOn.sort();
  if (waitingOn.length === 0) return { release: true, waitingOn, givenUp };
  // Wake up when the next node would count as silent; until then its updates wake us.
  return { release: false, waitingOn, givenUp, recheckAfterMs: Math.max(0, recheckAt - input.now) + 250 };
}
