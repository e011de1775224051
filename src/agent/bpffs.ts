/** The BPF filesystem the agent pins its maps and links in. */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../lib/log.js';
import { binding } from '../native/binding.js';

export const DEFAULT_STATE_DIR = '/sys/fs/bpf/netoken';

/** Mount bpffs at dir's mount point if nothing (or something else) is mounted there, as Cilium does. */
export function ensureBpffs(stateDir: string, log: Logger): void {
  const b = binding();
  // The state directory lives inside a bpffs; mount one at its parent when missing.
  const root = path.dirname(stateDir);
  mkdirSync(root, { recursive: true });
  if (!b.isBpffs(root)) {
    log.info('mounting bpffs', { path: root });
    b.mountBpffs(root);
  }
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
}
