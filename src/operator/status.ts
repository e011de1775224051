/**
 * TokenPolicy status from the nodes' reports, as a pure function: which nodes the policy
 * selects, which of them applied the current generation, which failed and why, and the
 * Ready and Degraded conditions that sum it up; and the KeyRotation condition.
 *
 * Only nodes where a netoken agent runs count (a node runs one once its agent has written its
 * TokenNodeState): a node the selector matches without an agent — a Windows node, a node
 * outside the agent DaemonSet's nodeSelector, a node whose agent pod cannot be scheduled —
 * never holds Ready back. It is counted in nodes.withoutAgent and named in nodesWithoutAgent
 * with a reason, once it has had `agentGraceMs` since it joined to start its agent; until then
 * it is not counted at all, so a joining node changes the status once, when its agent reports.
 */
import { type Condition, setCondition } from '../lib/conditions.js';
import type { NodeInfo } from '../lib/cached.js';
import type { NodeReport } from './cache.js';
import { by } from '../lib/order.js';

export const MAX_FAILED_NODES = 10;
const MAX_MESSAGE = 1024;
/** How long a node that just joined has to start its agent before it counts as running none. */
export const DEFAULT_AGENT_GRACE_MS = 120_000;

export interface FailedNode {
  node: string;
  reason: string;
  message: string;
}

export interface PolicyStatus {
  observedGeneration: number;
  conditions: Condition[];
  nodes: { selected: number; ready: number; failed: number; withoutAgent: number };
  failedNodes: FailedNode[];
  /** matching nodes where no agent runs (capped like failedNodes): reason NoAgent or NotLinux */
  nodesWithoutAgent: FailedNode[];
}

/** Something wrong with the policy as a whole (not with one node). */
export interface PolicyProblem {
  /** CamelCase, e.g. SecretInvalid, InvalidPolicy, SecretConflict, Terminating */
  reason: string;
  message: string;
  /** also sets Degraded (false for Terminating, which is not a fault) */
  degraded: boolean;
}

export interface AggregateInput {
  name: string;
  generation: number;
  /** the nodes spec.nodeSelector matches */
  matched: readonly NodeInfo[];
  /** a node's report, by node name */
  reportOf: (node: string) => NodeReport | undefined;
  problem?: PolicyProblem;
  /** the KeyRotation condition (rotation.ts), when the key Secret could be read */
  keyRotation?: { status: 'True' | 'False'; reason: string; message: string };
  /** nodes a key rotation waits for past its stall timeout: Degraded, KeyRotationStalled */
  rotationStalled?: readonly string[];
  /** said at the end of the Ready message (for example that the operator generated the key) */
  note?: string;
  /** the conditions in the current status, so transition times survive */
  previous?: readonly Condition[];
  now?: Date;
  agentGraceMs?: number;
}

export interface Aggregate {
  status: PolicyStatus;
  /** when the status changes by itself next (a joining node's grace runs out), ms since the epoch */
  recheckAt?: number;
}

function clip(s: string, n = MAX_MESSAGE): string {
  return s.length <= n ? s : `${s.slice(0, n - 3)}...`;
}

function listNames(names: string[], shown = 3): string {
  const head = names.slice(0, shown).join(', ');
  return names.length > shown ? `${head} and ${names.length - shown} more` : head;
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** Why a matching node runs no agent, as far as its labels tell. */
function noAgentReason(n: NodeInfo): FailedNode {
  const name = n.metadata.name;
  const os = n.metadata.labels?.['kubernetes.io/os'];
  if (os !== undefined && os !== 'linux') {
    return { node: name, reason: 'NotLinux', message: `kubernetes.io/os is ${os}; the netoken agent runs on Linux nodes only` };
  }
  return {
    node: name,
    reason: 'NoAgent',
    message: "no netoken agent has reported from this node (outside the agent's nodeSelector, or its pod is not running)",
  };
}

export function aggregateStatus(input: AggregateInput): Aggregate {
  const { name, generation } = input;
  const now = input.now ?? new Date();
  const grace = input.agentGraceMs ?? DEFAULT_AGENT_GRACE_MS;
  const ready: string[] = [];
  const pending: string[] = [];
  const failed: FailedNode[] = [];
  const withoutAgent: FailedNode[] = [];
  const joining: string[] = [];
  let recheckAt: number | undefined;
  for (const n of input.matched) {
    const node = n.metadata.name;
    const report = input.reportOf(node);
    if (!report?.agent) {
      const joined = Date.parse(n.metadata.creationTimestamp ?? '') || 0;
      if (now.getTime() - joined < grace) {
        joining.push(node);
        recheckAt = Math.min(recheckAt ?? Infinity, joined + grace);
      } else {
        withoutAgent.push(noAgentReason(n));
      }
      continue;
    }
    const applied = report.applied.get(name);
    const failure = report.failures.get(name);
    if (failure) failed.push({ node, reason: failure.reason, message: clip(failure.message, 512) });
    else if (applied === undefined && report.overLimit > 0) {
      failed.push({
        node,
        reason: 'TooManyPolicies',
        message: 'more policies select this node than it can apply; this one is not applied there',
      });
    } else if (applied === generation) ready.push(node);
    else pending.push(node);
  }
  failed.sort(by((x) => x.node));
  withoutAgent.sort(by((x) => x.node));
  pending.sort();
  joining.sort();

  const nSel = ready.length + pending.length + failed.length;
  const selectedNodes = `selected node${nSel === 1 ? '' : 's'}`;
  const failText = `${failed.length} of ${nSel} ${selectedNodes} failed to apply the policy: ${listNames(failed.map((f) => `${f.node} (${f.reason})`))}`;
  let ready_: Omit<Condition, 'lastTransitionTime'>;
  let degraded: Omit<Condition, 'lastTransitionTime'> = failed.length
    ? { type: 'Degraded', status: 'True', reason: 'NodesFailing', message: failText }
    : { type: 'Degraded', status: 'False', reason: 'AsExpected', message: '' };
  const stalled = input.rotationStalled ?? [];
  if (!failed.length && stalled.length) {
    degraded = {
      type: 'Degraded',
      status: 'True',
      reason: 'KeyRotationStalled',
      message: `key rotation stalled: ${stalled.length} node${stalled.length === 1 ? '' : 's'} did not report the key step within rotation.stallTimeout: ${listNames([...stalled], 10)}`,
    };
  }
  if (input.problem) {
    ready_ = { type: 'Ready', status: 'False', reason: input.problem.reason, message: input.problem.message };
    if (input.problem.degraded)
      degraded = { type: 'Degraded', status: 'True', reason: input.problem.reason, message: input.problem.message };
  } else if (nSel === 0 && joining.length) {
    ready_ = {
      type: 'Ready',
      status: 'False',
      reason: 'NodesPending',
      message: `waiting for the netoken agent to start on ${listNames(joining)}`,
    };
  } else if (nSel === 0 && withoutAgent.length) {
    ready_ = {
      type: 'Ready',
      status: 'False',
      reason: 'NoAgentOnSelectedNodes',
      message: `spec.nodeSelector matches ${plural(withoutAgent.length, 'node')}, none of which runs the netoken agent: ${listNames(withoutAgent.map((w) => `${w.node} (${w.reason})`))}`,
    };
  } else if (nSel === 0) {
    ready_ = { type: 'Ready', status: 'False', reason: 'NoNodesSelected', message: 'spec.nodeSelector matches no node' };
  } else if (failed.length) {
    ready_ = { type: 'Ready', status: 'False', reason: 'NodesFailing', message: failText };
  } else if (pending.length) {
    ready_ = {
      type: 'Ready',
      status: 'False',
      reason: 'NodesPending',
      message: `${ready.length} of ${nSel} ${selectedNodes} applied generation ${generation}; waiting for ${listNames(pending)}`,
    };
  } else {
    ready_ = {
      type: 'Ready',
      status: 'True',
      reason: 'AllNodesReady',
      message: `applied on all ${nSel} ${selectedNodes} at generation ${generation}`,
    };
  }
  if (!input.problem && nSel > 0 && withoutAgent.length) {
    ready_.message += `; ${plural(withoutAgent.length, 'more matching node runs', 'more matching nodes run')} no netoken agent and ${withoutAgent.length === 1 ? 'is' : 'are'} left out: ${listNames(withoutAgent.map((w) => w.node))}`;
  }
  if (input.note) ready_.message += `; ${input.note}`;
  let conditions = setCondition(
    input.previous ?? [],
    { ...ready_, message: clip(ready_.message), observedGeneration: generation },
    now,
  );
  conditions = setCondition(conditions, { ...degraded, message: clip(degraded.message), observedGeneration: generation }, now);
  if (input.keyRotation)
    conditions = setCondition(
      conditions,
      { type: 'KeyRotation', ...input.keyRotation, message: clip(input.keyRotation.message), observedGeneration: generation },
      now,
    );
  // Other condition types someone else set are kept as they are.
  const status: PolicyStatus = {
    observedGeneration: generation,
    conditions,
    nodes: { selected: nSel, ready: ready.length, failed: failed.length, withoutAgent: withoutAgent.length },
    failedNodes: failed.slice(0, MAX_FAILED_NODES),
    nodesWithoutAgent: withoutAgent.slice(0, MAX_FAILED_NODES),
  };
  return recheckAt === undefined ? { status } : { status, recheckAt };
}

/**
 * Two statuses differ only in progress: nodes applying the current generation one after the
 * other (Ready False NodesPending in both, the same conditions otherwise, the same failed nodes).
 * Such a change may wait a little to be written together with the next.
 */
export function progressOnly(before: Partial<PolicyStatus>, after: PolicyStatus): boolean {
  const shape = (s: Partial<PolicyStatus>): string =>
    stableJson({
      g: s.observedGeneration,
      c: (s.conditions ?? []).map((c) => [c.type, c.status, c.reason]),
      f: s.failedNodes,
      w: s.nodesWithoutAgent,
    });
  const pendingBoth = [before, after].every((s) => s.conditions?.find((c) => c.type === 'Ready')?.reason === 'NodesPending');
  return pendingBoth && shape(before) === shape(after);
}

/** JSON with object keys sorted, to compare a computed status with the one the API server returns. */
export function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v && typeof v === 'object' && !(v instanceof Date)) {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableJson(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/** The status fields this operator owns, picked out of an object's current status. */
export function currentStatus(status: unknown): Partial<PolicyStatus> {
  const s = (status ?? {}) as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of ['observedGeneration', 'conditions', 'nodes', 'failedNodes', 'nodesWithoutAgent'])
    if (s[k] !== undefined) out[k] = s[k];
  return out as Partial<PolicyStatus>;
}
