/**
 * `npm run bench`: every benchmark, a table on stdout, and the recorded results in
 * bench/results/latest.json and bench/results/latest.md (the README links the latter).
 *
 *   node dist/bench/run.js [--only packet|connections|flood|controlplane|scale] [--repeat N] [--runs N]
 *                          [--seconds S] [--parallel N] [--out DIR] [--quick]
 *
 * --only scale runs the control plane's cluster-scale rows (bench/controlplane/scale.ts: 1000
 * policies on one node and on 1000 nodes, steady state, a node joining) and its map update rows
 * of the largest prefix count, without the other control-plane rows.
 *
 * --quick runs everything with tiny counts, to see that it works; its numbers mean nothing,
 * so it writes nothing unless --out is given.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { binding } from '../src/native/binding.js';
import { runConnectionBench, type ConnectionBenchOptions } from './connections.js';
import { runPacketBench, type PacketBenchOptions } from './packet.js';
import { runFloodBench, type FloodBenchOptions } from './flood.js';
import { runControlPlaneBench, type ControlPlaneBenchOptions } from './controlplane.js';
import {
  ROOT,
  describeMachine,
  loadAverage,
  textTable,
  writeResults,
  type BenchResult,
  type Figure,
  type Results,
} from './report.js';

export interface BenchOptions {
  packet: Omit<PacketBenchOptions, 'log'> | null;
  connections: Omit<ConnectionBenchOptions, 'log'> | null;
  flood: Omit<FloodBenchOptions, 'log'> | null;
  controlplane: Omit<ControlPlaneBenchOptions, 'log'> | null;
  log?: (line: string) => void;
}

export const DEFAULTS: {
  packet: Omit<PacketBenchOptions, 'log'>;
  connections: Omit<ConnectionBenchOptions, 'log'>;
  flood: Omit<FloodBenchOptions, 'log'>;
  controlplane: Omit<ControlPlaneBenchOptions, 'log'>;
} = {
  // 9 runs: the interval of the median then leaves out the lowest and the highest run.
  // 9 runs at least; rows whose verdict is not decided by then are run again, up to 60 runs or 120 s per trie size.
  packet: { repeat: 1_000_000, runs: 9, maxRuns: 60, seconds: 120, prefixCounts: [1, 1000, 100_000], singleShots: 1001 },
  // Short runs, many of them: the configurations alternate every second, so a change in the
  // load of a shared machine hits both sides of most pairs.
  connections: { seconds: 1, runs: 15, parallel: 4 },
  // 3 configurations x 9 floods of 2 s, alternating: about 65 s with the setup; while the
  // verifier's verdict is undecided, it and the no-op drop go on, up to 40 floods or 300 s.
  flood: { seconds: 2, runs: 9, maxRuns: 40, budgetSeconds: 300 },
  // 20 applies (their p99 is the largest), 8 s windows, 1 000 simulated nodes: several minutes, most of it
  // the control plane settling 1 000 policies and the API server taking 1 000 node reports per edit.
  controlplane: {
    applies: 20,
    loadPolicies: 1000,
    windowSeconds: 8,
    prefixCounts: [10_000, 100_000],
    mapRuns: 3,
    simulatedNodes: 1000,
    aggregationRuns: 2,
    // 1000 policies on 1000 nodes and a 90 s steady-state window, on a cluster of its own: 10 minutes on a busy
    // 2-CPU machine, most of it the API server taking 999 reports of 1000 policies (61 MiB).
    scale: { policies: 1000, nodes: 1000, steadySeconds: 90, memorySeconds: 8 },
  },
};

export const QUICK: typeof DEFAULTS = {
  packet: { repeat: 10_000, runs: 1, maxRuns: 2, seconds: 5, prefixCounts: [1, 100], singleShots: 11 },
  connections: { seconds: 0.3, runs: 1, parallel: 2 },
  flood: { seconds: 0.5, runs: 1, maxRuns: 2, budgetSeconds: 5 },
  controlplane: {
    applies: 3,
    loadPolicies: 10,
    windowSeconds: 1,
    prefixCounts: [1000],
    mapRuns: 1,
    simulatedNodes: 20,
    aggregationRuns: 1,
    scale: { policies: 20, nodes: 10, steadySeconds: 3, memorySeconds: 1 },
  },
};

export async function runBenchmarks(opts: BenchOptions): Promise<Results> {
  const log = opts.log ?? ((): void => undefined);
  const started = new Date();
  const loadStart = loadAverage();
  const figures: Figure[] = [];
  const details: Record<string, unknown> = {};
  const remarks: string[] = [];
  const add = async (section: string, run: () => Promise<BenchResult>): Promise<void> => {
    const r = await run();
    figures.push(...r.figures);
    details[section] = r.details;
    remarks.push(...r.remarks);
  };
  const { packet, connections, flood, controlplane } = opts;
  if (packet) await add('packet', () => runPacketBench({ ...packet, log }));
  if (connections) await add('connections', () => runConnectionBench({ ...connections, log }));
  if (flood) await add('flood', () => runFloodBench({ ...flood, log }));
  if (controlplane) await add('controlplane', () => runControlPlaneBench({ ...controlplane, log }));
  return {
    startedAt: started.toISOString(),
    durationSeconds: (Date.now() - started.getTime()) / 1000,
    machine: describeMachine(binding().libbpfVersion(), loadStart),
    parameters: { packet: opts.packet, connections: opts.connections, flood: opts.flood, controlplane: opts.controlplane },
    figures,
    details,
    remarks,
  };
}

function positive(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!(n > 0)) throw new Error(`--${name} must be a positive number, got "${text}"`);
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      only: { type: 'string' },
      repeat: { type: 'string' },
      runs: { type: 'string' },
      seconds: { type: 'string' },
      parallel: { type: 'string' },
      out: { type: 'string' },
      quick: { type: 'boolean', default: false },
    },
  });
  const sections = ['packet', 'connections', 'flood', 'controlplane', 'scale'];
  if (values.only !== undefined && !sections.includes(values.only)) {
    throw new Error(`--only must be one of ${sections.map((s) => `"${s}"`).join(', ')}, got "${values.only}"`);
  }
  const want = (section: string): boolean => values.only === undefined || values.only === section;
  const base = values.quick ? QUICK : DEFAULTS;
  const packet = {
    ...base.packet,
    repeat: Math.round(positive('repeat', values.repeat, base.packet.repeat)),
    runs: Math.round(positive('runs', values.runs, base.packet.runs)),
  };
  const connections = {
    ...base.connections,
    seconds: positive('seconds', values.seconds, base.connections.seconds),
    runs: Math.round(positive('runs', values.runs, base.connections.runs)),
    parallel: Math.round(positive('parallel', values.parallel, base.connections.parallel)),
  };
  const flood = {
    ...base.flood,
    seconds: positive('seconds', values.seconds, base.flood.seconds),
    runs: Math.round(positive('runs', values.runs, base.flood.runs)),
  };
  const results = await runBenchmarks({
    packet: want('packet') ? packet : null,
    connections: want('connections') ? connections : null,
    flood: want('flood') ? flood : null,
    controlplane:
      values.only === 'scale' ? { ...base.controlplane, scaleOnly: true } : want('controlplane') ? base.controlplane : null,
    log: (line) => console.error(`bench: ${line}`),
  });
  const m = results.machine;
  console.log(
    `\n${m.cpuModel}, ${m.nproc} CPUs, kernel ${m.kernel}, load average ${m.loadAverageStart.join(' ')} -> ${m.loadAverageEnd.join(' ')}; ` +
      `${Math.round(results.durationSeconds)} s\n`,
  );
  console.log(textTable(results.figures));
  if (results.remarks.length > 0) console.log(`\n${results.remarks.map((l) => `- ${l}`).join('\n')}`);
  const out = values.out ?? (values.quick ? undefined : path.join(ROOT, 'bench/results'));
  if (out) {
    const files = writeResults(out, results);
    console.log(`\nwrote ${path.relative(process.cwd(), files.json)} and ${path.relative(process.cwd(), files.md)}`);
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    console.error(`bench: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  });
}
