/**
 * The agent's Prometheus metrics: the BPF counters by policy, interface and reason (read
 * from the pinned per-CPU map at scrape time), reconcile durations and errors, and API
 * watch restarts in cluster mode.
 */
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Agent } from './agent.js';
import type { Datapath } from './datapath.js';

export interface AgentMetrics {
  registry: Registry;
  reconciled(seconds: number, ok: boolean): void;
  watchRestarted(what: string): void;
}

export function agentMetrics(datapath: Datapath, agent: () => Agent | undefined): AgentMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'netoken_agent_' });
  const reconcile = new Histogram({
    name: 'netoken_agent_reconcile_duration_seconds',
    help: 'Time to apply the desired state to the data path.',
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
    registers: [registry],
  });
  const errors = new Counter({ name: 'netoken_agent_reconcile_errors_total', help: 'Reconciles that failed.', registers: [registry] });
  const restarts = new Counter({ name: 'netoken_agent_watch_restarts_total', help: 'API watches restarted after an error or for a periodic re-list.', labelNames: ['resource'], registers: [registry] });
  new Counter({
    name: 'netoken_packets_total',
    help: 'Packets counted by the BPF programs, by policy, interface and reason (marked, skipped_*, verify_*).',
    labelNames: ['policy', 'interface', 'reason'],
    registers: [registry],
    collect() {
      this.reset();
      const st = agent()?.lastStatus();
      const names = new Map((st?.policies ?? []).filter((p) => p.id).map((p) => [p.id, p.name]));
      const ifs = new Map((st?.hooks ?? []).map((h) => [h.ifindex, h.name]));
      for (const r of datapath.counters()) {
        this.inc({ policy: names.get(r.policyId) ?? (r.policyId ? `#${r.policyId}` : ''), interface: ifs.get(r.ifindex) ?? `if${r.ifindex}`, reason: r.counter }, Number(r.value));
      }
    },
  });
  return {
    registry,
    reconciled(seconds, ok) {
      reconcile.observe(seconds);
      if (!ok) errors.inc();
    },
    watchRestarted(what) {
      restarts.inc({ resource: what });
    },
  };
}
