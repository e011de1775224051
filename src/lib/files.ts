/**
 * Files other processes read while we write them (status, state, results).
 */
import { chmodSync, renameSync, rmSync, writeFileSync } from 'node:fs';

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
