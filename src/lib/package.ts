/**
 * Where netoken's own files are, for every part that loads them: the package root (the nearest
 * directory above this module whose package.json is netoken's; dist/src/lib/ in a checkout, in
 * the npm package and in the image, or wherever a bundle of the code sits inside the package),
 * the BPF objects under build/bpf, and the version package.json gives.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

interface PackageJson {
  name?: unknown;
  version?: unknown;
}

function readPackageJson(file: string): PackageJson | null {
  if (!existsSync(file)) return null;
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as PackageJson;
  } catch {
    return null;
  }
}

/** The nearest directory at or above `start` whose package.json names netoken. */
export function findPackageRoot(start: string): string {
  for (let dir = start; ; dir = path.dirname(dir)) {
    if (readPackageJson(path.join(dir, 'package.json'))?.name === 'netoken') return dir;
    if (path.dirname(dir) === dir) throw new Error(`cannot find netoken's package.json above ${start}`);
  }
}

export const PACKAGE_ROOT: string = findPackageRoot(path.dirname(fileURLToPath(import.meta.url)));

/** netoken's version, from its package.json (the agent reports it in its TokenNodeState). */
export const VERSION: string = String(readPackageJson(path.join(PACKAGE_ROOT, 'package.json'))?.version ?? 'unknown');

/**
 * The compiled BPF object of bpf/<name>.bpf.c: the marker (egress) or the verifier (ingress),
 * or the marker built for kernels before 6.2 (marker_compat, see bpf/lib/kskb.h).
 */
export function bpfObjectPath(name: 'marker' | 'marker_compat' | 'verifier'): string {
  return path.join(PACKAGE_ROOT, 'build/bpf', `${name}.bpf.o`);
}
