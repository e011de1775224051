/**
 * One agent per state and run directory. Two agents over the same pins would undo each
 * other's map writes and swap each other's programs on every reconcile, and the one that stops
 * first would leave the other's policies half applied; two over one run directory would
 * overwrite each other's policy slot ids and status. The agent holds an exclusive flock(2) on
 * its state directory (in bpffs) and on its run directory for as long as it runs: the kernel
 * lets go when the process ends, however it ends, so a killed agent never blocks the next one,
 * and the lock is seen across containers that mount the same directories (a DaemonSet pod still
 * terminating beside its replacement), where a pid file would name a pid of another pid
 * namespace.
 *
 * An agent that finds a directory locked waits for the holder to stop (a rolling update),
 * saying so, and gives up with a clear error after the lock timeout. `netoken detach` does not
 * wait: it refuses to remove hooks that a running agent keeps.
 */
import { closeSync, fstatSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import type { Logger } from '../lib/log.js';
import { sleep } from '../lib/wait.js';
import { binding } from '../native/binding.js';

export const DEFAULT_LOCK_TIMEOUT_MS = 30_000;

export interface StateLock {
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
  // st.dev as glibc's makedev() packs it: minor in bits 0-7 and 20-31, major in bits 8-19.
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

function held(fd: number): StateLock {
  let open = true;
  return {
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
export function tryLockDir(dir: string): StateLock | { holder: string } | null {
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
  if (same) return held(fd);
  closeSync(fd);
  return null;
}

/** tryLockDir, making the directory (mode 0700) when it is gone. */
function tryLockMaking(dir: string): StateLock | { holder: string } {
  for (;;) {
    const r = tryLockDir(dir);
    if (r) return r;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }
}

/** A directory an agent keeps to itself, and what it is called in messages ("state directory"). */
export interface AgentDir {
  dir: string;
  what: string;
}

/** The agent's directories: its pins, and its status and run state. */
export function agentDirs(stateDir: string, runDir: string): AgentDir[] {
  return [
    { dir: stateDir, what: 'state directory' },
    { dir: runDir, what: 'run directory' },
  ];
}

/** Locks held together: one release lets go of them all. */
function together(taken: readonly StateLock[]): StateLock {
  return {
    release() {
      for (const l of taken) l.release();
    },
  };
}

function lockAll(dirs: readonly AgentDir[]): StateLock | { holder: string; busy: AgentDir } {
  const taken: StateLock[] = [];
  for (const d of dirs) {
    const r = tryLockMaking(d.dir);
    if (!('release' in r)) {
      together(taken).release();
      return { holder: r.holder, busy: d };
    }
    taken.push(r);
  }
  return together(taken);
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

/**
 * Lock every one of the agent's directories (in the order given, made when missing), waiting
 * for another agent that holds one to stop.
 */
export async function lockAgentDirs(dirs: readonly AgentDir[], o: LockOptions): Promise<StateLock> {
  const timeoutMs = o.timeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
  const start = Date.now();
  let first = lockAll(dirs);
  if ('release' in first) return first;
  o.log.warn(`${first.holder} is using the ${first.busy.what} ${first.busy.dir}; waiting for it to stop`, {
    timeoutSeconds: timeoutMs / 1000,
  });
  let said = start;
  for (;;) {
    const now = Date.now();
    if (now - start >= timeoutMs) {
      throw new Error(
        `${first.holder} is using the ${first.busy.what} ${first.busy.dir} and did not stop within ${timeoutMs / 1000} s: ` +
          'stop it first, or give this agent a --state-dir and --run-dir of its own',
      );
    }
    if (now - said >= (o.progressMs ?? 5000)) {
      said = now;
      o.log.info(`still waiting for ${first.holder} to stop`, { waitedSeconds: Math.round((now - start) / 1000) });
    }
    await sleep(Math.min(o.pollMs ?? 200, Math.max(1, timeoutMs - (now - start))));
    const next = lockAll(dirs);
    if ('release' in next) {
      o.log.info('the other agent stopped; this one takes over its directories', {
        waitedSeconds: Math.round((Date.now() - start) / 1000),
      });
      return next;
    }
    first = next;
  }
}

/** For `netoken detach`: the lock on those of the directories that exist, when no agent holds one. */
export function lockForDetach(dirs: readonly AgentDir[]): StateLock {
  const taken: StateLock[] = [];
  for (const d of dirs) {
    const r = tryLockDir(d.dir);
    if (r === null) continue;
    if ('release' in r) {
      taken.push(r);
      continue;
    }
    together(taken).release();
    throw new Error(`${r.holder} is running with the ${d.what} ${d.dir}: stop it first (detach would remove the hooks it keeps)`);
  }
  return together(taken);
}
