/**
 * TokenPolicy status from the nodes' reports, as a pure function: which nodes the policy
 * selects, which of them applied the current generation, which failed and why, and the
 * Ready and Degraded conditions that sum it up; and the KeyRotation condition.
 */
import { type Condition, setCondition } from '../lib/conditions.js';
import { type LabelSelector, selectorMatches } from '../lib/types.js';

export const MAX_FAILED_NODES = 10;
const MAX_MESSAGE = 1024;

export interface NodeLike {
  metadata?: { name?: string; labels?: Record<string, string> };
}

export interface NodeStatePolicyLike {
  name: string;
  generation?: number;
  /** the key generations the node signs with and accepts (rotation.ts) */
  keys?: { signs: number; accepts: number[] };
  interfaces?: { name: string; direction?: string; state?: string; reason?: string }[];
  errors?: { reason: string; message?: string }[];
}

export interface NodeStateLike {
  metadata?: {
    name?: string;
    uid?: string;
    creationTimestamp?: string | Date;
    managedFields?: { time?: string | Date }[];
  };
  status?: { countersUpdatedAt?: string; policies?: NodeStatePolicyLike[] };
}

export interface FailedNode {
  node: string;
  reason: string;
  message: string;
}

export interface PolicyStatus {
  observedGeneration: number;
  conditions: Condition[];
  nodes: { selected: number; ready: number; failed: number };
  failedNodes: FailedNode[];
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
  selector: LabelSelector;
  nodes: readonly NodeLike[];
  nodeStates: readonly NodeStateLike[];
  problem?: PolicyProblem;
  /** the KeyRotation condition (rotation.ts), when the key Secret could be read */
  keyRotation?: { status: 'True' | 'False'; reason: string; message: string };
  /** nodes a key rotation waits for past its stall timeout: Degraded, KeyRotationStalled */
  rotationStalled?: readonly string[];
  /** the conditions in the current status, so transition times survive */
  previous?: readonly Condition[];
  now?: Date;
}

/** The entry a node's report has for a policy, if any. */
export function policyEntry(ns: NodeStateLike | undefined, policy: string): NodeStatePolicyLike | undefined {
  return ns?.status?.policies?.find((p) => p.name === policy);
}

/** Why a node's entry for a policy counts as failed, or undefined when it does not. */
export function entryFailure(entry: NodeStatePolicyLike): { reason: string; message: string } | undefined {
  const err = entry.errors?.[0];
  if (err) {
    const more = (entry.errors?.length ?? 1) > 1 ? ` (and ${(entry.errors?.length ?? 1) - 1} more)` : '';
    return { reason: err.reason, message: `${err.message ?? err.reason}${more}` };
  }
  const bad = entry.interfaces?.find((i) => i.state === 'Failed');
  if (bad) return { reason: bad.reason || 'AttachFailed', message: `${bad.name}${bad.direction ? ` (${bad.direction})` : ''}: not attached` };
  return undefined;
}

function clip(s: string, n = MAX_MESSAGE): string {
  return s.length <= n ? s : `${s.slice(0, n - 3)}...`;
}

function listNames(names: string[], shown = 3): string {
  const head = names.slice(0, shown).join(', ');
  return names.length > shown ? `${head} and ${names.length - shown} more` : head;
}

export function aggregateStatus(input: AggregateInput): PolicyStatus {
  const { name, generation } = input;
  const now = input.now ?? new Date();
  const states = new Map<string, NodeStateLike>();
  for (const s of input.nodeStates) if (s.metadata?.name) states.set(s.metadata.name, s);

  const selected: string[] = [];
  const ready: string[] = [];
  const pending: string[] = [];
  const failed: FailedNode[] = [];
  for (const n of input.nodes) {
    const node = n.metadata?.name;
    if (!node || !selectorMatches(input.selector, n.metadata?.labels ?? {})) continue;
    selected.push(node);
    const entry = policyEntry(states.get(node), name);
    const failure = entry && entryFailure(entry);
    if (failure) failed.push({ node, reason: failure.reason, message: clip(failure.message, 512) });
    else if (entry && entry.generation === generation) ready.push(node);
    else pending.push(node);
  }
  failed.sort((a, b) => a.node.localeCompare(b.node));
  pending.sort();

  const nSel = selected.length;
  const failText = `${failed.length} of ${nSel} selected node${nSel === 1 ? '' : 's'} failed to apply the policy: ${listNames(failed.map((f) => `${f.node} (${f.reason})`))}`;
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
    if (input.problem.degraded) degraded = { type: 'Degraded', status: 'True', reason: input.problem.reason, message: input.problem.message };
  } else if (nSel === 0) {
    ready_ = { type: 'Ready', status: 'False', reason: 'NoNodesSelected', message: 'spec.nodeSelector matches no node' };
  } else if (failed.length) {
    ready_ = { type: 'Ready', status: 'False', reason: 'NodesFailing', message: failText };
  } else if (pending.length) {
    ready_ = {
      type: 'Ready',
      status: 'False',
      reason: 'NodesPending',
      message: `${ready.length} of ${nSel} selected node${nSel === 1 ? '' : 's'} applied generation ${generation}; waiting for ${listNames(pending)}`,
    };
  } else {
    ready_ = { type: 'Ready', status: 'True', reason: 'AllNodesReady', message: `applied on all ${nSel} selected node${nSel === 1 ? '' : 's'} at generation ${generation}` };
  }
  let conditions = setCondition(input.previous ?? [], { ...ready_, message: clip(ready_.message), observedGeneration: generation }, now);
  conditions = setCondition(conditions, { ...degraded, message: clip(degraded.message), observedGeneration: generation }, now);
  if (input.keyRotation) conditions = setCondition(conditions, { type: 'KeyRotation', ...input.keyRotation, message: clip(input.keyRotation.message), observedGeneration: generation }, now);
  // Other condition types someone else set are kept as they are.
  return {
    observedGeneration: generation,
    conditions,
    nodes: { selected: nSel, ready: ready.length, failed: failed.length },
    failedNodes: failed.slice(0, MAX_FAILED_NODES),
  };
}

/** JSON with object keys sorted, to compare a computed status with the one the API server returns. */
export function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v && typeof v === 'object' && !(v instanceof Date)) {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o).filter((k) => o[k] !== undefined).sort().map((k) => `${JSON.stringify(k)}:${stableJson(o[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

/** The status fields this operator owns, picked out of an object's current status. */
export function currentStatus(status: unknown): Partial<PolicyStatus> {
  const s = (status ?? {}) as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of ['observedGeneration', 'conditions', 'nodes', 'failedNodes']) if (s[k] !== undefined) out[k] = s[k];
  return out as Partial<PolicyStatus>;
}
