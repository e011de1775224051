/**
 * The agent's Prometheus metrics: the BPF counters by policy, interface and reason (read
 * from the pinned per-CPU map at scrape time), whether the agent is ready, each hook it
 * applied and whether the kernel still runs it, which interfaces enforce, reconcile
 * durations and errors, and API watch restarts in cluster mode. Every series carries the
 * node's name. No label ever holds key material.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Agent } from './agent.js';
import type { Datapath } from './datapath.js';

export interface AgentMetrics {
  registry: Registry;
  reconciled(seconds: number, ok: boolean): void;
  watchRestarted(what: string): void;
  /** cluster mode: the API watches whose restarts are counted (each series starts at 0) */
  watching(names: readonly string[]): void;
  /** cluster mode: a TokenNodeState write of so many bytes */
  nodeStateWritten(bytes: number): void;
}

export interface AgentMetricsOptions {
  /** the node's name (cluster mode) or the host name (standalone): the `node` label of every series */
  node: string;
}

export function agentMetrics(datapath: Datapath, agent: () => Agent | undefined, opts: AgentMetricsOptions): AgentMetrics {
  const registry = new Registry();
  registry.setDefaultLabels({ node: opts.node });
  collectDefaultMetrics({ register: registry, prefix: 'netoken_agent_' });
  const reconcile = new Histogram({
    name: 'netoken_agent_reconcile_duration_seconds',
    help: 'Time to apply the desired state to the data path.',
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
    registers: [registry],
  });
  const errors = new Counter({
    name: 'netoken_agent_reconcile_errors_total',
    help: 'Reconciles that failed.',
    registers: [registry],
  });
  const restarts = new Counter({
    name: 'netoken_agent_watch_restarts_total',
    help: 'API watches that failed and were restarted, or whose cache had to be listed again (410 Gone).',
    labelNames: ['resource'],
    registers: [registry],
  });
  const reportWrites = new Counter({
    name: 'netoken_agent_node_state_writes_total',
    help: "Writes of this node's TokenNodeState (cluster mode).",
    registers: [registry],
  });
  const reportBytes = new Counter({
    name: 'netoken_agent_node_state_write_bytes_total',
    help: 'Bytes of the TokenNodeState status written (cluster mode).',
    registers: [registry],
  });
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
        this.inc(
          {
            policy: names.get(r.policyId) ?? (r.policyId ? `#${r.policyId}` : ''),
            interface: ifs.get(r.ifindex) ?? `if${r.ifindex}`,
            reason: r.counter,
          },
          Number(r.value),
        );
      }
    },
  });
  new Gauge({
    name: 'netoken_agent_ready',
    help: '1 when the agent has applied its policies since the last change (what /readyz says), else 0.',
    registers: [registry],
    collect() {
      this.set(agent()?.isReady() ? 1 : 0);
    },
  });
  new Gauge({
    name: 'netoken_agent_hook_attached',
    help: 'One series per hook the policies call for on this node: 1 while the kernel runs it, 0 when attaching failed (mode "failed") or it was removed behind the agent\'s back.',
    labelNames: ['interface', 'direction', 'mode'],
    registers: [registry],
    collect() {
      this.reset();
      const st = agent()?.lastStatus();
      for (const h of st?.hooks ?? [])
        this.set({ interface: h.name, direction: h.direction, mode: h.mode }, datapath.isLive(h) ? 1 : 0);
      for (const e of st?.hookErrors ?? []) this.set({ interface: e.name, direction: e.direction, mode: 'failed' }, 0);
    },
  });
  new Gauge({
    name: 'netoken_agent_enforcing',
    help: 'One series per policy verifying on an interface: 1 where it enforces (drops SYNs without a valid token), 0 where it only monitors.',
    labelNames: ['policy', 'interface'],
    registers: [registry],
    collect() {
      this.reset();
      const a = agent();
      const applied = a?.appliedPolicies();
      for (const h of a?.lastStatus()?.hooks ?? []) {
        if (h.direction !== 'ingress') continue;
        for (const p of h.policies)
          this.set({ policy: p, interface: h.name }, applied?.get(p)?.spec.ingress?.action === 'Enforce' ? 1 : 0);
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
    watching(names) {
      for (const w of names) restarts.labels(w).inc(0);
    },
    nodeStateWritten(bytes) {
      reportWrites.inc();
      reportBytes.inc(bytes);
    },
  };
}
