/**
 * Runs fuzz cases through a BPF program with BPF_PROG_TEST_RUN and checks every output.
 * A target names the object and program, installs its policy state and judges one run:
 * the egress marker, and the ingress verifier at XDP and at tc.
 *
 * Counters are checked too: the model says which (ifindex, policy, counter) each case must
 * bump, the expected totals are compared with the counter slots after every batch, and a
 * batch that disagrees is run again one case at a time to name the case.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { binding, type NativeObject, type NativeProgram } from '../src/native/binding.js';
import { CounterSlots } from '../src/agent/counters.js';
import { bpfObjectPath } from '../src/lib/package.js';
import { checkMarkerRun, type Violation } from './check.js';
import { generateCase, type FuzzCase } from './generate.js';
import { describeVerdict, markerVerdict, type CounterRef, type Verdict } from './model.js';
import { installWorld, type Device } from './world.js';
import { generateVerifierCase } from './verifier-generate.js';
import {
  checkVerifierRun,
  describeVerifierVerdict,
  verifierCounters,
  verifierKind,
  verifierVerdict,
  type VerifierHook,
  type VerifierVerdict,
} from './verifier-model.js';
import { installVerifierWorld } from './verifier-world.js';
import {
  describeSequence,
  generateFragmentCase,
  runSequence,
  sequenceCounters,
  sequenceKind,
  type SequenceVerdict,
} from './fragments.js';

export const DEFAULT_MARKER_OBJECT = bpfObjectPath('marker');
export const DEFAULT_VERIFIER_OBJECT = bpfObjectPath('verifier');

/** sizeof(struct __sk_buff) and the offsets of the fields test_run accepts that we set. */
const SKB_CTX_SIZE = 192;
const CTX_IFINDEX = 40;
const CTX_GSO_SEGS = 164;
const CTX_GSO_SIZE = 176;
/** sizeof(struct xdp_md) and its fields: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex. */
const XDP_CTX_SIZE = 24;
const XDP_CTX_DATA_END = 4;
const XDP_CTX_INGRESS_IFINDEX = 12;

export interface CaseRun<V = Verdict> {
  fuzzCase: FuzzCase;
  device: Device;
  verdict: V;
  retval: number;
  out: Buffer;
  violations: Violation[];
  /** how the counters moved during this run, for verdicts whose count the model leaves open */
  counterDelta?: Map<string, bigint>;
}

/**
 * One program under test: its object, the state it runs against, the cases it gets and
 * how a run is judged. The marker is one; the ingress verifier is another of the same shape
 * (its own generator, with tokens right and wrong, and a check that no wrong one passes).
 */
export interface Target<V = Verdict> {
  readonly name: string;
  readonly objectPath: string;
  readonly programName: string;
  /** write the policy state into the freshly loaded object */
  install(obj: NativeObject, devices: readonly Device[]): void;
  /** case `index` of `seed`, for a run on `devices` devices */
  generate(seed: number, index: number, devices: number): FuzzCase;
  /** what the program must do with a case */
  verdict(frame: Buffer, device: Device, c: FuzzCase): V;
  /** a short name of the verdict's kind, for the run's tally */
  kind(v: V): string;
  /** the counters the verdict bumps, each by one; null when the model leaves the count to the program (checked one case at a time, then taken as it is) */
  counters(v: V): CounterRef[] | null;
  describe(v: V): string;
  check(input: Buffer, verdict: V, retval: number, out: Buffer): Violation[];
  /** the ctx_in of a run (default: a struct __sk_buff with the device's ifindex and the case's GSO fields, when needed) */
  ctxIn?(device: Device, c: FuzzCase): Buffer | undefined;
  /** run a case itself (a sequence of frames), in place of one test run of `c.frame` judged by verdict() and check() */
  run?(prog: NativeProgram, c: FuzzCase, device: Device): { verdict: V; retval: number; out: Buffer; violations: Violation[] };
}

export function markerTarget(objectPath = DEFAULT_MARKER_OBJECT): Target<Verdict> {
  return {
    name: 'marker',
    objectPath,
    programName: 'nt_mark_egress',
    install: installWorld,
    generate: generateCase,
    verdict: (frame, device, c) => markerVerdict(frame, { device, gsoSegs: c.gsoSegs, gsoSize: c.gsoSize }),
    kind: (v) => v.action,
    counters: (v) =>
      v.action === 'pass'
        ? []
        : v.action === 'skip'
          ? [{ policyId: v.policyId, counter: v.counter }]
          : [{ policyId: v.layout.policy.id, counter: 'marked' }],
    describe: describeVerdict,
    check: checkMarkerRun,
  };
}

/**
 * The ingress verifier at one of its hooks. XDP runs get a struct xdp_md naming the device
 * as ingress_ifindex; tc runs a struct __sk_buff as the marker's do. Both entry points share
 * one reference model; only the return codes differ.
 */
export function verifierTarget(hook: VerifierHook, objectPath = DEFAULT_VERIFIER_OBJECT): Target<VerifierVerdict> {
  return {
    name: `verifier-${hook}`,
    objectPath,
    programName: hook === 'xdp' ? 'nt_verify_xdp' : 'nt_verify_tc',
    install: installVerifierWorld,
    generate: generateVerifierCase,
    verdict: (frame, _device, c) => verifierVerdict(frame, c.device),
    kind: verifierKind,
    counters: verifierCounters,
    describe: describeVerifierVerdict,
    check: (input, v, retval, out) => checkVerifierRun(hook, input, v, retval, out),
    ctxIn: (device, c) => {
      if (hook === 'xdp') {
        const ctx = Buffer.alloc(XDP_CTX_SIZE);
        ctx.writeUInt32LE(c.frame.length, XDP_CTX_DATA_END);
        ctx.writeUInt32LE(device.ifindex, XDP_CTX_INGRESS_IFINDEX);
        return ctx;
      }
      return skbCtx(device, c);
    },
  };
}

/**
 * Fragment sequences at the verifier's XDP entry point, reassembled as the stack does it
 * (fragments.ts): every fragment is held to the per-packet model, and nothing the verifier
 * lets through may become a SYN without a valid token toward a port a policy enforces.
 */
export function fragmentsTarget(objectPath = DEFAULT_VERIFIER_OBJECT): Target<SequenceVerdict> {
  const xdpCtx =
    (device: Device) =>
    (frame: Buffer): Buffer => {
      const ctx = Buffer.alloc(XDP_CTX_SIZE);
      ctx.writeUInt32LE(frame.length, XDP_CTX_DATA_END);
      ctx.writeUInt32LE(device.ifindex, XDP_CTX_INGRESS_IFINDEX);
      return ctx;
    };
  return {
    name: 'fragments',
    objectPath,
    programName: 'nt_verify_xdp',
    install: installVerifierWorld,
    generate: (seed, index) => generateFragmentCase(seed, index),
    verdict: (frame, _device, c) => ({
      frames: (c.frames ?? [frame]).map((f) => verifierVerdict(f, c.device)),
      outcome: 'not run',
    }),
    kind: sequenceKind,
    counters: sequenceCounters,
    describe: describeSequence,
    check: () => [],
    run: (prog, c, device) => runSequence(prog, 'xdp', c, device, c.device, xdpCtx(device)),
  };
}

function skbCtx(device: Device, c: FuzzCase): Buffer | undefined {
  if (device.ifindex === 1 && c.gsoSegs === 0 && c.gsoSize === 0) return undefined;
  const ctx = Buffer.alloc(SKB_CTX_SIZE);
  ctx.writeUInt32LE(device.ifindex, CTX_IFINDEX);
  ctx.writeUInt32LE(c.gsoSegs, CTX_GSO_SEGS);
  ctx.writeUInt32LE(c.gsoSize, CTX_GSO_SIZE);
  return ctx;
}

/** "ifindex/policy/counter-name" -> packets, summed over CPUs. */
export type Counters = Map<string, bigint>;

export function counterKey(ifindex: number, policyId: number, counter: string): string {
  return `${ifindex}/${policyId}/${counter}`;
}

export class Fuzzer<V = Verdict> {
  private readonly obj: NativeObject;
  private readonly prog: NativeProgram;
  private readonly slots: CounterSlots;
  private closed = false;

  /**
   * Load the target's object with its maps pinned in a fresh directory under
   * /sys/fs/bpf (removed by close()), and install its state for `devices`.
   */
  static open<T>(target: Target<T>, devices: readonly Device[]): Fuzzer<T> {
    if (devices.length === 0 || devices[0]?.ifindex !== 1)
      throw new Error('the first fuzz device must be the loopback device (ifindex 1)');
    const b = binding();
    if (!b.isBpffs('/sys/fs/bpf')) b.mountBpffs('/sys/fs/bpf');
    const pinDir = `/sys/fs/bpf/netoken-fuzz-${process.pid}-${randomBytes(3).toString('hex')}`;
    mkdirSync(pinDir, { mode: 0o700 });
    try {
      const obj = b.openObject(target.objectPath, { pinRoot: pinDir });
      try {
        target.install(obj, devices);
        return new Fuzzer<T>(target, devices, pinDir, obj);
      } catch (err) {
        obj.close();
        throw err;
      }
    } catch (err) {
      rmSync(pinDir, { recursive: true, force: true });
      throw err;
    }
  }

  private constructor(
    readonly target: Target<V>,
    readonly devices: readonly Device[],
    readonly pinDir: string,
    obj: NativeObject,
  ) {
    this.obj = obj;
    this.prog = obj.program(target.programName);
    this.slots = CounterSlots.of(obj);
  }

  generate(seed: number, index: number): FuzzCase {
    return this.target.generate(seed, index, this.devices.length);
  }

  /** Run one case and check its output (not its counters: see fuzz()). */
  runCase(fuzzCase: FuzzCase): CaseRun<V> {
    // A case made for more devices than this run has runs on the loopback device.
    const c = fuzzCase.device < this.devices.length ? fuzzCase : { ...fuzzCase, device: 0 };
    const device = this.devices[c.device]!;
    if (this.target.run) {
      try {
        return { fuzzCase: c, device, ...this.target.run(this.prog, c, device) };
      } catch (err) {
        const e = err as Error & { code?: string };
        return {
          fuzzCase: c,
          device,
          verdict: this.target.verdict(c.frame, device, c),
          retval: NaN,
          out: Buffer.alloc(0),
          violations: [{ invariant: 'test-run', detail: `BPF_PROG_TEST_RUN failed: ${e.code ?? ''} ${e.message}` }],
        };
      }
    }
    const ctxIn = this.target.ctxIn ? this.target.ctxIn(device, c) : skbCtx(device, c);
    const verdict = this.target.verdict(c.frame, device, c);
    let r: { retval: number; data: Buffer };
    const before = this.target.counters(verdict) === null ? this.counters() : null;
    try {
      r = this.prog.testRun({ data: c.frame, ...(ctxIn ? { ctxIn } : {}) });
    } catch (err) {
      // The kernel refused the input (a generator bug or a stricter kernel): report it like a failure, with the seed.
      const e = err as Error & { code?: string };
      return {
        fuzzCase: c,
        device,
        verdict,
        retval: NaN,
        out: Buffer.alloc(0),
        violations: [{ invariant: 'test-run', detail: `BPF_PROG_TEST_RUN failed: ${e.code ?? ''} ${e.message}` }],
      };
    }
    const run: CaseRun<V> = {
      fuzzCase: c,
      device,
      verdict,
      retval: r.retval,
      out: r.data,
      violations: this.target.check(c.frame, verdict, r.retval, r.data),
    };
    if (before) {
      // Left open by the model, but still a count of this one packet on this device: at most two counters, each up by one.
      const delta = diffCounters(before, this.counters());
      run.counterDelta = delta;
      const odd = [...delta].filter(([k, n]) => n !== 1n || !k.startsWith(`${device.ifindex}/`));
      if (odd.length > 0 || delta.size > 2)
        run.violations.push({
          invariant: 'counter',
          detail: `counters changed by ${fmtCounts(delta)}: want at most two counters of ifindex ${device.ifindex}, each up by one`,
        });
    }
    return run;
  }

  /** Every counter of the target's counter slots, summed over CPUs. */
  counters(): Counters {
    const out: Counters = new Map();
    for (const r of this.slots.rows()) out.set(counterKey(r.ifindex, r.policyId, r.counter), r.value);
    return out;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.slots.close();
    this.prog.close();
    this.obj.close();
    rmSync(this.pinDir, { recursive: true, force: true });
  }
}

/** How the counters must move for a run. */
function expectedCounters<V>(f: Fuzzer<V>, run: CaseRun<V>): Map<string, bigint> {
  const refs = f.target.counters(run.verdict);
  if (refs === null) return new Map(run.counterDelta ?? []);
  const want = new Map<string, bigint>();
  for (const c of refs) {
    const key = counterKey(run.device.ifindex, c.policyId, c.counter);
    want.set(key, (want.get(key) ?? 0n) + 1n);
  }
  return want;
}

function diffCounters(before: Counters, after: Counters): Map<string, bigint> {
  const d = new Map<string, bigint>();
  for (const [k, v] of after) {
    const n = v - (before.get(k) ?? 0n);
    if (n !== 0n) d.set(k, n);
  }
  for (const [k, v] of before) if (!after.has(k)) d.set(k, -v);
  return d;
}

const fmtCounts = (m: Map<string, bigint>): string =>
  m.size === 0 ? '{}' : `{${[...m].map(([k, v]) => `${k}: ${v}`).join(', ')}}`;

export interface FuzzOptions<V = Verdict> {
  seed: number;
  count: number;
  /** first case number (default 0) */
  start?: number;
  /** stop after this many failing cases (default 10) */
  maxFailures?: number;
  /** cases between counter checks (default 2048) */
  batch?: number;
  onFailure?: (run: CaseRun<V>) => void;
  /** called after every batch with the cases done so far */
  onProgress?: (done: number) => void;
  /** polled between batches: true ends the run early */
  shouldStop?: () => boolean;
}

export interface FuzzSummary {
  target: string;
  seed: number;
  start: number;
  /** cases run */
  cases: number;
  /** cases with at least one broken invariant */
  failures: number;
  /** broken invariants by name */
  violations: Record<string, number>;
  /** what the model expected, by kind (marker: pass, skip, mark) */
  verdicts: Record<string, number>;
  /** the target's counters after the run, summed over interfaces and policies, by name */
  counters: Record<string, number>;
  devices: Device[];
  elapsedMs: number;
  casesPerSecond: number;
  stoppedEarly: boolean;
}

/** Run cases start..start+count-1 of `seed`, checking every output and, per batch, the counters. */
export async function fuzz<V>(f: Fuzzer<V>, opts: FuzzOptions<V>): Promise<FuzzSummary> {
  const start = opts.start ?? 0;
  const maxFailures = opts.maxFailures ?? 10;
  const batch = opts.batch ?? 2048;
  const t0 = process.hrtime.bigint();
  const violations: Record<string, number> = {};
  const verdicts: Record<string, number> = {};
  let failures = 0;
  let done = 0;
  let stoppedEarly = false;

  const fail = (run: CaseRun<V>): void => {
    failures++;
    for (const v of run.violations) violations[v.invariant] = (violations[v.invariant] ?? 0) + 1;
    opts.onFailure?.(run);
  };

  let expected = f.counters();
  while (done < opts.count) {
    const first = start + done;
    let n = 0;
    while (n < Math.min(batch, opts.count - done) && failures < maxFailures) {
      const run = f.runCase(f.generate(opts.seed, first + n));
      n++;
      const kind = f.target.kind(run.verdict);
      verdicts[kind] = (verdicts[kind] ?? 0) + 1;
      for (const [key, n] of expectedCounters(f, run)) expected.set(key, (expected.get(key) ?? 0n) + n);
      if (run.violations.length > 0) fail(run);
    }
    done += n;

    const actual = f.counters();
    if (diffCounters(expected, actual).size > 0) {
      // Replay the batch one case at a time to find which ones count wrongly.
      for (let i = 0; i < n && failures < maxFailures; i++) {
        const before = f.counters();
        const run = f.runCase(f.generate(opts.seed, first + i));
        const got = diffCounters(before, f.counters());
        const want = expectedCounters(f, run);
        if (diffCounters(want, got).size > 0) {
          fail({
            ...run,
            violations: [{ invariant: 'counter', detail: `counters changed by ${fmtCounts(got)}, want ${fmtCounts(want)}` }],
          });
        }
      }
      expected = f.counters();
    }
    opts.onProgress?.(done);
    if (failures >= maxFailures || opts.shouldStop?.()) {
      stoppedEarly = done < opts.count;
      break;
    }
    // Let signals and timers in between batches.
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  const counters: Record<string, number> = {};
  for (const [k, v] of f.counters()) {
    const name = k.split('/')[2] ?? k;
    counters[name] = (counters[name] ?? 0) + Number(v);
  }
  const elapsedMs = Number(process.hrtime.bigint() - t0) / 1e6;
  return {
    target: f.target.name,
    seed: opts.seed,
    start,
    cases: done,
    failures,
    violations,
    verdicts,
    counters,
    devices: [...f.devices],
    elapsedMs: Math.round(elapsedMs),
    casesPerSecond: Math.round(done / (elapsedMs / 1000)),
    stoppedEarly,
  };
}

/** A failing case as a person reads it: how to replay it, what broke, the bytes in and out. */
export function formatFailure<V>(f: Fuzzer<V>, run: CaseRun<V>, replayHint: string): string {
  const c = run.fuzzCase;
  return [
    `FAIL seed=${c.seed} case=${c.index} target=${f.target.name}`,
    ...run.violations.map((v) => `  invariant ${v.invariant}: ${v.detail}`),
    `  replay:   ${replayHint} --replay ${c.seed}:${c.index}`,
    ...describeRun(f, run),
  ].join('\n');
}

/** One run's device, recipe, expected verdict, return value and the bytes in and out, a line each. */
export function describeRun<V>(f: Fuzzer<V>, run: CaseRun<V>): string[] {
  const c = run.fuzzCase;
  return [
    `  device:   ${run.device.name} (ifindex ${run.device.ifindex}, mtu ${run.device.mtu})${c.gsoSegs || c.gsoSize ? `, gso_segs ${c.gsoSegs} gso_size ${c.gsoSize}` : ''}`,
    `  recipe:   ${c.recipe.join('; ')}`,
    `  expected: ${f.target.describe(run.verdict)}`,
    `  retval:   ${run.retval}`,
    `  input  (${c.frame.length} bytes): ${c.frame.toString('hex')}`,
    `  output (${run.out.length} bytes): ${run.out.equals(c.frame) ? '(identical to the input)' : run.out.toString('hex')}`,
  ];
}
