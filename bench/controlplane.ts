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
 * This benchmark alone: `node dist/bench/run.js --only controlplane` (`npm run bench` runs all).
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, CustomObjectsApi, KubeConfig, PatchStrategy, Watch, setHeaderOptions } from '@kubernetes/client-node';
import { Datapath, defaultObjectPath, type ApplyResult } from '../src/agent/datapath.js';
import { detachAll } from '../src/agent/hooks/detach.js';
import { computeDesired, type DesiredState } from '../src/agent/desired.js';
import { listInterfaces } from '../src/agent/interfaces.js';
import { silentLogger } from '../src/lib/log.js';
import { TCP_ACK, TCP_SYN, findTokenOption, parseFrame } from '../src/lib/packet.js';
import { parsePcap, toEthernet } from '../src/lib/pcap.js';
import { API, API_GROUP, API_VERSION, type TokenKeys, type TokenPolicy } from '../src/lib/types.js';
import { binding } from '../src/native/binding.js';
import { aggregateStatus, type NodeLike, type NodeStateLike } from '../src/operator/status.js';
import { agentKubeconfig, installChartRbac, operatorKubeconfig } from '../test/k8s/chart.js';
import { TestCluster, freePorts } from '../test/k8s/cluster.js';
import { BIN, agentIn, policyYaml as filePolicyYaml, type AgentRun } from '../test/lib/agent.js';
import { bridgeLoopback, type LoopbackBridge } from '../test/lib/loopback-bridge.js';
import { createTopology, netnsPath, run, spawnIn, sweepStale, waitForExit, type Topology } from '../test/lib/netns.js';
import { layoutDir } from '../src/agent/layout.js';
import { ensureBuilt } from './artifacts.js';
import { ROOT, figure, median, type Figure } from './report.js';

const PREFIX = 'ntbench-';
const NS = 'netoken-system';
const NODE = 'bench-node';
const KIND = 253;
const EXID = 0x4e54;
/** The port the SYNs of the apply → wire rows go to; nothing listens there, so each attempt is one SYN and an RST. */
const WIRE_PORT = 7443;
/** Budgets: apply → token on the wire p99 ≤ 2 s; resident memory of the standalone agent ≤ 80 MiB at idle. */
const APPLY_BUDGET_MS = 2000;
const AGENT_RSS_BUDGET_MIB = 80;
/** Resident memory in cluster mode: the agent ≤ 64 MiB idle and ≤ 96 MiB with the load applied, the operator ≤ 72 MiB idle. */
const RSS_BUDGETS_MIB: Record<'agent' | 'operator', { idle: number; loaded?: number }> = {
  agent: { idle: 64, loaded: 96 },
  operator: { idle: 72 },
};
/** Label of the simulated nodes of the status aggregation rows. */
const SIM_LABEL = 'netoken-bench/sim';
/** The node agent's labels, and the selector of every policy meant for it alone (not for the simulated nodes). */
const NODE_SELECTOR = 'role: bench';
/** argv[2] that makes this module run the map update measurements (inside a network namespace). */
const MAP_CHILD = 'map-update-child';
const THIS_FILE = fileURLToPath(import.meta.url);
const BINDING_JS = path.join(ROOT, 'dist/src/native/binding.js');
// Figure['group'] (report.ts) lists no control-plane group yet; the renderers print any string.
const GROUP: Figure['group'] = 'control plane';

const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

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
  log?: (line: string) => void;
}

export interface ControlPlaneBenchResult {
  figures: Figure[];
  details: Record<string, unknown>;
  remarks: string[];
}

// -------------------------------------------------------------------------------------------
// Small helpers

/** Wall-clock milliseconds with sub-millisecond resolution, comparable with pcap timestamps. */
const now = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number): Promise<void> => new Promise((res) => setTimeout(res, ms));
const round = (x: number, digits = 1): number => Math.round(x * 10 ** digits) / 10 ** digits;
const countLabel = (n: number, what: string): string => `${n.toLocaleString('en-US').replace(/,/g, ' ')} ${what}`;

/** Nearest-rank percentile (q in 0..1). */
export function percentile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] as number;
}

/** Runs fn over items, at most `width` at a time. */
async function inPool<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
}

/** Polls probe until it returns a value; throws after timeoutMs naming what it waited for. */
async function waitUntil<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, everyMs = 200, context?: () => string): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${context ? `\n${context()}` : ''}`);
    await sleep(everyMs);
  }
}

/** A stream of timestamped events that callers wait on (register the wait before causing the event). */
class Events<T> {
  private readonly waiters = new Set<{ pred: (e: T) => boolean; resolve: (e: T) => void }>();

  push(e: T): void {
    for (const w of this.waiters) {
      if (w.pred(e)) {
        this.waiters.delete(w);
        w.resolve(e);
      }
    }
  }

  waitFor(pred: (e: T) => boolean, timeoutMs: number, what: string, context?: () => string): Promise<T> {
    const p = new Promise<T>((resolve, reject) => {
      const w = {
        pred,
        resolve: (e: T): void => {
          clearTimeout(timer);
          resolve(e);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}${context ? `\n${context()}` : ''}`));
      }, timeoutMs);
      this.waiters.add(w);
    });
    // The caller awaits it later; a failure in between must not count as unhandled.
    p.catch(() => undefined);
    return p;
  }
}

/** The last `max` characters of a growing text (process output kept for error messages). */
class Tail {
  text = '';
  constructor(private readonly max = 256 * 1024) {}
  add(s: string): void {
    this.text += s;
    if (this.text.length > this.max) this.text = this.text.slice(-this.max);
  }
  last(chars = 3000): string {
    return this.text.slice(-chars);
  }
}

// -------------------------------------------------------------------------------------------
// Map update: the agent's Datapath writing large destination sets (runs in a child process)

interface MapChildInput {
  /** the veth the hook goes on, in the child's namespace */
  dev: string;
  prefixCounts: number[];
  runs: number;
  /** state and run directories are these plus a suffix per measurement */
  stateBase: string;
  runBase: string;
}

interface MapSizeResult {
  prefixes: number;
  /** Datapath.apply into empty pinned maps */
  firstApplyMs: number[];
  /** Datapath.apply of the same policy with one prefix replaced */
  changedApplyMs: number[];
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

function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/** `count` distinct random IPv4 networks, /16 to /32, as CIDR text. */
function randomPrefixes(count: number, seed: number): string[] {
  const next = prng(seed);
  const seen = new Set<string>();
  while (seen.size < count) {
    const len = 16 + (next() % 17);
    const net = len === 32 ? next() : (next() & ~(0xffffffff >>> len)) >>> 0;
    seen.add(`${net >>> 24}.${(net >>> 16) & 255}.${(net >>> 8) & 255}.${net & 255}/${len}`);
  }
  return [...seen];
}

function benchPolicy(name: string, dev: string, cidrs: readonly string[]): TokenPolicy {
  return {
    apiVersion: API,
    kind: 'TokenPolicy',
    metadata: { name, generation: 1 },
    spec: {
      nodeSelector: {},
      interfaces: { names: [dev], patterns: [] },
      token: { mode: 'Static', secretRef: { name: `${name}-token` }, bind: [] },
      option: { kind: KIND, experimentId: EXID },
      egress: { destinations: cidrs.map((cidr) => ({ cidr, ports: [443] })) },
    },
  };
}

const counts = (r: ApplyResult): [number, number] => [r.mapWrites, r.mapDeletes];

/** The measurements of the map update rows, in the current network namespace (the child process). */
async function mapChild(input: MapChildInput): Promise<MapSizeResult[]> {
  const log = silentLogger();
  const b = binding();
  const interfaces = await listInterfaces();
  if (!interfaces.some((i) => i.name === input.dev)) throw new Error(`interface ${input.dev} is not in this network namespace`);
  const out: MapSizeResult[] = [];
  for (const n of input.prefixCounts) {
    const cidrs = randomPrefixes(n + 1, 0x4e54 + n);
    const name = 'bench';
    const keys = new Map<string, TokenKeys>([[name, { current: randomBytes(8) }]]);
    const first = benchPolicy(name, input.dev, cidrs.slice(0, n));
    const changed = benchPolicy(name, input.dev, [...cidrs.slice(0, n - 1), cidrs[n] as string]);
    const r: MapSizeResult = {
      prefixes: n, firstApplyMs: [], changedApplyMs: [], unchangedApplyMs: [], rawWriteMs: [], computeMs: [], reopenMs: [], restartApplyMs: [],
      writes: { first: [0, 0], changed: [0, 0], unchanged: [0, 0], restart: [0, 0] },
    };
    for (let run = 0; run < input.runs; run++) {
      const stateDir = `${input.stateBase}-${n}-${run}`;
      const runDir = `${input.runBase}-${n}-${run}`;
      const opts = { stateDir, runDir, objectPath: defaultObjectPath(), attach: 'auto' as const, tcPriority: 1, log };
      const desiredFor = (p: TokenPolicy, dp: Datapath): DesiredState =>
        computeDesired({ policies: [p], keys, nodeLabels: {}, interfaces, previousIds: dp.previousIds() });
      let dp: Datapath | null = null;
      try {
        dp = Datapath.open(opts);
        let t = performance.now();
        const want = desiredFor(first, dp);
        r.computeMs.push(performance.now() - t);
        const entries = [...want.egress4.values()];
        if (entries.length !== n) throw new Error(`the desired state holds ${entries.length} trie entries for ${n} prefixes`);
        const shape = b.mapFromPin(path.join(layoutDir(stateDir), 'nt_egress4'));
        const spec = shape.info;
        shape.close();
        // The baseline: the same entries into a fresh trie of the same shape, one update each.
        const raw = (): number => {
          const m = b.createMap({ type: spec.type, keySize: spec.keySize, valueSize: spec.valueSize, maxEntries: spec.maxEntries, flags: spec.flags, name: 'ntbench_raw' });
          try {
            const t0 = performance.now();
            for (const [k, v] of entries) m.update(k, v);
            return performance.now() - t0;
          } finally {
            m.close();
          }
        };
        // Alternate which goes first, so a drift in the machine's load falls on both.
        if (run % 2 === 1) r.rawWriteMs.push(raw());

        t = performance.now();
        const a1 = dp.apply(want);
        r.firstApplyMs.push(performance.now() - t);
        if (a1.errors.length > 0 || a1.hooks.length !== 1) throw new Error(`the first apply did not attach one hook: ${JSON.stringify(a1.errors)}`);

        const want2 = desiredFor(changed, dp);
        t = performance.now();
        const a2 = dp.apply(want2);
        r.changedApplyMs.push(performance.now() - t);

        t = performance.now();
        const a3 = dp.apply(want2);
        r.unchangedApplyMs.push(performance.now() - t);

        dp.close();
        dp = null;
        t = performance.now();
        dp = Datapath.open(opts);
        r.reopenMs.push(performance.now() - t);
        const want3 = desiredFor(changed, dp);
        t = performance.now();
        const a4 = dp.apply(want3);
        r.restartApplyMs.push(performance.now() - t);

        if (run % 2 === 0) r.rawWriteMs.push(raw());

        // What the kernel holds must be exactly the changed policy's prefixes.
        const held = b.mapFromPin(path.join(layoutDir(stateDir), 'nt_egress4'));
        const heldKeys = new Set(held.keys().map((k) => k.toString('hex')));
        held.close();
        const missing = [...want3.egress4.keys()].filter((k) => !heldKeys.has(k)).length;
        if (heldKeys.size !== n || missing !== 0) {
          throw new Error(`after the changed apply the trie holds ${heldKeys.size} entries (${missing} of the policy's missing); want exactly the policy's ${n}`);
        }
        if (run === 0) r.writes = { first: counts(a1), changed: counts(a2), unchanged: counts(a3), restart: counts(a4) };
      } finally {
        dp?.close();
        detachAll(stateDir, runDir, 1, log);
        rmSync(stateDir, { recursive: true, force: true });
        rmSync(runDir, { recursive: true, force: true });
      }
    }
    out.push(r);
  }
  return out;
}

/** Runs mapChild in a child process inside a fresh namespace pair (the hook needs a veth of its own). */
async function runMapBench(opts: ControlPlaneBenchOptions, log: (line: string) => void): Promise<MapSizeResult[]> {
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
    const { stdout } = await run('nsenter', [`--net=${netnsPath(topo.client.ns)}`, '--', process.execPath, THIS_FILE, MAP_CHILD, JSON.stringify(input)], {
      timeoutMs: 900_000,
    });
    return JSON.parse(stdout.trim().split('\n').pop() ?? '[]') as MapSizeResult[];
  } finally {
    for (const dir of ['/sys/fs/bpf', tmpdir()]) {
      for (const e of existsSync(dir) ? readdirSync(dir) : []) if (e.startsWith(base)) rmSync(path.join(dir, e), { recursive: true, force: true });
    }
    await topo.destroy();
  }
}

function mapFigures(results: readonly MapSizeResult[]): { figures: Figure[]; remarks: string[] } {
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
      figures.push(figure({ group: GROUP, benchmark, config, unit: 'ms', runs, baseline: { benchmark: baseline, value: rawValue }, baselineRuns: r.rawWriteMs, note }));
    }
    const w = r.writes;
    remarks.push(
      `map update, ${config}: desired state computed in ${round(median(r.computeMs))} ms; apply with nothing changed ${round(median(r.unchangedApplyMs), 2)} ms; ` +
        `agent restart over the pinned maps: open ${round(median(r.reopenMs))} ms, then its first apply ${round(median(r.restartApplyMs), 2)} ms ` +
        `(writes/deletes: first ${w.first.join('/')}, changed ${w.changed.join('/')}, unchanged ${w.unchanged.join('/')}, after restart ${w.restart.join('/')}).`,
    );
  }
  return { figures, remarks };
}

// -------------------------------------------------------------------------------------------
// Status aggregation as a pure function

function simulatedNodes(n: number, policy: string, generation: number): { nodes: NodeLike[]; states: NodeStateLike[] } {
  const nodes: NodeLike[] = [];
  const states: NodeStateLike[] = [];
  for (let i = 0; i < n; i++) {
    const name = `sim-${String(i).padStart(5, '0')}`;
    nodes.push({ metadata: { name, labels: { [SIM_LABEL]: 'yes', 'kubernetes.io/hostname': name } } });
    states.push({ metadata: { name }, status: { policies: [{ name: policy, generation, interfaces: [{ name: 'eth0', direction: 'Egress', state: 'Attached' }], errors: [] }] } });
  }
  return { nodes, states };
}

/** Microseconds per aggregateStatus call over n nodes, for each of `runs` timed loops of at least 100 ms. */
function pureAggregation(n: number, runs: number): number[] {
  const { nodes, states } = simulatedNodes(n, 'agg', 1);
  const input = { name: 'agg', generation: 1, selector: { matchLabels: { [SIM_LABEL]: 'yes' } }, nodes, nodeStates: states };
  const check = aggregateStatus(input);
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

const RSS_PROBE = `
if (process.argv[1]) await import(process.argv[1]);
await new Promise((res) => setTimeout(res, 500));
const m = /^VmRSS:\\s+(\\d+) kB/m.exec((await import('node:fs')).readFileSync('/proc/self/status', 'utf8'));
process.stdout.write(String(Number(m[1]) / 1024));
`;

/** Resident memory of a bare node process and of one that has imported @kubernetes/client-node: what the agent's and the operator's figures start from. */
async function nodeBaselines(): Promise<{ bareNodeMiB: number; clientNodeMiB: number }> {
  const probe = async (module: string): Promise<number> => {
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', RSS_PROBE, module]);
    return Number(stdout);
  };
  const clientNode = path.join(ROOT, 'node_modules/@kubernetes/client-node/dist/index.js');
  return { bareNodeMiB: await probe(''), clientNodeMiB: await probe(clientNode) };
}

// -------------------------------------------------------------------------------------------
// The cluster: API server, operator, agent, and what watches the wire and the hook

/** SYNs seen at the peer, from tcpdump writing pcap to a pipe; the timestamps are the capture's. */
class SynCapture {
  readonly events = new Events<{ atMs: number; token: Buffer | null }>();
  syns = 0;
  marked = 0;
  private header: Buffer | null = null;
  private pending = Buffer.alloc(0);
  private stderr = '';

  private constructor(private readonly child: ChildProcess) {}

  static async start(ns: string, dev: string, port: number): Promise<SynCapture> {
    const filter = `tcp dst port ${port} and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn`;
    const child = spawnIn(ns, 'tcpdump', ['-i', dev, '-U', '-w', '-', '-n', '--immediate-mode', '-s', '256', '--time-stamp-precision=nano', filter]);
    const c = new SynCapture(child);
    child.stdout?.on('data', (d: Buffer) => c.feed(d));
    child.stderr?.setEncoding('utf8');
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`tcpdump in ${ns} did not start: ${c.stderr.trim()}`)), 10_000);
      child.stderr?.on('data', (d: string) => {
        c.stderr += d;
        if (c.stderr.includes('listening on')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`tcpdump in ${ns} exited (${code}): ${c.stderr.trim()}`));
      });
    }).catch(async (err: unknown) => {
      await c.stop();
      throw err;
    });
    return c;
  }

  private feed(chunk: Buffer): void {
    this.pending = Buffer.concat([this.pending, chunk]);
    if (!this.header) {
      if (this.pending.length < 24) return;
      this.header = this.pending.subarray(0, 24);
      this.pending = this.pending.subarray(24);
    }
    const pcap = parsePcap(Buffer.concat([this.header, this.pending]));
    let used = 0;
    for (const p of pcap.packets) {
      used += 16 + p.data.length;
      const f = parseFrame(toEthernet(pcap.linkType, p.data));
      if (!f.tcp || !(f.tcp.flags & TCP_SYN) || f.tcp.flags & TCP_ACK) continue;
      const token = findTokenOption(f, KIND, EXID);
      this.syns++;
      if (token) this.marked++;
      this.events.push({ atMs: p.tsSec * 1000 + p.tsNsec / 1e6, token });
    }
    this.pending = Buffer.from(this.pending.subarray(used));
  }

  async stop(): Promise<void> {
    this.child.kill('SIGTERM');
    if (!(await waitForExit(this.child, 5000))) {
      this.child.kill('SIGKILL');
      await waitForExit(this.child, 5000);
    }
  }
}

const HOOK_WATCH = `
const { binding } = await import(process.argv[1]);
const b = binding();
const ifindex = Number(process.argv[2]);
let last = '';
const poll = () => {
  const tcx = b.tcxQuery(ifindex, 'egress');
  const tc = b.tcQuery({ ifindex, direction: 'egress', handle: 0x4e54, priority: 1 });
  const s = JSON.stringify({ tcx, tc });
  if (s === last) return;
  last = s;
  process.stdout.write(JSON.stringify({ t: performance.timeOrigin + performance.now(), tcx, tc }) + '\\n');
};
poll();
setInterval(poll, Number(process.argv[3]));
`;

/** Polls the kernel's egress hooks of one interface every few ms and reports each change with its time. */
class HookWatch {
  readonly events = new Events<{ t: number; attached: boolean }>();
  private constructor(private readonly child: ChildProcess) {}

  static start(ns: string, ifindex: number, everyMs = 2): HookWatch {
    const child = spawnIn(ns, process.execPath, ['--input-type=module', '-e', HOOK_WATCH, BINDING_JS, String(ifindex), String(everyMs)]);
    const w = new HookWatch(child);
    let buf = '';
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (d: string) => {
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        const e = JSON.parse(line) as { t: number; tcx: number[]; tc: number | null };
        w.events.push({ t: e.t, attached: e.tcx.length > 0 || e.tc !== null });
      }
    });
    return w;
  }

  async stop(): Promise<void> {
    this.child.kill('SIGKILL');
    await waitForExit(this.child, 5000);
  }
}

const CONNECT_LOOP = `
const net = require('node:net');
const [host, port, every] = process.argv.slice(1);
const tick = () => {
  const s = net.connect({ host, port: Number(port) });
  const done = () => s.destroy();
  s.on('connect', done);
  s.on('error', done);
  setTimeout(tick, Number(every));
};
tick();
`;

function secretYaml(name: string, token: Buffer): string {
  return `apiVersion: v1
kind: Secret
metadata: {name: ${name}, namespace: ${NS}}
type: Opaque
data: {current: ${token.toString('base64')}}
`;
}

function policyYaml(name: string, label: string, dev: string, secret: string, cidr: string, port: number, selector = ''): string {
  return `apiVersion: netoken.io/v1alpha1
kind: TokenPolicy
metadata: {name: ${name}, labels: {netoken-bench: ${label}}}
spec:
${selector ? `  nodeSelector: {matchLabels: {${selector}}}\n` : ''}  interfaces: {names: [${dev}]}
  token: {mode: Static, secretRef: {name: ${secret}}}
  egress: {destinations: [{cidr: ${cidr}, ports: [${port}]}]}
`;
}

interface PolicyObject {
  metadata?: { name?: string; generation?: number };
  status?: { observedGeneration?: number; nodes?: { selected: number; ready: number; failed: number }; conditions?: { type: string; status: string }[] };
}

/** The node process behind a pid that nsenter may still be (nsenter execs it; a fork would leave it a child). */
function nodePid(pid: number): number {
  const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  if (comm !== 'nsenter') return pid;
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
  if (!children[0]) throw new Error(`process ${pid} (nsenter) has no child`);
  return children[0];
}

const CLK_TCK = ((): number => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** utime+stime of the process and of its waited-for children (the agent runs `ip`), in clock ticks. */
function cpuTicks(pid: number): { self: number; children: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
  // Fields 14-17 of proc(5) (utime, stime, cutime, cstime); f[0] is field 3.
  return { self: (f[11] ?? 0) + (f[12] ?? 0), children: (f[13] ?? 0) + (f[14] ?? 0) };
}

function rssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]) / 1024;
}

interface Usage {
  /** VmRSS samples over the window, MiB */
  rssMiB: number[];
  /** utime+stime over the window, percent of one CPU */
  cpuPercent: number;
  /** the same for children it waited for (`ip` listing interfaces) */
  childCpuPercent: number;
}

async function measureWindow(pids: Record<string, number>, seconds: number): Promise<Record<string, Usage>> {
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
      cpuPercent: round(((end.self - s.self) / CLK_TCK / elapsed) * 100, 2),
      childCpuPercent: round(((end.children - s.children) / CLK_TCK / elapsed) * 100, 2),
    };
  }
  return out;
}

class Session {
  cluster: TestCluster | null = null;
  topo: Topology | null = null;
  bridge: LoopbackBridge | null = null;
  agent: AgentRun | null = null;
  operator: ChildProcess | null = null;
  readonly operatorLog = new Tail();
  operatorPort = 0;
  kc = new KubeConfig();
  /** every token made for the run, to prove none of them leaks into a log */
  readonly tokens: Buffer[] = [];

  get c(): TestCluster {
    if (!this.cluster) throw new Error('no cluster');
    return this.cluster;
  }

  get t(): Topology {
    if (!this.topo) throw new Error('no topology');
    return this.topo;
  }

  get a(): AgentRun {
    if (!this.agent) throw new Error('no agent');
    return this.agent;
  }

  token(): Buffer {
    const t = randomBytes(8);
    this.tokens.push(t);
    return t;
  }

  context = (): string => `agent log:\n${this.agent?.log().slice(-3000) ?? ''}\noperator log:\n${this.operatorLog.last()}`;

  async start(log: (line: string) => void): Promise<void> {
    const t0 = performance.now();
    this.cluster = await TestCluster.start();
    this.kc.loadFromFile(this.cluster.kubeconfig);
    this.topo = await createTopology({ name: 'cp', kind: 'pair', prefix: PREFIX });
    this.bridge = await bridgeLoopback(this.topo.client.ns, Number(new URL(this.cluster.server).port));
    await installChartRbac(this.cluster, NS);
    await this.cluster.apply(`apiVersion: v1
kind: Node
metadata: {name: ${NODE}, labels: {${NODE_SELECTOR}}}
`);
    const agentKc = await agentKubeconfig(this.cluster, NODE, NS);
    this.agent = agentIn(this.topo.client.ns, 'cp');
    // The agent's own defaults where they matter for its cost (startCluster asks for 1 s counters and debug logs).
    await this.agent.startCluster(agentKc, NODE, NS, ['--counter-interval', '60s', '--log-level', 'info', '--interface-poll', '2s']);
    const opKc = await operatorKubeconfig(this.cluster, NS);
    this.operatorPort = (await freePorts(1))[0] as number;
    const child = spawn(
      process.execPath,
      [BIN, 'operator', `--kubeconfig=${opKc}`, `--namespace=${NS}`, `--metrics-address=127.0.0.1:${this.operatorPort}`, '--log-format=json', '--log-level=info'],
      { cwd: ROOT, env: { ...process.env, POD_NAME: 'netoken-operator-bench', KUBECONFIG: '' }, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
    );
    // Listed for the cluster's watchdog: if this process dies, the operator goes with the API server.
    if (child.pid !== undefined) appendFileSync(path.join(this.cluster.dir, 'pgids'), `${child.pid}\n`);
    this.operator = child;
    for (const s of [child.stdout, child.stderr]) {
      s?.setEncoding('utf8');
      s?.on('data', (d: string) => this.operatorLog.add(d));
    }
    await this.a.waitStatus((s) => s.ready, 60_000, 'the agent to sync with the API server');
    await waitUntil('the operator to be ready', 60_000, async () => {
      if (child.exitCode !== null) throw new Error(`the operator exited with ${child.exitCode}\n${this.operatorLog.last()}`);
      try {
        const r = await fetch(`http://127.0.0.1:${this.operatorPort}/readyz`);
        return r.ok && /leader/.test(await r.text()) ? true : undefined;
      } catch {
        return undefined;
      }
    });
    log(`control plane: API server, operator and agent ready in ${Math.round((performance.now() - t0) / 1000)} s`);
  }

  pids(): { agent: number; operator: number } {
    const agent = this.agent?.child?.pid;
    const operator = this.operator?.pid;
    if (agent === undefined || operator === undefined) throw new Error('the agent or the operator is not running');
    return { agent: nodePid(agent), operator };
  }

  /** Fails the run when any token of the run appears in the agent's or the operator's output. */
  checkNoTokens(): void {
    for (const [where, text] of [['agent', this.agent?.log() ?? ''], ['operator', this.operatorLog.text]] as const) {
      for (const t of this.tokens) {
        for (const enc of [t.toString('hex'), t.toString('base64'), t.toString('base64url')]) {
          if (text.includes(enc)) throw new Error(`a token of this run appears in the ${where}'s output`);
        }
      }
    }
  }

  async stop(): Promise<void> {
    const op = this.operator;
    if (op?.pid !== undefined && op.exitCode === null && op.signalCode === null) {
      process.kill(-op.pid, 'SIGTERM');
      if (!(await waitForExit(op, 15_000))) {
        process.kill(-op.pid, 'SIGKILL');
        await waitForExit(op, 5000);
      }
    }
    await this.agent?.cleanup().catch(() => undefined);
    await this.bridge?.close().catch(() => undefined);
    await this.topo?.destroy().catch(() => undefined);
    await this.cluster?.stop();
  }
}

/** kubectl apply of a fresh policy → the first SYN with its token at the peer; kubectl delete → no hook on the interface. */
async function applyToWire(s: Session, applies: number, log: (line: string) => void): Promise<{ applyMs: number[]; deleteMs: number[]; syns: number; marked: number }> {
  const t = s.t;
  const tokens = Array.from({ length: applies }, () => s.token());
  // Each policy has its own Secret with its own token, made beforehand: the apply is the policy alone.
  await s.c.apply(tokens.map((tok, i) => secretYaml(`cp-wire-${i}-token`, tok)).join('---\n'));
  await sleep(1000);
  const capture = await SynCapture.start(t.server.ns, t.server.dev, WIRE_PORT);
  const hooks = HookWatch.start(t.client.ns, t.client.ifindex);
  // A SYN every 5 ms: the time a token first appears is known to about that much.
  const loop = spawnIn(t.client.ns, process.execPath, ['-e', CONNECT_LOOP, t.server.ipv4, String(WIRE_PORT), '5']);
  const applyMs: number[] = [];
  const deleteMs: number[] = [];
  try {
    await capture.events.waitFor(() => true, 10_000, 'the first SYN of the connection loop at the peer');
    for (let i = 0; i < applies; i++) {
      const name = `cp-wire-${i}`;
      const token = tokens[i] as Buffer;
      const t0 = now();
      const marked = capture.events.waitFor((e) => e.atMs >= t0 && e.token !== null && e.token.equals(token), 30_000, `a SYN with ${name}'s token`, s.context);
      await s.c.apply(policyYaml(name, 'wire', t.client.dev, `${name}-token`, `${t.server.ipv4}/32`, WIRE_PORT, NODE_SELECTOR));
      applyMs.push((await marked).atMs - t0);
      const t1 = now();
      const gone = hooks.events.waitFor((e) => e.t >= t1 && !e.attached, 30_000, `the hook to leave ${t.client.dev} after deleting ${name}`, s.context);
      await s.c.kubectlOk(['delete', 'tokenpolicy', name, '--wait=false']);
      deleteMs.push((await gone).t - t1);
      log(`control plane: apply ${i + 1}/${applies}: on the wire after ${Math.round(applyMs.at(-1) ?? 0)} ms, hook gone ${Math.round(deleteMs.at(-1) ?? 0)} ms after delete`);
    }
  } finally {
    loop.kill('SIGKILL');
    await waitForExit(loop, 5000);
    await hooks.stop();
    await capture.stop();
  }
  // The finalizers of the deleted policies go once the node has reported them gone.
  await waitUntil('the deleted policies to be released', 60_000, async () => {
    const r = await s.c.kubectlOk(['get', 'tokenpolicies', '-l', 'netoken-bench=wire', '-o', 'name']);
    return r.trim() === '' ? true : undefined;
  }, 300, s.context);
  return { applyMs, deleteMs, syns: capture.syns, marked: capture.marked };
}

interface LoadResult {
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
async function resources(s: Session, n: number, seconds: number, log: (line: string) => void): Promise<LoadResult> {
  const pids = s.pids();
  await sleep(2000);
  log(`control plane: idle window, ${seconds} s`);
  const idle = await measureWindow(pids, seconds);

  const custom = s.kc.makeApiClient(CustomObjectsApi);
  const t = s.t;
  const docs = [secretYaml('cp-load-token', s.token())];
  for (let i = 0; i < n; i++) {
    docs.push(policyYaml(`cp-load-${String(i).padStart(3, '0')}`, 'load', t.client.dev, 'cp-load-token', `198.18.${i >> 8}.${i & 255}/32`, 443, NODE_SELECTOR));
  }
  const reconcilesBefore = s.a.status()?.reconciles ?? 0;
  const t0 = performance.now();
  await s.c.kubectlOk(['create', '-f', '-'], { input: docs.join('---\n'), timeoutMs: 180_000 });
  let agentAppliedMs = 0;
  let operatorReadyMs = 0;
  let agentReconciles = 0;
  let agentLastReconcileMs = 0;
  let lastLog = performance.now();
  await waitUntil(`the agent to apply ${n} policies and the operator to report them Ready`, Math.max(240_000, n * 600), async () => {
    const st = s.a.status();
    const applied = st?.ready ? st.policies.filter((p) => p.name.startsWith('cp-load-') && p.errors.length === 0).length : 0;
    if (!agentAppliedMs && applied === n && st) {
      agentAppliedMs = performance.now() - t0;
      agentReconciles = st.reconciles - reconcilesBefore;
      agentLastReconcileMs = st.lastReconcileMs;
    }
    const items = ((await custom.listClusterCustomObject({ group: API_GROUP, version: API_VERSION, plural: 'tokenpolicies', labelSelector: 'netoken-bench=load' })) as { items: PolicyObject[] }).items;
    const ready = items.filter((p) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') && p.status.nodes?.ready === 1).length;
    if (!operatorReadyMs && ready === n) operatorReadyMs = performance.now() - t0;
    if (performance.now() - lastLog > 10_000) {
      lastLog = performance.now();
      log(`control plane: after ${Math.round((lastLog - t0) / 1000)} s: the agent has applied ${applied} of ${n} policies (${(st?.reconciles ?? 0) - reconcilesBefore} reconciles, the last took ${st?.lastReconcileMs ?? 0} ms), the operator reports ${ready} Ready`);
    }
    return agentAppliedMs && operatorReadyMs ? true : undefined;
  }, 500, s.context);
  log(`control plane: ${n} policies applied by the agent in ${round(agentAppliedMs / 1000)} s (${agentReconciles} reconciles), all Ready in ${round(operatorReadyMs / 1000)} s; loaded window, ${seconds} s`);
  await sleep(2000);
  const loaded = await measureWindow(pids, seconds);
  return { idle, loaded, agentAppliedMs, operatorReadyMs, agentReconciles, agentLastReconcileMs };
}

interface AggregationResult {
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
async function clusterAggregation(s: Session, n: number, runs: number, log: (line: string) => void): Promise<AggregationResult> {
  const core = s.kc.makeApiClient(CoreV1Api);
  const custom = s.kc.makeApiClient(CustomObjectsApi);
  const policy = 'cp-agg';
  const { nodes } = simulatedNodes(n, policy, 1);
  const names = nodes.map((x) => x.metadata?.name as string);
  const report = (generation: number): Record<string, unknown> => ({
    status: {
      agent: { version: 'bench', kernelRelease: 'bench', tcx: true },
      policies: [{ name: policy, generation, interfaces: [{ name: 'eth0', direction: 'Egress', attachMode: 'tcx', state: 'Attached' }], counters: {}, errors: [] }],
    },
  });
  const writeReports = (generation: number): Promise<void> =>
    inPool(names, 16, async (name) => {
      await custom.patchClusterCustomObjectStatus({ group: API_GROUP, version: API_VERSION, plural: 'tokennodestates', name, body: report(generation) }, mergePatch);
    });

  const t0 = performance.now();
  await inPool(names, 16, async (name) => {
    await core.createNode({ body: { metadata: { name, labels: { [SIM_LABEL]: 'yes' } } } });
    await custom.createClusterCustomObject({ group: API_GROUP, version: API_VERSION, plural: 'tokennodestates', body: { apiVersion: API, kind: 'TokenNodeState', metadata: { name } } });
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
  const complete = (g: number) => (e: { p: PolicyObject }): boolean => e.p.status?.observedGeneration === g && e.p.status.nodes?.ready === n && e.p.status.nodes.selected === n;
  try {
    await sleep(500);
    const sel = `${JSON.stringify(SIM_LABEL)}: "yes"`;
    const c0 = now();
    const created = events.waitFor(complete(1), 120_000, `${policy}'s status to show ${n} nodes Ready`, s.context);
    await s.c.kubectlOk(['create', '-f', '-'], { input: policyYaml(policy, 'agg', 'eth0', `${policy}-token`, '192.0.2.0/24', 443, sel) });
    const createMs = (await created).t - c0;
    log(`control plane: ${policy} created → status shows ${n} nodes Ready after ${Math.round(createMs)} ms`);

    const lagMs: number[] = [];
    const totalMs: number[] = [];
    const reportMs: number[] = [];
    for (let r = 0; r < runs; r++) {
      const g = r + 2;
      // An edit (a new generation): every node is pending until its report says it applied it.
      const pending = events.waitFor((e) => e.p.status?.observedGeneration === g, 60_000, `${policy}'s status for generation ${g}`, s.context);
      await custom.patchClusterCustomObject(
        { group: API_GROUP, version: API_VERSION, plural: 'tokenpolicies', name: policy, body: { spec: { egress: { destinations: [{ cidr: '192.0.2.0/24', ports: [1000 + r] }] } } } },
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
      log(`control plane: edit ${r + 1}/${runs}: ${n} reports written in ${Math.round(r1 - r0)} ms; status complete ${Math.round(e.t - r1)} ms after the last`);
    }
    return { createMs, lagMs, totalMs, reportMs, setupMs };
  } finally {
    watch.abort();
  }
}

// -------------------------------------------------------------------------------------------
// The benchmark

/**
 * The standalone agent (a policy file, no cluster): it never loads the Kubernetes client.
 * One policy on a veth in a namespace of its own, measured once its hook is up.
 */
async function standaloneUsage(seconds: number): Promise<Usage> {
  const topo = await createTopology({ name: 'cp-alone', kind: 'pair', prefix: PREFIX });
  const agent = agentIn(topo.client.ns, 'cp-alone');
  try {
    agent.writePolicy(filePolicyYaml([{ name: 'alone', spec: `interfaces: {names: [${topo.client.dev}]}\negress: {destinations: [{cidr: 203.0.113.0/24}]}` }]));
    await agent.start(['--log-level', 'info']);
    await agent.waitStatus((st) => st.hooks.length === 1, 30_000, 'the standalone agent\'s hook');
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

export async function runControlPlaneBench(opts: ControlPlaneBenchOptions): Promise<ControlPlaneBenchResult> {
  const log = opts.log ?? ((): void => undefined);
  ensureBuilt();
  await sweepStale(PREFIX);
  const figures: Figure[] = [];
  const details: Record<string, unknown> = {};
  const remarks: string[] = [];

  // Without the cluster first: nothing else runs while the maps are written.
  const maps = await runMapBench(opts, log);
  details.mapUpdate = maps;
  const m = mapFigures(maps);

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
    details.applyToWire = { applyMs: wire.applyMs.map((x) => round(x)), deleteMs: wire.deleteMs.map((x) => round(x)), synsCaptured: wire.syns, synsMarked: wire.marked };
    const load = await resources(s, opts.loadPolicies, opts.windowSeconds, log);
    details.resources = load;
    const agg = await clusterAggregation(s, opts.simulatedNodes, opts.aggregationRuns, log);
    details.aggregation = agg;
    s.checkNoTokens();

    // 1. apply → wire, delete → hook gone
    const n = wire.applyMs.length;
    const wireNote =
      `From the start of \`kubectl apply\` (a new TokenPolicy with its own pre-made Secret and token, every sample) to the capture time of the first SYN at the peer that carries that token; ` +
      `the real operator and a cluster-mode agent (chart RBAC) against a test kube-apiserver, the node's connection loop sending a SYN every 5 ms. Percentiles are nearest-rank (p99 of ${n} samples is the largest).`;
    const deleteNote =
      'From the start of `kubectl delete` to the moment a 2 ms poll of the interface (TCX and tc) finds no hook of ours; each delete removes the only policy on the node.';
    figures.push(
      figure({ group: GROUP, benchmark: 'kubectl apply → token on the wire', config: `p50 of ${n} applies`, unit: 'ms', runs: [percentile(wire.applyMs, 0.5)], note: wireNote }),
      figure({
        group: GROUP, benchmark: 'kubectl apply → token on the wire', config: `p99 of ${n} applies`, unit: 'ms', runs: [percentile(wire.applyMs, 0.99)],
        baseline: { benchmark: 'budget', value: APPLY_BUDGET_MS }, target: { kind: 'at most', ratio: 1 }, note: wireNote,
      }),
      figure({ group: GROUP, benchmark: 'kubectl delete → hook gone from the interface', config: `p50 of ${n} deletes`, unit: 'ms', runs: [percentile(wire.deleteMs, 0.5)], note: deleteNote }),
      figure({ group: GROUP, benchmark: 'kubectl delete → hook gone from the interface', config: `p99 of ${n} deletes`, unit: 'ms', runs: [percentile(wire.deleteMs, 0.99)], note: deleteNote }),
    );

    // 2. memory and CPU
    const loadedLabel = countLabel(opts.loadPolicies, 'policies applied');
    const rssNote = `VmRSS from /proc/PID/status, sampled 4 times a second over a ${opts.windowSeconds} s window (the median is shown); idle = no policy, after the apply/delete rows ran.`;
    const cpuNote = (who: string): string =>
      `utime+stime from /proc/PID/stat over a ${opts.windowSeconds} s window, in percent of one CPU` +
      (who === 'agent' ? '; the `ip` commands the agent runs to list interfaces are in latest.json (childCpuPercent).' : '.');
    for (const who of ['agent', 'operator'] as const) {
      for (const [config, u] of [['idle, no policy', load.idle[who]], [loadedLabel, load.loaded[who]]] as const) {
        if (!u) continue;
        const budget = config === 'idle, no policy' ? RSS_BUDGETS_MIB[who].idle : RSS_BUDGETS_MIB[who].loaded;
        figures.push(
          figure({
            group: GROUP, benchmark: `${who} resident memory`, config, unit: 'MiB', runs: u.rssMiB, note: rssNote,
            ...(budget ? { baseline: { benchmark: 'budget', value: budget }, target: { kind: 'at most' as const, ratio: 1 } } : {}),
          }),
        );
      }
      for (const [config, u] of [['idle, no policy', load.idle[who]], [loadedLabel, load.loaded[who]]] as const) {
        if (u) figures.push(figure({ group: GROUP, benchmark: `${who} CPU`, config, unit: '% of a CPU', runs: [u.cpuPercent], note: cpuNote(who) }));
      }
    }
    figures.push(
      figure({
        group: GROUP, benchmark: 'agent resident memory', config: 'idle, standalone (policy file, one policy)', unit: 'MiB', runs: alone.rssMiB,
        note: `${rssNote.replace(/; idle = .*$/, '')}; the agent run from a policy file, which never loads the Kubernetes client.`,
        baseline: { benchmark: 'budget', value: AGENT_RSS_BUDGET_MIB }, target: { kind: 'at most', ratio: 1 },
      }),
      figure({ group: GROUP, benchmark: 'agent CPU', config: 'idle, standalone (policy file, one policy)', unit: '% of a CPU', runs: [alone.cpuPercent], note: cpuNote('agent') }),
    );
    remarks.push(
      `control plane: ${loadedLabel} with one \`kubectl create\`: the agent had applied all after ${round(load.agentAppliedMs / 1000)} s ` +
        `(${load.agentReconciles} reconciles, the last one ${load.agentLastReconcileMs} ms), the operator reported all Ready after ${round(load.operatorReadyMs / 1000)} s.`,
      `control plane: for scale, a bare \`node\` process holds ${round(rssContext.bareNodeMiB)} MiB resident and one that has imported @kubernetes/client-node ` +
        `${round(rssContext.clientNodeMiB)} MiB (both agent and operator load it).`,
      `control plane: ${n} applies sent ${wire.syns} SYNs to the peer, ${wire.marked} of them marked; no token of the run appeared in the agent's or the operator's output.`,
    );

    // 3. map update
    figures.push(...m.figures);
    remarks.push(...m.remarks);

    // 4. status aggregation
    const nodesLabel = countLabel(opts.simulatedNodes, 'nodes');
    figures.push(
      figure({
        group: GROUP, benchmark: 'status aggregation, pure function (aggregateStatus)', config: nodesLabel, unit: 'µs', runs: pureRuns,
        note: 'One call of src/operator/status.ts aggregateStatus for one policy selecting every node, each node reporting it applied; median of 9 loops of at least 100 ms.',
      }),
      figure({
        group: GROUP, benchmark: 'status aggregation: last node report → policy status shows every node', config: nodesLabel, unit: 'ms', runs: agg.lagMs,
        note:
          'Simulated nodes (a Node and a TokenNodeState each, written by the benchmark as an agent would) report a new policy generation, 16 writes at a time; ' +
          'the time from the last report written to the watch event of the TokenPolicy whose status counts every node Ready on that generation, per policy edit.',
      }),
    );
    remarks.push(
      `status aggregation, ${nodesLabel}: the policy's status showed every node Ready ${Math.round(agg.createMs)} ms after \`kubectl create\`; ` +
        `per edit the ${opts.simulatedNodes} reports took ${Math.round(median(agg.reportMs))} ms to write and the status was complete ${Math.round(median(agg.totalMs))} ms after the first.`,
    );
  } finally {
    await s.stop();
  }
  const text = JSON.stringify({ figures, details, remarks });
  for (const t of s.tokens) {
    if ([t.toString('hex'), t.toString('base64'), t.toString('base64url')].some((enc) => text.includes(enc))) throw new Error('a token of this run appears in the results');
  }
  return { figures, details, remarks };
}

if (process.argv[1] && path.resolve(process.argv[1]) === THIS_FILE && process.argv[2] === MAP_CHILD) {
  mapChild(JSON.parse(process.argv[3] ?? '{}') as MapChildInput).then(
    (r) => process.stdout.write(`${JSON.stringify(r)}\n`, () => process.exit(0)),
    (err: unknown) => {
      process.stderr.write(`map update benchmark: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
