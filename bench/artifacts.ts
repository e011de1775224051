/**
 * The built things the benchmarks use, where they are, and building the benchmark-only
 * ones (bench/Makefile) on demand. Rows for parts that are not built yet ask here.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { bpfObjectPath } from '../src/lib/package.js';
import { fixturePath } from '../test/lib/native.js';
import { ROOT } from './report.js';

export interface ProgRef {
  object: string;
  program: string;
}

const benchOut = (name: string): string => path.join(ROOT, 'build/bench', name);

export const MARKER: ProgRef = { object: bpfObjectPath('marker'), program: 'nt_mark_egress' };
export const MARKER_MARK_RESTORE: ProgRef = { object: benchOut('marker_bench.bpf.o'), program: 'nt_bench_mark_restore' };
export const MARKER_RESTORE_ONLY: ProgRef = { object: benchOut('marker_bench.bpf.o'), program: 'nt_bench_restore_only' };
/** The benchmark wrapper of the marker built for kernels before 6.2 (no bpf_cast_to_kern_ctx). */
export const MARKER_COMPAT_MARK_RESTORE: ProgRef = {
  object: benchOut('marker_bench_compat.bpf.o'),
  program: 'nt_bench_mark_restore',
};
export const MARKER_COMPAT_RESTORE_ONLY: ProgRef = {
  object: benchOut('marker_bench_compat.bpf.o'),
  program: 'nt_bench_restore_only',
};
export const SEED: ProgRef = { object: benchOut('seed.bpf.o'), program: 'seed_egress' };
export const SEED_MARK_RESTORE: ProgRef = { object: benchOut('seed.bpf.o'), program: 'seed_mark_restore' };
export const SEED_RESTORE_ONLY: ProgRef = { object: benchOut('seed.bpf.o'), program: 'seed_restore_only' };
/** bpf/test's objects (scripts/build.sh builds them): the no-op baselines. */
export const TC_NOOP: ProgRef = { object: fixturePath('progs'), program: 'tc_noop' };
export const XDP_NOOP: ProgRef = { object: fixturePath('progs'), program: 'xdp_pass' };
/** The marker's clock probe: what the agent reads the kernel's clocks with to fill nt_clock. */
export const CLOCK_PROBE: ProgRef = { object: bpfObjectPath('marker'), program: 'nt_clock_probe' };
/** The ingress verifier's XDP entry point, and its tc entry (where XDP cannot attach). */
export const VERIFIER: ProgRef = { object: bpfObjectPath('verifier'), program: 'nt_verify_xdp' };
export const VERIFIER_TC: ProgRef = { object: bpfObjectPath('verifier'), program: 'nt_verify_tc' };
/** An XDP program that drops every frame and does nothing else: the SYN flood's baseline. */
export const XDP_DROP: ProgRef = { object: benchOut('xdp_drop.bpf.o'), program: 'nt_bench_drop_xdp' };

export const NETBENCH = benchOut('netbench');
/** The SYN flood generator (bench/net/synflood.c). */
export const SYNFLOOD = benchOut('synflood');

/** null when the ingress verifier is built, else why the rows that need it are not available. */
export function verifierMissing(): string | null {
  return existsSync(VERIFIER.object)
    ? null
    : `the ingress verifier is not built yet (${path.relative(ROOT, VERIFIER.object)} missing)`;
}

/**
 * Builds the benchmark-only artefacts (bench/Makefile; a no-op when they are up to date) and
 * checks that the project's own build (`npm run build`) has produced what the benchmarks load.
 */
export function ensureBuilt(): void {
  const needed = [MARKER.object, VERIFIER.object, TC_NOOP.object, path.join(ROOT, 'build/Release/netoken_native.node')];
  const absent = needed.filter((f) => !existsSync(f));
  if (absent.length > 0) {
    throw new Error(
      `${absent.map((f) => path.relative(ROOT, f)).join(', ')} missing: run \`npm run build\` first (\`npm run bench\` does)`,
    );
  }
  try {
    execFileSync('make', ['-s', '-C', path.join(ROOT, 'bench')], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim() ?? '';
    throw new Error(`building the benchmarks failed (make -C bench): ${stderr || String(err)}`);
  }
}
