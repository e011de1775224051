/**
 * The packet fuzzer, bounded: a fixed-seed run and a time-seeded run of the CLI against the
 * built marker (in a private network namespace, so the MTU check is reached too), the skip
 * reasons those runs reach, replay, and proof that the checks catch broken outputs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { COUNTERS } from '../lib/abi.js';
import { ipv4HeaderChecksum, tcpChecksum } from '../lib/packet.js';
import { checkMarkerRun, type Violation } from './check.js';
import { Fuzzer, fuzz, markerTarget, type CaseRun, type FuzzSummary, type Target } from './driver.js';
import { generateCase } from './generate.js';
import type { Verdict } from './model.js';
import { TcAction } from '../native/bpf.js';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const MAIN = path.join(repoRoot, 'dist/src/fuzz/main.js');
const FIXED_SEED = 20261126;
const FIXED_COUNT = 80000;
const TIME_COUNT = 40000;

// The marker object must match the sources (make is a no-op when it does).
execFileSync('make', ['-s', '-C', path.join(repoRoot, 'bpf')], { stdio: ['ignore', 'ignore', 'inherit'] });

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

/** Run the CLI with --json; fail with its whole output when it does not exit 0. */
async function fuzzRun(seed: number, count: number): Promise<{ summary: FuzzSummary; text: string }> {
  const r = await cli(['--seed', String(seed), '--count', String(count), '--json']);
  const text = r.stdout.trimEnd();
  assert.equal(r.code, 0, `fuzz run seed=${seed} exited ${r.code}:\n${text}\n${r.stderr}`);
  const last = text.split('\n').pop() ?? '';
  return { summary: JSON.parse(last) as FuzzSummary, text: text.split('\n').slice(0, -1).join('\n') };
}

function assertClean(s: FuzzSummary, seed: number, count: number): void {
  assert.equal(s.seed, seed, 'seed');
  assert.equal(s.cases, count, `cases run: got ${s.cases}, want ${count}`);
  assert.equal(s.failures, 0, `failing cases: ${JSON.stringify(s.violations)}`);
  assert.ok(['mark', 'skip', 'pass'].every((k) => (s.verdicts[k] ?? 0) > 0), `verdict mix: ${JSON.stringify(s.verdicts)}`);
}

let fixedRun: Promise<{ summary: FuzzSummary; text: string }> | undefined;
const fixed = (): Promise<{ summary: FuzzSummary; text: string }> => (fixedRun ??= fuzzRun(FIXED_SEED, FIXED_COUNT));

test(`fixed seed ${FIXED_SEED}: ${FIXED_COUNT} cases, every invariant holds`, async (t) => {
  const { summary, text } = await fixed();
  for (const line of text.split('\n')) t.diagnostic(line);
  assertClean(summary, FIXED_SEED, FIXED_COUNT);
  assert.equal(summary.devices.length, 3, 'runs on loopback and both small-MTU devices');
});

test(`time-derived seed: ${TIME_COUNT} cases, every invariant holds`, async (t) => {
  const seed = ((Date.now() % 0x100000000) ^ (process.pid << 12)) >>> 0;
  t.diagnostic(`seed=${seed} (replay a failing case with: node dist/src/fuzz/main.js --replay ${seed}:<case>)`);
  console.log(`fuzz: time-derived seed=${seed}`);
  const { summary, text } = await fuzzRun(seed, TIME_COUNT);
  for (const line of text.split('\n')) t.diagnostic(line);
  assertClean(summary, seed, TIME_COUNT);
});

test('the generated packets reach every skip reason test runs can reach, and marking', async () => {
  const { summary } = await fixed();
  // Encapsulated skbs need a tunnel program before the marker (test/packet covers that);
  // the error counters must stay at zero.
  const reachable = COUNTERS.filter((n) => n.startsWith('skipped_') && n !== 'skipped_encapsulated');
  for (const n of ['marked', ...reachable]) {
    assert.ok((summary.counters[n] ?? 0) > 0, `counter ${n}: got ${summary.counters[n] ?? 0}, want > 0 (all: ${JSON.stringify(summary.counters)})`);
  }
  for (const n of ['skipped_encapsulated', 'error_grow', 'error_write_dropped']) {
    assert.equal(summary.counters[n] ?? 0, 0, `counter ${n}`);
  }
  assert.equal(summary.counters.marked, summary.verdicts.mark, 'marked counter equals the marks expected');
});

test('--replay SEED:CASE rebuilds exactly that case and checks it', async () => {
  const { code, stdout } = await cli(['--replay', `${FIXED_SEED}:4242`]);
  assert.equal(code, 0, stdout);
  assert.match(stdout, new RegExp(`^ok seed=${FIXED_SEED} case=4242`));
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
      expectCaught(run, mod((b) => (b[b.length - 1]! ^= 0x01)), ['marked-option', 'tcp-checksum'], 'token value bit flipped');
      expectCaught(run, mod((b) => { b[good.length - 12] = 252; fixTcp(b); }), ['marked-option'], 'wrong option kind, checksum fixed');
      expectCaught(run, mod((b) => { b[good.length - 11] = 8; fixTcp(b); }), ['marked-option'], 'option length 8, checksum fixed');
      expectCaught(run, mod((b) => b.writeUInt16BE((b.readUInt16BE(l4 + 16) + 1) & 0xffff, l4 + 16)), ['tcp-checksum'], 'TCP checksum off by one');
      expectCaught(run, mod((b) => { b[l4 + 12] = (b[l4 + 12] ?? 0) - 0x10; fixTcp(b); }), ['marked-headers'], 'doff one word short, checksum fixed');
      expectCaught(run, mod((b) => { b[l4 + 14] = (b[l4 + 14] ?? 0) ^ 0xff; fixTcp(b); }), ['marked-bytes'], 'window changed, checksum fixed');
      expectCaught(run, mod((b) => { b[l4 + 12] = (b[l4 + 12] ?? 0) | 0x01; fixTcp(b); }), ['marked-bytes'], 'reserved bit set, checksum fixed');
      const lenOff = v4 ? l3 + 2 : l3 + 4;
      expectCaught(run, mod((b) => { b.writeUInt16BE(b.readUInt16BE(lenOff) - 12, lenOff); fixIp(b); fixTcp(b); }), ['marked-headers'], 'IP length not raised, checksums fixed');
      if (v4) {
        expectCaught(run, mod((b) => b.writeUInt16BE(b.readUInt16BE(l3 + 10) ^ 0x0100, l3 + 10)), ['ip-checksum'], 'IPv4 header checksum wrong');
        // The pseudo-header length left at the old value: the seed bug netoken's write-up had.
        expectCaught(run, mod((b) => { const c = b.readUInt16BE(l4 + 16) + 12; b.writeUInt16BE((c & 0xffff) + (c >>> 16), l4 + 16); }), ['tcp-checksum'], 'pseudo-header length not updated');
      }
      // Our option twice: feed the marked output back as the input and append it again,
      // with every length and checksum right.
      const twice = Buffer.concat([good, good.subarray(good.length - 12)]);
      twice.writeUInt16BE(twice.readUInt16BE(lenOff) + 12, lenOff);
      twice[l4 + 12] = (twice[l4 + 12] ?? 0) + 0x30;
      fixIp(twice);
      fixTcp(twice);
      const remarked = checkMarkerRun(good, { action: 'mark', layout }, TcAction.UNSPEC, twice);
      assert.ok(names(remarked).includes('marked-option') && names(remarked).includes('marked-eligible'), `option twice: got [${names(remarked).join(', ')}]`);
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
      return v.action === 'skip' && v.counter === 'skipped_eol' ? { ...v, counter: 'skipped_malformed' } : v;
    },
  };
  const f = Fuzzer.open(lying, [{ name: 'lo', ifindex: 1, mtu: 65536 }]);
  try {
    const failures: Array<CaseRun<Verdict>> = [];
    const s = await fuzz(f, { seed: 5, count: 4000, batch: 500, maxFailures: 3, onFailure: (r) => failures.push(r) });
    assert.ok(s.failures > 0, 'the wrong expectation went unnoticed');
    assert.deepEqual(Object.keys(s.violations), ['counter']);
    for (const r of failures) {
      assert.match(r.violations[0]?.detail ?? '', /skipped_eol: 1\}, want \{.*skipped_malformed: 1\}/);
      assert.equal(real.verdict(r.fuzzCase.frame, r.device, r.fuzzCase).action, 'skip');
    }
  } finally {
    f.close();
  }
});
