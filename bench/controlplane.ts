/**
 * Control-plane benchmarks: how fast a policy change reaches the wire and leaves it, what the
 * agent and the operator cost in memory and CPU, how long the data path takes to write large
 * destination sets, and how fast the operator rolls many node reports up into a policy's status.
 *
 * The cluster rows run the real processes against a real API server: a TestCluster (etcd and
 * kube-apiserver from test/k8s/build-tools.sh) with the Helm chart's RBAC, `netoken operator` on
 * the host, and a cluster-mode `netoken agent` in a network namespace that stands for the node
 * (it reaches the API server through a loopback bridge) with a veth to a peer namespace where
 * the SYNs are captured. The map rows drive the agent's Datapath class in a child process inside
 * a namespace of their own. Every token is random, made for the run and never logged: the run
 * fails if one shows up in the agent's or the operator's output.
 *
 * One file a benchmark, in bench/controlplane/: map-update.ts (with the child process it runs,
 * map-update-child.ts), aggregation.ts, resources.ts and apply-to-wire.ts; session.ts starts
 * the cluster the last three share. scale.ts runs last, on a cluster of its own: 1000 policies
 * on one node and on 1000 nodes (999 simulated), a steady-state window and a node joining
 * (10 minutes on a busy 2-CPU machine, most of it the API server taking the simulated reports).
 * This file runs them in order and gathers their rows.
 *
 * This benchmark alone: `node dist/bench/run.js --only controlplane` (`npm run bench` runs all);
 * the cluster-scale rows alone, with the map update rows of the largest prefix count:
 * `node dist/bench/run.js --only scale`.
 */
import { sweepStale } from '../test/lib/netns.js';
import { ensureBuilt } from './artifacts.js';
import { round, type BenchResult, type Figure } from './report.js';
import { aggregationFigures, clusterAggregation, pureAggregation } from './controlplane/aggregation.js';
import { applyToWire, wireFigures } from './controlplane/apply-to-wire.js';
import { PREFIX } from './controlplane/common.js';
import { mapFigures, runMapBench } from './controlplane/map-update.js';
import { nodeBaselines, resourceFigures, resources, standaloneUsage } from './controlplane/resources.js';
import { SCALE_COUNTER_INTERVAL, runScale, scaleFigures, type ScaleOptions } from './controlplane/scale.js';
import { Session } from './controlplane/session.js';

export interface ControlPlaneBenchOptions {
  /** kubectl apply → token on the wire samples (each also gives a delete → hook gone sample) */
  applies: number;
  /** TokenPolicies applied for the "loaded" memory and CPU rows */
  loadPolicies: number;
  /** length of each memory and CPU window */
  windowSeconds: number;
  /** destination prefixes of the map update rows */
  prefixCounts: number[];
  /** runs of each map update row */
  mapRuns: number;
  /** simulated nodes (Node + TokenNodeState) of the status aggregation rows */
  simulatedNodes: number;
  /** policy edits whose status roll-up is timed */
  aggregationRuns: number;
  /** the cluster-scale rows (scale.ts) */
  scale: ScaleOptions;
  /** only the cluster-scale rows and the map update rows of the largest prefix count (`--only scale`) */
  scaleOnly?: boolean;
  log?: (line: string) => void;
}

export async function runControlPlaneBench(opts: ControlPlaneBenchOptions): Promise<BenchResult> {
  const log = opts.log ?? ((): void => undefined);
  ensureBuilt();
  await sweepStale(PREFIX);
  const figures: Figure[] = [];
  const details: Record<string, unknown> = {};
  const remarks: string[] = [];
  const add = (rows: { figures: Figure[]; remarks: string[] }): void => {
    figures.push(...rows.figures);
    remarks.push(...rows.remarks);
  };

  // Without the cluster first: nothing else runs while the maps are written.
  const prefixCounts = opts.scaleOnly ? [Math.max(...opts.prefixCounts)] : opts.prefixCounts;
  const maps = await runMapBench({ prefixCounts, mapRuns: opts.mapRuns }, log);
  details.mapUpdate = maps;
  const tokens: Buffer[] = [];

  if (!opts.scaleOnly) {
    const pureRuns = pureAggregation(opts.simulatedNodes, 9);
    details.aggregationPureUs = pureRuns;
    const rssContext = await nodeBaselines();
    details.rssContext = rssContext;
    const alone = await standaloneUsage(opts.windowSeconds);
    details.standaloneAgent = alone;

    const s = new Session();
    try {
      await s.start(log);
      const wire = await applyToWire(s, opts.applies, log);
      details.applyToWire = {
        applyMs: wire.applyMs.map((x) => round(x)),
        deleteMs: wire.deleteMs.map((x) => round(x)),
        synsCaptured: wire.syns,
        synsMarked: wire.marked,
      };
      const load = await resources(s, opts.loadPolicies, opts.windowSeconds, log);
      details.resources = load;
      const agg = await clusterAggregation(s, opts.simulatedNodes, opts.aggregationRuns, log);
      details.aggregation = agg;
      s.checkNoTokens();

      add(wireFigures(wire));
      add(resourceFigures(load, alone, rssContext, opts));
      add(mapFigures(maps));
      add(aggregationFigures(pureRuns, agg, opts.simulatedNodes));
    } finally {
      tokens.push(...s.tokens);
      await s.stop();
    }
  } else {
    add(mapFigures(maps));
  }

  // A cluster of its own: its 1000 nodes and 2000 policies would weigh on the rows above.
  const scale = new Session({ audit: true, counterInterval: SCALE_COUNTER_INTERVAL });
  try {
    const r = await runScale(opts.scale, log, scale);
    details.scale = r;
    add(scaleFigures(r));
  } finally {
    tokens.push(...scale.tokens);
  }
  const text = JSON.stringify({ figures, details, remarks });
  for (const t of tokens) {
    if ([t.toString('hex'), t.toString('base64'), t.toString('base64url')].some((enc) => text.includes(enc)))
      throw new Error('a token of this run appears in the results');
  }
  return { figures, details, remarks };
}
