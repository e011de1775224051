/**
 * Per-packet cost under BPF_PROG_TEST_RUN: the egress marker against a no-op tc program and
 * against a C port of the seed's algorithm, with 1, 1 000 and 100 000 prefixes in the
 * destination trie; the ingress verifier against a no-op XDP program once it exists.
 *
 * Each row is one entry of CASES. A row whose part is not built yet carries `pending`: it is
 * probed with one test run and listed as "not yet available" until the probe succeeds, so
 * keyed tokens and the verifier turn on by themselves when they land.
 *
 * This benchmark alone: `node dist/bench/run.js --only packet` (`npm run bench` runs all).
 */
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { binding, type NativeMap, type NativeObject, type NativeProgram } from '../src/native/binding.js';
import { BindBit, COUNTERS, encodeEgressRule, encodeLpmKey, encodePolicy, sumPerCpu, TokenModeCode, type CounterName } from '../src/lib/abi.js';
import { buildFrame, tokenOption, TCP_ACK, TCP_PSH, TCP_SYN, type FrameSpec } from '../src/lib/packet.js';
import {
  MARKER,
  MARKER_MARK_RESTORE,
  MARKER_RESTORE_ONLY,
  SEED,
  SEED_MARK_RESTORE,
  SEED_RESTORE_ONLY,
  TC_NOOP,
  VERIFIER,
  XDP_NOOP,
  ensureBuilt,
  verifierMissing,
  type ProgRef,
} from './artifacts.js';
import { figure, median, unavailable, type Figure, type Target } from './report.js';
import { protectPortForBench } from './verifier.js';
import { TcAction, XdpAction } from '../src/native/bpf.js';

/** What the restore wrappers return when a repetition did not do what it measures (bench/bpf/restore.h). */
const WRAPPER_ERRORS: Record<number, string> = {
  100: 'the frame is not the 74-byte benchmark frame',
  101: 'the program did not grow the frame (it did not mark the SYN)',
  102: 'the frame could not be restored',
};

/** test_run's device when the ctx names none: the loopback device of the caller's namespace. */
const TEST_IFINDEX = 1;
const POLICY = 1;
const KIND = 253;
const EXID = 0x4e54;
const TOKEN = Buffer.from('4e546f6b656e2121', 'hex');
const KEY = Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex');
const COVERED_NET = { addr: Buffer.from([203, 0, 113, 0]), prefixLen: 24 };
const COVERED_DST = '203.0.113.7';
const UNCOVERED_DST = '198.51.100.1';
const PORT = 443;
/** MSS, SACK-permitted, timestamps, NOP, window scale: the 20 option bytes of a Linux SYN. */
const LINUX_SYN_OPTIONS = Buffer.from('020405b40402080a0001e24000000000' + '01030307', 'hex');

const synSpec = (dst: string, options: Buffer = LINUX_SYN_OPTIONS): FrameSpec => ({
  src: '192.0.2.10',
  dst,
  tcp: { sport: 40000, dport: PORT, seq: 0x01020304, flags: TCP_SYN, window: 64240, options },
});

const FRAMES = {
  /** a full-sized segment of an established connection: what nearly all egress traffic is */
  dataSegment: buildFrame({
    src: '192.0.2.10',
    dst: COVERED_DST,
    tcp: { sport: 40000, dport: PORT, seq: 0x01020305, ack: 7, flags: TCP_ACK | TCP_PSH, options: Buffer.from('0101080a0001e24100000001', 'hex') },
    payload: Buffer.alloc(1448, 0x5a),
  }),
  syn: buildFrame(synSpec(COVERED_DST)),
  synUncovered: buildFrame(synSpec(UNCOVERED_DST)),
  synValidToken: buildFrame(synSpec(COVERED_DST, Buffer.concat([LINUX_SYN_OPTIONS, tokenOption(KIND, EXID, TOKEN)]))),
  synInvalidToken: buildFrame(synSpec(COVERED_DST, Buffer.concat([LINUX_SYN_OPTIONS, tokenOption(KIND, EXID, Buffer.alloc(8, 0xee))]))),
};

export interface MarkerMaps {
  policies: NativeMap;
  egress4: NativeMap;
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
const STATIC_POLICY = encodePolicy({ mode: TokenModeCode.Static, kind: KIND, exid: EXID, epochSeconds: 0, bind: 0, current: TOKEN });
const KEYED_POLICY = encodePolicy({
  mode: TokenModeCode.Keyed,
  kind: KIND,
  exid: EXID,
  epochSeconds: 60,
  bind: BindBit.SourceAddress | BindBit.DestinationAddress | BindBit.SourcePort | BindBit.DestinationPort | BindBit.Sequence,
  current: KEY,
});

const VERIFIER_NOT_VERIFYING = 'the verifier does not verify this SYN yet';
const protectPort = ({ pinRoot }: BenchState): (() => void) =>
  protectPortForBench(pinRoot, { ifindex: TEST_IFINDEX, port: PORT, policyId: POLICY, action: 'Enforce' });

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
  target?: Target;
  /**
   * The row measures something that may not be built yet: probed with one test run first,
   * and listed as not yet available, with this reason, while the probe fails.
   */
  pending?: () => string;
  /** the probe must also raise this counter (nt_stats) by one: proof the row measures what it says */
  expectCounter?: CounterName;
  /** state the row needs, set before each of its test runs; returns the undo */
  around?: (state: BenchState) => () => void;
  note?: string;
}

/** One entry per row of the table. */
export const CASES: readonly PacketCase[] = [
  { id: 'tc-noop', benchmark: 'no-op tc program', prog: TC_NOOP, frame: FRAMES.dataSegment, retval: TcAction.UNSPEC },
  {
    id: 'marker-nonsyn',
    benchmark: 'marker, non-SYN (1448-byte TCP data segment)',
    prog: MARKER,
    frame: FRAMES.dataSegment,
    retval: TcAction.UNSPEC,
    baseline: 'tc-noop',
    target: { kind: 'at most', ratio: 1.15 },
  },
  {
    id: 'marker-syn-uncovered',
    benchmark: 'marker, SYN no policy covers',
    prog: MARKER,
    frame: FRAMES.synUncovered,
    retval: TcAction.UNSPEC,
    baseline: 'tc-noop',
  },
  {
    id: 'seed-syn',
    benchmark: "seed's algorithm (C port), SYN it marks",
    prog: SEED_MARK_RESTORE,
    restoreOnly: SEED_RESTORE_ONLY,
    frame: FRAMES.syn,
    retval: TcAction.OK,
    note: 'reference: bench/seed/seed.bpf.c, the seed write-up\'s algorithm with its defects (TCP checksum left stale, no checks); marking alone, restore subtracted',
  },
  {
    id: 'marker-syn-static',
    benchmark: 'marker, SYN it marks (static token)',
    prog: MARKER_MARK_RESTORE,
    restoreOnly: MARKER_RESTORE_ONLY,
    frame: FRAMES.syn,
    retval: TcAction.UNSPEC,
    baseline: 'seed-syn',
    target: { kind: 'at most', ratio: 1.0 },
    note: 'marking alone (restore subtracted); IP and TCP checksums correct, every check done',
  },
  {
    id: 'marker-syn-keyed',
    benchmark: 'marker, SYN it marks (keyed token)',
    prog: MARKER_MARK_RESTORE,
    restoreOnly: MARKER_RESTORE_ONLY,
    frame: FRAMES.syn,
    retval: TcAction.UNSPEC,
    baseline: 'marker-syn-static',
    target: { kind: 'at most', ratio: 2.0 },
    pending: () => 'the marker does not mark SYNs of a keyed policy yet',
    around: ({ maps }) => {
      maps.policies.update(slotKey(POLICY), KEYED_POLICY);
      return () => maps.policies.update(slotKey(POLICY), STATIC_POLICY);
    },
  },
  { id: 'xdp-noop', benchmark: 'no-op XDP program', prog: XDP_NOOP, frame: FRAMES.dataSegment, retval: XdpAction.PASS },
  // The verifier's SYN rows: port 443 of TEST_IFINDEX protected by POLICY (static TOKEN) in Enforce.
  {
    id: 'verifier-nonsyn',
    benchmark: 'verifier, non-SYN (1448-byte TCP data segment)',
    prog: VERIFIER,
    frame: FRAMES.dataSegment,
    retval: XdpAction.PASS,
    baseline: 'xdp-noop',
    pending: () => verifierMissing() ?? 'the verifier does not load or pass this packet',
  },
  {
    id: 'verifier-syn-valid',
    benchmark: 'verifier, SYN with a valid token',
    prog: VERIFIER,
    frame: FRAMES.synValidToken,
    retval: XdpAction.PASS,
    baseline: 'xdp-noop',
    expectCounter: 'verify_valid',
    pending: () => verifierMissing() ?? VERIFIER_NOT_VERIFYING,
    around: protectPort,
  },
  {
    id: 'verifier-syn-invalid',
    benchmark: 'verifier, SYN with an invalid token (Enforce)',
    prog: VERIFIER,
    frame: FRAMES.synInvalidToken,
    retval: XdpAction.DROP,
    baseline: 'xdp-noop',
    expectCounter: 'verify_dropped',
    pending: () => verifierMissing() ?? VERIFIER_NOT_VERIFYING,
    around: protectPort,
  },
];

export interface PacketBenchOptions {
  /** repetitions per test run; the kernel reports the mean per repetition */
  repeat: number;
  /** test runs per row and trie size; the median is reported */
  runs: number;
  /** sizes of the destination trie, in order */
  prefixCounts: number[];
  /** single test runs per program for the cross-check of the restore method (0: skip) */
  singleShots: number;
  log?: (line: string) => void;
}

export interface PacketBenchResult {
  figures: Figure[];
  details: Record<string, unknown>;
  remarks: string[];
}

/** Deterministic 32-bit generator (mulberry32), so every run fills the same trie. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

const ipU32 = (text: string): number => text.split('.').reduce((n, o) => n * 256 + Number(o), 0);
const contains = (net: number, len: number, ip: number): boolean => len === 0 || (net ^ ip) >>> (32 - len) === 0;

/** Fills the trie up to `count` entries with random /16../32 prefixes that cover neither test destination. */
function trieFiller(egress4: NativeMap): (count: number) => number {
  const next = prng(0x4e54);
  const seen = new Set<string>();
  const rule = encodeEgressRule(POLICY, []);
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

const prefixLabel = (n: number): string => `${n.toLocaleString('en-US').replace(/,/g, ' ')} prefix${n === 1 ? '' : 'es'}`;

function retvalProblem(got: number, want: number): string | null {
  if (got === want) return null;
  return `returned ${got}, want ${want}${WRAPPER_ERRORS[got] ? `: ${WRAPPER_ERRORS[got]}` : ''}`;
}

export async function runPacketBench(opts: PacketBenchOptions): Promise<PacketBenchResult> {
  const log = opts.log ?? ((): void => undefined);
  ensureBuilt();
  const b = binding();
  if (!b.isBpffs('/sys/fs/bpf')) b.mountBpffs('/sys/fs/bpf');
  const pinRoot = `/sys/fs/bpf/netoken-bench-${process.pid}-${randomBytes(3).toString('hex')}`;
  mkdirSync(pinRoot, { mode: 0o700 });
  const objects = new Map<string, NativeObject>();
  const programs = new Map<string, NativeProgram>();
  let maps: MarkerMaps | undefined;
  try {
    // One pin root: the marker and its benchmark wrapper share every map.
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
    program(MARKER);
    const markerObj = objects.get(MARKER.object) as NativeObject;
    const m: MarkerMaps = { policies: markerObj.map('nt_policies'), egress4: markerObj.map('nt_egress4') };
    maps = m;
    m.policies.update(slotKey(POLICY), STATIC_POLICY);
    m.egress4.update(encodeLpmKey(TEST_IFINDEX, COVERED_NET), encodeEgressRule(POLICY, [PORT]));
    const fill = trieFiller(m.egress4);

    const runOnce = (c: PacketCase, ref: ProgRef, repeat: number): number => {
      const undo = c.around?.({ maps: m, pinRoot });
      try {
        const r = program(ref).testRun({ data: c.frame, repeat });
        const problem = retvalProblem(r.retval, c.retval);
        if (problem) throw new Error(`${c.benchmark}: ${ref.program} ${problem}`);
        return r.duration;
      } finally {
        undo?.();
      }
    };

    /** Total of one counter over every key of the object's nt_stats. */
    const counterTotal = (ref: ProgRef, name: CounterName): bigint => {
      const stats = (objects.get(ref.object) as NativeObject).map('nt_stats');
      try {
        const index = COUNTERS.indexOf(name);
        let total = 0n;
        for (const key of stats.keys()) {
          const v = key.readUInt32LE(8) === index ? stats.lookup(key) : null;
          if (v) total += sumPerCpu(v);
        }
        return total;
      } finally {
        stats.close();
      }
    };
    const probe = (c: PacketCase): void => {
      if (!existsSync(c.prog.object)) throw new Error(`${c.prog.object} missing`);
      program(c.prog);
      const before = c.expectCounter ? counterTotal(c.prog, c.expectCounter) : 0n;
      runOnce(c, c.prog, 1);
      if (c.expectCounter) {
        const delta = counterTotal(c.prog, c.expectCounter) - before;
        if (delta !== 1n) throw new Error(`${c.expectCounter} rose by ${delta}, want 1`);
      }
      if (c.restoreOnly) runOnce(c, c.restoreOnly, 1);
    };

    // Which rows can run: a pending row whose probe fails is "not yet available"; any other
    // failure is real and stops the benchmark.
    const missing = new Map<string, string>();
    for (const c of CASES) {
      try {
        probe(c);
      } catch (err) {
        if (!c.pending) throw err;
        missing.set(c.id, `${c.pending()} (probe: ${(err as Error).message})`);
      }
    }
    const live = CASES.filter((c) => !missing.has(c.id));

    const figures: Figure[] = [];
    const details: Record<string, unknown> = { fillMs: {} as Record<string, number>, grossNs: {} as Record<string, unknown> };
    for (const n of opts.prefixCounts) {
      const ms = fill(n);
      (details.fillMs as Record<string, number>)[String(n)] = Math.round(ms);
      log(`per packet: ${prefixLabel(n)} in the trie (filled in ${Math.round(ms)} ms), ${opts.runs} runs of ${opts.repeat} repetitions`);
      const runs = new Map<string, number[]>(live.map((c) => [c.id, []]));
      const gross = new Map<string, { marking: number[]; restoreOnly: number[] }>();
      for (let r = 0; r < opts.runs; r++) {
        // Rotate the order so that slow drift does not always land on the same row.
        const order = live.map((_, i) => live[(i + r) % live.length] as PacketCase);
        for (const c of order) {
          const t = runOnce(c, c.prog, opts.repeat);
          if (c.restoreOnly) {
            const base = runOnce(c, c.restoreOnly, opts.repeat);
            const g = gross.get(c.id) ?? { marking: [], restoreOnly: [] };
            g.marking.push(t);
            g.restoreOnly.push(base);
            gross.set(c.id, g);
            runs.get(c.id)?.push(t - base);
          } else {
            runs.get(c.id)?.push(t);
          }
        }
      }
      (details.grossNs as Record<string, unknown>)[String(n)] = Object.fromEntries(gross);
      const value = (id: string): number | null => {
        const xs = runs.get(id);
        return xs && xs.length > 0 ? median(xs) : null;
      };
      for (const c of CASES) {
        const base = c.baseline ? CASES.find((x) => x.id === c.baseline) : undefined;
        const spec = {
          group: 'per packet' as const,
          benchmark: c.benchmark,
          config: prefixLabel(n),
          unit: 'ns/packet',
          baseline: base ? { benchmark: base.benchmark, value: value(base.id) } : null,
          ...(base && runs.get(base.id) ? { baselineRuns: runs.get(base.id) } : {}),
          target: c.target ?? null,
        };
        const reason = missing.get(c.id);
        if (reason !== undefined) {
          figures.push(unavailable(spec, reason));
          continue;
        }
        figures.push(figure({ ...spec, runs: runs.get(c.id) ?? [], ...(c.note ? { note: c.note } : {}) }));
      }
    }

    const remarks: string[] = [];
    const first = (details.grossNs as Record<string, Record<string, { marking: number[]; restoreOnly: number[] }>>)[String(opts.prefixCounts[0])];
    for (const [id, g] of Object.entries(first ?? {})) {
      const c = CASES.find((x) => x.id === id);
      remarks.push(
        `${c?.benchmark ?? id}, ${prefixLabel(opts.prefixCounts[0] ?? 0)}: mark and restore ${median(g.marking).toFixed(0)} ns, ` +
          `restore only ${median(g.restoreOnly).toFixed(0)} ns (medians; every trie size is in latest.json).`,
      );
    }
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
    maps?.policies.close();
    maps?.egress4.close();
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
