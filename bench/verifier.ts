/**
 * The ingress verifier's cost and effect, for the benchmark suite to call:
 *
 *  - measureVerifierPerPacket(): ns/packet under BPF_PROG_TEST_RUN of the verifier's XDP entry
 *    (and one tc row) for a non-SYN packet, SYNs to unprotected ports, without a token, with a
 *    valid static or keyed token and with an invalid keyed token, each against a no-op XDP
 *    (or tc) program measured back to back. Returns Figures (bench/report.ts).
 *  - measureSynFlood(): an unmarked SYN flood sent over a veth pair to a listening port, with
 *    the verifier in Enforce (attached by the real agent) and with no verifier: how much of
 *    the flood the verifier drops and how much reaches the TCP stack.
 *  - protectPortForBench(): the ingress configuration bench/packet.ts's verifier rows need
 *    (a protected port in Enforce), as an `around`-style setter that returns its undo.
 *
 *   node dist/bench/verifier.js [repeat] [flood packets]    (prints both; 0 flood packets: skip it)
 */
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { binding, type NativeObject, type NativeProgram } from '../src/native/binding.js';
import {
  IngressActionCode, TokenModeCode, encodeClock, encodeIngressRule, encodePolicy, encodePortKey,
} from '../src/lib/abi.js';
import { BIND_ALL, epochAt, keyedToken } from '../src/lib/siphash.js';
import { buildFrame, tokenOption, TCP_ACK, TCP_PSH, TCP_SYN, type FrameSpec } from '../src/lib/packet.js';
import { measureClock } from '../src/agent/datapath.js';
import { agentIn } from '../test/lib/agent.js';
import { createTopology, exec } from '../test/lib/netns.js';
import { floodFrames } from '../test/lib/raw-send.js';
import { startServer, counters as nstat } from '../test/lib/tcp.js';
import { ROOT, figure, median, textTable, type Figure } from './report.js';
import { TcAction, XdpAction } from '../src/native/bpf.js';

/** test_run's device when the ctx names none: the loopback device of the caller's namespace. */
const TEST_IFINDEX = 1;
const KIND = 253;
const EXID = 0x4e54;
const PORT = 443;
const STATIC_ID = 1;
const KEYED_ID = 2;
const STATIC_PORT = 8443;
const TOKEN = Buffer.from('4e546f6b656e2121', 'hex');
const KEY = Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex');
const KEY_PREVIOUS = Buffer.from('f0e0d0c0b0a090807060504030201000', 'hex');
/** Long epochs: a measurement never straddles two. */
const EPOCH_SECONDS = 86400;
const LINUX_SYN_OPTIONS = Buffer.from('020405b40402080a0001e24000000000' + '01030307', 'hex');

const obj = (name: string): string => path.join(ROOT, 'build/bpf', `${name}.bpf.o`);

/**
 * Protect `port` (Enforce) on `ifindex` for policy `policyId` in the verifier maps pinned under
 * `pinRoot` (open verifier.bpf.o with that pin root first). Returns the undo. For the verifier
 * rows of bench/packet.ts: their policy slot, frames and ifindex stay theirs.
 */
export function protectPortForBench(pinRoot: string, o: { ifindex: number; port: number; policyId: number; action?: 'Monitor' | 'Enforce' }): () => void {
  const ports = binding().mapFromPin(path.join(pinRoot, 'nt_ingress_ports'));
  const key = encodePortKey(o.ifindex, o.port);
  try {
    ports.update(key, encodeIngressRule(o.policyId, o.action === 'Monitor' ? IngressActionCode.Monitor : IngressActionCode.Enforce));
  } finally {
    ports.close();
  }
  return () => {
    const m = binding().mapFromPin(path.join(pinRoot, 'nt_ingress_ports'));
    try {
      m.delete(key);
    } finally {
      m.close();
    }
  };
}

interface Row {
  id: string;
  benchmark: string;
  entry: 'xdp' | 'tc';
  frame: Buffer;
  retval: number;
  baseline?: string;
}

const syn = (dport: number, options: Buffer = LINUX_SYN_OPTIONS): FrameSpec => ({
  src: '192.0.2.10',
  dst: '203.0.113.7',
  tcp: { sport: 40000, dport, seq: 0x01020304, flags: TCP_SYN, window: 64240, options },
});

function rows(): Row[] {
  const epoch = epochAt(Date.now(), EPOCH_SECONDS);
  const keyed = (key: Buffer): Buffer => {
    const s = syn(PORT);
    const value = keyedToken(key, { src: s.src!, dst: s.dst!, sport: s.tcp!.sport, dport: PORT, seq: s.tcp!.seq! }, BIND_ALL, epoch);
    return buildFrame(syn(PORT, Buffer.concat([LINUX_SYN_OPTIONS, tokenOption(KIND, EXID, value)])));
  };
  const dataSegment = buildFrame({
    src: '192.0.2.10', dst: '203.0.113.7',
    tcp: { sport: 40000, dport: PORT, seq: 5, ack: 7, flags: TCP_ACK | TCP_PSH, options: Buffer.from('0101080a0001e24100000001', 'hex') },
    payload: Buffer.alloc(1448, 0x5a),
  });
  return [
    { id: 'xdp-noop', benchmark: 'no-op XDP program', entry: 'xdp', frame: dataSegment, retval: XdpAction.PASS },
    { id: 'nonsyn', benchmark: 'verifier, non-SYN (1448-byte TCP data segment)', entry: 'xdp', frame: dataSegment, retval: XdpAction.PASS, baseline: 'xdp-noop' },
    { id: 'unprotected', benchmark: 'verifier, SYN to an unprotected port', entry: 'xdp', frame: buildFrame(syn(22)), retval: XdpAction.PASS, baseline: 'xdp-noop' },
    { id: 'missing', benchmark: 'verifier, SYN without a token (Enforce: dropped)', entry: 'xdp', frame: buildFrame(syn(PORT)), retval: XdpAction.DROP, baseline: 'xdp-noop' },
    { id: 'static-valid', benchmark: 'verifier, SYN with a valid static token', entry: 'xdp', frame: buildFrame(syn(STATIC_PORT, Buffer.concat([LINUX_SYN_OPTIONS, tokenOption(KIND, EXID, TOKEN)]))), retval: XdpAction.PASS, baseline: 'xdp-noop' },
    { id: 'keyed-valid', benchmark: 'verifier, SYN with a valid keyed token', entry: 'xdp', frame: keyed(KEY), retval: XdpAction.PASS, baseline: 'xdp-noop' },
    { id: 'keyed-previous', benchmark: 'verifier, SYN keyed with the previous key (second key tried)', entry: 'xdp', frame: keyed(KEY_PREVIOUS), retval: XdpAction.PASS, baseline: 'xdp-noop' },
    { id: 'keyed-invalid', benchmark: 'verifier, SYN with an invalid keyed token (both keys, both epochs; Enforce: dropped)', entry: 'xdp', frame: keyed(randomBytes(16)), retval: XdpAction.DROP, baseline: 'xdp-noop' },
    { id: 'tc-noop', benchmark: 'no-op tc program', entry: 'tc', frame: dataSegment, retval: TcAction.UNSPEC },
    { id: 'tc-keyed-valid', benchmark: 'verifier at tc ingress, SYN with a valid keyed token', entry: 'tc', frame: keyed(KEY), retval: TcAction.UNSPEC, baseline: 'tc-noop' },
    { id: 'tc-keyed-invalid', benchmark: 'verifier at tc ingress, SYN with an invalid keyed token', entry: 'tc', frame: keyed(randomBytes(16)), retval: TcAction.SHOT, baseline: 'tc-noop' },
  ];
}

export interface PerPacketOptions {
  /** repetitions per test run (default 1 000 000) */
  repeat?: number;
  /** test runs per row, interleaved; the median is reported (default 5) */
  runs?: number;
  log?: (line: string) => void;
}

/** ns/packet of the verifier under BPF_PROG_TEST_RUN, against no-op programs measured in the same runs. */
export function measureVerifierPerPacket(opts: PerPacketOptions = {}): { figures: Figure[]; runs: Record<string, number[]> } {
  const repeat = opts.repeat ?? 1_000_000;
  const runCount = opts.runs ?? 5;
  const b = binding();
  if (!b.isBpffs('/sys/fs/bpf')) b.mountBpffs('/sys/fs/bpf');
  const pinRoot = `/sys/fs/bpf/netoken-bench-${process.pid}-${randomBytes(3).toString('hex')}`;
  mkdirSync(pinRoot, { mode: 0o700 });
  const objects: NativeObject[] = [];
  const progs: NativeProgram[] = [];
  try {
    const verifier = b.openObject(obj('verifier'), { pinRoot });
    const marker = b.openObject(obj('marker'), { pinRoot });
    const noop = b.openObject(obj('bench_noop'), { pinRoot });
    objects.push(verifier, marker, noop);
    const prog = (o: NativeObject, name: string): NativeProgram => {
      const p = o.program(name);
      progs.push(p);
      return p;
    };
    const programs: Record<string, NativeProgram> = {
      'xdp-noop': prog(noop, 'nt_bench_noop_xdp'),
      'tc-noop': prog(noop, 'nt_bench_noop'),
      xdp: prog(verifier, 'nt_verify_xdp'),
      tc: prog(verifier, 'nt_verify_tc'),
    };
    const probe = prog(marker, 'nt_clock_probe');
    const maps = { policies: verifier.map('nt_policies'), clock: verifier.map('nt_clock'), ports: verifier.map('nt_ingress_ports') };
    try {
      const clock = measureClock(probe);
      maps.clock.update(Buffer.alloc(4), encodeClock(clock.taiOffsetNs, clock.bootOffsetNs));
      const slot = (id: number): Buffer => {
        const k = Buffer.alloc(4);
        k.writeUInt32LE(id);
        return k;
      };
      maps.policies.update(slot(STATIC_ID), encodePolicy({ mode: TokenModeCode.Static, kind: KIND, exid: EXID, epochSeconds: 0, bind: 0, current: TOKEN }));
      maps.policies.update(slot(KEYED_ID), encodePolicy({ mode: TokenModeCode.Keyed, kind: KIND, exid: EXID, epochSeconds: EPOCH_SECONDS, bind: BIND_ALL, current: KEY, previous: KEY_PREVIOUS }));
      maps.ports.update(encodePortKey(TEST_IFINDEX, PORT), encodeIngressRule(KEYED_ID, IngressActionCode.Enforce));
      maps.ports.update(encodePortKey(TEST_IFINDEX, STATIC_PORT), encodeIngressRule(STATIC_ID, IngressActionCode.Enforce));
    } finally {
      for (const m of Object.values(maps)) m.close();
    }
    const all = rows();
    const programOf = (r: Row): NativeProgram => (programs[r.id] ?? programs[r.entry]) as NativeProgram;
    const results = new Map<string, number[]>(all.map((r) => [r.id, []]));
    for (let i = 0; i < runCount; i++) {
      // Rotate the order so that drift does not always land on the same row.
      for (let j = 0; j < all.length; j++) {
        const r = all[(i + j) % all.length] as Row;
        const res = programOf(r).testRun({ data: r.frame, repeat });
        if (res.retval !== r.retval) throw new Error(`${r.benchmark}: returned ${res.retval}, want ${r.retval}`);
        results.get(r.id)?.push(res.duration);
      }
      opts.log?.(`verifier per packet: run ${i + 1}/${runCount} done`);
    }
    const figures = all.map((r) => {
      const base = r.baseline ? all.find((x) => x.id === r.baseline) : undefined;
      return figure({
        group: 'per packet',
        benchmark: r.benchmark,
        config: `${repeat} repetitions`,
        unit: 'ns/packet',
        runs: results.get(r.id) ?? [],
        baseline: base ? { benchmark: base.benchmark, value: median(results.get(base.id) ?? []) } : null,
        ...(base ? { baselineRuns: results.get(base.id) ?? [] } : {}),
      });
    });
    return { figures, runs: Object.fromEntries(results) };
  } finally {
    for (const p of progs) p.close();
    for (const o of objects) o.close();
    rmSync(pinRoot, { recursive: true, force: true });
  }
}

export interface FloodScenario {
  name: string;
  /** SYNs the sender handed to the veth */
  sent: number;
  /** the rate it managed to: the veth hands each frame to the receiver on the sending CPU, so a costlier receive path slows the flood itself */
  offeredPps: number;
  /** frames the server's veth received (without a verifier also the client's RSTs to the SYN-ACKs) */
  received: number;
  /** SYNs the verifier dropped (its verify_dropped counter) */
  droppedByVerifier: number;
  /** dropped / sent */
  dropRate: number;
  /** TCP segments the server's stack sent (TcpOutSegs): its SYN-ACKs, with or without SYN cookies */
  synAcks: number;
  /** of those, SYN cookies (TcpExtSyncookiesSent): the listen queue was full */
  synCookies: number;
  /** SYNs the server's stack refused for a full queue (TcpExtListenDrops) */
  listenDrops: number;
  /**
   * host CPU time in softirq while the flood ran, per 1000 SYNs, in ms: where the receiving
   * veth runs XDP and the TCP stack (the sender's own time is in system, not counted)
   */
  softirqMsPer1000: number;
}

function linkStats(text: string): { rx: number; tx: number } {
  const [l] = JSON.parse(text) as Array<{ stats64?: { rx?: { packets?: number }; tx?: { packets?: number } } }>;
  return { rx: l?.stats64?.rx?.packets ?? 0, tx: l?.stats64?.tx?.packets ?? 0 };
}

/** softirq time of all CPUs in ms (/proc/stat counts USER_HZ = 100 ticks a second). */
function softirqMs(): number {
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  return ((cpu[6] ?? 0) * 1000) / 100;
}

/**
 * An unmarked SYN flood (distinct source ports and sequence numbers, AF_PACKET, no qdisc)
 * over a veth pair to a listening port: once with the verifier in Enforce at XDP (attached by
 * the real agent, which is then stopped), once with no verifier.
 */
export async function measureSynFlood(opts: { packets?: number; log?: (line: string) => void } = {}): Promise<FloodScenario[]> {
  const packets = opts.packets ?? 500_000;
  const out: FloodScenario[] = [];
  for (const withVerifier of [true, false]) {
    const t = await createTopology({ name: withVerifier ? 'flood-v' : 'flood-n', kind: 'pair' });
    const agent = agentIn(t.server.ns, 'flood');
    try {
      const server = await startServer(t.server.ns, { port: 0 });
      if (withVerifier) {
        agent.writePolicy(`apiVersion: netoken.io/v1alpha1
kind: TokenPolicy
metadata: {name: flood}
spec:
  interfaces: {names: [${t.server.dev}]}
  token: {mode: Keyed, secretRef: {name: flood-key}, epochSeconds: 60}
  ingress: {action: Enforce, ports: [${server.port}]}
---
apiVersion: v1
kind: Secret
metadata: {name: flood-key}
data: {current: ${KEY.toString('base64')}}
`);
        await agent.start(['--log-level', 'warn']);
        const s = await agent.waitStatus((x) => x.hooks.length === 1 && x.ready, 30_000, 'the verifier');
        opts.log?.(`SYN flood: verifier attached (${s.hooks[0]?.mode})`);
        await agent.stop();
      }
      const frame = buildFrame({ srcMac: t.client.mac, dstMac: t.server.mac, src: t.client.ipv4, dst: t.server.ipv4, tcp: { sport: 1024, dport: server.port, seq: 1, flags: TCP_SYN, options: LINUX_SYN_OPTIONS } });
      const link = async (): Promise<{ rx: number; tx: number }> => linkStats((await exec(t.server.ns, 'ip', ['-s', '-j', 'link', 'show', 'dev', t.server.dev])).stdout);
      const l0 = await link();
      const n0 = await nstat(t.server.ns);
      const c0 = softirqMs();
      const r = await floodFrames(t.client.ns, t.client.dev, frame, packets);
      await new Promise((res) => setTimeout(res, 1000));
      const c1 = softirqMs();
      const l1 = await link();
      const n1 = await nstat(t.server.ns);
      const dropped = withVerifier ? (await agent.statusReport()).counters.filter((c) => c.counter === 'verify_dropped').reduce((x, c) => x + Number(c.value), 0) : 0;
      const d = (k: string): number => (n1[k] ?? 0) - (n0[k] ?? 0);
      out.push({
        name: withVerifier ? 'verifier in Enforce (XDP)' : 'no verifier',
        sent: r.sent,
        offeredPps: Math.round(r.sent / r.seconds),
        received: l1.rx - l0.rx,
        droppedByVerifier: dropped,
        dropRate: r.sent ? dropped / r.sent : 0,
        synAcks: d('TcpOutSegs'),
        synCookies: d('TcpExtSyncookiesSent'),
        listenDrops: d('TcpExtListenDrops'),
        softirqMsPer1000: Math.round(((c1 - c0) / (r.sent / 1000)) * 1000) / 1000,
      });
      opts.log?.(`SYN flood: ${out.at(-1)?.name} done`);
      await server.stop();
    } finally {
      await agent.cleanup();
      await t.destroy();
    }
  }
  return out;
}

export function floodTable(rows: readonly FloodScenario[]): string {
  const head = ['SCENARIO', 'SENT', 'FLOOD PPS', 'RECEIVED', 'DROPPED AT XDP', 'DROP RATE', 'SYN-ACKS', 'OF THEM COOKIES', 'LISTEN DROPS', 'SOFTIRQ MS/1000 SYN'];
  const body = rows.map((r) => [r.name, String(r.sent), String(r.offeredPps), String(r.received), String(r.droppedByVerifier), `${(r.dropRate * 100).toFixed(2)}%`, String(r.synAcks), String(r.synCookies), String(r.listenDrops), r.softirqMsPer1000.toFixed(3)]);
  const all = [head, ...body];
  const w = head.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((c, i) => c.padEnd(w[i] ?? 0)).join('  ').trimEnd()).join('\n') + '\n';
}

async function main(): Promise<void> {
  const repeat = Number(process.argv[2] ?? 1_000_000);
  const packets = Number(process.argv[3] ?? 500_000);
  const log = (line: string): void => void process.stderr.write(`${line}\n`);
  const { figures } = measureVerifierPerPacket({ repeat, log });
  process.stdout.write(textTable(figures));
  if (packets > 0) {
    process.stdout.write('\n' + floodTable(await measureSynFlood({ packets, log })));
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
