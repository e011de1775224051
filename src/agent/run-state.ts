/**
 * What the agent must remember across restarts that the kernel cannot hold for it: the
 * policy slot ids, the legacy tc filters it attached (and whether it created their clsact
 * qdisc), and the XDP programs it attached. Kept as JSON in the run directory (0600).
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../lib/files.js';

export const DEFAULT_RUN_DIR = '/run/netoken';

export type XdpMode = 'xdp-native' | 'xdp-generic';

/** A legacy tc filter of ours, and whether we created the clsact qdisc it sits in. */
export type TcRecord = { name: string; createdQdisc: boolean };

export interface RunState {
  /** policy name -> slot id */
  ids: Record<string, number>;
  /** `${ifindex}` -> legacy tc filter we attached at egress, and whether we created its clsact qdisc */
  tc: Record<string, TcRecord>;
  /** the same at ingress (the verifier, when XDP is not used) */
  tcIngress: Record<string, TcRecord>;
  /** `${ifindex}` -> the verifier's XDP program we attached, and in which mode */
  xdp: Record<string, XdpRecord>;
}

/**
 * An XDP program of ours. progId tells it from anyone else's with CAP_BPF alone: reading a
 * program's name by its id (BPF_PROG_GET_FD_BY_ID) needs CAP_SYS_ADMIN, which the agent's pod
 * does not have. It is absent in run states written before it was recorded.
 */
export type XdpRecord = { name: string; mode: XdpMode; progId?: number };

const EMPTY_RUN_STATE: RunState = { ids: {}, tc: {}, tcIngress: {}, xdp: {} };

export function readRunState(runDir: string): RunState {
  const file = path.join(runDir, 'state.json');
  if (!existsSync(file)) return structuredClone(EMPTY_RUN_STATE);
  try {
    return { ...structuredClone(EMPTY_RUN_STATE), ...(JSON.parse(readFileSync(file, 'utf8')) as Partial<RunState>) };
  } catch {
    return structuredClone(EMPTY_RUN_STATE);
  }
}

/** What this process last wrote to each state file: a reconcile that changed no hook writes nothing. */
const written = new Map<string, string>();

export function writeRunState(runDir: string, s: RunState): void {
  const file = path.join(runDir, 'state.json');
  const text = JSON.stringify(s, null, 2);
  if (written.get(file) === text && existsSync(file)) return;
  mkdirSync(runDir, { recursive: true, mode: 0o700 });
  writeFileAtomic(file, text, 0o600);
  written.set(file, text);
}
