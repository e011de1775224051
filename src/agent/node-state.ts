/**
 * TokenNodeState: this node's report, written only by this node's agent (owner: the
 * Node, so it goes with the Node). Writes are rate-limited: the status is written when
 * something other than counters changed, and counters at most once per counterInterval.
 */
import { ApiException, CustomObjectsApi, type KubeConfig, type V1Node } from '@kubernetes/client-node';
import { release } from 'node:os';
import { type Condition, setCondition } from '../lib/conditions.js';
import { describeError, mergePatch } from '../lib/kube.js';
import type { Logger } from '../lib/log.js';
import { VERSION } from '../lib/package.js';
import { API, API_GROUP, API_VERSION } from '../lib/types.js';
import type { AgentStatus } from './agent.js';

export interface NodeStateInterface {
  name: string;
  ifindex?: number;
  direction: 'Egress' | 'Ingress';
  attachMode?: string;
  programId?: number;
  state: 'Attached' | 'Pending' | 'Failed';
  reason?: string;
}

export interface NodeStatePolicy {
  name: string;
  generation: number;
  /** the key generations this node signs with and accepts (when the Secret numbers its keys) */
  keys?: { signs: number; accepts: number[] };
  interfaces: NodeStateInterface[];
  counters: Record<string, number>;
  errors: { reason: string; message: string }[];
}

export interface NodeStateStatus {
  agent: { version: string; kernelRelease: string; tcx: boolean };
  conditions: Condition[];
  countersUpdatedAt?: string;
  policies: NodeStatePolicy[];
  /** counters of interfaces that belong to no policy, where not zero (unreadable frames, ...) */
  interfaces: { name: string; ifindex: number; counters: Record<string, number> }[];
}

/** Pure: the status a node reports for an agent status (policies not selecting it are left out). */
export function nodeStateStatus(s: AgentStatus, prev: Condition[], now = new Date()): NodeStateStatus {
  const policies: NodeStatePolicy[] = [];
  for (const p of s.policies.filter((x) => x.selected)) {
    const interfaces: NodeStateInterface[] = [];
    for (const h of s.hooks.filter((x) => x.policies.includes(p.name))) {
      interfaces.push({ name: h.name, ifindex: h.ifindex, direction: h.direction === 'egress' ? 'Egress' : 'Ingress', attachMode: h.mode, programId: h.progId, state: 'Attached' });
    }
    for (const e of s.hookErrors.filter((x) => p.interfaces.includes(x.name))) {
      interfaces.push({ name: e.name, ifindex: e.ifindex, direction: e.direction === 'egress' ? 'Egress' : 'Ingress', state: 'Failed', reason: e.reason });
    }
    const errors = [...p.errors, ...s.hookErrors.filter((x) => p.interfaces.includes(x.name)).map((e) => ({ reason: e.reason, message: `${e.name}: ${e.message}` }))];
    const counters: Record<string, number> = {};
    for (const [k, v] of Object.entries(p.counters)) counters[k] = Number(v);
    policies.push({ name: p.name, generation: p.generation, ...(p.keys ? { keys: p.keys } : {}), interfaces, counters, errors });
  }
  policies.sort((a, b) => a.name.localeCompare(b.name));
  const failing = policies.filter((p) => p.errors.length);
  let conditions = setCondition(prev, failing.length
    ? { type: 'Ready', status: 'False', reason: 'PoliciesFailing', message: failing.map((p) => `${p.name}: ${p.errors[0]!.reason}`).join('; ').slice(0, 1000) }
    : { type: 'Ready', status: 'True', reason: 'AllPoliciesApplied', message: `${policies.length} policies applied` }, now);
  conditions = setCondition(conditions, failing.length
    ? { type: 'Degraded', status: 'True', reason: failing[0]!.errors[0]!.reason, message: failing.map((p) => `${p.name}: ${p.errors.map((e) => e.message).join(', ')}`).join('; ').slice(0, 1000) }
    : { type: 'Degraded', status: 'False', reason: 'AsExpected', message: '' }, now);
  return {
    agent: { version: VERSION, kernelRelease: release(), tcx: s.hooks.some((h) => h.mode === 'tcx') },
    conditions,
    policies,
    interfaces: s.interfaces.map((i) => ({ name: i.name, ifindex: i.ifindex, counters: Object.fromEntries(Object.entries(i.counters).map(([k, v]) => [k, Number(v)])) })),
  };
}

function withoutCounters(s: NodeStateStatus): string {
  return JSON.stringify({ ...s, countersUpdatedAt: undefined, interfaces: undefined, policies: s.policies.map((p) => ({ ...p, counters: undefined })) });
}

export interface NodeStateWriterOptions {
  kc: KubeConfig;
  nodeName: string;
  log: Logger;
  counterIntervalMs: number;
}

export class NodeStateWriter {
  private readonly api: CustomObjectsApi;
  private lastShape = '';
  private lastCounters = '';
  private lastCounterWrite = 0;
  private conditions: Condition[] = [];
  private exists = false;
  writes = 0;

  constructor(private readonly o: NodeStateWriterOptions) {
    this.api = o.kc.makeApiClient(CustomObjectsApi);
  }

  /** Write when due; returns true when a write happened. Errors are logged, never thrown. */
  async maybeWrite(s: AgentStatus, node: V1Node | undefined, now = Date.now()): Promise<boolean> {
    const status = nodeStateStatus(s, this.conditions, new Date(now));
    const shape = withoutCounters(status);
    const counters = JSON.stringify([status.policies.map((p) => p.counters), status.interfaces]);
    const shapeChanged = shape !== this.lastShape;
    const countersDue = counters !== this.lastCounters && now - this.lastCounterWrite >= this.o.counterIntervalMs;
    if (!shapeChanged && !countersDue) return false;
    status.countersUpdatedAt = new Date(now).toISOString().replace(/\.\d+Z$/, 'Z');
    try {
      await this.ensureObject(node);
      await this.api.patchClusterCustomObjectStatus(
        { group: API_GROUP, version: API_VERSION, plural: 'tokennodestates', name: this.o.nodeName, body: { status } },
        mergePatch,
      );
      this.lastShape = shape;
      this.lastCounters = counters;
      this.lastCounterWrite = now;
      this.conditions = status.conditions;
      this.writes++;
      this.o.log.debug('TokenNodeState written', { node: this.o.nodeName, policies: status.policies.length });
      return true;
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) this.exists = false;
      this.o.log.warn('writing TokenNodeState failed; will retry', { node: this.o.nodeName, error: describeError(err) });
      return false;
    }
  }

  private async ensureObject(node: V1Node | undefined): Promise<void> {
    if (this.exists) return;
    const metadata: Record<string, unknown> = { name: this.o.nodeName, labels: { 'app.kubernetes.io/managed-by': 'netoken-agent' } };
    if (node?.metadata?.uid) {
      metadata.ownerReferences = [{ apiVersion: 'v1', kind: 'Node', name: this.o.nodeName, uid: node.metadata.uid }];
    }
    try {
      await this.api.createClusterCustomObject({ group: API_GROUP, version: API_VERSION, plural: 'tokennodestates', body: { apiVersion: API, kind: 'TokenNodeState', metadata } });
    } catch (err) {
      if (!(err instanceof ApiException && err.code === 409)) throw err;
    }
    this.exists = true;
  }
}
