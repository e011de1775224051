/**
 * Map update: how long the agent's Datapath takes to write large destination sets into the
 * pinned maps (first apply, one prefix changed, nothing changed, after a restart), against the
 * same entries written into a fresh trie in a plain loop. The measurements run in a child
 * process (map-update-child.ts) inside a namespace pair of their own, before the cluster
 * starts, so that nothing else runs while the maps are written.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createTopology, netnsPath, run } from '../../test/lib/netns.js';
import { countLabel, figure, median, round, type Figure } from '../report.js';
import { GROUP, PREFIX } from './common.js';

/** The budget: computeDesired and apply of a one-prefix change to a 100 000-prefix policy, ≤ 50 ms. */
const CHANGE_BUDGET_MS = 50;
const CHILD = fileURLToPath(new URL('./map-update-child.js', import.meta.url));

export interface MapUpdateOptions {
  /** destination prefixes of the rows */
  prefixCounts: number[];
  /** runs of each row */
  mapRuns: number;
}

export interface MapChildInput {
  /** the veth the hook goes on, in the child's namespace */
  dev: string;
  prefixCounts: number[];
  runs: number;
  /** state and run directories are these plus a suffix per measurement */
  stateBase: string;
  runBase: string;
}

export interface MapSizeResult {
  prefixes: number;
  /** Datapath.apply into empty pinned maps */
  firstApplyMs: number[];
  /** Datapath.apply of the same policy with one prefix replaced */
  changedApplyMs: number[];
  /** computeDesired for that change, with the EncodingMemo the agent kept from the first apply */
  changedComputeMs: number[];
  /** Datapath.apply of the same desired state again */
  unchangedApplyMs: number[];
  /** the same entries written into a fresh trie of the same shape, one update call each */
  rawWriteMs: number[];
  /** computeDesired for the policy (the agent's step before Datapath.apply) */
  computeMs: number[];
  /** Datapath.open over the pinned maps of the run (an agent restart) */
  reopenMs: number[];
  /** Datapath.apply right after that restart */
  restartApplyMs: number[];
  /** map writes and deletes of each kind of apply (the first run's), to show what was done */
  writes: { first: [number, number]; changed: [number, number]; unchanged: [number, number]; restart: [number, number] };
}

/** Runs map-update-child.ts in a child process inside a fresh namespace pair (the hook needs a veth of its own). */
export async function runMapBench(opts: MapUpdateOptions, log: (line: string) => void): Promise<MapSizeResult[]> {
  const topo = await createTopology({ name: 'cp-maps', kind: 'pair', prefix: PREFIX });
  const base = `${PREFIX}${process.pid}-${randomBytes(3).toString('hex')}-maps`;
  try {
    const input: MapChildInput = {
      dev: topo.client.dev,
      prefixCounts: opts.prefixCounts,
      runs: opts.mapRuns,
      stateBase: path.join('/sys/fs/bpf', base),
      runBase: path.join(tmpdir(), base),
    };
    log(`control plane: map updates with ${opts.prefixCounts.join(', ')} prefixes, ${opts.mapRuns} runs each`);
    const { stdout } = await run(
      'nsenter',
      [`--net=${netnsPath(topo.client.ns)}`, '--', process.execPath, CHILD, JSON.stringify(input)],
      {
        timeoutMs: 900_000,
      },
    );
    return JSON.parse(stdout.trim().split('\n').pop() ?? '[]') as MapSizeResult[];
  } finally {
    for (const dir of ['/sys/fs/bpf', tmpdir()]) {
      for (const e of existsSync(dir) ? readdirSync(dir) : [])
        if (e.startsWith(base)) rmSync(path.join(dir, e), { recursive: true, force: true });
    }
    await topo.destroy();
  }
}

export function mapFigures(results: readonly MapSizeResult[]): { figures: Figure[]; remarks: string[] } {
  const figures: Figure[] = [];
  const remarks: string[] = [];
  const baseline = 'raw map writes (same entries, plain loop)';
  const note =
    'Datapath.apply of the agent (src/agent/datapath.ts) in a namespace of its own, with a TCX hook on a veth, into pinned maps under a fresh bpffs directory; ' +
    'the desired state is computed beforehand and not included. Baseline: the same trie entries written into a fresh LPM trie of the same shape with one ' +
    'map update call each, in the same run (the order alternates between runs).';
  for (const r of results) {
    const config = countLabel(r.prefixes, 'prefixes');
    const rawValue = median(r.rawWriteMs);
    for (const [benchmark, runs] of [
      ['map update: first apply of one policy', r.firstApplyMs],
      ['map update: re-apply, one prefix changed', r.changedApplyMs],
    ] as const) {
      figures.push(
        figure({
          group: GROUP,
          benchmark,
          config,
          unit: 'ms',
          runs,
          baseline: { benchmark: baseline, value: rawValue },
          baselineRuns: r.rawWriteMs,
          note,
        }),
      );
    }
    figures.push(
      figure({
        group: GROUP,
        benchmark: 'one prefix changed: computeDesired + apply',
        config,
        unit: 'ms',
        runs: r.changedApplyMs.map((x, i) => x + (r.changedComputeMs[i] ?? NaN)),
        baseline: { benchmark: 'budget', value: CHANGE_BUDGET_MS },
        target: { kind: 'at most', ratio: 1 },
        note:
          "What an agent's reconcile spends on an edit of one prefix in a large policy: computeDesired (src/agent/desired.ts) with the EncodingMemo kept from the " +
          "policy's first apply, as the agent keeps it, then Datapath.apply of the result; the same runs as the map update rows.",
      }),
    );
    const w = r.writes;
    remarks.push(
      `map update, ${config}: desired state computed in ${round(median(r.computeMs))} ms (one prefix changed, with the memo: ${round(median(r.changedComputeMs), 2)} ms); apply with nothing changed ${round(median(r.unchangedApplyMs), 2)} ms; ` +
        `agent restart over the pinned maps: open ${round(median(r.reopenMs))} ms, then its first apply ${round(median(r.restartApplyMs), 2)} ms ` +
        `(writes/deletes: first ${w.first.join('/')}, changed ${w.changed.join('/')}, unchanged ${w.unchanged.join('/')}, after restart ${w.restart.join('/')}).`,
    );
  }
  return { figures, remarks };
}
