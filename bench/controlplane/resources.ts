/**
 * What the agent and the operator cost: resident memory and CPU of the real processes at idle
 * and with many policies applied (the session's cluster), of the standalone agent (a policy
 * file, no cluster), and for scale a bare node process with and without the Kubernetes client.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CustomObjectsApi } from '@kubernetes/client-node';
import { API_GROUP, API_VERSION } from '../../src/lib/types.js';
import { sleep, waitUntil } from '../../src/lib/wait.js';
import { agentIn, policyYaml as filePolicyYaml } from '../../test/lib/agent.js';
import { createTopology, run } from '../../test/lib/netns.js';
import { ROOT, countLabel, figure, round, type Figure } from '../report.js';
import { GROUP, PREFIX } from './common.js';
import { clockTicks, cpuTicks, nodePid, rssMiB } from './proc.js';
import { NODE_SELECTOR, policyYaml, secretYaml, type PolicyObject, type Session } from './session.js';

/** The budget of the standalone agent: resident memory ≤ 80 MiB at idle. */
const AGENT_RSS_BUDGET_MIB = 80;
/** Resident memory in cluster mode: the agent ≤ 64 MiB idle and ≤ 96 MiB with the load applied, the operator ≤ 72 MiB idle. */
const RSS_BUDGETS_MIB: Record<'agent' | 'operator', { idle: number; loaded?: number }> = {
  agent: { idle: 64, loaded: 96 },
  operator: { idle: 72 },
};
const RSS_PROBE = fileURLToPath(new URL('./rss-probe.js', import.meta.url));

/** Resident memory of a bare node process and of one that has imported @kubernetes/client-node: what the agent's and the operator's figures start from. */
export async function nodeBaselines(): Promise<{ bareNodeMiB: number; clientNodeMiB: number }> {
  const probe = async (module: string): Promise<number> => {
    const { stdout } = await run(process.execPath, [RSS_PROBE, ...(module ? [module] : [])]);
    return Number(stdout);
  };
  const clientNode = path.join(ROOT, 'node_modules/@kubernetes/client-node/dist/index.js');
  return { bareNodeMiB: await probe(''), clientNodeMiB: await probe(clientNode) };
}

export interface Usage {
  /** VmRSS samples over the window, MiB */
  rssMiB: number[];
  /** utime+stime over the window, percent of one CPU */
  cpuPercent: number;
  /** the same for children it waited for (`ip` listing interfaces) */
  childCpuPercent: number;
}

/** Resident memory (4 samples a second) and CPU of each process over a window of `seconds`. */
export async function measureWindow(pids: Record<string, number>, seconds: number): Promise<Record<string, Usage>> {
  const start = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuTicks(pid)]));
  const rss: Record<string, number[]> = Object.fromEntries(Object.keys(pids).map((k) => [k, []]));
  const t0 = performance.now();
  const samples = Math.max(2, Math.round(seconds * 4));
  for (let i = 0; i < samples; i++) {
    for (const [k, pid] of Object.entries(pids)) rss[k]?.push(round(rssMiB(pid), 2));
    await sleep((seconds * 1000) / samples);
  }
  const elapsed = (performance.now() - t0) / 1000;
  const out: Record<string, Usage> = {};
  for (const [k, pid] of Object.entries(pids)) {
    const end = cpuTicks(pid);
    const s = start[k] as { self: number; children: number };
    out[k] = {
      rssMiB: rss[k] ?? [],
      cpuPercent: round(((end.self - s.self) / clockTicks() / elapsed) * 100, 2),
      childCpuPercent: round(((end.children - s.children) / clockTicks() / elapsed) * 100, 2),
    };
  }
  return out;
}

export interface LoadResult {
  idle: Record<string, Usage>;
  loaded: Record<string, Usage>;
  /** kubectl create of the policies → the agent had applied all / the operator reported all Ready */
  agentAppliedMs: number;
  operatorReadyMs: number;
  /** the agent's reconciles until it had applied all, and the duration of its last one */
  agentReconciles: number;
  agentLastReconcileMs: number;
}

/** Memory and CPU at idle, then with `n` policies applied (and settled). */
export async function resources(s: Session, n: number, seconds: number, log: (line: string) => void): Promise<LoadResult> {
  const pids = s.pids();
  await sleep(2000);
  log(`control plane: idle window, ${seconds} s`);
  const idle = await measureWindow(pids, seconds);

  const custom = s.kc.makeApiClient(CustomObjectsApi);
  const t = s.t;
  const docs = [secretYaml('cp-load-token', s.token())];
  for (let i = 0; i < n; i++) {
    docs.push(
      policyYaml(
        `cp-load-${String(i).padStart(3, '0')}`,
        'load',
        t.client.dev,
        'cp-load-token',
        `198.18.${i >> 8}.${i & 255}/32`,
        443,
        NODE_SELECTOR,
      ),
    );
  }
  const reconcilesBefore = s.a.status()?.reconciles ?? 0;
  const t0 = performance.now();
  await s.c.kubectlOk(['create', '-f', '-'], { input: docs.join('---\n'), timeoutMs: 180_000 });
  let agentAppliedMs = 0;
  let operatorReadyMs = 0;
  let agentReconciles = 0;
  let agentLastReconcileMs = 0;
  let lastLog = performance.now();
  await waitUntil(
    `the agent to apply ${n} policies and the operator to report them Ready`,
    Math.max(240_000, n * 600),
    async () => {
      const st = s.a.status();
      const applied = st?.ready ? st.policies.filter((p) => p.name.startsWith('cp-load-') && p.errors.length === 0).length : 0;
      if (!agentAppliedMs && applied === n && st) {
        agentAppliedMs = performance.now() - t0;
        agentReconciles = st.reconciles - reconcilesBefore;
        agentLastReconcileMs = st.lastReconcileMs;
      }
      const items = (
        (await custom.listClusterCustomObject({
          group: API_GROUP,
          version: API_VERSION,
          plural: 'tokenpolicies',
          labelSelector: 'netoken-bench=load',
        })) as { items: PolicyObject[] }
      ).items;
      const ready = items.filter(
        (p) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') && p.status.nodes?.ready === 1,
      ).length;
      if (!operatorReadyMs && ready === n) operatorReadyMs = performance.now() - t0;
      if (performance.now() - lastLog > 10_000) {
        lastLog = performance.now();
        log(
          `control plane: after ${Math.round((lastLog - t0) / 1000)} s: the agent has applied ${applied} of ${n} policies (${(st?.reconciles ?? 0) - reconcilesBefore} reconciles, the last took ${st?.lastReconcileMs ?? 0} ms), the operator reports ${ready} Ready`,
        );
      }
      return agentAppliedMs && operatorReadyMs ? true : undefined;
    },
    { everyMs: 500, context: s.context },
  );
  log(
    `control plane: ${n} policies applied by the agent in ${round(agentAppliedMs / 1000)} s (${agentReconciles} reconciles), all Ready in ${round(operatorReadyMs / 1000)} s; loaded window, ${seconds} s`,
  );
  await sleep(2000);
  const loaded = await measureWindow(pids, seconds);
  return { idle, loaded, agentAppliedMs, operatorReadyMs, agentReconciles, agentLastReconcileMs };
}

/**
 * The standalone agent (a policy file, no cluster): it never loads the Kubernetes client.
 * One policy on a veth in a namespace of its own, measured once its hook is up.
 */
export async function standaloneUsage(seconds: number): Promise<Usage> {
  const topo = await createTopology({ name: 'cp-alone', kind: 'pair', prefix: PREFIX });
  const agent = agentIn(topo.client.ns, 'cp-alone');
  try {
    agent.writePolicy(
      filePolicyYaml([
        { name: 'alone', spec: `interfaces: {names: [${topo.client.dev}]}\negress: {destinations: [{cidr: 203.0.113.0/24}]}` },
      ]),
    );
    await agent.start(['--log-level', 'info']);
    await agent.waitStatus((st) => st.hooks.length === 1, 30_000, "the standalone agent's hook");
    await sleep(2000);
    const pid = agent.child?.pid;
    if (pid === undefined) throw new Error('the standalone agent is not running');
    return (await measureWindow({ agent: nodePid(pid) }, seconds)).agent as Usage;
  } finally {
    await agent.stop().catch(() => undefined);
    await agent.cleanup().catch(() => undefined);
    await topo.destroy().catch(() => undefined);
  }
}

/** The rows: memory and CPU of the agent and the operator, idle and loaded, and of the standalone agent at idle. */
export function resourceFigures(
  load: LoadResult,
  alone: Usage,
  rssContext: { bareNodeMiB: number; clientNodeMiB: number },
  opts: { loadPolicies: number; windowSeconds: number },
): { figures: Figure[]; remarks: string[] } {
  const figures: Figure[] = [];
  const loadedLabel = countLabel(opts.loadPolicies, 'policies applied');
  const rssNote = `VmRSS from /proc/PID/status, sampled 4 times a second over a ${opts.windowSeconds} s window (the median is shown); idle = no policy, after the apply/delete rows ran.`;
  const cpuNote = (who: string): string =>
    `utime+stime from /proc/PID/stat over a ${opts.windowSeconds} s window, in percent of one CPU` +
    (who === 'agent' ? '; the `ip` commands the agent runs to list interfaces are in latest.json (childCpuPercent).' : '.');
  for (const who of ['agent', 'operator'] as const) {
    for (const [config, u] of [
      ['idle, no policy', load.idle[who]],
      [loadedLabel, load.loaded[who]],
    ] as const) {
      if (!u) continue;
      const budget = config === 'idle, no policy' ? RSS_BUDGETS_MIB[who].idle : RSS_BUDGETS_MIB[who].loaded;
      figures.push(
        figure({
          group: GROUP,
          benchmark: `${who} resident memory`,
          config,
          unit: 'MiB',
          runs: u.rssMiB,
          note: rssNote,
          ...(budget ? { baseline: { benchmark: 'budget', value: budget }, target: { kind: 'at most' as const, ratio: 1 } } : {}),
        }),
      );
    }
    for (const [config, u] of [
      ['idle, no policy', load.idle[who]],
      [loadedLabel, load.loaded[who]],
    ] as const) {
      if (u)
        figures.push(
          figure({ group: GROUP, benchmark: `${who} CPU`, config, unit: '% of a CPU', runs: [u.cpuPercent], note: cpuNote(who) }),
        );
    }
  }
  figures.push(
    figure({
      group: GROUP,
      benchmark: 'agent resident memory',
      config: 'idle, standalone (policy file, one policy)',
      unit: 'MiB',
      runs: alone.rssMiB,
      note: `${rssNote.replace(/; idle = .*$/, '')}; the agent run from a policy file, which never loads the Kubernetes client.`,
      baseline: { benchmark: 'budget', value: AGENT_RSS_BUDGET_MIB },
      target: { kind: 'at most', ratio: 1 },
    }),
    figure({
      group: GROUP,
      benchmark: 'agent CPU',
      config: 'idle, standalone (policy file, one policy)',
      unit: '% of a CPU',
      runs: [alone.cpuPercent],
      note: cpuNote('agent'),
    }),
  );
  const remarks = [
    `control plane: ${loadedLabel} with one \`kubectl create\`: the agent had applied all after ${round(load.agentAppliedMs / 1000)} s ` +
      `(${load.agentReconciles} reconciles, the last one ${load.agentLastReconcileMs} ms), the operator reported all Ready after ${round(load.operatorReadyMs / 1000)} s.`,
    `control plane: for scale, a bare \`node\` process holds ${round(rssContext.bareNodeMiB)} MiB resident and one that has imported @kubernetes/client-node ` +
      `${round(rssContext.clientNodeMiB)} MiB (both agent and operator load it).`,
  ];
  return { figures, remarks };
}
