/**
 * The control plane at cluster scale, on a session of its own (session.ts: a test kube-apiserver
 * with its audit log on, the real operator and a cluster-mode agent in a network namespace, the
 * agent's counters at their default interval of 5 minutes) with simulated nodes beside the real
 * one: each a Node and a TokenNodeState whose report is the real agent's own report with the
 * policy names of the row, written by the benchmark as that node's agent would write it.
 *
 * In order, on one cluster:
 *  1. `kubectl create` of N policies selecting every node, with the real node alone: the time until
 *     the agent applied all, its TokenNodeState lists all on generation 1, a SYN to the last
 *     policy's destination leaves the node carrying the token, and the operator reports all Ready;
 *     and the agent's resident memory before and after (idle → N policies applied).
 *  2. Those policies deleted, M - 1 simulated nodes join (reporting no policy), and a second
 *     `kubectl create` of N policies: the time until all are Ready on M nodes, and what it cost
 *     the API server: writes per policy and per node, and request bytes.
 *  3. Steady state: nothing changes, the SYN loop keeps the counters moving; the writes over a
 *     window: TokenNodeState writes of the real agent and TokenPolicy status writes.
 *  4. One node joins: its Node, then its TokenNodeState reporting every policy applied; the
 *     operator's status writes and the agent's reconciles it caused.
 *
 * Writes are counted from the API server's audit log (every create, update, patch and delete,
 * with the user that made it), bytes from its /metrics (apiserver_request_body_size_bytes).
 */
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { CoreV1Api, CustomObjectsApi, Watch } from '@kubernetes/client-node';
import { API, API_GROUP, API_VERSION } from '../../src/lib/types.js';
import { sleep, waitUntil } from '../../src/lib/wait.js';
import { AGENT_SA, OPERATOR_SA } from '../../test/k8s/chart.js';
import { ADMIN_USER, type AuditEvent } from '../../test/k8s/cluster.js';
import { run, spawnIn, waitForExit } from '../../test/lib/netns.js';
import { countLabel, figure, median, round, type Figure } from '../report.js';
import { inPool } from './aggregation.js';
import { SYN_LOOP, SynCapture } from './apply-to-wire.js';
import { Events, GROUP, now } from './common.js';
import { clockTicks, cpuTicks } from './proc.js';
import { measureWindow } from './resources.js';
import { NODE, mergePatch, policyYaml, secretYaml, type PolicyObject, type Session } from './session.js';
import { type NodeStateStatus, groupedReport, reportedPolicies } from '../../src/agent/node-state.js';

export interface ScaleOptions {
  /** TokenPolicies of each `kubectl create` */
  policies: number;
  /** nodes of rows 2 to 4, the real one included */
  nodes: number;
  /** the steady-state window */
  steadySeconds: number;
  /** each resident memory window */
  memorySeconds: number;
}

/** Budgets from the design: all applied and Ready on one node, and on every node. */
const ONE_NODE_BUDGET_MS = 10_000;
const ALL_NODES_BUDGET_MS = 60_000;
/** At most one TokenNodeState write per node per 5 minutes, in steady state. */
const NODE_STATE_PERIOD_S = 300;
/** Agent resident memory growth from idle to the policies applied. */
const RSS_GROWTH_BUDGET_MIB = 32;
/** The destinations' port; nothing listens there, so each SYN gets an RST. */
const PORT = 7443;
const SIM_LABEL = 'netoken-bench/scale-sim';
/** The agent's counter interval on the scale rows' cluster: its default. */
export const SCALE_COUNTER_INTERVAL = '5m';

const policyName = (set: string, i: number): string => `sc-${set}-${String(i).padStart(4, '0')}`;
const destination = (i: number): string => `198.18.${i >> 8}.${i & 255}`;
const simName = (i: number): string => `scale-sim-${String(i).padStart(4, '0')}`;

/** Who made a write, from its audit event's user: the benchmark is the cluster's admin (kubectl, and the simulated nodes). */
type Writer = 'operator' | 'agent' | 'benchmark' | 'apiserver';
function writerOf(e: AuditEvent): Writer {
  const u = e.user.username;
  if (u.endsWith(`:${OPERATOR_SA}`)) return 'operator';
  if (u.endsWith(`:${AGENT_SA}`)) return 'agent';
  return u === ADMIN_USER ? 'benchmark' : 'apiserver';
}

/** Writes counted by "writer verb resource[/subresource]". */
export type WriteCounts = Record<string, number>;

/** The API server's audit log read in slices: the writes between two marks. */
class AuditSlices {
  constructor(private readonly file: string) {}

  mark(): number {
    try {
      return statSync(this.file).size;
    } catch {
      return 0;
    }
  }

  events(from: number, to = this.mark()): AuditEvent[] {
    if (to <= from) return [];
    const buf = Buffer.alloc(to - from);
    const fd = openSync(this.file, 'r');
    try {
      readSync(fd, buf, 0, buf.length, from);
    } finally {
      closeSync(fd);
    }
    return buf
      .toString('utf8')
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as AuditEvent)
      .filter((e) => e.stage === 'ResponseComplete');
  }

  counts(from: number, to?: number): WriteCounts {
    const out: WriteCounts = {};
    for (const e of this.events(from, to)) {
      const r = e.objectRef;
      const key = `${writerOf(e)} ${e.verb} ${r?.resource ?? '?'}${r?.subresource ? `/${r.subresource}` : ''}`;
      out[key] = (out[key] ?? 0) + 1;
    }
    return out;
  }
}

/** The writes of `counts` whose key matches all of the words given (writer, verb, resource). */
function sum(counts: WriteCounts, match: (writer: string, verb: string, resource: string) => boolean): number {
  let n = 0;
  for (const [k, v] of Object.entries(counts)) {
    const [writer = '', verb = '', resource = ''] = k.split(' ');
    if (match(writer, verb, resource)) n += v;
  }
  return n;
}

/** Request body bytes the API server took for writes, by resource, from apiserver_request_body_size_bytes_sum. */
async function requestBytes(s: Session): Promise<Record<string, number>> {
  const text = await s.c.kubectlOk(['get', '--raw', '/metrics'], { timeoutMs: 60_000 });
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^apiserver_request_body_size_bytes_sum\{([^}]*)\} (\S+)$/.exec(line);
    if (!m) continue;
    const labels = Object.fromEntries([...(m[1] as string).matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (!['create', 'update', 'patch', 'delete'].includes(labels.verb ?? '')) continue;
    const key = labels.resource ?? '?';
    out[key] = (out[key] ?? 0) + Number(m[2]);
  }
  return out;
}

function bytesSince(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  return Object.fromEntries(
    Object.entries(after)
      .map(([k, v]) => [k, v - (before[k] ?? 0)])
      .filter(([, v]) => (v as number) > 0),
  );
}

/** Policies of one label whose status says Ready with `nodes` nodes ready on their generation, from a watch. */
class ReadyWatch {
  readonly events = new Events<{ t: number; ready: number }>();
  private readonly ready = new Set<string>();
  private abort: (() => void) | null = null;
  private nodes = 1;

  constructor(
    private readonly s: Session,
    private readonly label: string,
  ) {}

  async start(): Promise<void> {
    const req = await new Watch(this.s.kc).watch(
      `/apis/${API_GROUP}/${API_VERSION}/tokenpolicies`,
      { labelSelector: `netoken-bench=${this.label}` },
      (phase: string, p: PolicyObject) => this.push(phase, p),
      () => undefined,
    );
    this.abort = () => req.abort();
    await sleep(300);
  }

  private push(phase: string, p: PolicyObject): void {
    const name = p.metadata?.name ?? '';
    const ok =
      phase !== 'DELETED' &&
      p.status?.observedGeneration === p.metadata?.generation &&
      p.status?.nodes?.ready === this.nodes &&
      p.status.nodes.selected === this.nodes &&
      (p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false);
    if (ok) this.ready.add(name);
    else this.ready.delete(name);
    this.events.push({ t: now(), ready: this.ready.size });
  }

  get count(): number {
    return this.ready.size;
  }

  /** From now on a policy counts once `nodes` nodes are ready (each is judged again at its next event). */
  expect(nodes: number): void {
    this.nodes = nodes;
    this.ready.clear();
  }

  /** The time the watch first shows `n` policies ready (register it before causing that; it is awaited later). */
  all(n: number, timeoutMs: number, context: () => string): Promise<number> {
    const p = this.events
      .waitFor(
        (e) => e.ready >= n,
        timeoutMs,
        `${n} policies Ready on ${this.nodes} nodes`,
        () => `${this.count} are\n${context()}`,
      )
      .then((e) => e.t);
    // A failure before the caller awaits it must not count as unhandled.
    p.catch(() => undefined);
    return p;
  }

  stop(): void {
    this.abort?.();
  }
}

/** A TokenNodeState as read back: its status is copied into the simulated nodes' reports. */
interface NodeStateObject {
  status?: Record<string, unknown> & { policies?: { name: string; generation: number }[] };
}

/** CPU seconds each process of the cluster has used so far: where a row's time went on a machine they share. */
function cpuSeconds(s: Session): Record<string, number> {
  const [etcd, apiserver] = s.c.pids();
  const { agent, operator } = s.pids();
  const out: Record<string, number> = {};
  for (const [k, pid] of Object.entries({ 'kube-apiserver': apiserver, etcd, operator, agent })) {
    if (pid !== undefined) out[k] = cpuTicks(pid).self / clockTicks();
  }
  const me = process.cpuUsage();
  out.benchmark = (me.user + me.system) / 1e6;
  return out;
}

function cpuSince(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(after).map(([k, v]) => [k, round(v - (before[k] ?? 0), 1)]));
}

export interface ScaleResult {
  policies: number;
  nodes: number;
  oneNode: {
    /** kubectl create → each of: kubectl returned, applied by the agent, listed in its TokenNodeState, marked SYN at the peer, all Ready (ms) */
    createdMs: number;
    appliedMs: number;
    reportedMs: number;
    wireMs: number;
    readyMs: number;
    agentReconciles: number;
    reportBytes: number;
    writes: WriteCounts;
    /** CPU seconds each process used from the start of `kubectl create` until all were Ready */
    cpuSeconds: Record<string, number>;
  };
  memory: { idleMiB: number[]; loadedMiB: number[] };
  deleteMs: number;
  setupMs: number;
  allNodes: {
    createdMs: number;
    readyMs: number;
    reportsMs: number;
    writes: WriteCounts;
    bytes: Record<string, number>;
    cpuSeconds: Record<string, number>;
  };
  /** gapsS: per write of the agent's report in the window, seconds since its previous one */
  steady: { seconds: number; writes: WriteCounts; agentReconciles: number; synsMarked: number; gapsS: number[] };
  join: { readyMs: number; writes: WriteCounts; agentReconciles: number };
}

/** The four steps on `s` (not started yet: a Session with the audit log on and the agent's default counter interval); stops it at the end. */
export async function runScale(opts: ScaleOptions, log: (line: string) => void, s: Session): Promise<ScaleResult> {
  const n = opts.policies;
  const m = opts.nodes;
  await s.start(log);
  const audit = new AuditSlices(s.c.auditLog);
  const core = s.kc.makeApiClient(CoreV1Api);
  const custom = s.kc.makeApiClient(CustomObjectsApi);
  const t = s.t;
  const token = s.token();
  const last = destination(n - 1);
  // The last policy's destination is an address of the peer, so SYNs to it leave the node's veth.
  await run('ip', ['-n', t.server.ns, 'addr', 'add', `${last}/32`, 'dev', t.server.dev]);
  await run('ip', ['-n', t.client.ns, 'route', 'add', '198.18.0.0/16', 'dev', t.client.dev]);
  await s.c.apply(secretYaml('sc-token', token));
  const capture = await SynCapture.start(t.server.ns, t.server.dev, PORT);
  const loop = spawnIn(t.client.ns, process.execPath, [SYN_LOOP, last, String(PORT), '5']);
  const reconciles = (): number => s.a.status()?.reconciles ?? 0;
  const nodeState = async (name: string): Promise<NodeStateObject> =>
    (await custom.getClusterCustomObject({
      group: API_GROUP,
      version: API_VERSION,
      plural: 'tokennodestates',
      name,
    })) as NodeStateObject;
  /** A node joins as a real one would: its Node, `pauseMs` later (its agent starting) its TokenNodeState and report. */
  const join = async (name: string, report: Record<string, unknown>, pauseMs = 0): Promise<void> => {
    await core.createNode({ body: { metadata: { name, labels: { [SIM_LABEL]: 'yes', 'kubernetes.io/hostname': name } } } });
    if (pauseMs) await sleep(pauseMs);
    await custom.createClusterCustomObject({
      group: API_GROUP,
      version: API_VERSION,
      plural: 'tokennodestates',
      body: { apiVersion: API, kind: 'TokenNodeState', metadata: { name } },
    });
    await custom.patchClusterCustomObjectStatus(
      { group: API_GROUP, version: API_VERSION, plural: 'tokennodestates', name, body: report },
      mergePatch,
    );
  };
  const docs = (set: string): string =>
    Array.from({ length: n }, (_, i) =>
      policyYaml(policyName(set, i), `scale-${set}`, t.client.dev, 'sc-token', `${destination(i)}/32`, PORT),
    ).join('---\n');
  const watches: ReadyWatch[] = [];
  try {
    await capture.events.waitFor(() => true, 10_000, 'the first SYN of the connection loop at the peer');
    await sleep(2000);
    log(`scale: agent idle, memory window ${opts.memorySeconds} s`);
    const idle = (await measureWindow({ agent: s.pids().agent }, opts.memorySeconds)).agent?.rssMiB ?? [];

    // 1. N policies, the real node alone.
    const a = new ReadyWatch(s, 'scale-a');
    watches.push(a);
    await a.start();
    const r0 = reconciles();
    let mark = audit.mark();
    const oneCpu0 = cpuSeconds(s);
    const t0 = now();
    const wire = capture.events.waitFor(
      (e) => e.atMs >= t0 && e.token !== null && e.token.equals(token),
      120_000,
      `a SYN to ${last} with the token`,
      s.context,
    );
    const ready = a.all(n, 120_000, s.context);
    await s.c.kubectlOk(['create', '-f', '-'], { input: docs('a'), timeoutMs: 180_000 });
    const createdMs = now() - t0;
    const applied = await s.a.waitStatus(
      (st) => st.policies.filter((p) => p.name.startsWith('sc-a-') && p.id > 0 && p.errors.length === 0).length === n,
      120_000,
      `the agent to apply ${n} policies`,
    );
    const appliedMs = now() - t0;
    const report = await waitUntil(
      `the node's TokenNodeState to list ${n} policies`,
      120_000,
      async () => {
        const ns = await nodeState(NODE);
        return reportedPolicies(ns.status).filter((p) => p.name.startsWith('sc-a-') && p.generation === 1).length === n
          ? ns
          : undefined;
      },
      { everyMs: 200, context: s.context },
    );
    const reportedMs = now() - t0;
    const wireMs = (await wire).atMs - t0;
    const readyMs = (await ready) - t0;
    const oneNode = {
      createdMs,
      appliedMs,
      reportedMs,
      wireMs,
      readyMs,
      agentReconciles: applied.reconciles - r0,
      reportBytes: JSON.stringify(report.status).length,
      writes: audit.counts(mark),
      cpuSeconds: cpuSince(oneCpu0, cpuSeconds(s)),
    };
    log(
      `scale: ${n} policies on one node: applied ${Math.round(appliedMs)} ms, reported ${Math.round(reportedMs)} ms, on the wire ${Math.round(wireMs)} ms, all Ready ${Math.round(readyMs)} ms (${oneNode.agentReconciles} reconciles)`,
    );
    await sleep(2000);
    const loaded = (await measureWindow({ agent: s.pids().agent }, opts.memorySeconds)).agent?.rssMiB ?? [];
    const entry = { ...(reportedPolicies(report.status)[0] ?? {}) } as Record<string, unknown>;
    delete entry.counters;
    a.stop();

    // 2. Those deleted; M - 1 simulated nodes join, reporting no policy; N new policies.
    let d0 = now();
    await s.c.kubectlOk(['delete', 'tokenpolicies', '-l', 'netoken-bench=scale-a', '--wait=false'], { timeoutMs: 120_000 });
    await waitUntil(
      `the ${n} policies to be deleted`,
      180_000,
      async () => {
        const left = await s.c.kubectlOk(['get', 'tokenpolicies', '-o', 'name'], { timeoutMs: 60_000 });
        return left.trim() === '' ? true : undefined;
      },
      { everyMs: 500, context: s.context },
    );
    const deleteMs = now() - d0;
    log(`scale: ${n} policies deleted and released in ${Math.round(deleteMs)} ms`);
    const empty = (await nodeState(NODE)).status ?? {};
    const reportOf = (policies: string[]): Record<string, unknown> => ({
      // As the agent writes it: plain policies grouped (src/agent/node-state.ts groupedReport).
      status: groupedReport({
        ...empty,
        policies: policies.map((name) => ({ ...entry, name, generation: 1 })),
      } as NodeStateStatus),
    });
    const sims = Array.from({ length: m - 1 }, (_, i) => simName(i));
    d0 = now();
    const none = reportOf([]);
    let made = 0;
    await inPool(sims, 16, async (name) => {
      await join(name, none);
      if (++made % 250 === 0) log(`scale: ${made} of ${sims.length} simulated nodes joined`);
    });
    const setupMs = now() - d0;
    log(`scale: ${sims.length} simulated nodes joined in ${Math.round(setupMs)} ms`);
    await sleep(3000);

    const b = new ReadyWatch(s, 'scale-b');
    watches.push(b);
    b.expect(m);
    await b.start();
    const bNames = Array.from({ length: n }, (_, i) => policyName('b', i));
    const full = reportOf(bNames);
    const bytes0 = await requestBytes(s);
    const cpu0 = cpuSeconds(s);
    mark = audit.mark();
    const c0 = now();
    // Generous: on a busy machine the API server alone takes minutes over the simulated reports; the row's budget judges the time.
    const allReady = b.all(n, 900_000, s.context);
    await s.c.kubectlOk(['create', '-f', '-'], { input: docs('b'), timeoutMs: 180_000 });
    const createdAllMs = now() - c0;
    // Each simulated node's agent sees the new policies and reports them applied.
    await inPool(sims, 16, async (name) => {
      await custom.patchClusterCustomObjectStatus(
        { group: API_GROUP, version: API_VERSION, plural: 'tokennodestates', name, body: full },
        mergePatch,
      );
    });
    const reportsMs = now() - c0;
    log(
      `scale: ${sims.length} simulated reports of ${n} policies written ${Math.round(reportsMs)} ms after kubectl create began`,
    );
    const allReadyMs = (await allReady) - c0;
    const allCpu = cpuSince(cpu0, cpuSeconds(s));
    const allWrites = audit.counts(mark);
    const allBytes = bytesSince(bytes0, await requestBytes(s));
    log(`scale: ${n} policies Ready on ${m} nodes after ${Math.round(allReadyMs)} ms`);

    // 3. Steady state: nothing changes; the SYN loop keeps counting.
    await sleep(5000);
    const sr0 = reconciles();
    const marked0 = capture.marked;
    mark = audit.mark();
    log(`scale: steady state, ${opts.steadySeconds} s window`);
    await sleep(opts.steadySeconds * 1000);
    // Each write of the agent's report in the window, with the time since its write before (any time in the run).
    const reportWrites = audit
      .events(0)
      .filter((e) => writerOf(e) === 'agent' && e.objectRef?.resource === 'tokennodestates')
      .map((e) => Date.parse(e.stageTimestamp));
    const inWindow = audit
      .events(mark)
      .filter((e) => writerOf(e) === 'agent' && e.objectRef?.resource === 'tokennodestates')
      .map((e) => Date.parse(e.stageTimestamp));
    const gapsS = inWindow.map((t) => round((t - Math.max(0, ...reportWrites.filter((x) => x < t))) / 1000));
    const steady = {
      seconds: opts.steadySeconds,
      writes: audit.counts(mark),
      agentReconciles: reconciles() - sr0,
      synsMarked: capture.marked - marked0,
      gapsS,
    };

    // 4. One node joins: its Node, then (its agent started) its report of every policy applied.
    const jr0 = reconciles();
    mark = audit.mark();
    const j0 = now();
    b.expect(m + 1);
    const joined = b.all(n, 120_000, s.context);
    await join(simName(m - 1), full, 1000);
    const joinReadyMs = (await joined) - j0;
    // Whatever the join still causes comes within the operator's batching delay and the agent's next poll.
    await sleep(5000);
    const joinResult = { readyMs: joinReadyMs, writes: audit.counts(mark), agentReconciles: reconciles() - jr0 };
    log(`scale: a node joined: all ${n} policies Ready on ${m + 1} nodes after ${Math.round(joinReadyMs)} ms`);
    s.checkNoTokens();
    return {
      policies: n,
      nodes: m,
      oneNode,
      memory: { idleMiB: idle, loadedMiB: loaded },
      deleteMs,
      setupMs,
      allNodes: {
        createdMs: createdAllMs,
        readyMs: allReadyMs,
        reportsMs,
        writes: allWrites,
        bytes: allBytes,
        cpuSeconds: allCpu,
      },
      steady,
      join: joinResult,
    };
  } finally {
    for (const w of watches) w.stop();
    loop.kill('SIGKILL');
    await waitForExit(loop, 5000);
    await capture.stop();
    await s.stop();
  }
}

const fmtWrites = (w: WriteCounts): string =>
  Object.entries(w)
    .sort((x, y) => y[1] - x[1])
    .map(([k, v]) => `${k} ${v}`)
    .join(', ') || 'none';

/** The rows. */
export function scaleFigures(r: ScaleResult): { figures: Figure[]; remarks: string[] } {
  const n = r.policies;
  const m = r.nodes;
  const pol = countLabel(n, 'policies');
  const nodes = countLabel(m, 'nodes');
  const setup =
    `A test kube-apiserver with its audit log, the real operator and a cluster-mode agent in a network namespace (counters at the agent's default interval, ${SCALE_COUNTER_INTERVAL}); ` +
    'every policy selects every node, one destination each, one shared Secret.';
  const sims = `${m - 1} simulated nodes beside the real one: a Node and a TokenNodeState each, whose report is the real agent's own report with the row's policies, written 16 at a time by the benchmark as their agents would.`;
  const figures: Figure[] = [];
  const o = r.oneNode;
  const oneMs = Math.max(o.appliedMs, o.reportedMs, o.wireMs, o.readyMs);
  figures.push(
    figure({
      group: GROUP,
      benchmark: 'scale: kubectl create → all applied on the wire and Ready',
      config: `${pol} × 1 node`,
      unit: 'ms',
      runs: [oneMs],
      baseline: { benchmark: 'budget', value: ONE_NODE_BUDGET_MS },
      target: { kind: 'at most', ratio: 1 },
      note:
        `${setup} From the start of one \`kubectl create\` of all the policies until the last of: the agent applied every one (its status), its TokenNodeState lists every one on generation 1, ` +
        "a SYN to the last policy's destination (sent every 5 ms on the node) is captured at the peer carrying the token, and a watch shows every policy Ready. " +
        '`kubectl create` sends the policies one request at a time; when it returned is in the checks below.',
    }),
  );
  const growth = median(r.memory.loadedMiB) - median(r.memory.idleMiB);
  figures.push(
    figure({
      group: GROUP,
      benchmark: 'agent resident memory growth, idle → policies applied',
      config: `${pol} applied`,
      unit: 'MiB',
      runs: [growth],
      baseline: { benchmark: 'budget', value: RSS_GROWTH_BUDGET_MIB },
      target: { kind: 'at most', ratio: 1 },
      note: 'Median VmRSS (/proc/PID/status, 4 samples a second over a window) of the cluster-mode agent with all the policies applied on its node, less the median of the same window before they were created.',
    }),
  );
  const w = r.allNodes.writes;
  figures.push(
    figure({
      group: GROUP,
      benchmark: 'scale: kubectl create → all Ready on every node',
      config: `${pol} × ${nodes}`,
      unit: 'ms',
      runs: [r.allNodes.readyMs],
      baseline: { benchmark: 'budget', value: ALL_NODES_BUDGET_MS },
      target: { kind: 'at most', ratio: 1 },
      note: `${setup} ${sims} The simulated nodes write their reports once \`kubectl create\` has returned; the time is from its start until a watch shows every policy Ready with every node ready on generation 1.`,
    }),
  );
  const opWrites = sum(w, (who, _v, res) => who === 'operator' && res.startsWith('tokenpolicies'));
  const nsWrites = sum(w, (who, _v, res) => who !== 'operator' && res.startsWith('tokennodestates'));
  const totalBytes = Object.values(r.allNodes.bytes).reduce((x, y) => x + y, 0);
  const writesNote = `Counted from the API server's audit log (every create, update, patch and delete, by the user that made it) from the start of \`kubectl create\` until every policy was Ready; ${sims}`;
  figures.push(
    figure({
      group: GROUP,
      benchmark: 'scale: operator writes to TokenPolicies (status, finalizer) per policy',
      config: `${pol} × ${nodes}`,
      unit: 'writes',
      runs: [opWrites / n],
      note: writesNote,
    }),
    figure({
      group: GROUP,
      benchmark: 'scale: TokenNodeState writes per node (agents)',
      config: `${pol} × ${nodes}`,
      unit: 'writes',
      runs: [nsWrites / m],
      note: writesNote,
    }),
    figure({
      group: GROUP,
      benchmark: 'scale: request bytes written to the API server',
      config: `${pol} × ${nodes}`,
      unit: 'MiB',
      runs: [totalBytes / 2 ** 20],
      note: "The growth of kube-apiserver's apiserver_request_body_size_bytes_sum (its /metrics) for create, update, patch and delete over the same time, every resource and writer; the policies' own YAML included. By resource in latest.json.",
    }),
  );
  const st = r.steady;
  const agentNs = sum(st.writes, (who, _v, res) => who === 'agent' && res.startsWith('tokennodestates'));
  const policyStatus = sum(st.writes, (who, _v, res) => who === 'operator' && res === 'tokenpolicies/status');
  const steadyNote =
    `${setup} ${sims} A ${st.seconds} s window starting 5 s after every policy was Ready, the node's SYN loop marking throughout; writes from the audit log. ` +
    "The simulated nodes write nothing then, so the TokenNodeState row is the real agent's writes in the window: at most one per 5 minutes means at most one in any window up to 5 minutes; " +
    'the rate per 5 minutes and the time from each write to the one before are in the checks below.';
  figures.push(
    figure({
      group: GROUP,
      benchmark: "steady state: TokenNodeState writes of the node's agent",
      config: `${pol} × ${nodes}, ${st.seconds} s window`,
      unit: 'writes',
      runs: [agentNs],
      baseline: { benchmark: 'budget (1 per 5 min)', value: Math.max(1, Math.floor(st.seconds / NODE_STATE_PERIOD_S)) },
      target: { kind: 'at most', ratio: 1 },
      note: steadyNote,
    }),
    figure({
      group: GROUP,
      benchmark: 'steady state: TokenPolicy status writes',
      config: `${pol} × ${nodes}, ${st.seconds} s window`,
      unit: 'writes',
      runs: [policyStatus],
      target: { kind: 'zero' },
      note: steadyNote,
    }),
  );
  const j = r.join;
  const joinStatus = sum(j.writes, (who, _v, res) => who === 'operator' && res === 'tokenpolicies/status');
  const joinNote =
    `${setup} ${sims} A node joins: its Node, 1 s later its TokenNodeState reporting every policy applied (as its agent would once started); ` +
    "counted from the Node's creation until 5 s after a watch showed every policy Ready on the new node count. Every policy selects the new node, so every status changes once.";
  figures.push(
    figure({
      group: GROUP,
      benchmark: 'one node joins: operator status writes per policy',
      config: `${pol} × ${nodes} + 1`,
      unit: 'writes',
      runs: [joinStatus / n],
      baseline: { benchmark: 'budget', value: 1 },
      target: { kind: 'at most', ratio: 1 },
      note: joinNote,
    }),
    figure({
      group: GROUP,
      benchmark: "one node joins: reconciles of the real node's agent",
      config: `${pol} × ${nodes} + 1`,
      unit: 'reconciles',
      runs: [j.agentReconciles],
      target: { kind: 'zero' },
      note: `${joinNote} The agent's reconcile count is in its status file.`,
    }),
  );
  const remarks = [
    `scale, ${pol} × 1 node: \`kubectl create\` returned after ${round(o.createdMs / 1000, 2)} s; applied by the agent after ${round(o.appliedMs / 1000, 2)} s in ${o.agentReconciles} reconciles, listed in its TokenNodeState (${round(o.reportBytes / 1024)} KiB of status) after ${round(o.reportedMs / 1000, 2)} s, ` +
      `the last destination's SYN marked after ${round(o.wireMs / 1000, 2)} s, all Ready after ${round(o.readyMs / 1000, 2)} s; writes: ${fmtWrites(o.writes)}; ` +
      `CPU seconds used meanwhile: ${Object.entries(o.cpuSeconds)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}.`,
    `scale: agent resident memory ${round(median(r.memory.idleMiB))} MiB idle, ${round(median(r.memory.loadedMiB))} MiB with ${pol} applied.`,
    `scale: deleting the ${pol} took ${round(r.deleteMs / 1000, 1)} s until all were released; ${m - 1} simulated nodes joined in ${round(r.setupMs / 1000, 1)} s.`,
    `scale, ${pol} × ${nodes}: \`kubectl create\` returned after ${round(r.allNodes.createdMs / 1000, 1)} s, the simulated reports were written ${round(r.allNodes.reportsMs / 1000, 1)} s after \`kubectl create\` began; writes until all Ready: ${fmtWrites(w)}; ` +
      `request bytes: ${Object.entries(r.allNodes.bytes)
        .map(([k, v]) => `${k} ${round(v / 2 ** 20, 2)} MiB`)
        .join(', ')}; ` +
      `CPU seconds used meanwhile: ${Object.entries(r.allNodes.cpuSeconds)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}.`,
    `scale, steady state over ${st.seconds} s: the node's agent wrote its TokenNodeState ${agentNs} times` +
      `${st.gapsS.length ? ` (${st.gapsS.map((g) => `${g} s`).join(', ')} after its write before)` : ''}, ${round((agentNs * NODE_STATE_PERIOD_S) / st.seconds, 2)} per 5 minutes if the window is taken as the rate, ` +
      `and reconciled ${st.agentReconciles} times while marking ${st.synsMarked} SYNs; all writes: ${fmtWrites(st.writes)}.`,
    `scale, one node joins: every policy Ready on ${m + 1} nodes ${round(j.readyMs / 1000, 2)} s after its Node was created; writes: ${fmtWrites(j.writes)}.`,
  ];
  return { figures, remarks };
}
