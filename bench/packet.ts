/**
 * Per-packet cost under BPF_PROG_TEST_RUN: the egress marker against a no-op tc program and
 * against a C port of the seed's algorithm, with 1, 1 000 and 100 000 prefixes in the
 * destination trie; the ingress verifier (XDP, and its tc fallback) against no-op programs.
 *
 * Each row is one entry of cases(). Ingress rows do not read the destination trie, so they
 * are measured once, in the runs of the first trie size, not again at every size.
 * Before the first run every row is probed with one test run that must return the row's
 * verdict and raise the counter that proves it did what it says (a SYN marked, a token
 * found valid, a SYN dropped): a row that does not measure what its name says stops the
 * benchmark. Rows are then measured in rounds until every target's verdict is decided
 * (bench/decide.ts). A row's value in a round is the CPU time the test run took on the
 * calling thread divided by its repetitions: finer than the kernel's mean, which it rounds
 * to whole nanoseconds.
 *
 * This benchmark alone: `node dist/bench/run.js --only packet` (`npm run bench` runs all).
 */
import { mkdirSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { binding, type NativeMap, type NativeObject, type NativeProgram } from '../src/native/binding.js';
import {
  decodeConfig,
  encodeClock,
  encodeConfig,
  encodeEgressRule,
  encodeIngressRule,
  encodeLpmKey,
  encodePolicy,
  encodePortKey,
  IngressActionCode,
  portIndexEntries,
  NT_OPT_EXID_DEFAULT as EXID,
  NT_OPT_KIND_DEFAULT as KIND,
  TokenModeCode,
  type CounterName,
} from '../src/lib/abi.js';
import { CounterSlots } from '../src/agent/counters.js';
import { raiseEgressGeneration } from '../src/agent/map-sync.js';
import { BIND_ALL, epochAt, keyedToken } from '../src/lib/siphash.js';
import { buildFrame, tokenOption, TCP_ACK, TCP_PSH, TCP_SYN, type FrameSpec } from '../src/lib/packet.js';
import { measureClock } from '../src/agent/clock.js';
import {
  CLOCK_PROBE,
  MARKER,
  MARKER_COMPAT_MARK_RESTORE,
  MARKER_COMPAT_RESTORE_ONLY,
  MARKER_MARK_RESTORE,
  MARKER_RESTORE_ONLY,
  SEED,
  SEED_MARK_RESTORE,
  SEED_RESTORE_ONLY,
  TC_NOOP,
  VERIFIER,
  VERIFIER_TC,
  XDP_NOOP,
  ensureBuilt,
  type ProgRef,
} from './artifacts.js';
import { countLabel, figure, median, type BenchResult, type Figure, type Target } from './report.js';
import { paired, untilDecided, type Budget, type RowSpec } from './decide.js';
import { TcAction, XdpAction } from '../src/native/bpf.js';
import { Rng } from '../fuzz/rng.js';
import { KEYED_KEY as KEY, KEYED_KEY_PREVIOUS as KEY_PREVIOUS } from '../test/lib/keys.js';

/** What the restore wrappers return when a repetition did not do what it measures (bench/bpf/restore.h). */
const WRAPPER_ERRORS: Record<number, string> = {
  100: 'the frame is not the 74-byte benchmark frame',
  101: 'the program did not grow the frame (it did not mark the SYN)',
  102: 'the frame could not be restored',
};

/** test_run's device when the ctx names none: the loopback device of the caller's namespace. */
const TEST_IFINDEX = 1;
/** The marker's policy (static TOKEN; the keyed marker row swaps in KEYED_POLICY), also protecting PORT at ingress. */
const POLICY = 1;
/** A keyed policy with a current and a previous key, protecting KEYED_PORT at ingress. */
const KEYED_VERIFY_POLICY = 2;
const TOKEN = Buffer.from('4e546f6b656e2121', 'hex');
/** A key the verifier does not have: its tokens are invalid under both keys and both epochs. */
const KEY_FOREIGN = Buffer.from('5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a', 'hex');
/** Day-long epochs for the verifier's keyed policy: a token made at the start stays valid for the whole benchmark. */
const VERIFY_EPOCH_SECONDS = 86400;
const COVERED_NET = { addr: Buffer.from([203, 0, 113, 0]), prefixLen: 24 };
const COVERED_DST = '203.0.113.7';
const UNCOVERED_DST = '198.51.100.1';
const PORT = 443;
const KEYED_PORT = 8443;
const UNPROTECTED_PORT = 22;
/** MSS, SACK-permitted, timestamps, NOP, window scale: the 20 option bytes of a Linux SYN. */
const LINUX_SYN_OPTIONS = Buffer.from('020405b40402080a0001e24000000000' + '01030307', 'hex');

const SYN_SRC = '192.0.2.10';
const SYN_SPORT = 40000;
const SYN_SEQ = 0x01020304;

const synSpec = (dst: string, options: Buffer = LINUX_SYN_OPTIONS, dport = PORT): FrameSpec => ({
  src: SYN_SRC,
  dst,
  tcp: { sport: SYN_SPORT, dport, seq: SYN_SEQ, flags: TCP_SYN, window: 64240, options },
});

const withToken = (value: Buffer): Buffer => Buffer.concat([LINUX_SYN_OPTIONS, tokenOption(KIND, EXID, value)]);

const FRAMES = {
  /** a full-sized segment of an established connection: what nearly all traffic is */
  dataSegment: buildFrame({
    src: SYN_SRC,
    dst: COVERED_DST,
    tcp: {
      sport: 40000,
      dport: PORT,
      seq: 0x01020305,
      ack: 7,
      flags: TCP_ACK | TCP_PSH,
      options: Buffer.from('0101080a0001e24100000001', 'hex'),
    },
    payload: Buffer.alloc(1448, 0x5a),
  }),
  syn: buildFrame(synSpec(COVERED_DST)),
  synUncovered: buildFrame(synSpec(UNCOVERED_DST)),
  synUnprotected: buildFrame(synSpec(COVERED_DST, LINUX_SYN_OPTIONS, UNPROTECTED_PORT)),
  synValidToken: buildFrame(synSpec(COVERED_DST, withToken(TOKEN))),
  synInvalidToken: buildFrame(synSpec(COVERED_DST, withToken(Buffer.alloc(8, 0xee)))),
};

/** A SYN to KEYED_PORT carrying the keyed token of `key` for the epoch of `nowMs`. */
function keyedSyn(key: Buffer, nowMs: number): Buffer {
  const flow = { src: SYN_SRC, dst: COVERED_DST, sport: SYN_SPORT, dport: KEYED_PORT, seq: SYN_SEQ };
  return buildFrame(
    synSpec(COVERED_DST, withToken(keyedToken(key, flow, BIND_ALL, epochAt(nowMs, VERIFY_EPOCH_SECONDS))), KEYED_PORT),
  );
}

export interface MarkerMaps {
  policies: NativeMap;
  egress4: NativeMap;
  /** nt_config: the destination cache's generation */
  config: NativeMap;
}

/** What a row's `around` can change: the marker's maps, and every map pinned under pinRoot. */
export interface BenchState {
  maps: MarkerMaps;
  pinRoot: string;
}

const slotKey = (id: number): Buffer => {
  const k = Buffer.alloc(4);
  k.writeUInt32LE(id);
  return k;
};
const STATIC_POLICY = encodePolicy({
  mode: TokenModeCode.Static,
  kind: KIND,
  exid: EXID,
  epochSeconds: 0,
  bind: 0,
  current: TOKEN,
});
const KEYED_POLICY = encodePolicy({
  mode: TokenModeCode.Keyed,
  kind: KIND,
  exid: EXID,
  epochSeconds: 60,
  bind: BIND_ALL,
  current: KEY,
});
const KEYED_VERIFY = encodePolicy({
  mode: TokenModeCode.Keyed,
  kind: KIND,
  exid: EXID,
  epochSeconds: VERIFY_EPOCH_SECONDS,
  bind: BIND_ALL,
  current: KEY,
  previous: KEY_PREVIOUS,
});

interface PacketCase {
  id: string;
  benchmark: string;
  prog: ProgRef;
  /**
   * For rows that grow the frame: `prog` marks and restores, this program only grows and
   * restores; the row's value is the difference, measured back to back in every run.
   */
  restoreOnly?: ProgRef;
  frame: Buffer;
  /** what the program returns on every repetition */
  retval: number;
  /** id of the row this one is divided by */
  baseline?: string;
  /** or a time budget (ns) it is held to: the target is then on value / budget */
  budget?: number;
  target?: Target;
  /** the probe must also raise this counter (nt_stats) by one: proof the row measures what it says */
  expectCounter?: CounterName;
  /** the program never reads the destination trie: measured once, not at every trie size */
  ingress?: boolean;
  /** state the row needs, set before each of its test runs; returns the undo */
  around?: (state: BenchState) => () => void;
  note?: string;
}

/** Config column of the ingress rows, which are measured once. */
const INGRESS_CONFIG = 'ingress (no trie)';

const STATIC_VERIFY_NOTE = `port ${PORT} protected in Enforce by a static policy`;
const KEYED_VERIFY_NOTE = `port ${KEYED_PORT} protected in Enforce by a keyed policy with a current and a previous key`;

/** One entry per row of the table; `nowMs` fixes the epoch of the keyed tokens the verifier rows carry. */
export function cases(nowMs: number): readonly PacketCase[] {
  return [
    { id: 'tc-noop', benchmark: 'no-op tc program', prog: TC_NOOP, frame: FRAMES.dataSegment, retval: TcAction.UNSPEC },
    {
      id: 'marker-nonsyn',
      benchmark: 'marker, non-SYN (1448-byte TCP data segment)',
      prog: MARKER,
      frame: FRAMES.dataSegment,
      retval: TcAction.UNSPEC,
      baseline: 'tc-noop',
      target: { kind: 'at most', ratio: 1.1 },
      note: 'what nearly all traffic costs: the attached program lets a frame that is not a SYN through on a few loads (Ethernet, plain IPv4 or IPv6, TCP flags)',
    },
    {
      id: 'marker-syn-uncovered',
      benchmark: 'marker, SYN no policy covers',
      prog: MARKER,
      frame: FRAMES.synUncovered,
      retval: TcAction.UNSPEC,
      budget: 60,
      target: { kind: 'at most', ratio: 1.0 },
      expectCounter: 'skipped_no_policy',
      note:
        "the attached program, the tail call, the parse and the answer for the destination from this CPU's destination cache (bpf/lib/dest.h), " +
        'counted under the interface; held to 60 ns at every trie size (the row below shows what the trie itself costs)',
    },
    {
      id: 'marker-syn-uncovered-trie',
      benchmark: 'marker, SYN no policy covers, destination cache off (every SYN asks the trie)',
      prog: MARKER,
      frame: FRAMES.synUncovered,
      retval: TcAction.UNSPEC,
      baseline: 'marker-syn-uncovered',
      expectCounter: 'skipped_no_policy',
      note: 'the same SYN with nt_config.egress_gen at 0, which turns the cache off: the trie lookup the cache saves a SYN to a recent destination (the first SYN to a destination, or after every agent apply, pays it)',
      around: ({ maps }) => {
        const key = slotKey(0);
        const before = maps.config.lookup(key) ?? Buffer.alloc(8);
        maps.config.update(key, encodeConfig({ ...decodeConfig(before), egressGeneration: 0 }));
        return () => maps.config.update(key, before);
      },
    },
    {
      id: 'seed-syn',
      benchmark: "seed's algorithm (C port), SYN it marks",
      prog: SEED_MARK_RESTORE,
      restoreOnly: SEED_RESTORE_ONLY,
      frame: FRAMES.syn,
      retval: TcAction.OK,
      note: "reference: bench/seed/seed.bpf.c, the seed write-up's algorithm with its defects (TCP checksum left stale, no checks); marking alone, restore subtracted",
    },
    {
      id: 'marker-syn-static',
      benchmark: 'marker, SYN it marks (static token)',
      prog: MARKER_MARK_RESTORE,
      restoreOnly: MARKER_RESTORE_ONLY,
      frame: FRAMES.syn,
      retval: TcAction.UNSPEC,
      baseline: 'seed-syn',
      target: { kind: 'at most', ratio: 1.3 },
      expectCounter: 'marked',
      note: 'marking alone (restore subtracted); IP and TCP checksums correct, every check done',
    },
    {
      id: 'marker-compat-syn-static',
      benchmark: 'marker built for kernels before 6.2, SYN it marks (static token)',
      prog: MARKER_COMPAT_MARK_RESTORE,
      restoreOnly: MARKER_COMPAT_RESTORE_ONLY,
      frame: FRAMES.syn,
      retval: TcAction.UNSPEC,
      baseline: 'marker-syn-static',
      expectCounter: 'marked',
      note:
        'marker_compat.bpf.o, which the agent loads where the kernel lacks bpf_cast_to_kern_ctx(): it asks bpf_check_mtu() and bpf_l4_csum_replace() ' +
        '(and reads the checksum back) where the other build reads skb->dev and skb->ip_summed; the ratio is what that read saves',
    },
    {
      id: 'marker-syn-keyed',
      benchmark: 'marker, SYN it marks (keyed token)',
      prog: MARKER_MARK_RESTORE,
      restoreOnly: MARKER_RESTORE_ONLY,
      frame: FRAMES.syn,
      retval: TcAction.UNSPEC,
      baseline: 'marker-syn-static',
      target: { kind: 'at most', ratio: 1.6 },
      expectCounter: 'marked',
      note: "marking alone (restore subtracted): the static row's work plus the epoch from the wall clock (nt_clock, filled as the agent fills it; read once per coarse clock tick and CPU) and one SipHash-2-4 over the bound fields",
      around: ({ maps }) => {
        maps.policies.update(slotKey(POLICY), KEYED_POLICY);
        return () => maps.policies.update(slotKey(POLICY), STATIC_POLICY);
      },
    },
    // Ingress: the verifier's XDP entry against a no-op XDP program, its tc entry against the no-op tc program.
    {
      id: 'xdp-noop',
      benchmark: 'no-op XDP program',
      prog: XDP_NOOP,
      frame: FRAMES.dataSegment,
      retval: XdpAction.PASS,
      ingress: true,
    },
    {
      id: 'verifier-nonsyn',
      benchmark: 'verifier, non-SYN (1448-byte TCP data segment)',
      prog: VERIFIER,
      frame: FRAMES.dataSegment,
      retval: XdpAction.PASS,
      baseline: 'xdp-noop',
      ingress: true,
    },
    {
      id: 'verifier-syn-unprotected',
      benchmark: 'verifier, SYN to a port no policy protects',
      prog: VERIFIER,
      frame: FRAMES.synUnprotected,
      retval: XdpAction.PASS,
      baseline: 'xdp-noop',
      ingress: true,
    },
    {
      id: 'verifier-syn-missing',
      benchmark: 'verifier, SYN without a token (Enforce: dropped)',
      prog: VERIFIER,
      frame: FRAMES.syn,
      retval: XdpAction.DROP,
      budget: 110,
      target: { kind: 'at most', ratio: 1.0 },
      expectCounter: 'verify_missing',
      ingress: true,
      note: `${STATIC_VERIFY_NOTE}; what every SYN of an unmarked flood costs, held to 110 ns`,
    },
    {
      id: 'verifier-syn-valid',
      benchmark: 'verifier, SYN with a valid token',
      prog: VERIFIER,
      frame: FRAMES.synValidToken,
      retval: XdpAction.PASS,
      baseline: 'xdp-noop',
      expectCounter: 'verify_valid',
      ingress: true,
      note: STATIC_VERIFY_NOTE,
    },
    {
      id: 'verifier-syn-invalid',
      benchmark: 'verifier, SYN with an invalid token (Enforce)',
      prog: VERIFIER,
      frame: FRAMES.synInvalidToken,
      retval: XdpAction.DROP,
      baseline: 'xdp-noop',
      expectCounter: 'verify_dropped',
      ingress: true,
      note: STATIC_VERIFY_NOTE,
    },
    {
      id: 'verifier-keyed-valid',
      benchmark: 'verifier (keyed policy), SYN with a valid token',
      prog: VERIFIER,
      frame: keyedSyn(KEY, nowMs),
      retval: XdpAction.PASS,
      baseline: 'xdp-noop',
      expectCounter: 'verify_valid',
      ingress: true,
      note: KEYED_VERIFY_NOTE,
    },
    {
      id: 'verifier-keyed-previous',
      benchmark: 'verifier (keyed policy), SYN with a token of the previous key',
      prog: VERIFIER,
      frame: keyedSyn(KEY_PREVIOUS, nowMs),
      retval: XdpAction.PASS,
      baseline: 'xdp-noop',
      expectCounter: 'verify_valid',
      ingress: true,
      note: `${KEYED_VERIFY_NOTE}: found after both epochs of the current key were tried`,
    },
    {
      id: 'verifier-keyed-invalid',
      benchmark: 'verifier (keyed policy), SYN with an invalid token (Enforce: dropped)',
      prog: VERIFIER,
      frame: keyedSyn(KEY_FOREIGN, nowMs),
      retval: XdpAction.DROP,
      baseline: 'xdp-noop',
      expectCounter: 'verify_invalid',
      ingress: true,
      note: `${KEYED_VERIFY_NOTE}: both keys and both epochs tried before the drop`,
    },
    {
      id: 'verifier-tc-keyed-valid',
      benchmark: 'verifier at tc ingress (keyed policy), SYN with a valid token',
      prog: VERIFIER_TC,
      frame: keyedSyn(KEY, nowMs),
      retval: TcAction.UNSPEC,
      baseline: 'tc-noop',
      expectCounter: 'verify_valid',
      ingress: true,
      note: 'the fallback where XDP cannot attach; baseline: the no-op tc program in the runs of the first trie size',
    },
    {
      id: 'verifier-tc-keyed-invalid',
      benchmark: 'verifier at tc ingress (keyed policy), SYN with an invalid token (Enforce: dropped)',
      prog: VERIFIER_TC,
      frame: keyedSyn(KEY_FOREIGN, nowMs),
      retval: TcAction.SHOT,
      baseline: 'tc-noop',
      expectCounter: 'verify_invalid',
      ingress: true,
      note: 'the fallback where XDP cannot attach; baseline: the no-op tc program in the runs of the first trie size',
    },
  ];
}

export interface PacketBenchOptions {
  /** repetitions per test run */
  repeat: number;
  /** test runs per row and trie size at least (rows whose verdict is not decided then get more); the median is reported */
  runs: number;
  /** at most this many runs per row and trie size */
  maxRuns: number;
  /** no new round after this many seconds of one trie size */
  seconds: number;
  /** sizes of the destination trie, in order */
  prefixCounts: number[];
  /** single test runs per program for the cross-check of the restore method (0: skip) */
  singleShots: number;
  log?: (line: string) => void;
}

const ipU32 = (text: string): number => text.split('.').reduce((n, o) => n * 256 + Number(o), 0);
const contains = (net: number, len: number, ip: number): boolean => len === 0 || (net ^ ip) >>> (32 - len) === 0;

/** Fills the trie up to `count` entries with random /16../32 prefixes that cover neither test destination. */
function trieFiller(egress4: NativeMap, slot: number): (count: number) => number {
  const rng = Rng.seeded(0x4e54);
  const next = (): number => rng.u32();
  const seen = new Set<string>();
  const rule = encodeEgressRule(POLICY, [], slot);
  const avoid = [ipU32(COVERED_DST), ipU32(UNCOVERED_DST)];
  let size = 1; // the covering prefix
  return (count) => {
    const t0 = performance.now();
    while (size < count) {
      const len = 16 + (next() % 17);
      const net = len === 32 ? next() : (next() & ~(0xffffffff >>> len)) >>> 0;
      const id = `${net}/${len}`;
      if (seen.has(id) || avoid.some((ip) => contains(net, len, ip))) continue;
      seen.add(id);
      const addr = Buffer.alloc(4);
      addr.writeUInt32BE(net);
      egress4.update(encodeLpmKey(TEST_IFINDEX, { addr, prefixLen: len }), rule);
      size++;
    }
    return performance.now() - t0;
  };
}

const prefixLabel = (n: number): string => countLabel(n, n === 1 ? 'prefix' : 'prefixes');

function retvalProblem(got: number, want: number): string | null {
  if (got === want) return null;
  return `returned ${got}, want ${want}${WRAPPER_ERRORS[got] ? `: ${WRAPPER_ERRORS[got]}` : ''}`;
}

export async function runPacketBench(opts: PacketBenchOptions): Promise<BenchResult> {
  const log = opts.log ?? ((): void => undefined);
  ensureBuilt();
  const b = binding();
  if (!b.isBpffs('/sys/fs/bpf')) b.mountBpffs('/sys/fs/bpf');
  const pinRoot = `/sys/fs/bpf/netoken-bench-${process.pid}-${randomBytes(3).toString('hex')}`;
  mkdirSync(pinRoot, { mode: 0o700 });
  const objects = new Map<string, NativeObject>();
  const programs = new Map<string, NativeProgram>();
  const opened: NativeMap[] = [];
  try {
    // One pin root: the marker, its benchmark wrapper and the verifier share every map.
    const program = (ref: ProgRef): NativeProgram => {
      const id = `${ref.object}:${ref.program}`;
      let p = programs.get(id);
      if (!p) {
        let o = objects.get(ref.object);
        if (!o) {
          o = b.openObject(ref.object, { pinRoot });
          objects.set(ref.object, o);
        }
        p = o.program(ref.program);
        programs.set(id, p);
      }
      return p;
    };
    const mapOf = (ref: ProgRef, name: string): NativeMap => {
      program(ref);
      const map = (objects.get(ref.object) as NativeObject).map(name);
      opened.push(map);
      return map;
    };
    const m: MarkerMaps = {
      policies: mapOf(MARKER, 'nt_policies'),
      egress4: mapOf(MARKER, 'nt_egress4'),
      config: mapOf(MARKER, 'nt_config'),
    };
    // Counter slots as the agent gives them out: the device's own, and (device, policy) for each policy's rules.
    const slots = CounterSlots.of(objects.get(MARKER.object) as NativeObject);
    m.policies.update(slotKey(POLICY), STATIC_POLICY);
    m.policies.update(slotKey(KEYED_VERIFY_POLICY), KEYED_VERIFY);
    const markSlot = slots.slot(TEST_IFINDEX, POLICY);
    m.egress4.update(encodeLpmKey(TEST_IFINDEX, COVERED_NET), encodeEgressRule(POLICY, [PORT], markSlot));
    // The wall clock keyed tokens need, measured and written as the agent does (Datapath.syncClock).
    const clock = measureClock(program(CLOCK_PROBE));
    mapOf(MARKER, 'nt_clock').update(slotKey(0), encodeClock(clock.taiOffsetNs, clock.bootOffsetNs));
    const ports = mapOf(VERIFIER, 'nt_ingress_ports');
    const rules: [Buffer, Buffer][] = [
      [encodePortKey(TEST_IFINDEX, PORT), encodeIngressRule(POLICY, IngressActionCode.Enforce, { slot: markSlot })],
      [
        encodePortKey(TEST_IFINDEX, KEYED_PORT),
        encodeIngressRule(KEYED_VERIFY_POLICY, IngressActionCode.Enforce, {
          slot: slots.slot(TEST_IFINDEX, KEYED_VERIFY_POLICY),
        }),
      ],
    ];
    for (const [key, value] of rules) ports.update(key, value);
    // The port index the agent derives from the rules, which the verifier reads first.
    const portIndex = mapOf(VERIFIER, 'nt_port_index');
    for (const [key, value] of portIndexEntries(rules).values()) portIndex.update(key, value);
    const fill = trieFiller(m.egress4, markSlot);
    const all = cases(Date.now());

    /**
     * One test run of `ref` with the row's state: its value in ns per packet, from the
     * thread's CPU time. Runs of one repetition just before give the call's fixed cost
     * (setting the packet up, the system call), which is left out: the least of three, since
     * one of them can take an interrupt or a page fault that the long run would then appear
     * to have saved (a negative cost on a busy machine).
     */
    const runOnce = (c: PacketCase, ref: ProgRef, repeat: number): number => {
      const undo = c.around?.({ maps: m, pinRoot });
      try {
        const p = program(ref);
        const run = (n: number): number => {
          const r = p.testRun({ data: c.frame, repeat: n });
          const problem = retvalProblem(r.retval, c.retval);
          if (problem) throw new Error(`${c.benchmark}: ${ref.program} ${problem}`);
          return r.cpuNs;
        };
        if (repeat <= 1) return run(1);
        const one = Math.min(run(1), run(1), run(1));
        return (run(repeat) - one) / (repeat - 1);
      } finally {
        undo?.();
      }
    };

    /** Total of one counter over every slot (the counter maps are shared by every object under pinRoot). */
    const counterTotal = (name: CounterName): bigint =>
      slots
        .rows()
        .filter((r) => r.counter === name)
        .reduce((n, r) => n + r.value, 0n);
    // The destination cache on, as the agent leaves it after an apply.
    raiseEgressGeneration(m.config);
    // Every row once, before any measurement: it must return its verdict and raise its counter.
    for (const c of all) {
      const before = c.expectCounter ? counterTotal(c.expectCounter) : 0n;
      runOnce(c, c.prog, 1);
      if (c.expectCounter) {
        const delta = counterTotal(c.expectCounter) - before;
        if (delta !== 1n) throw new Error(`${c.benchmark}: one test run raised ${c.expectCounter} by ${delta}, want 1`);
      }
      if (c.restoreOnly) runOnce(c, c.restoreOnly, 1);
    }
    slots.close();

    const figures: Figure[] = [];
    const ingressFigures: Figure[] = [];
    const details: Record<string, unknown> = {
      clock: { source: clock.hasTai ? 'CLOCK_TAI' : 'CLOCK_BOOTTIME' },
      fillMs: {} as Record<string, number>,
      grossNs: {} as Record<string, unknown>,
      rounds: {} as Record<string, unknown>,
    };
    const budget: Budget = { minRounds: opts.runs, maxRounds: Math.max(opts.runs, opts.maxRuns), seconds: opts.seconds };
    const undecided: string[] = [];
    for (const [k, n] of opts.prefixCounts.entries()) {
      // The ingress rows run with the first trie size only: their programs never read the trie.
      const live = all.filter((c) => k === 0 || !c.ingress);
      const ms = fill(n);
      (details.fillMs as Record<string, number>)[String(n)] = Math.round(ms);
      log(
        `per packet: ${prefixLabel(n)} in the trie (filled in ${Math.round(ms)} ms), ${live.length} rows, at least ${opts.runs} runs of ${opts.repeat} repetitions`,
      );
      const gross = new Map<string, { marking: number[]; restoreOnly: number[] }>();
      const specs: RowSpec[] = live.map((c) => ({
        id: c.id,
        ...(c.baseline ? { baseline: c.baseline } : {}),
        ...(c.budget !== undefined ? { budget: c.budget } : {}),
        target: c.target ?? null,
      }));
      const result = await untilDecided(
        specs,
        budget,
        (ids, r) => {
          const values = new Map<string, number>();
          const rows = live.filter((c) => ids.includes(c.id));
          // Rotate the order so that slow drift does not always land on the same row.
          for (let i = 0; i < rows.length; i++) {
            const c = rows[(i + r) % rows.length] as PacketCase;
            const t = runOnce(c, c.prog, opts.repeat);
            if (c.restoreOnly) {
              const base = runOnce(c, c.restoreOnly, opts.repeat);
              const g = gross.get(c.id) ?? { marking: [], restoreOnly: [] };
              g.marking.push(t);
              g.restoreOnly.push(base);
              gross.set(c.id, g);
              values.set(c.id, t - base);
            } else {
              values.set(c.id, t);
            }
          }
          return values;
        },
        log,
      );
      (details.rounds as Record<string, unknown>)[String(n)] = {
        rounds: result.rounds,
        seconds: Math.round(result.seconds),
        undecided: result.undecided,
      };
      undecided.push(...result.undecided.map((id) => `${all.find((c) => c.id === id)?.benchmark ?? id} (${prefixLabel(n)})`));
      (details.grossNs as Record<string, unknown>)[String(n)] = Object.fromEntries(gross);
      for (const c of live) {
        const base = c.baseline ? all.find((x) => x.id === c.baseline) : undefined;
        const { runs, baselineRuns } = paired(result.samples, {
          id: c.id,
          ...(c.baseline ? { baseline: c.baseline } : {}),
          ...(c.budget !== undefined ? { budget: c.budget } : {}),
        });
        const baseOwn = base ? [...(result.samples.get(base.id)?.values() ?? [])] : [];
        const f = figure({
          group: 'per packet',
          benchmark: c.benchmark,
          config: c.ingress ? INGRESS_CONFIG : prefixLabel(n),
          unit: 'ns/packet',
          runs,
          baseline:
            c.budget !== undefined
              ? { benchmark: 'budget', value: c.budget }
              : base
                ? { benchmark: base.benchmark, value: baseOwn.length > 0 ? median(baseOwn) : null }
                : null,
          ...(baselineRuns ? { baselineRuns } : {}),
          target: c.target ?? null,
          ...(c.note ? { note: c.note } : {}),
        });
        (c.ingress ? ingressFigures : figures).push(f);
      }
    }
    figures.push(...ingressFigures);

    const remarks: string[] = [];
    if (undecided.length > 0)
      remarks.push(`Not decided within ${opts.maxRuns} runs or ${opts.seconds} s (counts as not met): ${undecided.join('; ')}.`);
    const first = (details.grossNs as Record<string, Record<string, { marking: number[]; restoreOnly: number[] }>>)[
      String(opts.prefixCounts[0])
    ];
    for (const [id, g] of Object.entries(first ?? {})) {
      const c = all.find((x) => x.id === id);
      remarks.push(
        `${c?.benchmark ?? id}, ${prefixLabel(opts.prefixCounts[0] ?? 0)}: mark and restore ${median(g.marking).toFixed(0)} ns, ` +
          `restore only ${median(g.restoreOnly).toFixed(0)} ns (medians; every trie size is in latest.json).`,
      );
    }
    remarks.push(
      `Every per-packet row was probed first with one test run: it returned its verdict and raised its counter by one ` +
        `(${[...new Set(all.flatMap((c) => (c.expectCounter ? [c.expectCounter] : [])))].join(', ')}); keyed rows ran on the wall clock ` +
        `the agent would write (${clock.hasTai ? 'CLOCK_TAI' : 'CLOCK_BOOTTIME'} based).`,
    );
    if (opts.singleShots > 0) {
      const x = singleShot(program, opts.singleShots);
      details.singleShot = x;
      remarks.push(
        `Cross-check without the restore wrappers: single test runs on a fresh SYN (median of ${x.runs}, ${prefixLabel(opts.prefixCounts.at(-1) ?? 0)}): ` +
          `no-op ${x.noopNs} ns, seed port ${x.seedNs} ns, marker ${x.markerNs} ns, so marking costs ${x.seedMinusNoopNs} ns (seed) and ` +
          `${x.markerMinusNoopNs} ns (marker), ${(x.markerMinusNoopNs / x.seedMinusNoopNs).toFixed(2)}×. Coarser (one timer read per run, a fresh skb each time) but independent of the wrappers.`,
      );
    }
    details.frames = Object.fromEntries(Object.entries(FRAMES).map(([k, f]) => [k, f.length]));
    return { figures, details, remarks };
  } finally {
    for (const map of opened) map.close();
    for (const p of programs.values()) p.close();
    for (const o of objects.values()) o.close();
    rmSync(pinRoot, { recursive: true, force: true });
  }
}

/**
 * Cross-check of the restore method: the marker and the seed port marking a fresh SYN in
 * single test runs (repeat 1, so nothing needs restoring), minus a no-op's single run.
 * Coarser (the kernel's timer is read around one run), but independent of the wrappers.
 */
interface SingleShot {
  runs: number;
  noopNs: number;
  seedNs: number;
  markerNs: number;
  seedMinusNoopNs: number;
  markerMinusNoopNs: number;
}

function singleShot(program: (ref: ProgRef) => NativeProgram, n: number): SingleShot {
  const noop = program(TC_NOOP);
  const seed = program(SEED);
  const marker = program(MARKER);
  const xs = { noop: [] as number[], seed: [] as number[], marker: [] as number[] };
  for (let i = 0; i < n; i++) {
    xs.noop.push(noop.testRun({ data: FRAMES.syn, repeat: 1 }).duration);
    const s = seed.testRun({ data: FRAMES.syn, repeat: 1 });
    if (s.data.length !== FRAMES.syn.length + 8) throw new Error(`seed port did not mark the SYN (${s.data.length} bytes out)`);
    xs.seed.push(s.duration);
    const m = marker.testRun({ data: FRAMES.syn, repeat: 1 });
    if (m.data.length !== FRAMES.syn.length + 12) throw new Error(`marker did not mark the SYN (${m.data.length} bytes out)`);
    xs.marker.push(m.duration);
  }
  const noopNs = median(xs.noop);
  return {
    runs: n,
    noopNs,
    seedNs: median(xs.seed),
    markerNs: median(xs.marker),
    seedMinusNoopNs: median(xs.seed) - noopNs,
    markerMinusNoopNs: median(xs.marker) - noopNs,
  };
}
