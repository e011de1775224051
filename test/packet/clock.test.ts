/**
 * The wall clock behind keyed epochs: the agent's measurement (measureClock with the
 * marker's probe) written to nt_clock, read back by both clock paths of bpf/lib/keyed.h
 * (CLOCK_TAI on 6.1+, CLOCK_BOOTTIME before) through bpf/test/clock.bpf.c.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { endianness } from 'node:os';
import path from 'node:path';
import { binding } from '../../src/native/binding.js';
import { decodeClock, encodeClock } from '../../src/lib/abi.js';
import { measureClock } from '../../src/agent/clock.js';
import { fixture } from '../lib/native.js';
import { PACKAGE_ROOT, bpfObjectPath } from '../../src/lib/package.js';

execFileSync('make', ['-s', '-C', path.join(PACKAGE_ROOT, 'bpf')], { stdio: ['ignore', 'ignore', 'inherit'] });

test('both clock paths give unix time within a few milliseconds of the wall clock; the TAI offset is whole seconds', () => {
  const b = binding();
  if (!b.isBpffs('/sys/fs/bpf')) b.mountBpffs('/sys/fs/bpf');
  const pinDir = `/sys/fs/bpf/netoken-test-${process.pid}-${randomBytes(3).toString('hex')}`;
  mkdirSync(pinDir, { mode: 0o700 });
  const marker = b.openObject(bpfObjectPath('marker'), { pinRoot: pinDir });
  const clockTest = b.openObject(fixture('clock'), { pinRoot: pinDir });
  const probe = marker.program('nt_clock_probe');
  const prog = clockTest.program('nt_test_clock');
  const clock = marker.map('nt_clock');
  try {
    const r = measureClock(probe);
    assert.equal(r.taiOffsetNs % 1_000_000_000n, 0n, 'the TAI offset is whole seconds');
    assert.equal(r.hasTai, true, 'this kernel (6.1+) has CLOCK_TAI for BPF');
    clock.update(Buffer.alloc(4), encodeClock(r.taiOffsetNs, r.bootOffsetNs));
    assert.deepEqual(decodeClock(clock.lookup(Buffer.alloc(4))!), {
      taiOffsetNs: r.taiOffsetNs,
      bootOffsetNs: r.bootOffsetNs,
      valid: true,
    });
    const t0 = Date.now();
    const out = prog.testRun({ data: Buffer.alloc(64) });
    const t1 = Date.now();
    assert.equal(out.retval, 2);
    const read = (i: number): bigint =>
      endianness() === 'LE' ? out.data.readBigUInt64LE(i * 8) : out.data.readBigUInt64BE(i * 8);
    const near = (ns: bigint, what: string): void => {
      const ms = Number(ns / 1_000_000n);
      assert.ok(ms >= t0 - 20 && ms <= t1 + 20, `${what}: ${ms} ms is not within [${t0 - 20}, ${t1 + 20}]`);
    };
    assert.equal(read(3), 1n);
    near(read(0), 'nt_unix_ns()');
    near(read(1), 'the CLOCK_TAI path');
    near(read(2), 'the CLOCK_BOOTTIME path (kernels before 6.1)');
  } finally {
    clock.close();
    prog.close();
    probe.close();
    clockTest.close();
    marker.close();
    rmSync(pinDir, { recursive: true, force: true });
  }
});
