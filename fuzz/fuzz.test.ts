/**
 * The packet fuzzer, bounded: a fixed-seed run and a time-seeded run of the CLI against the
 * built marker and the built verifier (XDP and tc), in a private network namespace so that
 * the MTU check and per-device rules are reached, the skip reasons and verdicts those runs
 * reach, replay, proof that the checks catch broken outputs, and bugs planted in a copy of
 * the verifier's sources that the fuzzer must find.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { COUNTERS } from '../src/lib/abi.js';
import { ipv4HeaderChecksum, tcpChecksum } from '../src/lib/packet.js';
import { checkMarkerRun, type Violation } from './check.js';
import {
  DEFAULT_VERIFIER_OBJECT,
  Fuzzer,
  fragmentsTarget,
  fuzz,
  markerTarget,
  verifierTarget,
  type CaseRun,
  type FuzzSummary,
  type Target,
} from './driver.js';
import { generateVerifierCase } from './verifier-generate.js';
import {
  VERDICT_CODES,
  checkVerifierRun,
  describeVerifierVerdict,
  verdictDrops,
  type VerifierVerdict,
} from './verifier-model.js';
import { generateCase } from './generate.js';
import type { Verdict } from './model.js';
import { TcAction } from '../src/native/bpf.js';
import { PACKAGE_ROOT, bpfObjectPath } from '../src/lib/package.js';

const MAIN = path.join(PACKAGE_ROOT, 'dist/fuzz/main.js');
const FIXED_SEED = 20261126;
const FIXED_COUNT = 80000;
const TIME_COUNT = 40000;

// The marker object must match the sources (make is a no-op when it does).
execFileSync('make', ['-s', '-C', path.join(PACKAGE_ROOT, 'bpf')], { stdio: ['ignore', 'ignore', 'inherit'] });

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Run the CLI with --json; fail with its whole output when it does not exit 0. One summary per target. */
async function fuzzRuns(target: string, seed: number, count: number): Promise<{ summaries: FuzzSummary[]; text: string }> {
  const r = await cli(['--target', target, '--seed', String(seed), '--count', String(count), '--json']);
  const text = r.stdout.trimEnd();
  assert.equal(r.code, 0, `fuzz run --target ${target} seed=${seed} exited ${r.code}:\n${text}\n${r.stderr}`);
  const lines = text.split('\n');
  const summaries = lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as FuzzSummary);
  return { summaries, text: lines.filter((l) => !l.startsWith('{')).join('\n') };
}

async function fuzzRun(seed: number, count: number): Promise<{ summary: FuzzSummary; text: string }> {
  const { summaries, text } = await fuzzRuns('marker', seed, count);
  assert.equal(summaries.length, 1, 'one summary for the marker');
  return { summary: summaries[0]!, text };
}

function assertClean(s: FuzzSummary, seed: number, count: number): void {
  assert.equal(s.seed, seed, 'seed');
  assert.equal(s.cases, count, `cases run: got ${s.cases}, want ${count}`);
  assert.equal(s.failures, 0, `failing cases: ${JSON.stringify(s.violations)}`);
  assert.ok(
    ['mark', 'skip', 'pass'].every((k) => (s.verdicts[k] ?? 0) > 0),
    `verdict mix: ${JSON.stringify(s.verdicts)}`,
  );
}

let fixedRun: Promise<{ summary: FuzzSummary; text: string }> | undefined;
const fixed = (): Promise<{ summary: FuzzSummary; text: string }> => (fixedRun ??= fuzzRun(FIXED_SEED, FIXED_COUNT));

test(`fixed seed ${FIXED_SEED}: ${FIXED_COUNT} cases, every invariant holds`, async (t) => {
  const { summary, text } = await fixed();
  for (const line of text.split('\n')) t.diagnostic(line);
  assertClean(summary, FIXED_SEED, FIXED_COUNT);
  assert.equal(summary.devices.length, 3, 'runs on loopback and both small-MTU devices');
});

test(`the marker built for kernels before 6.2 (marker_compat.bpf.o), fixed seed ${FIXED_SEED}: ${TIME_COUNT} cases, every invariant holds`, async (t) => {
  const compat = bpfObjectPath('marker_compat');
  const r = await cli([
    '--target',
    'marker',
    '--object',
    compat,
    '--seed',
    String(FIXED_SEED),
    '--count',
    String(TIME_COUNT),
    '--json',
  ]);
  const text = r.stdout.trimEnd();
  assert.equal(r.code, 0, `fuzz run of ${compat} exited ${r.code}:\n${text}\n${r.stderr}`);
  const summary = JSON.parse(text.split('\n').find((l) => l.startsWith('{')) ?? '{}') as FuzzSummary;
  for (const line of text.split('\n').filter((l) => !l.startsWith('{'))) t.diagnostic(line);
  assertClean(summary, FIXED_SEED, TIME_COUNT);
});

test(`time-derived seed: ${TIME_COUNT} cases, every invariant holds`, async (t) => {
  const seed = ((Date.now() % 0x100000000) ^ (process.pid << 12)) >>> 0;
  t.diagnostic(`seed=${seed} (replay a failing case with: node dist/fuzz/main.js --replay ${seed}:<case>)`);
  console.log(`fuzz: time-derived seed=${seed}`);
  const { summary, text } = await fuzzRun(seed, TIME_COUNT);
  for (const line of text.split('\n')) t.diagnostic(line);
  assertClean(summary, seed, TIME_COUNT);
});

test('the generated packets reach every skip reason test runs can reach, and marking', async () => {
  const { summary } = await fixed();
  // Encapsulated skbs need a tunnel program before the marker (test/packet covers that);
  // the error counters must stay at zero.
  // An EOL no longer stops a mark: skipped_eol is never counted.
  const reachable = COUNTERS.filter((n) => n.startsWith('skipped_') && n !== 'skipped_encapsulated' && n !== 'skipped_eol');
  for (const n of ['marked', 'unreadable', ...reachable]) {
    assert.ok(
      (summary.counters[n] ?? 0) > 0,
      `counter ${n}: got ${summary.counters[n] ?? 0}, want > 0 (all: ${JSON.stringify(summary.counters)})`,
    );
  }
  for (const n of ['skipped_encapsulated', 'skipped_eol', 'error_grow', 'error_write_dropped', 'error_tail_call']) {
    assert.equal(summary.counters[n] ?? 0, 0, `counter ${n}`);
  }
  assert.equal(summary.counters.marked, summary.verdicts.mark, 'marked counter equals the marks expected');
});

test('--replay SEED:CASE rebuilds exactly that case and checks it', async () => {
  const { code, stdout } = await cli(['--target', 'marker', '--replay', `${FIXED_SEED}:4242`]);
  assert.equal(code, 0, stdout);
  assert.match(stdout, new RegExp(`^ok seed=${FIXED_SEED} case=4242 target=marker`));
  const want = generateCase(FIXED_SEED, 4242, 3).frame.toString('hex');
  assert.match(stdout, new RegExp(`input  \\(\\d+ bytes\\): ${want}\n`), 'replayed input bytes');
  assert.ok(generateCase(7, 1, 3).frame.equals(generateCase(7, 1, 3).frame), 'a case depends only on (seed, index)');
  assert.ok(!generateCase(7, 1, 3).frame.equals(generateCase(8, 1, 3).frame), 'another seed gives another case');
});

test('bad arguments are refused with a clear message', async () => {
  const r = await cli(['--replay', 'nonsense']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--replay wants SEED:CASE/);
});

// ---------------------------------------------------------------------------------------
// The checks must not pass vacuously

/** Real marker runs (loopback, in this process) of the first cases the model expects `want` for. */
function sampleRuns(f: Fuzzer<Verdict>, want: (v: Verdict, frame: Buffer) => boolean, n: number): CaseRun[] {
  const out: CaseRun[] = [];
  for (let i = 0; out.length < n && i < 200000; i++) {
    const run = f.runCase(f.generate(99, i));
    if (want(run.verdict, run.fuzzCase.frame)) {
      assert.deepEqual(run.violations, [], `case 99:${i} already fails`);
      out.push(run);
    }
  }
  assert.equal(out.length, n, 'not enough sample cases');
  return out;
}

function names(v: Violation[]): string[] {
  return [...new Set(v.map((x) => x.invariant))].sort();
}

const l3Of = (frame: Buffer): number => {
  let off = 14;
  while (frame.readUInt16BE(off - 2) === 0x8100 || frame.readUInt16BE(off - 2) === 0x88a8) off += 4;
  return off;
};

test('the checker catches every kind of broken output', () => {
  const f = Fuzzer.open(markerTarget(), [{ name: 'lo', ifindex: 1, mtu: 65536 }]);
  try {
    const isV4 = (fr: Buffer): boolean => fr.readUInt16BE(l3Of(fr) - 2) === 0x0800;
    const marks = [
      ...sampleRuns(f, (v, fr) => v.action === 'mark' && isV4(fr), 3),
      ...sampleRuns(f, (v, fr) => v.action === 'mark' && !isV4(fr), 3),
    ];
    const skips = sampleRuns(f, (v) => v.action === 'skip' && v.counter === 'skipped_no_room', 2);
    const passes = sampleRuns(f, (v) => v.action === 'pass', 2);

    const expectCaught = (run: CaseRun, out: Buffer, want: string[], what: string, retval: number = TcAction.UNSPEC): void => {
      const got = names(checkMarkerRun(run.fuzzCase.frame, run.verdict, retval, out));
      for (const w of want) assert.ok(got.includes(w), `${what}: got invariants [${got.join(', ')}], want ${w} among them`);
    };

    for (const run of marks) {
      if (run.verdict.action !== 'mark') throw new Error('sampleRuns picked a case that is not marked');
      const layout = run.verdict.layout;
      const input = run.fuzzCase.frame;
      const good = run.out;
      const v4 = isV4(input);
      const l3 = l3Of(input);
      const l4 = layout.l4;
      const mod = (fn: (b: Buffer) => void): Buffer => {
        const b = Buffer.from(good);
        fn(b);
        return b;
      };
      const fixTcp = (b: Buffer): void => {
        const src = v4 ? b.subarray(l3 + 12, l3 + 16) : b.subarray(l3 + 8, l3 + 24);
        const dst = v4 ? b.subarray(l3 + 16, l3 + 20) : b.subarray(l3 + 24, l3 + 40);
        b.writeUInt16BE(tcpChecksum(src, dst, b.subarray(l4)), l4 + 16);
      };
      const fixIp = (b: Buffer): void => {
        if (v4) b.writeUInt16BE(ipv4HeaderChecksum(b.subarray(l3, l3 + ((b[l3] ?? 0) & 15) * 4)), l3 + 10);
      };

      assert.deepEqual(checkMarkerRun(input, run.verdict, TcAction.UNSPEC, good), [], 'the real output passes');
      expectCaught(run, input, ['missed-mark'], 'left unmarked');
      expectCaught(run, good, ['returned'], 'dropped', 2);
      expectCaught(run, good.subarray(0, good.length - 1), ['marked-length'], 'one byte short');
      expectCaught(run, Buffer.concat([good, Buffer.alloc(4, 1)]), ['marked-length'], 'four bytes too many');
      expectCaught(
        run,
        mod((b) => (b[b.length - 1]! ^= 0x01)),
        ['marked-option', 'tcp-checksum'],
        'token value bit flipped',
      );
      expectCaught(
        run,
        mod((b) => {
          b[good.length - 12] = 252;
          fixTcp(b);
        }),
        ['marked-option'],
        'wrong option kind, checksum fixed',
      );
      expectCaught(
        run,
        mod((b) => {
          b[good.length - 11] = 8;
          fixTcp(b);
        }),
        ['marked-option'],
        'option length 8, checksum fixed',
      );
      expectCaught(
        run,
        mod((b) => b.writeUInt16BE((b.readUInt16BE(l4 + 16) + 1) & 0xffff, l4 + 16)),
        ['tcp-checksum'],
        'TCP checksum off by one',
      );
      expectCaught(
        run,
        mod((b) => {
          b[l4 + 12] = (b[l4 + 12] ?? 0) - 0x10;
          fixTcp(b);
        }),
        ['marked-headers'],
        'doff one word short, checksum fixed',
      );
      expectCaught(
        run,
        mod((b) => {
          b[l4 + 14] = (b[l4 + 14] ?? 0) ^ 0xff;
          fixTcp(b);
        }),
        ['marked-bytes'],
        'window changed, checksum fixed',
      );
      expectCaught(
        run,
        mod((b) => {
          b[l4 + 12] = (b[l4 + 12] ?? 0) | 0x01;
          fixTcp(b);
        }),
        ['marked-bytes'],
        'reserved bit set, checksum fixed',
      );
      const lenOff = v4 ? l3 + 2 : l3 + 4;
      expectCaught(
        run,
        mod((b) => {
          b.writeUInt16BE(b.readUInt16BE(lenOff) - 12, lenOff);
          fixIp(b);
          fixTcp(b);
        }),
        ['marked-headers'],
        'IP length not raised, checksums fixed',
      );
      if (v4) {
        expectCaught(
          run,
          mod((b) => b.writeUInt16BE(b.readUInt16BE(l3 + 10) ^ 0x0100, l3 + 10)),
          ['ip-checksum'],
          'IPv4 header checksum wrong',
        );
        // The pseudo-header length left at the old value: the seed bug netoken's write-up had.
        expectCaught(
          run,
          mod((b) => {
            const c = b.readUInt16BE(l4 + 16) + 12;
            b.writeUInt16BE((c & 0xffff) + (c >>> 16), l4 + 16);
          }),
          ['tcp-checksum'],
          'pseudo-header length not updated',
        );
      }
      // Our option twice: feed the marked output back as the input and append it again,
      // with every length and checksum right.
      const twice = Buffer.concat([good, good.subarray(good.length - 12)]);
      twice.writeUInt16BE(twice.readUInt16BE(lenOff) + 12, lenOff);
      twice[l4 + 12] = (twice[l4 + 12] ?? 0) + 0x30;
      fixIp(twice);
      fixTcp(twice);
      const remarked = checkMarkerRun(good, { action: 'mark', layout }, TcAction.UNSPEC, twice);
      assert.ok(
        names(remarked).includes('marked-option') && names(remarked).includes('marked-eligible'),
        `option twice: got [${names(remarked).join(', ')}]`,
      );
    }

    for (const run of [...skips, ...passes]) {
      // Appending to a packet that must pass unchanged is caught even when the append itself looks right.
      const m = marks[0]!;
      const appended = Buffer.concat([run.fuzzCase.frame, m.out.subarray(m.out.length - 12)]);
      expectCaught(run, appended, ['unmarked-identical'], `${run.verdict.action} case grown`);
      const flipped = Buffer.from(run.fuzzCase.frame);
      flipped[flipped.length - 1] = (flipped[flipped.length - 1] ?? 0) ^ 0x80;
      expectCaught(run, flipped, ['unmarked-identical'], `${run.verdict.action} case with one bit changed`);
    }
  } finally {
    f.close();
  }
});

test('the counter check catches a case counted under the wrong reason', async () => {
  // A target whose model names a wrong reason for every option-list skip: the marker's real
  // counters must then disagree, and the driver must name the cases.
  const real = markerTarget();
  const lying: Target<Verdict> = {
    ...real,
    verdict: (frame, device, c) => {
      const v = real.verdict(frame, device, c);
      return v.action === 'skip' && v.counter === 'skipped_no_room' ? { ...v, counter: 'skipped_malformed' } : v;
    },
  };
  const f = Fuzzer.open(lying, [{ name: 'lo', ifindex: 1, mtu: 65536 }]);
  try {
    const failures: Array<CaseRun<Verdict>> = [];
    const s = await fuzz(f, { seed: 5, count: 4000, batch: 500, maxFailures: 3, onFailure: (r) => failures.push(r) });
    assert.ok(s.failures > 0, 'the wrong expectation went unnoticed');
    assert.deepEqual(Object.keys(s.violations), ['counter']);
    for (const r of failures) {
      assert.match(r.violations[0]?.detail ?? '', /skipped_no_room: 1\}, want \{.*skipped_malformed: 1\}/);
      assert.equal(real.verdict(r.fuzzCase.frame, r.device, r.fuzzCase).action, 'skip');
    }
  } finally {
    f.close();
  }
});

// ---------------------------------------------------------------------------------------
// The ingress verifier: XDP and tc entry points, one reference model

const VERIFIER_FIXED_SEED = 20261127;
const VERIFIER_FIXED_COUNT = 60000;
const VERIFIER_TIME_COUNT = 30000;

/** Fail with every failing case's replay line, so that the message alone says what to run. */
function assertVerifierClean(s: FuzzSummary, text: string, seed: number, count: number): void {
  assert.equal(s.seed, seed, 'seed');
  assert.equal(s.cases, count, `${s.target}: cases run: got ${s.cases}, want ${count}`);
  const fails = text
    .split('\nFAIL ')
    .slice(1)
    .filter((b) => b.includes(`target=${s.target}`))
    .map((b) =>
      b
        .split('\n')
        .filter((l) => !l.startsWith('  input') && !l.startsWith('  output'))
        .join('\n'),
    );
  assert.equal(
    s.failures,
    0,
    `${s.target}: ${s.failures} failing cases ${JSON.stringify(s.violations)}; the first ones:\nFAIL ${fails.slice(0, 6).join('\nFAIL ')}`,
  );
  for (const k of ['valid', 'drop', 'monitor', 'exempt', 'pass', 'unreadable']) {
    assert.ok((s.verdicts[k] ?? 0) > 0, `${s.target}: verdict ${k} never reached: ${JSON.stringify(s.verdicts)}`);
  }
}

let verifierFixedRun: Promise<{ summaries: FuzzSummary[]; text: string }> | undefined;
const verifierFixed = (): Promise<{ summaries: FuzzSummary[]; text: string }> =>
  (verifierFixedRun ??= cli([
    '--target',
    'verifier',
    '--seed',
    String(VERIFIER_FIXED_SEED),
    '--count',
    String(VERIFIER_FIXED_COUNT),
    '--json',
    '--max-failures',
    String(VERIFIER_FIXED_COUNT),
  ]).then((r) => {
    const lines = r.stdout.trimEnd().split('\n');
    return {
      summaries: lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as FuzzSummary),
      text: lines.filter((l) => !l.startsWith('{')).join('\n'),
    };
  }));

test(`verifier, fixed seed ${VERIFIER_FIXED_SEED}: ${VERIFIER_FIXED_COUNT} cases at XDP and at tc, every invariant holds`, async (t) => {
  const { summaries, text } = await verifierFixed();
  assert.deepEqual(
    summaries.map((x) => x.target),
    ['verifier-xdp', 'verifier-tc'],
    `both hooks ran:\n${text}`,
  );
  for (const line of text.split('\n').filter((l) => !l.startsWith(' ') && !l.startsWith('FAIL'))) t.diagnostic(line);
  for (const s of summaries) assertVerifierClean(s, text, VERIFIER_FIXED_SEED, VERIFIER_FIXED_COUNT);
});

test(`verifier, time-derived seed: ${VERIFIER_TIME_COUNT} cases at each hook, every invariant holds`, async (t) => {
  const seed = ((Date.now() % 0x100000000) ^ (process.pid << 13)) >>> 0;
  t.diagnostic(`seed=${seed} (replay a failing case with: node dist/fuzz/main.js --target verifier-xdp --replay ${seed}:<case>)`);
  console.log(`fuzz: verifier time-derived seed=${seed}`);
  const r = await cli([
    '--target',
    'verifier',
    '--seed',
    String(seed),
    '--count',
    String(VERIFIER_TIME_COUNT),
    '--json',
    '--max-failures',
    String(VERIFIER_TIME_COUNT),
  ]);
  const lines = r.stdout.trimEnd().split('\n');
  const summaries = lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as FuzzSummary);
  const text = lines.filter((l) => !l.startsWith('{')).join('\n');
  assert.equal(summaries.length, 2, `both hooks ran (exit ${r.code}):\n${text}\n${r.stderr}`);
  for (const s of summaries) assertVerifierClean(s, text, seed, VERIFIER_TIME_COUNT);
  assert.equal(r.code, 0, text);
});

test('the verifier cases reach every counter, and XDP and tc agree on every case', async () => {
  const { summaries } = await verifierFixed();
  const [xdp, tc] = summaries as [FuzzSummary, FuzzSummary];
  for (const n of ['verify_valid', 'verify_missing', 'verify_invalid', 'verify_malformed', 'verify_dropped', 'verify_exempt']) {
    assert.ok(
      (xdp.counters[n] ?? 0) > 0,
      `counter ${n}: got ${xdp.counters[n] ?? 0}, want > 0 (all: ${JSON.stringify(xdp.counters)})`,
    );
  }
  assert.equal(xdp.counters.verify_replay ?? 0, 0, 'no replay limit is ever reached');
  assert.ok((xdp.counters.unreadable ?? 0) > 0, `unreadable frames are counted: ${JSON.stringify(xdp.counters)}`);
  for (const n of COUNTERS.filter((c) => !c.startsWith('verify_') && c !== 'unreadable'))
    assert.equal(xdp.counters[n] ?? 0, 0, `the verifier never counts ${n}`);
  assert.deepEqual(tc.verdicts, xdp.verdicts, 'the same cases, the same expectations');
  assert.deepEqual(tc.counters, xdp.counters, 'the tc entry point counts exactly what the XDP one counts');
  assert.equal(xdp.counters.verify_valid ?? 0, xdp.verdicts.valid ?? 0, 'verify_valid counts exactly the valid SYNs expected');
  assert.equal(
    xdp.counters.unreadable ?? 0,
    xdp.verdicts.unreadable ?? 0,
    'unreadable counts exactly the unreadable frames expected',
  );
});

test('--target verifier-xdp --replay SEED:CASE rebuilds that verifier case', async () => {
  const r = await cli(['--target', 'verifier-xdp', '--replay', `${VERIFIER_FIXED_SEED}:77`]);
  assert.match(r.stdout, new RegExp(`seed=${VERIFIER_FIXED_SEED} case=77 target=verifier-xdp`), r.stdout);
  const want = generateVerifierCase(VERIFIER_FIXED_SEED, 77, 3).frame.toString('hex');
  assert.ok(r.stdout.includes(want), `the replayed input is the generated case:\n${r.stdout}`);
  const bad = await cli(['--target', 'verifier-ipv9', '--count', '1']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--target must be one of/);
});

/** Real verifier runs (XDP, loopback, in this process) of the first cases the model expects `want` for. */
function verifierSamples(
  f: Fuzzer<VerifierVerdict>,
  want: (v: VerifierVerdict) => boolean,
  n: number,
): Array<CaseRun<VerifierVerdict>> {
  const out: Array<CaseRun<VerifierVerdict>> = [];
  for (let i = 0; out.length < n && i < 200000; i++) {
    const run = f.runCase(f.generate(99, i));
    if (want(run.verdict) && run.violations.length === 0) out.push(run);
  }
  assert.equal(out.length, n, 'not enough sample cases');
  return out;
}

test('the verifier checks catch wrong verdicts, changed packets and odd return codes', () => {
  const f = Fuzzer.open(verifierTarget('xdp'), [{ name: 'lo', ifindex: 1, mtu: 65536 }]);
  try {
    const { pass, drop } = VERDICT_CODES.xdp;
    const cases: Array<[string, (v: VerifierVerdict) => boolean, number, string]> = [
      ['a valid token dropped', (v) => v.action === 'verify' && v.result === 'verify_valid', drop, 'dropped-valid'],
      [
        'a wrong token passed under Enforce',
        (v) => v.action === 'verify' && verdictDrops(v) && v.result === 'verify_invalid',
        pass,
        'passed-bad-token',
      ],
      [
        'a missing token passed under Enforce',
        (v) => v.action === 'verify' && verdictDrops(v) && v.result === 'verify_missing',
        pass,
        'passed-bad-token',
      ],
      ['an exempt source dropped', (v) => v.action === 'verify' && v.exempt, drop, 'dropped-exempt'],
      [
        'a Monitor verdict dropped',
        (v) => v.action === 'verify' && !v.enforce && v.result !== 'verify_valid' && !v.exempt,
        drop,
        'dropped-monitor',
      ],
      ['a non-SYN dropped', (v) => v.action === 'pass', drop, 'dropped-unverified'],
    ];
    for (const [what, pick, retval, invariant] of cases) {
      for (const run of verifierSamples(f, pick, 3)) {
        const got = checkVerifierRun('xdp', run.fuzzCase.frame, run.verdict, retval, run.out).map((x) => x.invariant);
        assert.deepEqual(got, [invariant], `${what}: ${describeVerifierVerdict(run.verdict)}`);
        const changed = Buffer.from(run.out);
        changed[changed.length - 1] = (changed[changed.length - 1] ?? 0) ^ 1;
        assert.ok(
          checkVerifierRun('xdp', run.fuzzCase.frame, run.verdict, run.retval, changed).some((x) => x.invariant === 'unchanged'),
          `${what}: a changed byte`,
        );
        assert.ok(
          checkVerifierRun('xdp', run.fuzzCase.frame, run.verdict, 0, run.out).some((x) => x.invariant === 'returned'),
          `${what}: XDP_ABORTED`,
        );
        assert.ok(
          checkVerifierRun('tc', run.fuzzCase.frame, run.verdict, drop, run.out).some((x) => x.invariant === 'returned'),
          `${what}: XDP_DROP at tc`,
        );
      }
    }
  } finally {
    f.close();
  }
});

test('the verifier counter check catches a verdict counted under the wrong reason', async () => {
  const real = verifierTarget('tc');
  const lying: Target<VerifierVerdict> = {
    ...real,
    verdict: (frame, device, c) => {
      const v = real.verdict(frame, device, c);
      return v.action === 'verify' && v.result === 'verify_missing' ? { ...v, result: 'verify_invalid' } : v;
    },
  };
  const f = Fuzzer.open(lying, [{ name: 'lo', ifindex: 1, mtu: 65536 }]);
  try {
    const failures: Array<CaseRun<VerifierVerdict>> = [];
    const s = await fuzz(f, { seed: 5, count: 3000, batch: 500, maxFailures: 50, onFailure: (r) => failures.push(r) });
    const counted = failures.filter((r) => r.violations.some((x) => x.invariant === 'counter'));
    assert.ok(counted.length > 0, `the wrong expectation went unnoticed: ${JSON.stringify(s.violations)}`);
    for (const r of counted)
      assert.match(
        r.violations.find((x) => x.invariant === 'counter')?.detail ?? '',
        /verify_missing: 1.*want.*verify_invalid: 1/,
      );
  } finally {
    f.close();
  }
});

/**
 * Bugs planted in a private copy of bpf/ (never in the tree): each must be caught, by the
 * invariant named, within PLANTED_CASES cases. The text replaced must exist, so that a
 * change of the sources fails here instead of testing nothing.
 */
const PLANTED_CASES = 5000;
const PLANTED: ReadonlyArray<{ name: string; file: string; from: string; to: string; caughtBy: string[] }> = [
  {
    name: 'any length of our option is read as a token',
    file: 'lib/verify.h',
    from: '\tif (scan.ours_len != NT_OPT_LEN)\n\t\treturn NT_C_V_INVALID;\n',
    to: '',
    caughtBy: ['passed-bad-token'],
  },
  {
    name: 'an EOL is skipped like a NOP',
    file: 'lib/tcp.h',
    from: '\t\t\tr->end = idx;\n\t\t\tr->flags = flags | NT_OPTS_EOL;\n\t\t\treturn;\n',
    to: '\t\t\tidx++;\n\t\t\tcontinue;\n',
    caughtBy: ['passed-bad-token'],
  },
  {
    name: 'the next epoch always accepted, however far the boundary',
    file: 'lib/keyed.h',
    from: '\te->hi = (now + skew) / epoch_seconds;',
    to: '\te->hi = e->cur + 1;',
    caughtBy: ['passed-bad-token', 'counter'],
  },
  {
    name: 'the clock skew ignored at the start of an epoch',
    file: 'lib/keyed.h',
    from: '\te->lo = (now >= skew ? now - skew : 0) / epoch_seconds;',
    to: '\te->lo = e->cur;',
    caughtBy: ['dropped-valid'],
  },
  {
    name: 'a first fragment read up to its IP length, not to what reassembly keeps',
    file: 'lib/syn.h',
    from: '\t\t\ts->l4_end = s->l4_off + ((ip_end - s->l4_off) & ~7U);',
    to: '\t\t\ts->l4_end = ip_end;',
    caughtBy: ['passed-bad-token', 'counter'],
  },
  {
    name: 'unreadable frames passed where a policy enforces',
    file: 'lib/verify.h',
    from: '\tnt_count(rule->counter_slot, NT_C_V_DROPPED);\n\treturn NT_V_DROP;\n}\n\n/**\n * nt_verify_syn()',
    to: '\treturn NT_V_PASS;\n}\n\n/**\n * nt_verify_syn()',
    caughtBy: ['passed-unreadable'],
  },
  {
    name: 'exempt sources looked up by policy only',
    file: 'lib/verify.h',
    from: '.prefixlen = 32 + 32,',
    to: '.prefixlen = 32,',
    caughtBy: ['dropped-exempt'],
  },
  {
    name: 'the previous static token accepted when there is none',
    file: 'lib/verify.h',
    from: '\tif (!(policy->flags & NT_PF_HAS_PREVIOUS))\n\t\treturn 0;\n\t__builtin_memcpy(&want, policy->token_previous',
    to: '\t__builtin_memcpy(&want, policy->token_previous',
    caughtBy: ['passed-bad-token', 'counter'],
  },
];

test('bugs planted in a copy of the verifier are caught, each by its invariant', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'netoken-planted-'));
  try {
    cpSync(path.join(PACKAGE_ROOT, 'bpf'), path.join(dir, 'bpf'), { recursive: true });
    const pristine = readdirSync(path.join(dir, 'bpf', 'lib')).map(
      (n) => [n, readFileSync(path.join(dir, 'bpf', 'lib', n), 'utf8')] as const,
    );
    /** what the unchanged verifier already reports on this seed (known bugs), to tell the planted ones apart */
    const baseline = new Set<string>();
    const seen = async (object: string, into: Set<string>): Promise<number> => {
      const f = Fuzzer.open(verifierTarget('xdp', object), [{ name: 'lo', ifindex: 1, mtu: 65536 }]);
      let first = -1;
      try {
        await fuzz(f, {
          seed: 31337,
          count: PLANTED_CASES,
          maxFailures: 400,
          batch: 256,
          // The baseline runs to the end; a planted bug's run ends at its first new invariant.
          shouldStop: () => into !== baseline && first >= 0,
          onFailure: (r) => {
            for (const v of r.violations) {
              if (!baseline.has(v.invariant) && first < 0) first = r.fuzzCase.index;
              into.add(v.invariant);
            }
          },
        });
      } finally {
        f.close();
      }
      return first;
    };
    await seen(DEFAULT_VERIFIER_OBJECT, baseline);
    for (const bug of PLANTED) {
      for (const [n, text] of pristine) writeFileSync(path.join(dir, 'bpf', 'lib', n), text);
      const file = path.join(dir, 'bpf', bug.file);
      const text = readFileSync(file, 'utf8');
      assert.equal(text.split(bug.from).length, 2, `${bug.name}: the text to replace occurs once in bpf/${bug.file}`);
      writeFileSync(file, text.replace(bug.from, bug.to));
      const object = path.join(dir, 'build', 'bpf', 'verifier.bpf.o');
      rmSync(object, { force: true });
      execFileSync('make', ['-s', '-C', path.join(dir, 'bpf'), object], { stdio: ['ignore', 'ignore', 'inherit'] });
      const got = new Set<string>();
      const first = await seen(object, got);
      const caught = bug.caughtBy.filter((x) => got.has(x));
      assert.ok(
        caught.length > 0,
        `${bug.name}: not caught; invariants broken: [${[...got].join(', ')}], want one of [${bug.caughtBy.join(', ')}]`,
      );
      t.diagnostic(`planted "${bug.name}": caught by ${caught.join(', ')}, first at case ${first}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------
// Fragment sequences through the verifier, reassembled as the stack does it

const FRAGMENTS_FIXED_SEED = 20261204;
const FRAGMENTS_COUNT = 25000;

test(`fragment sequences, fixed seed ${FRAGMENTS_FIXED_SEED} and a time-derived one: nothing the verifier lets through reassembles into a SYN without a valid token`, async (t) => {
  const timeSeed = ((Date.now() % 0x100000000) ^ (process.pid << 11)) >>> 0;
  t.diagnostic(
    `time-derived seed=${timeSeed} (replay a failing case with: node dist/fuzz/main.js --target fragments --replay ${timeSeed}:<case>)`,
  );
  for (const seed of [FRAGMENTS_FIXED_SEED, timeSeed]) {
    const r = await cli([
      '--target',
      'fragments',
      '--seed',
      String(seed),
      '--count',
      String(FRAGMENTS_COUNT),
      '--json',
      '--max-failures',
      '20',
    ]);
    const lines = r.stdout.trimEnd().split('\n');
    const s = JSON.parse(lines.find((l) => l.startsWith('{')) ?? 'null') as FuzzSummary | null;
    const text = lines.filter((l) => !l.startsWith('{')).join('\n');
    assert.ok(s, `the fragments target ran (exit ${r.code}):\n${text}\n${r.stderr}`);
    for (const line of text.split('\n').filter((l) => !l.startsWith(' ') && !l.startsWith('FAIL'))) t.diagnostic(line);
    assert.equal(s.failures, 0, `seed ${seed}: ${JSON.stringify(s.violations)}\n${text.slice(0, 4000)}`);
    assert.equal(s.cases, FRAGMENTS_COUNT);
    // The sequences reach every outcome: refused, reassembled with a valid token, from an exempt source, to unenforced ports.
    for (const k of [
      'nothing reassembled',
      'SYN with a valid token',
      'SYN from an exempt source',
      'SYN to a port nothing enforces',
    ]) {
      assert.ok((s.verdicts[k] ?? 0) > 0, `seed ${seed}: outcome "${k}" never reached: ${JSON.stringify(s.verdicts)}`);
    }
  }
});

test('fragment sequences catch a verifier that reads a first fragment up to its IP length instead of what reassembly keeps', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'netoken-planted-frag-'));
  try {
    cpSync(path.join(PACKAGE_ROOT, 'bpf'), path.join(dir, 'bpf'), { recursive: true });
    const file = path.join(dir, 'bpf', 'lib', 'syn.h');
    const from = '\t\t\ts->l4_end = s->l4_off + ((ip_end - s->l4_off) & ~7U);';
    const text = readFileSync(file, 'utf8');
    assert.equal(text.split(from).length, 2, 'the text to replace occurs once in bpf/lib/syn.h');
    writeFileSync(file, text.replace(from, '\t\t\ts->l4_end = ip_end;'));
    const object = path.join(dir, 'build', 'bpf', 'verifier.bpf.o');
    execFileSync('make', ['-s', '-C', path.join(dir, 'bpf'), object], { stdio: ['ignore', 'ignore', 'inherit'] });
    const bypasses: string[] = [];
    const f = Fuzzer.open(fragmentsTarget(object), [{ name: 'lo', ifindex: 1, mtu: 65536 }]);
    try {
      await fuzz(f, {
        seed: 31337,
        count: 5000,
        maxFailures: 5000,
        batch: 256,
        shouldStop: () => bypasses.length > 0,
        onFailure: (r) => {
          for (const v of r.violations)
            if (v.invariant === 'reassembled-bypass') bypasses.push(`case ${r.fuzzCase.index}: ${r.fuzzCase.recipe.join('; ')}`);
        },
      });
    } finally {
      f.close();
    }
    assert.ok(bypasses.length > 0, 'the planted bug let no token-less SYN through reassembly in 5000 sequences');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
