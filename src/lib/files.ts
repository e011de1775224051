/**
 * Files other processes read while we write them (status, state, results), and where the
 * package's own files are.
 */
import { chmodSync, existsSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Write text to a temporary sibling, then rename it over `file`: a reader or a crash never
 * sees half a file. The file gets exactly `mode`: whatever may hold key material passes
 * 0o600 (the default suits results and status, which never do). The temporary file is
 * created fresh (a leftover of a crash, or a link planted in its place, is removed first,
 * never written through) and set to `mode` before it takes the name.
 */
export function writeFileAtomic(file: string, text: string, mode = 0o644): void {
  const tmp = `${file}.${process.pid}.tmp`;
  rmSync(tmp, { force: true });
  try {
    writeFileSync(tmp, text, { mode, flag: 'wx' });
    // The umask may have taken bits away; a mode is what the caller asked for, no more, no less.
    chmodSync(tmp, mode);
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

let root: string | undefined;

/**
 * The package's root directory, where package.json, bin/ and build/ are: found by walking up
 * from this module, which is dist/src/lib/files.js in a build and a chunk of dist/bundle/ in
 * the bundle that ships. Every file the code opens beside itself (the native addon, the BPF
 * objects, the CLI) is found from here.
 */
export function packageRoot(): string {
  if (root) return root;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}: netoken's files are not where it was installed`);
    dir = up;
  }
  root = dir;
  return dir;
}

/** A path below the package root. */
export function packagePath(...parts: string[]): string {
  return path.join(packageRoot(), ...parts);
}
