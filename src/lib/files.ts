/**
 * Files other processes read while we write them (status, state, results).
 */
import { renameSync, writeFileSync } from 'node:fs';

/** Write text to a temporary sibling, then rename it over `file`: a reader or a crash never sees half a file. */
export function writeFileAtomic(file: string, text: string, mode = 0o644): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode });
  renameSync(tmp, file);
}
