/**
 * The operator's Prometheus metrics, in a registry of its own: reconciles, watches, the
 * leader Lease, key Secrets, and each policy's conditions and node counts as its status
 * says (read from the cache at scrape time, so every replica, leader or standby, reports the
 * same). Labels carry names, kinds and outcomes only, never other object content (and never
 * key material).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ReconcileOutcome } from '../lib/workqueue.js';
import type { ReconcileKind } from './keys.js';

/** What the policy gauges need of a TokenPolicy: its name and the status the operator wrote. */
export interface PolicyStatusView {
  name: string;
  conditions: readonly { type: string; status: string; reason?: string }[];
  nodes?: { selected?: number; ready?: number; failed?: number };
}

export class OperatorMetrics {
  readonly registry = new Registry();
  readonly reconcileDuration: Histogram<'kind' | 'result'>;
  readonly reconcileErrors: Counter<'kind'>;
  readonly watchRestarts: Counter<'resource'>;
  readonly leader: Gauge;
  readonly queueDepth: Gauge;
  readonly keyRotations: Counter;
  readonly keyRotationSteps: Counter<'step'>;
  readonly secretsCreated: Counter;
  private readonly sources: {
    leader: () => number;
    queueDepth: () => number;
    policies: () => readonly PolicyStatusView[] | undefined;
  } = {
    leader: () => 0,
    queueDepth: () => 0,
    policies: () => undefined,
  };

  constructor(opts: { processMetrics?: boolean } = {}) {
    const registers = [this.registry];
    this.reconcileDuration = new Histogram({
      name: 'netoken_reconcile_duration_seconds',
      help: 'Time taken by one reconcile, by kind of object (policy, nodestate) and result (success, error, conflict: the object changed since it was read, retried at once).',
      labelNames: ['kind', 'result'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.reconcileErrors = new Counter({
      name: 'netoken_reconcile_errors_total',
      help: 'Reconciles that failed and were retried, by kind of object.',
      labelNames: ['kind'],
      registers,
    });
    this.watchRestarts = new Counter({
      name: 'netoken_watch_restarts_total',
      help: 'API watches that failed and were restarted, or whose cache had to be listed again (410 Gone), by watched resource.',
      labelNames: ['resource'],
      registers,
    });
    const sources = this.sources;
    this.leader = new Gauge({
      name: 'netoken_operator_leader',
      help: '1 while this operator holds the leader Lease and reconciles, 0 while it stands by.',
      registers,
      collect() {
        this.set(sources.leader());
      },
    });
    this.queueDepth = new Gauge({
      name: 'netoken_reconcile_queue_depth',
      help: 'Object keys waiting to be reconciled.',
      registers,
      collect() {
        this.set(sources.queueDepth());
      },
    });
    this.keyRotations = new Counter({
      name: 'netoken_key_rotations_total',
      help: 'Key Secrets whose current key was replaced: markers switched to a published key, or a key was revoked.',
      registers,
    });
    this.keyRotationSteps = new Counter({
      name: 'netoken_key_rotation_steps_total',
      help: 'Key rotation steps written to key Secrets: publish (a next key for verifiers), switch (markers sign with it), retire (the previous key dropped), revoke (replaced at once).',
      labelNames: ['step'],
      registers,
    });
    this.secretsCreated = new Counter({
      name: 'netoken_key_secrets_created_total',
      help: 'Key Secrets generated because a policy referred to one that did not exist.',
      registers,
    });
    new Gauge({
      name: 'netoken_policy_condition',
      help: 'One series per condition of each TokenPolicy, as its status says: 1 for its current type, status and reason (Ready/Degraded, True/False, e.g. NodesFailing, KeyRotationStalled). None before the caches have listed.',
      labelNames: ['policy', 'type', 'status', 'reason'],
      registers,
      collect() {
        this.reset();
        for (const p of sources.policies() ?? []) {
          for (const c of p.conditions) this.set({ policy: p.name, type: c.type, status: c.status, reason: c.reason ?? '' }, 1);
        }
      },
    });
    const nodeGauge = (which: 'selected' | 'ready' | 'failed', help: string): void => {
      new Gauge({
        name: `netoken_policy_nodes_${which}`,
        help,
        labelNames: ['policy'],
        registers,
        collect() {
          this.reset();
          for (const p of sources.policies() ?? []) if (p.nodes) this.set({ policy: p.name }, p.nodes[which] ?? 0);
        },
      });
    };
    nodeGauge('selected', 'Nodes a TokenPolicy selects (status.nodes.selected).');
    nodeGauge('ready', 'Selected nodes that applied the current generation of a TokenPolicy (status.nodes.ready).');
    nodeGauge('failed', 'Selected nodes that failed to apply a TokenPolicy (status.nodes.failed).');
    for (const watch of ['tokenpolicies', 'tokennodestates', 'nodes', 'secrets']) this.watchRestarts.labels(watch).inc(0);
    for (const kind of ['policy', 'nodestate'] satisfies ReconcileKind[]) this.reconcileErrors.labels(kind).inc(0);
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'netoken_operator_' });
  }

  /**
   * Where the gauges read their values at scrape time; `policies` answers undefined until the
   * caches have listed (a half-filled cache would report policies as gone).
   */
  setSources(s: {
    leader: () => number;
    queueDepth: () => number;
    policies: () => readonly PolicyStatusView[] | undefined;
  }): void {
    this.sources.leader = s.leader;
    this.sources.queueDepth = s.queueDepth;
    this.sources.policies = s.policies;
  }

  /** A reconcile of a key of `kind` took `seconds`; a conflict is retried at once and is no error. */
  observeReconcile(kind: ReconcileKind, seconds: number, outcome: ReconcileOutcome): void {
    this.reconcileDuration.labels(kind, outcome).observe(seconds);
    if (outcome === 'error') this.reconcileErrors.labels(kind).inc();
  }
}
