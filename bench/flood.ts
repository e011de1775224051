/**
 * SYN flood: unmarked SYNs (random source ports and sequence numbers, no token option) sent
 * over a veth pair from a client namespace, received in a server namespace
 *
 *   - by a no-op XDP program that drops every frame (the baseline: the cheapest XDP drop),
 *   - by the verifier in Enforce, attached by the real `netoken agent` from a policy file,
 *   - with no hook: the SYNs reach TCP and a listener (SYN-ACKs, SYN cookies).
 *
 * The generator is bench/net/synflood.c (AF_PACKET, qdisc bypassed), pinned to one CPU. XDP
 * runs in native mode on the receiving veth, which hands every frame to its peer on the
 * sending CPU: the receiving side's work (XDP, or the TCP stack) runs in softirq right after
 * each frame is sent, so the flood's rate is what one core achieves sending and receiving,
 * and a costlier receiver slows it. Two figures per configuration: SYNs handled per second
 * of the flood, and the CPU time per SYN of that core (the generator's thread, which the
 * softirq work is charged to, plus the CPU's ksoftirqd for work deferred to it), which
 * other work on the machine taking the CPU away does not change. "Handled": dropped by XDP
 * (the veth's own xdp_drops counter, the same for both programs) or, with no hook, taken
 * in by TCP (TcpInSegs).
 *
 * Each configuration has its own topology; the floods alternate between configurations, so
 * drift in the machine's load falls on all of them alike.
 *
 * This benchmark alone: `node dist/bench/run.js --only flood` (`npm run bench` runs all).
 */
import type { ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { buildFrame, TCP_SYN } from '../src/lib/packet.js';
import { agentIn, policyYaml, type AgentRun } from '../test/lib/agent.js';
import {
  createTopology,
  exec,
  netnsPath,
  permanentNeighbour,
  run,
  sweepStale,
  waitForExit,
  type Topology,
} from '../test/lib/netns.js';
import { SYNFLOOD, XDP_DROP, ensureBuilt } from './artifacts.js';
import { figure, median, type BenchResult, type Figure, type Target } from './report.js';
import { untilDecided, type RowSpec } from './decide.js';
import { startServer } from './connections.js';
import { sleep } from '../src/lib/wait.js';

const PREFIX = 'ntflood-';
/** An unmarked flood dies at the verifier almost as fast as at the cheapest XDP drop. */
const RATE_TARGET: Target = { kind: 'at least', ratio: 0.95 };
const PORT = 5001;
/**
 * Source address of the flood (RFC 2544 benchmark range): no interface has it. The server
 * reaches it through a permanent neighbour entry (the client's MAC), so its SYN-ACKs leave
 * without ARP, and the client drops them (forwarding is off there).
 */
const FLOOD_SRC = '198.18.0.1';
/** MSS, SACK-permitted, timestamps, NOP, window scale: the 20 option bytes of a Linux SYN. */
const LINUX_SYN_OPTIONS = Buffer.from('020405b40402080a0001e24000000000' + '01030307', 'hex');

export interface FloodBenchOptions {
  /** length of one flood */
  seconds: number;
  /** floods per configuration at least (the verifier and the no-op drop get more while its verdict is undecided); the median is reported */
  runs: number;
  /** floods of the verifier and the no-op drop at most */
  maxRuns?: number;
  /** no new round after this many seconds of flooding */
  budgetSeconds?: number;
  log?: (line: string) => void;
}

interface FloodConfig {
  id: 'drop' | 'verifier' | 'none';
  name: string;
  /** what the receiving side does with a SYN, for the checks */
  handled: string;
  /** attaches the hook; returns the agent when one was used */
  attach(t: Topology, label: string): Promise<AgentRun | null>;
}

/** Counters of the receiving side, read before and after each flood. */
interface Snapshot {
  /** frames XDP dropped (veth rx queues' xdp_drops) */
  xdpDrops: number;
  /** frames the veth dropped because its receive ring was full */
  ringDrops: number;
  /** Tcp and TcpExt counters of the server namespace (/proc/net/snmp, /proc/net/netstat) */
  tcp: Record<string, number>;
  /** CPU time of ksoftirqd on the generator's CPU, ns */
  ksoftirqdNs: number;
}

interface Live {
  cfg: FloodConfig;
  topo: Topology;
  frameHex: string;
  server: ChildProcess | null;
  agent: AgentRun | null;
}

interface FloodRun {
  sent: number;
  refused: number;
  seconds: number;
  /** the generator thread's CPU time, the receiving side's softirq work included */
  cpuSeconds: number;
  /** receiving work deferred to ksoftirqd on the generator's CPU (other softirq work there too) */
  ksoftirqdSeconds: number;
  /** SYNs the receiving side handled: dropped at XDP, or (no hook) taken in by TCP */
  handled: number;
  delta: Omit<Snapshot, 'ksoftirqdNs'>;
}

const CONFIGS: readonly FloodConfig[] = [
  {
    id: 'drop',
    name: 'no-op XDP program (XDP_DROP)',
    handled: 'dropped at XDP',
    attach: async (t) => {
      await run('ip', ['-n', t.server.ns, 'link', 'set', 'dev', t.server.dev, 'xdpdrv', 'obj', XDP_DROP.object, 'sec', 'xdp'], {
        timeoutMs: 15_000,
      });
      return null;
    },
  },
  {
    id: 'verifier',
    name: 'verifier (Enforce)',
    handled: 'dropped at XDP',
    attach: async (t, label) => {
      const agent = agentIn(t.server.ns, label);
      try {
        agent.writePolicy(
          policyYaml([
            { name: 'flood', spec: `interfaces: {names: [${t.server.dev}]}\ningress: {action: Enforce, ports: [${PORT}]}` },
          ]),
        );
        // Native XDP, asked for: the comparison is with a no-op program there (auto takes tc on a veth).
        await agent.start(['--log-level', 'warn', '--ingress-attach', 'xdp-native']);
        const s = await agent.waitStatus(
          (x) => x.ready || x.hookErrors.length > 0 || x.documentErrors.length > 0,
          30_000,
          'the agent to attach the verifier',
        );
        const hook = s.hooks.find((h) => h.direction === 'ingress');
        if (hook?.mode !== 'xdp-native') {
          throw new Error(
            `the agent attached the verifier as ${hook?.mode ?? 'nothing'}, want xdp-native (hook errors: ${JSON.stringify(s.hookErrors)})`,
          );
        }
        // The hook stays when the agent stops; its counters are checked after the floods.
        await agent.stop('SIGTERM');
        return agent;
      } catch (err) {
        await agent.cleanup().catch(() => undefined);
        throw err;
      }
    },
  },
  {
    id: 'none',
    name: 'no hook (to a listener)',
    handled: 'taken in by TCP (TcpInSegs)',
    attach: async () => null,
  },
];

/** Sum of the veth's per-queue counters named rx_queue_<n>_<stat> (ethtool -S). */
function ethtoolSum(text: string, stat: string): number {
  let total = 0;
  for (const m of text.matchAll(/^\s*rx_queue_\d+_(\w+):\s*(\d+)\s*$/gm)) {
    if (m[1] === stat) total += Number(m[2]);
  }
  return total;
}

/** The "Tcp:" and "TcpExt:" header and value line pairs of /proc/net/snmp and /proc/net/netstat, as TcpInSegs, TcpExtListenDrops, ... */
function procCounters(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const head = (lines[i] as string).split(/\s+/);
    const vals = (lines[i + 1] as string).split(/\s+/);
    const group = (head[0] ?? '').replace(/:$/, '');
    if (group !== 'Tcp' && group !== 'TcpExt') continue;
    head.slice(1).forEach((k, j) => (out[`${group}${k}`] = Number(vals[j + 1])));
  }
  return out;
}

/** The generator's CPU, where the receiving side's softirq work runs too: the first one this process may use. */
function floodCpu(): number {
  const allowed = /^Cpus_allowed_list:\s*(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return Number(allowed?.[1] ?? 0);
}

/** The ksoftirqd thread of one CPU. */
function ksoftirqd(cpu: number): number {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() === `ksoftirqd/${cpu}`) return Number(entry);
    } catch {
      // the task ended while we looked
    }
  }
  throw new Error(`no ksoftirqd/${cpu} thread`);
}

/** CPU time of a thread in ns (the first field of /proc/PID/schedstat). */
function cpuNs(pid: number): number {
  return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]);
}

/**
 * Whether softirq time is accounted apart from the task it interrupted: then the generator's
 * CPU time would leave the receiving side's work out. null when the kernel does not say.
 */
function irqTimeAccounting(): boolean | null {
  try {
    const config = gunzipSync(readFileSync('/proc/config.gz')).toString('utf8');
    return /^CONFIG_IRQ_TIME_ACCOUNTING=y$/m.test(config);
  } catch {
    return null;
  }
}

async function snapshot(l: Live, softirqPid: number): Promise<Snapshot> {
  const { stdout } = await exec(l.topo.server.ns, 'ethtool', ['-S', l.topo.server.dev]);
  const pid = l.server?.pid;
  if (pid === undefined) throw new Error('the listener is not running');
  // The listener lives in the server namespace: its /proc/PID/net is that namespace's.
  const tcp = procCounters(
    `${readFileSync(`/proc/${pid}/net/snmp`, 'utf8')}\n${readFileSync(`/proc/${pid}/net/netstat`, 'utf8')}`,
  );
  return {
    xdpDrops: ethtoolSum(stdout, 'xdp_drops'),
    ringDrops: ethtoolSum(stdout, 'drops'),
    tcp,
    ksoftirqdNs: cpuNs(softirqPid),
  };
}

/** Starts netbench's listener in the server namespace; resolves once it listens. */
function startListener(t: Topology): Promise<ChildProcess> {
  return startServer(t, PORT);
}

/** The native XDP mode of the receiving veth's program (1 = driver), or null when none is attached. */
async function xdpMode(t: Topology): Promise<number | null> {
  const { stdout } = await run('ip', ['-n', t.server.ns, '-j', 'link', 'show', 'dev', t.server.dev]);
  const [link] = JSON.parse(stdout) as Array<{ xdp?: { mode?: number } }>;
  return link?.xdp?.mode ?? null;
}

async function flood(l: Live, seconds: number, cpu: number, softirqPid: number): Promise<FloodRun> {
  const before = await snapshot(l, softirqPid);
  const { stdout } = await run(
    'nsenter',
    [
      `--net=${netnsPath(l.topo.client.ns)}`,
      '--',
      'taskset',
      '-c',
      String(cpu),
      SYNFLOOD,
      l.topo.client.dev,
      l.frameHex,
      String(seconds),
    ],
    { timeoutMs: seconds * 1000 + 30_000 },
  );
  const r = JSON.parse(stdout.trim()) as { sent: number; refused: number; seconds: number; cpuSeconds: number };
  // Work left in the veth's ring or deferred to ksoftirqd finishes within a moment.
  await sleep(50);
  const after = await snapshot(l, softirqPid);
  const tcp: Record<string, number> = {};
  for (const k of [
    'TcpInSegs',
    'TcpInCsumErrors',
    'TcpOutSegs',
    'TcpExtSyncookiesSent',
    'TcpExtListenDrops',
    'TcpExtListenOverflows',
    'TcpExtTCPReqQFullDrop',
  ]) {
    tcp[k] = (after.tcp[k] ?? 0) - (before.tcp[k] ?? 0);
  }
  const delta = { xdpDrops: after.xdpDrops - before.xdpDrops, ringDrops: after.ringDrops - before.ringDrops, tcp };
  return {
    ...r,
    ksoftirqdSeconds: (after.ksoftirqdNs - before.ksoftirqdNs) / 1e9,
    handled: l.cfg.id === 'none' ? (tcp.TcpInSegs ?? 0) : delta.xdpDrops,
    delta,
  };
}

export async function runFloodBench(opts: FloodBenchOptions): Promise<BenchResult> {
  const log = opts.log ?? ((): void => undefined);
  ensureBuilt();
  await sweepStale(PREFIX);
  const cpu = floodCpu();
  const softirqPid = ksoftirqd(cpu);
  const live: Live[] = [];
  try {
    for (const cfg of CONFIGS) {
      // Transmit checksum offload (and with it TSO) off, the topology's default: the SYNs
      // carry full checksums, and the server's SYN-ACKs are computed in software.
      const topo = await createTopology({ name: `flood-${cfg.id}`, kind: 'pair', prefix: PREFIX });
      const frame = buildFrame({
        srcMac: topo.client.mac,
        dstMac: topo.server.mac,
        src: FLOOD_SRC,
        dst: topo.server.ipv4,
        tcp: { sport: 1024, dport: PORT, seq: 1, flags: TCP_SYN, window: 64240, options: LINUX_SYN_OPTIONS },
      });
      const l: Live = { cfg, topo, frameHex: frame.toString('hex'), server: null, agent: null };
      live.push(l);
      await run('ip', ['-n', topo.server.ns, 'route', 'add', `${FLOOD_SRC}/32`, 'dev', topo.server.dev]);
      await permanentNeighbour(topo.server.ns, FLOOD_SRC, topo.client.mac, topo.server.dev);
      l.server = await startListener(topo);
      l.agent = await cfg.attach(topo, `flood-${cfg.id}`);
      const mode = await xdpMode(topo);
      if (cfg.id !== 'none' && mode !== 1) throw new Error(`"${cfg.name}": XDP attach mode ${mode}, want 1 (native)`);
      log(`flood: "${cfg.name}" ready (${topo.client.ns} -> ${topo.server.ns})`);
    }

    // Rounds of one flood per configuration, order rotating, until the verifier's verdict is
    // decided (bench/decide.ts): after the first rounds only it and the no-op drop go on.
    const byRound = new Map<string, Map<number, FloodRun>>(live.map((l) => [l.cfg.id, new Map()]));
    const rateRows: RowSpec[] = [{ id: 'drop' }, { id: 'verifier', baseline: 'drop', target: RATE_TARGET }, { id: 'none' }];
    const decided = await untilDecided(
      rateRows,
      {
        minRounds: opts.runs,
        maxRounds: Math.max(opts.runs, opts.maxRuns ?? opts.runs),
        seconds: opts.budgetSeconds ?? Infinity,
      },
      async (ids, r) => {
        const values = new Map<string, number>();
        const here = live.filter((l) => ids.includes(l.cfg.id));
        for (let i = 0; i < here.length; i++) {
          const l = here[(i + r) % here.length] as Live;
          const f = await flood(l, opts.seconds, cpu, softirqPid);
          byRound.get(l.cfg.id)?.set(r, f);
          values.set(l.cfg.id, f.handled / f.seconds);
          log(
            `flood: round ${r + 1} "${l.cfg.name}": ${Math.round(f.handled / f.seconds)} SYN/s handled, ` +
              `${Math.round(((f.cpuSeconds + f.ksoftirqdSeconds) * 1e9) / Math.max(1, f.handled))} ns CPU per SYN`,
          );
        }
        return values;
      },
      log,
    );
    const runs = new Map<string, FloodRun[]>([...byRound].map(([id, m]) => [id, [...m.values()]]));
    const all = (id: FloodConfig['id']): FloodRun[] => runs.get(id) ?? [];
    const total = (xs: FloodRun[], f: (x: FloodRun) => number): number => xs.reduce((n, x) => n + f(x), 0);

    // Proof the floods did what the rows say.
    for (const id of ['drop', 'verifier'] as const) {
      const xs = all(id);
      const sent = total(xs, (x) => x.sent);
      const dropped = total(xs, (x) => x.delta.xdpDrops);
      if (dropped < sent * 0.99) throw new Error(`flood "${id}": XDP dropped ${dropped} of ${sent} SYNs sent, want all`);
      const passed = total(xs, (x) => x.delta.tcp.TcpInSegs ?? 0);
      if (passed > 0) throw new Error(`flood "${id}": ${passed} segments reached TCP behind an XDP drop`);
    }
    const none = all('none');
    const sum = (k: string): number => total(none, (x) => x.delta.tcp[k] ?? 0);
    if (sum('TcpInSegs') < total(none, (x) => x.sent) * 0.99 || sum('TcpInCsumErrors') > 0) {
      throw new Error(
        `flood with no hook: ${sum('TcpInSegs')} of ${total(none, (x) => x.sent)} SYNs reached TCP (${sum('TcpInCsumErrors')} with a bad checksum), want all, none bad`,
      );
    }
    const counters: Record<string, number> = {};
    const verifier = live.find((l) => l.cfg.id === 'verifier');
    for (const c of (await verifier?.agent?.statusReport())?.counters ?? [])
      counters[c.counter] = (counters[c.counter] ?? 0) + Number(c.value);
    const xdpDropped = total(all('verifier'), (x) => x.delta.xdpDrops);
    if ((counters.verify_dropped ?? 0) !== xdpDropped) {
      throw new Error(
        `the verifier counted ${counters.verify_dropped ?? 0} SYNs dropped, the veth ${xdpDropped} XDP drops: want the same`,
      );
    }

    const cpuPerSyn = (x: FloodRun): number => (x.handled > 0 ? ((x.cpuSeconds + x.ksoftirqdSeconds) * 1e9) / x.handled : 0);
    const irqAccounting = irqTimeAccounting();
    const remarks: string[] = [
      `SYN flood, verifier: verify_dropped ${counters.verify_dropped ?? 0} = the veth's XDP drops ${xdpDropped} ` +
        `(verify_missing ${counters.verify_missing ?? 0}) for ${total(all('verifier'), (x) => x.sent)} SYNs sent; attached by the agent in xdp-native mode.`,
      `SYN flood, no hook: all ${sum('TcpInSegs')} SYNs sent reached TCP, which answered with ${sum('TcpOutSegs')} segments ` +
        `(${sum('TcpExtSyncookiesSent')} SYN cookies; ${sum('TcpExtListenDrops')} listen drops).`,
    ];
    const dropCpu = median(all('drop').map(cpuPerSyn));
    const extra = median(all('verifier').map((x, i) => cpuPerSyn(x) - cpuPerSyn(all('drop')[i] as FloodRun)));
    remarks.push(
      `SYN flood: one core sending and receiving spent ${Math.round(dropCpu)} ns per SYN with the no-op drop (medians); the verifier added ` +
        `${Math.round(extra)} ns per SYN (median of the paired differences), its receiving-side cost over the cheapest XDP drop. ` +
        `Work deferred to ksoftirqd/${cpu}: ${Math.round((total([...runs.values()].flat(), (x) => x.ksoftirqdSeconds) / total([...runs.values()].flat(), (x) => x.cpuSeconds)) * 1000) / 10}% of the generator's CPU time` +
        `${irqAccounting === false ? '' : irqAccounting ? '; WARNING: this kernel accounts softirq time apart, so the CPU figures leave the receiving work out' : ''}.`,
    );

    const figures: Figure[] = [];
    const drop = CONFIGS[0] as FloodConfig;
    const rows = [
      {
        benchmark: `unmarked SYN flood, ${opts.seconds} s: SYNs handled per second`,
        unit: 'SYN/s',
        value: (x: FloodRun): number => x.handled / x.seconds,
        target: RATE_TARGET,
        note:
          "handled: dropped at XDP (the veth's xdp_drops counter, the same for both programs) or, with no hook, taken in by TCP (TcpInSegs), " +
          'per second of the flood. One AF_PACKET generator (bench/net/synflood.c) on one CPU; the receiving veth runs XDP (native) or the stack ' +
          'in softirq on that CPU right after each frame, so a costlier receiver slows the flood.',
      },
      {
        benchmark: 'unmarked SYN flood: CPU per SYN, sending and receiving on one core',
        unit: 'ns/SYN',
        value: cpuPerSyn,
        target: null,
        note:
          "CPU time of the generator's thread (the receiving side's softirq work is charged to it) plus its CPU's ksoftirqd, per SYN handled: " +
          "unlike the rate, not changed by other work taking the CPU away. The generator's own share is the same in every configuration.",
      },
    ];
    for (const row of rows) {
      const baseRuns = all(drop.id).map(row.value);
      const baseValue = baseRuns.length > 0 ? median(baseRuns) : null;
      for (const l of live) {
        const isBase = l.cfg.id === drop.id;
        // Each configuration's floods beside the no-op drop's of the same rounds.
        const own = byRound.get(l.cfg.id) ?? new Map<number, FloodRun>();
        const base = byRound.get(drop.id) ?? new Map<number, FloodRun>();
        const rounds = [...own.keys()].filter((r) => isBase || base.has(r)).sort((a, b) => a - b);
        figures.push(
          figure({
            group: 'SYN flood',
            benchmark: row.benchmark,
            config: l.cfg.name,
            unit: row.unit,
            runs: rounds.map((r) => row.value(own.get(r) as FloodRun)),
            baseline: isBase ? null : { benchmark: drop.name, value: baseValue },
            ...(isBase ? {} : { baselineRuns: rounds.map((r) => row.value(base.get(r) as FloodRun)) }),
            target: l.cfg.id === 'verifier' ? row.target : null,
            note: row.note,
          }),
        );
      }
    }
    if (decided.undecided.length > 0)
      remarks.push(`SYN flood: the verifier's rate was not decided within ${decided.rounds} rounds (counts as not met).`);
    const details = {
      rounds: decided.rounds,
      cpu,
      irqTimeAccounting: irqAccounting,
      verifierCpuPerSynOverDropNs: extra,
      runs: Object.fromEntries(runs),
      verifierCounters: counters,
    };
    return { figures, details, remarks };
  } finally {
    for (const l of live) await removeLive(l, log);
  }
}

/** Detach, stop the listener, remove the namespaces; failures are logged, not thrown over the error that got us here. */
async function removeLive(l: Live, log: (line: string) => void): Promise<void> {
  await l.agent?.cleanup().catch((err: unknown) => log(`cleanup of "${l.cfg.name}" failed: ${String(err)}`));
  if (l.server) {
    l.server.kill('SIGKILL');
    await waitForExit(l.server, 5_000);
  }
  await l.topo.destroy().catch((err: unknown) => log(`removing the namespaces of "${l.cfg.name}" failed: ${String(err)}`));
}
