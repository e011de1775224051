/**
 * Shared setup for the native addon's tests: the BPF fixtures in bpf/test and a
 * private pin directory on bpffs. Used only by tests (src/native/*.test.ts).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { binding } from '../../src/native/binding.js';
import { PACKAGE_ROOT } from '../../src/lib/package.js';

/** Repository root: the package root of a checkout. */
export const repoRoot = PACKAGE_ROOT;

let fixturesBuilt = false;

/** The test-only BPF programs of bpf/test/. */
export type Fixture = 'progs' | 'pinned' | 'rejected' | 'clock' | 'encap' | 'siphash' | 'foreign';

/**
 * Path of a compiled bpf/test/<name>.bpf.c, in build/bpf-test (never in build/bpf, which
 * ships). The first call runs `make -C bpf/test` (a no-op when up to date), so the tests
 * never run against stale objects.
 */
export function fixture(name: Fixture): string {
  if (!fixturesBuilt) {
    execFileSync('make', ['-s', '-C', path.join(repoRoot, 'bpf/test')], { stdio: ['ignore', 'ignore', 'pipe'] });
    fixturesBuilt = true;
  }
  return fixturePath(name);
}

/** Where bpf/test/<name>.bpf.c compiles to, without building it. */
export function fixturePath(name: Fixture): string {
  return path.join(repoRoot, 'build/bpf-test', `${name}.bpf.o`);
}

/** A unique name for this run: netns, interface or pin directory names include it. */
export function runTag(): string {
  return `${process.pid}-${randomBytes(3).toString('hex')}`;
}

/**
 * A fresh directory on bpffs under /sys/fs/bpf (mounted if it is not yet),
 * removed with everything pinned in it by the returned cleanup.
 */
export function makePinDir(): { dir: string; cleanup: () => void } {
  const b = binding();
  const root = '/sys/fs/bpf';
  if (!b.isBpffs(root)) b.mountBpffs(root);
  const dir = path.join(root, `netoken-test-${runTag()}`);
  mkdirSync(dir, { mode: 0o700 });
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A little-endian u32 as a 4-byte Buffer (map keys in the fixtures). */
export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

/** A little-endian u64 as an 8-byte Buffer. */
export function u64(n: bigint | number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}
