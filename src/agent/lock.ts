/**
 * One agent per state directory. Two agents over the same pins would undo each other's map
 * writes and swap each other's programs on every reconcile, and the one that stops first would
 * leave the other's policies half applied. The agent holds an exclusive flock(2) on its state
 * directory (in bpffs) for as long as it runs: the kernel lets go when the process ends, however
 * it ends, so a killed agent never blocks the next one, and the lock is seen across containers
 * that mount the same bpffs (a DaemonSet pod still terminating beside its replacement).
 *
 * An agent that finds the directory locked waits for the holder to stop (a rolling update),
 * saying so, and gives up with a clear error after the lock timeout. `netoken detach` does not
 * wait: it refuses to remove hooks that a running agent keeps.
 */
import { closeSync, fstatSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import type { Logger } from '../lib/log.js';
import { sleep } from '../lib/wait.js';
import { binding } from '../native/binding.js';

export const DEFAULT_LOCK_TIMEOUT_MS = 30_000;

export interface StateLock {
  readonly dir: string;
  /** Let go of the lock (the process ending does it too). */
  release(): void;
}

/**
 * The process that holds a flock on `dir`, from /proc/locks (its pid as this process sees it),
 * or undefined when none is listed or its pid is not visible from here (another pid namespace).
 */
export function lockHolder(dir: string, locks = '/proc/locks'): number | undefined {
  let st;
  let text;
  try {
    st = statSync(dir);
    text = readFileSync(locks, 'utf8');
  } catch {
    return undefined;
  }
  // Linux's new_encode_dev: minor in bits 0-7 and 20-31, major in bits 8-19.
  const major = (st.dev >> 8) & 0xfff;
  const minor = (st.dev & 0xff) | ((st.dev >> 12) & 0xfff00);
  const id = `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${st.ino}`;
  for (const line of text.split('\n')) {
    // "1: FLOCK  ADVISORY  WRITE 13743 00:28:19289176 0 EOF" ("->" marks a waiter)
    const f = line.trim().split(/\s+/);
    if (f[1] !== 'FLOCK' || f[3] !== 'WRITE' || f[5] !== id) continue;
    const pid = Number(f[4]);
    if (Number.isInteger(pid) && pid > 0) return pid;
  }
  return undefined;
}

function held(dir: string, fd: number): StateLock {
  let open = true;
  return {
    dir,
    release() {
      if (!open) return;
      open = false;
      closeSync(fd);
    },
  };
}

function whoHolds(dir: string): string {
  const pid = lockHolder(dir);
  return pid === undefined ? 'another netoken agent' : `another netoken agent (pid ${pid})`;
}

/**
 * The lock on `dir` if it is free now; who holds it if not; null when `dir` is gone, or was
 * replaced while the lock was taken (an idle agent that stops removes its state directory).
 */
export function tryLockStateDir(dir: string): StateLock | { holder: string } | null {
  let fd: number;
  try {
    fd = binding().lockDir(dir);
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return null;
    throw err;
  }
  if (fd < 0) return { holder: whoHolds(dir) };
  let same = false;
  try {
    const locked = fstatSync(fd);
    const now = statSync(dir);
    same = locked.dev === now.dev && locked.ino === now.ino;
  } catch {
    // gone since it was opened
  }
  if (same) return held(dir, fd);
  closeSync(fd);
  return null;
}

/** tryLockStateDir, making the directory (mode 0700) when it is gone. */
function tryLockMaking(dir: string): StateLock | { holder: string } {
  for (;;) {
    const r = tryLockStateDir(dir);
    if (r) return r;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }
}

export interface LockOptions {
  log: Logger;
  /** how long to wait for the holder to stop; it defaults to DEFAULT_LOCK_TIMEOUT_MS */
  timeoutMs?: number;
  /** how often to try; it defaults to 200 ms */
  pollMs?: number;
  /** how often to say that it still waits; it defaults to 5000 ms */
  progressMs?: number;
}

/** Take the lock on the agent's state directory (made when missing), waiting for a holder to stop. */
export async function lockStateDir(dir: string, o: LockOptions): Promise<StateLock> {
  const timeoutMs = o.timeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
  const start = Date.now();
  let first = tryLockMaking(dir);
  if ('release' in first) return first;
  o.log.warn(`${first.holder} is using this state directory; waiting for it to stop`, {
    stateDir: dir,
    timeoutSeconds: timeoutMs / 1000,
  });
  let said = start;
  for (;;) {
    const now = Date.now();
    if (now - start >= timeoutMs) {
      throw new Error(
        `${first.holder} is using the state directory ${dir} and did not stop within ${timeoutMs / 1000} s: ` +
          'stop it first, or give this agent a --state-dir and --run-dir of its own',
      );
    }
    if (now - said >= (o.progressMs ?? 5000)) {
      said = now;
      o.log.info(`still waiting for ${first.holder} to stop`, {
        stateDir: dir,
        waitedSeconds: Math.round((now - start) / 1000),
      });
    }
    await sleep(Math.min(o.pollMs ?? 200, Math.max(1, timeoutMs - (now - start))));
    const next = tryLockMaking(dir);
    if ('release' in next) {
      o.log.info('the other agent stopped; this one takes over the state directory', {
        stateDir: dir,
        waitedSeconds: Math.round((Date.now() - start) / 1000),
      });
      return next;
    }
    first = next;
  }
}

/** For `netoken detach`: the lock when the directory exists and no agent holds it. */
export function lockForDetach(dir: string): StateLock | null {
  const r = tryLockStateDir(dir);
  if (r === null || 'release' in r) return r;
  throw new Error(
    `${r.holder} is running with the state directory ${dir}: stop it first (detach would remove the hooks it keeps)`,
  );
}
