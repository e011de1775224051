/**
 * Connection rate and bulk throughput between two network namespaces over a veth pair, with
 * no hook, with the marker, and (once the verifier exists) with marker + verifier in Enforce.
 * The traffic comes from bench/net/netbench.c; the hooks are attached by the real `netoken
 * agent` (test/lib/agent.ts), which is stopped once they are in place: the pinned hooks keep
 * working and the agent's own CPU use stays out of the numbers.
 *
 * Each configuration gets its own topology; runs alternate between configurations so that
 * drift in the machine's load falls on all of them alike.
 */
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { agentIn, policyYaml, type AgentRun } from '../test/lib/agent.js';
import { createTopology, exec, netnsPath, run, spawnIn, sweepStale, waitForExit, type Topology } from '../test/lib/netns.js';
import { NETBENCH, ensureBuilt, verifierMissing } from './artifacts.js';
import { figure, unavailable, type BenchResult, type Figure, type FigureSpec } from './report.js';

const CONN_PORT = 5001;
const SINK_PORT = 5002;
const PREFIX = 'ntbench-';

export interface ConnectionBenchOptions {
  /** length of one measurement */
  seconds: number;
  /** measurements per configuration and mode; the median is reported */
  runs: number;
  /** client threads in the parallel connection-rate mode */
  parallel: number;
  log?: (line: string) => void;
}

interface Attached {
  /** the agents' counters summed by name (marked, skipped_*, verify_*) */
  counters(): Promise<Record<string, number>>;
  cleanup(): Promise<void>;
}

interface ConnConfig {
  id: string;
  name: string;
  /**
   * The configuration needs something that may not be built yet: the reason when it is
   * known to be missing, else null; `attach` then throws NotYetAvailable if the parts do
   * not work together yet.
   */
  pending?: () => string | null;
  attach(t: Topology, label: string): Promise<Attached>;
  /** after the runs: a problem with the counters, given how many connections were opened */
  check?(counters: Record<string, number>, connections: number): string | null;
  /** what the counters show, in one line for the results */
  remark?(counters: Record<string, number>, connections: number): string;
  /** part of the bulk-throughput comparison */
  bulk: boolean;
  /** the bulk-throughput target against "no hook" (default: unchanged) */
  bulkTarget?: FigureSpec['target'];
  /** part of the connection-rate comparison (default true) */
  connections?: boolean;
  /** the connection-rate target against "no hook" */
  target?: FigureSpec['target'];
}

/** A configuration whose parts exist but do not work together yet (e.g. the agent attaches no verifier). */
class NotYetAvailable extends Error {}

/** Starts an agent on `ns` with one policy, waits for its hook, and stops it (the pinned hook stays). */
async function attachWithAgent(ns: string, label: string, spec: string, direction: 'egress' | 'ingress'): Promise<AgentRun> {
  const agent = agentIn(ns, label);
  try {
    agent.writePolicy(policyYaml([{ name: 'bench', spec }]));
    await agent.start(['--log-level', 'warn']);
    const s = await agent.waitStatus(
      (x) => x.ready || x.hookErrors.length > 0 || x.documentErrors.length > 0,
      30_000,
      'the agent to apply the policy',
    );
    if (!s.hooks.some((h) => h.direction === direction)) {
      throw new NotYetAvailable(
        `the agent attached no ${direction} hook (hook errors: ${JSON.stringify(s.hookErrors)}, document errors: ${JSON.stringify(s.documentErrors)})`,
      );
    }
    // The hooks stay when the agent stops; the counters checked after the runs prove they worked.
    await agent.stop('SIGTERM');
    return agent;
  } catch (err) {
    await agent.cleanup().catch(() => undefined);
    throw err;
  }
}

async function agentCounters(agents: AgentRun[]): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const a of agents) {
    for (const c of (await a.statusReport()).counters) out[c.counter] = (out[c.counter] ?? 0) + Number(c.value);
  }
  return out;
}

function attachedAgents(agents: AgentRun[]): Attached {
  return {
    counters: () => agentCounters(agents),
    cleanup: async () => {
      for (const a of agents) await a.cleanup();
    },
  };
}

const markerSpec = (t: Topology): string =>
  `interfaces: {names: [${t.client.dev}]}\negress:\n  destinations:\n    - {cidr: ${t.server.ipv4}/32, ports: [${CONN_PORT}, ${SINK_PORT}]}`;

/** One entry per configuration. */
export const CONFIGS: readonly ConnConfig[] = [
  {
    id: 'none',
    name: 'no hook',
    bulk: true,
    attach: async () => ({ counters: async () => ({}), cleanup: async () => undefined }),
  },
  {
    id: 'marker',
    name: 'marker',
    bulk: true,
    target: { kind: 'at least', ratio: 0.95 },
    attach: async (t, label) => attachedAgents([await attachWithAgent(t.client.ns, `${label}-c`, markerSpec(t), 'egress')]),
    check: (c, n) => ((c.marked ?? 0) >= n ? null : `the marker marked ${c.marked ?? 0} SYNs for ${n} connections`),
    remark: (c, n) =>
      `marker: ${c.marked ?? 0} SYNs marked for ${n} connections opened through it (a retransmitted SYN is marked again).`,
  },
  {
    // The verifier as auto attaches it on a veth: at tc, where it reads every received
    // packet's headers in place (a received GRO packet is one skb). It protects a port
    // nothing uses, so it runs on all the traffic and drops none of it.
    id: 'verifier',
    name: 'verifier (tc, Enforce on another port)',
    bulk: true,
    bulkTarget: { kind: 'at least', ratio: 0.95 },
    connections: false,
    pending: verifierMissing,
    attach: async (t, label) =>
      attachedAgents([
        await attachWithAgent(
          t.server.ns,
          `${label}-s`,
          `interfaces: {names: [${t.server.dev}]}\ningress: {action: Enforce, ports: [9]}`,
          'ingress',
        ),
      ]),
    remark: (c) => `verifier on every received packet: ${c.verify_dropped ?? 0} dropped, ${c.unreadable ?? 0} unreadable.`,
  },
  {
    id: 'marker-verifier',
    name: 'marker + verifier (Enforce)',
    bulk: false,
    pending: verifierMissing,
    attach: async (t, label) => {
      const marker = await attachWithAgent(t.client.ns, `${label}-c`, markerSpec(t), 'egress');
      try {
        const verifier = await attachWithAgent(
          t.server.ns,
          `${label}-s`,
          `interfaces: {names: [${t.server.dev}]}\ningress: {action: Enforce, ports: [${CONN_PORT}, ${SINK_PORT}]}`,
          'ingress',
        );
        return attachedAgents([marker, verifier]);
      } catch (err) {
        await marker.cleanup().catch(() => undefined);
        throw err;
      }
    },
    check: (c, n) =>
      (c.verify_valid ?? 0) >= n ? null : `the verifier accepted ${c.verify_valid ?? 0} SYNs for ${n} connections`,
    remark: (c, n) =>
      `marker + verifier: ${c.marked ?? 0} SYNs marked, ${c.verify_valid ?? 0} verified valid, ${c.verify_dropped ?? 0} dropped, for ${n} connections.`,
  },
];

/** Starts netbench's servers in the server namespace; resolves once both ports listen. */
/** netbench's server in the topology's server namespace, listening on `port` (and the sink port); resolves once it listens. */
export async function startServer(t: Topology, port = CONN_PORT): Promise<ChildProcess> {
  const child = spawnIn(t.server.ns, NETBENCH, ['serve', t.server.ipv4, String(port), String(SINK_PORT)]);
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (d: string) => (stderr += d));
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`netbench server in ${t.server.ns} did not start: ${stderr.trim()}`)),
        10_000,
      );
      lines.once('line', () => {
        clearTimeout(timer);
        resolve();
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`netbench server in ${t.server.ns} exited (${code}): ${stderr.trim()}`));
      });
    });
  } catch (err) {
    child.kill('SIGKILL');
    await waitForExit(child, 5_000);
    throw err;
  }
  return child;
}

async function netbench(t: Topology, args: string[], seconds: number): Promise<Record<string, unknown>> {
  const { stdout } = await run('nsenter', [`--net=${netnsPath(t.client.ns)}`, '--', NETBENCH, ...args], {
    timeoutMs: seconds * 1000 + 30_000,
  });
  return JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as Record<string, unknown>;
}

interface ConnRun {
  rate: number;
  connections: number;
  errors: number;
  firstError: string;
}

async function connectionRun(t: Topology, threads: number, seconds: number): Promise<ConnRun> {
  const r = await netbench(t, ['connect', t.server.ipv4, String(CONN_PORT), String(seconds), String(threads)], seconds);
  const connections = Number(r.connections);
  const elapsed = Number(r.seconds);
  if (!(connections > 0)) throw new Error(`no connection succeeded from ${t.client.ns}: ${JSON.stringify(r)}`);
  return { rate: connections / elapsed, connections, errors: Number(r.errors), firstError: String(r.firstError ?? '') };
}

/** Gbit/s of one connection, counted when the receiver has read it all. */
async function bulkRun(t: Topology, seconds: number): Promise<number> {
  const r = await netbench(t, ['send', t.server.ipv4, String(SINK_PORT), String(seconds)], seconds);
  const bytes = Number(r.bytes);
  if (!(bytes > 0)) throw new Error(`bulk transfer from ${t.client.ns} sent nothing: ${JSON.stringify(r)}`);
  return (bytes * 8) / Number(r.seconds) / 1e9;
}

interface Live {
  cfg: ConnConfig;
  topo: Topology;
  server: ChildProcess | null;
  attached: Attached | null;
  connections: number;
}

export async function runConnectionBench(opts: ConnectionBenchOptions): Promise<BenchResult> {
  const log = opts.log ?? ((): void => undefined);
  ensureBuilt();
  await sweepStale(PREFIX);
  const missing = new Map<string, string>();
  for (const c of CONFIGS) {
    const reason = c.pending?.() ?? null;
    if (reason !== null) missing.set(c.id, reason);
  }
  const live: Live[] = [];
  const details: Record<string, unknown> = {};
  try {
    for (const cfg of CONFIGS.filter((c) => !missing.has(c.id))) {
      // Offload left on: this measures speed, as veth runs by default (checksums are tested elsewhere).
      const topo = await createTopology({ name: `bench-${cfg.id}`, kind: 'pair', txChecksumOffload: true, prefix: PREFIX });
      const entry: Live = { cfg, topo, server: null, attached: null, connections: 0 };
      live.push(entry);
      await exec(topo.client.ns, 'sysctl', ['-q', '-w', 'net.ipv4.ip_local_port_range=1024 65535']);
      entry.server = await startServer(topo);
      try {
        entry.attached = await cfg.attach(topo, `bench-${cfg.id}`);
      } catch (err) {
        if (!(cfg.pending && err instanceof NotYetAvailable)) throw err;
        missing.set(cfg.id, err.message);
        live.pop();
        await removeLive(entry, log);
        continue;
      }
      log(`connections: "${cfg.name}" ready (${topo.client.ns} -> ${topo.server.ns})`);
    }

    const modes = [
      { id: 'sequential', benchmark: 'new connections, 1 client thread', threads: 1 },
      { id: 'parallel', benchmark: `new connections, ${opts.parallel} client threads`, threads: opts.parallel },
    ];
    const rates = new Map<string, number[]>();
    const bulk = new Map<string, number[]>();
    const errors: Record<string, { errors: number; firstError: string }> = {};
    for (let r = 0; r < opts.runs; r++) {
      const order = live.map((_, i) => live[(i + r) % live.length] as Live);
      for (const mode of modes) {
        for (const l of order.filter((x) => x.cfg.connections !== false)) {
          const m = await connectionRun(l.topo, mode.threads, opts.seconds);
          l.connections += m.connections;
          const key = `${mode.id}/${l.cfg.id}`;
          rates.set(key, [...(rates.get(key) ?? []), m.rate]);
          const e = errors[key] ?? { errors: 0, firstError: '' };
          errors[key] = { errors: e.errors + m.errors, firstError: e.firstError || m.firstError };
          log(`connections: run ${r + 1}/${opts.runs} ${mode.id} "${l.cfg.name}": ${Math.round(m.rate)}/s`);
        }
      }
      for (const l of order.filter((x) => x.cfg.bulk)) {
        const g = await bulkRun(l.topo, opts.seconds);
        l.connections += 1;
        bulk.set(l.cfg.id, [...(bulk.get(l.cfg.id) ?? []), g]);
        log(`bulk: run ${r + 1}/${opts.runs} "${l.cfg.name}": ${g.toFixed(2)} Gbit/s`);
      }
    }

    const counters: Record<string, Record<string, number>> = {};
    for (const l of live) {
      counters[l.cfg.id] = (await l.attached?.counters()) ?? {};
      const problem = l.cfg.check?.(counters[l.cfg.id] ?? {}, l.connections);
      if (problem)
        throw new Error(
          `connection benchmark "${l.cfg.name}" is not valid: ${problem}; counters: ${JSON.stringify(counters[l.cfg.id])}`,
        );
    }
    const remarks = live.flatMap((l) => (l.cfg.remark ? [l.cfg.remark(counters[l.cfg.id] ?? {}, l.connections)] : []));
    details.connectionErrors = errors;
    details.counters = counters;
    details.connectionsOpened = Object.fromEntries(live.map((l) => [l.cfg.id, l.connections]));

    const figures: Figure[] = [];
    const none = CONFIGS[0] as ConnConfig;
    for (const mode of modes) {
      const baseRuns = rates.get(`${mode.id}/${none.id}`) ?? [];
      const baseValue = figure({
        group: 'connection rate',
        benchmark: mode.benchmark,
        config: none.name,
        unit: 'conn/s',
        runs: baseRuns,
      }).value;
      for (const cfg of CONFIGS.filter((c) => c.connections !== false)) {
        const spec = {
          group: 'connection rate' as const,
          benchmark: mode.benchmark,
          config: cfg.name,
          unit: 'conn/s',
          baseline: cfg === none ? null : { benchmark: none.name, value: baseValue },
          target: cfg.target ?? null,
        };
        const reason = missing.get(cfg.id);
        if (reason !== undefined) {
          figures.push(unavailable(spec, reason));
          continue;
        }
        const e = errors[`${mode.id}/${cfg.id}`];
        const note = e && e.errors > 0 ? `${e.errors} failed connection attempts (${e.firstError})` : undefined;
        const runs = rates.get(`${mode.id}/${cfg.id}`) ?? [];
        figures.push(figure({ ...spec, runs, ...(cfg === none ? {} : { baselineRuns: baseRuns }), ...(note ? { note } : {}) }));
      }
    }
    const bulkBaseRuns = bulk.get(none.id) ?? [];
    const bulkBase = figure({
      group: 'bulk throughput',
      benchmark: '',
      config: none.name,
      unit: 'Gbit/s',
      runs: bulkBaseRuns,
    }).value;
    for (const cfg of CONFIGS.filter((c) => c.bulk)) {
      const runs = bulk.get(cfg.id) ?? [];
      const spec = {
        group: 'bulk throughput' as const,
        benchmark: `one established connection, ${opts.seconds} s`,
        config: cfg.name,
        unit: 'Gbit/s',
        baseline: cfg === none ? null : { benchmark: none.name, value: bulkBase },
        target: cfg === none ? null : (cfg.bulkTarget ?? { kind: 'unchanged' as const }),
      };
      const reason = missing.get(cfg.id);
      figures.push(
        reason !== undefined
          ? unavailable(spec, reason)
          : figure({ ...spec, runs, ...(cfg === none ? {} : { baselineRuns: bulkBaseRuns }) }),
      );
    }
    return { figures, details, remarks };
  } finally {
    for (const l of live) await removeLive(l, log);
  }
}

/** Detach, stop the server, remove the namespaces; failures are logged, not thrown over the error that got us here. */
async function removeLive(l: Live, log: (line: string) => void): Promise<void> {
  await l.attached?.cleanup().catch((err: unknown) => log(`cleanup of "${l.cfg.name}" failed: ${String(err)}`));
  if (l.server) {
    l.server.kill('SIGKILL');
    await waitForExit(l.server, 5_000);
  }
  await l.topo.destroy().catch((err: unknown) => log(`removing the namespaces of "${l.cfg.name}" failed: ${String(err)}`));
}
