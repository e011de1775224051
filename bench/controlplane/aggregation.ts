/**
 * Status aggregation: how fast the operator rolls many nodes' reports up into a policy's
 * status. Once as the pure function (aggregateStatus) over simulated nodes, and once for real:
 * the session's operator, with a Node and a TokenNodeState per simulated node written by the
 * benchmark as their agents would.
 */
import { CoreV1Api, CustomObjectsApi, Watch } from '@kubernetes/client-node';
import { API, API_GROUP, API_VERSION } from '../../src/lib/types.js';
import { sleep } from '../../src/lib/wait.js';
import type { NodeInfo } from '../../src/lib/cached.js';
import { type NodeReport, type RawNodeState, cacheNodeState } from '../../src/operator/cache.js';
import { aggregateStatus } from '../../src/operator/status.js';
import { countLabel, figure, median, round, type Figure } from '../report.js';
import { Events, GROUP, now } from './common.js';
import { mergePatch, policyYaml, secretYaml, type PolicyObject, type Session } from './session.js';

/** Label of the simulated nodes of the status aggregation rows. */
const SIM_LABEL = 'netoken-bench/sim';

/** Runs fn over items, at most `width` at a time. */
export async function inPool<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
}

function simulatedNodes(n: number, policy: string, generation: number): { nodes: NodeInfo[]; states: NodeReport[] } {
  const nodes: NodeInfo[] = [];
  const states: NodeReport[] = [];
  for (let i = 0; i < n; i++) {
    const name = `sim-${String(i).padStart(5, '0')}`;
    nodes.push({
      metadata: {
        name,
        labels: { [SIM_LABEL]: 'yes', 'kubernetes.io/hostname': name },
        creationTimestamp: '2026-01-01T00:00:00Z',
      },
    });
    states.push(
      cacheNodeState({
        metadata: { name },
        status: { agent: { version: 'bench' }, policies: [{ name: policy, generation, interfaces: ['eth0'] }] },
      } as RawNodeState),
    );
  }
  return { nodes, states };
}

/** Microseconds per aggregateStatus call over n nodes, for each of `runs` timed loops of at least 100 ms. */
export function pureAggregation(n: number, runs: number): number[] {
  const { nodes, states } = simulatedNodes(n, 'agg', 1);
  const byName = new Map(states.map((s) => [s.metadata.name, s]));
  const input = { name: 'agg', generation: 1, matched: nodes, reportOf: (node: string) => byName.get(node) };
  const check = aggregateStatus(input).status;
  if (check.nodes.ready !== n) throw new Error(`aggregateStatus counted ${check.nodes.ready} ready nodes of ${n}`);
  const out: number[] = [];
  for (let r = 0; r < runs; r++) {
    let calls = 0;
    const t0 = performance.now();
    do {
      aggregateStatus(input);
      calls++;
    } while (performance.now() - t0 < 100);
    out.push(((performance.now() - t0) / calls) * 1000);
  }
  return out;
}

export interface AggregationResult {
  /** policy created → its status shows every simulated node Ready */
  createMs: number;
  /** per policy edit: the last node report written → the status shows every node on the new generation */
  lagMs: number[];
  /** per policy edit: the first node report written → the same */
  totalMs: number[];
  /** writing the reports of one edit (every node's TokenNodeState status) */
  reportMs: number[];
  setupMs: number;
}

/** The operator rolling `n` simulated nodes' reports up into one policy's status. */
export async function clusterAggregation(
  s: Session,
  n: number,
  runs: number,
  log: (line: string) => void,
): Promise<AggregationResult> {
  const core = s.kc.makeApiClient(CoreV1Api);
  const custom = s.kc.makeApiClient(CustomObjectsApi);
  const policy = 'cp-agg';
  const { nodes } = simulatedNodes(n, policy, 1);
  const names = nodes.map((x) => x.metadata?.name as string);
  const report = (generation: number): Record<string, unknown> => ({
    status: {
      agent: { version: 'bench', kernelRelease: 'bench', tcx: true },
      policies: [{ name: policy, generation, interfaces: ['eth0'] }],
      interfaces: [{ name: 'eth0', ifindex: 2, hooks: [{ direction: 'Egress', attachMode: 'tcx', state: 'Attached' }] }],
    },
  });
  const writeReports = (generation: number): Promise<void> =>
    inPool(names, 16, async (name) => {
      await custom.patchClusterCustomObjectStatus(
        { group: API_GROUP, version: API_VERSION, plural: 'tokennodestates', name, body: report(generation) },
        mergePatch,
      );
    });

  const t0 = performance.now();
  await inPool(names, 16, async (name) => {
    await core.createNode({ body: { metadata: { name, labels: { [SIM_LABEL]: 'yes' } } } });
    await custom.createClusterCustomObject({
      group: API_GROUP,
      version: API_VERSION,
      plural: 'tokennodestates',
      body: { apiVersion: API, kind: 'TokenNodeState', metadata: { name } },
    });
  });
  await writeReports(1);
  await s.c.apply(secretYaml(`${policy}-token`, s.token()));
  const setupMs = performance.now() - t0;
  log(`control plane: ${n} simulated nodes reporting, made in ${round(setupMs / 1000)} s`);

  const events = new Events<{ t: number; p: PolicyObject }>();
  const watch = await new Watch(s.kc).watch(
    `/apis/${API_GROUP}/${API_VERSION}/tokenpolicies`,
    { fieldSelector: `metadata.name=${policy}` },
    (_phase: string, obj: PolicyObject) => events.push({ t: now(), p: obj }),
    () => undefined,
  );
  const complete =
    (g: number) =>
    (e: { p: PolicyObject }): boolean =>
      e.p.status?.observedGeneration === g && e.p.status.nodes?.ready === n && e.p.status.nodes.selected === n;
  try {
    await sleep(500);
    const sel = `${JSON.stringify(SIM_LABEL)}: "yes"`;
    const c0 = now();
    const created = events.waitFor(complete(1), 120_000, `${policy}'s status to show ${n} nodes Ready`, s.context);
    await s.c.kubectlOk(['create', '-f', '-'], {
      input: policyYaml(policy, 'agg', 'eth0', `${policy}-token`, '192.0.2.0/24', 443, sel),
    });
    const createMs = (await created).t - c0;
    log(`control plane: ${policy} created → status shows ${n} nodes Ready after ${Math.round(createMs)} ms`);

    const lagMs: number[] = [];
    const totalMs: number[] = [];
    const reportMs: number[] = [];
    for (let r = 0; r < runs; r++) {
      const g = r + 2;
      // An edit (a new generation): every node is pending until its report says it applied it.
      const pending = events.waitFor(
        (e) => e.p.status?.observedGeneration === g,
        60_000,
        `${policy}'s status for generation ${g}`,
        s.context,
      );
      await custom.patchClusterCustomObject(
        {
          group: API_GROUP,
          version: API_VERSION,
          plural: 'tokenpolicies',
          name: policy,
          body: { spec: { egress: { destinations: [{ cidr: '192.0.2.0/24', ports: [1000 + r] }] } } },
        },
        mergePatch,
      );
      await pending;
      const done = events.waitFor(complete(g), 180_000, `${policy}'s status to show ${n} nodes on generation ${g}`, s.context);
      const r0 = now();
      await writeReports(g);
      const r1 = now();
      const e = await done;
      lagMs.push(Math.max(0, e.t - r1));
      totalMs.push(e.t - r0);
      reportMs.push(r1 - r0);
      log(
        `control plane: edit ${r + 1}/${runs}: ${n} reports written in ${Math.round(r1 - r0)} ms; status complete ${Math.round(e.t - r1)} ms after the last`,
      );
    }
    return { createMs, lagMs, totalMs, reportMs, setupMs };
  } finally {
    watch.abort();
  }
}

/** The rows: the pure function's cost per call and the cluster's lag from the last node report to a complete status. */
export function aggregationFigures(
  pureRuns: number[],
  agg: AggregationResult,
  simulatedNodes: number,
): { figures: Figure[]; remarks: string[] } {
  const nodesLabel = countLabel(simulatedNodes, 'nodes');
  const figures = [
    figure({
      group: GROUP,
      benchmark: 'status aggregation, pure function (aggregateStatus)',
      config: nodesLabel,
      unit: 'µs',
      runs: pureRuns,
      note: 'One call of src/operator/status.ts aggregateStatus for one policy selecting every node, each node reporting it applied; median of 9 loops of at least 100 ms.',
    }),
    figure({
      group: GROUP,
      benchmark: 'status aggregation: last node report → policy status shows every node',
      config: nodesLabel,
      unit: 'ms',
      runs: agg.lagMs,
      note:
        'Simulated nodes (a Node and a TokenNodeState each, written by the benchmark as an agent would) report a new policy generation, 16 writes at a time; ' +
        'the time from the last report written to the watch event of the TokenPolicy whose status counts every node Ready on that generation, per policy edit.',
    }),
  ];
  const remarks = [
    `status aggregation, ${nodesLabel}: the policy's status showed every node Ready ${Math.round(agg.createMs)} ms after \`kubectl create\`; ` +
      `per edit the ${simulatedNodes} reports took ${Math.round(median(agg.reportMs))} ms to write and the status was complete ${Math.round(median(agg.totalMs))} ms after the first.`,
  ];
  return { figures, remarks };
}
