/**
 * The BPF objects of map layout 1 (per-CPU hash counters, maps pinned straight in maps/),
 * built from the sources of the last commit that had that layout, for the upgrade test: an
 * agent of today started over what an agent of layout 1 left pinned. The sources come out
 * of this repository's history (`git archive`), so the test needs a clone with that commit.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ROOT } from './agent.js';

/** The last commit whose maps have layout 1. */
export const LAYOUT1_COMMIT = '3650e17a62d17b4ecdb3d78a6f9755f68bdb31ee';

let built: { marker: string; verifier: string } | undefined;

/** build/bpf/{marker,verifier}.bpf.o of LAYOUT1_COMMIT, built once per process into a temporary directory. */
export function layout1Objects(): { marker: string; verifier: string } {
  if (built) return built;
  try {
    execFileSync('git', ['-C', ROOT, 'cat-file', '-e', `${LAYOUT1_COMMIT}^{commit}`], { stdio: 'ignore' });
  } catch {
    throw new Error(
      `the upgrade test builds the layout-1 objects from commit ${LAYOUT1_COMMIT}, which this clone does not have ` +
        '(a shallow clone? `git fetch --unshallow`)',
    );
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'nttest-layout1-'));
  // Only bpf/: its Makefile builds into ../build/bpf of wherever it is.
  execFileSync('sh', ['-c', `git -C "${ROOT}" archive ${LAYOUT1_COMMIT} bpf | tar -x -C "${dir}"`]);
  execFileSync('make', ['-s', '-C', path.join(dir, 'bpf')], { stdio: ['ignore', 'ignore', 'pipe'] });
  const out = { marker: path.join(dir, 'build/bpf/marker.bpf.o'), verifier: path.join(dir, 'build/bpf/verifier.bpf.o') };
  for (const f of Object.values(out)) if (!existsSync(f)) throw new Error(`building layout 1 made no ${f}`);
  built = out;
  return out;
}
