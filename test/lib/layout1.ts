/**
 * BPF objects of earlier commits, built from this repository's history (`git archive`), for
 * the upgrade tests: an agent of today started over what an agent of that commit left pinned.
 * The tests need a clone with those commits.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ROOT } from './agent.js';

/** The last commit whose maps have layout 1. */
export const LAYOUT1_COMMIT = '3650e17a62d17b4ecdb3d78a6f9755f68bdb31ee';

/** The last commit whose verifier had no port index (nt_port_index): layout 2 without it. */
export const NO_PORT_INDEX_COMMIT = 'cd43a16e319302909bb1222d780c9cebce55f279';

const built = new Map<string, { marker: string; verifier: string }>();

/** build/bpf/{marker,verifier}.bpf.o of `commit`, built once per process into a temporary directory. */
export function objectsAt(commit: string): { marker: string; verifier: string } {
  const have = built.get(commit);
  if (have) return have;
  try {
    execFileSync('git', ['-C', ROOT, 'cat-file', '-e', `${commit}^{commit}`], { stdio: 'ignore' });
  } catch {
    throw new Error(
      `the upgrade test builds the BPF objects of commit ${commit}, which this clone does not have ` +
        '(a shallow clone? `git fetch --unshallow`)',
    );
  }
  const dir = mkdtempSync(path.join(tmpdir(), `nttest-objects-${commit.slice(0, 7)}-`));
  // Only bpf/: its Makefile builds into ../build/bpf of wherever it is.
  execFileSync('sh', ['-c', `git -C "${ROOT}" archive ${commit} bpf | tar -x -C "${dir}"`]);
  execFileSync('make', ['-s', '-C', path.join(dir, 'bpf')], { stdio: ['ignore', 'ignore', 'pipe'] });
  const out = { marker: path.join(dir, 'build/bpf/marker.bpf.o'), verifier: path.join(dir, 'build/bpf/verifier.bpf.o') };
  for (const f of Object.values(out)) if (!existsSync(f)) throw new Error(`building commit ${commit} made no ${f}`);
  built.set(commit, out);
  return out;
}

/** The BPF objects of map layout 1 (per-CPU hash counters, maps pinned straight in maps/). */
export function layout1Objects(): { marker: string; verifier: string } {
  return objectsAt(LAYOUT1_COMMIT);
}
