import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { recordingLogger } from '../../test/lib/log.js';
import { agentDirs, lockAgentDirs, lockForDetach, lockHolder, tryLockDir } from './lock.js';

function tempDir(): string {
  return mkdtempSync(path.join(tmpdir(), 'nt-lock-'));
}

test('a state directory locked once is refused to a second open file, and free again once let go', () => {
  const dir = tempDir();
  try {
    const a = tryLockDir(dir);
    assert.ok(a && 'release' in a, 'the first lock is taken');
    const b = tryLockDir(dir);
    assert.ok(b && !('release' in b), 'a second lock on the same directory is refused');
    assert.equal(b.holder, `another netoken agent (pid ${process.pid})`, 'the holder is named from /proc/locks');
    assert.equal(lockHolder(dir), process.pid);
    const run = path.join(dir, 'run');
    mkdirSync(run);
    assert.throws(() => lockForDetach(agentDirs(dir, run)), {
      message: `another netoken agent (pid ${process.pid}) is running with the state directory ${dir}: stop it first (detach would remove the hooks it keeps)`,
    });
    a.release();
    a.release();
    assert.equal(lockHolder(dir), undefined, 'no holder once let go');
    const c = lockForDetach(agentDirs(dir, run));
    assert.equal(lockHolder(run), process.pid, 'detach holds the run directory too');
    assert.throws(() => lockForDetach(agentDirs(path.join(dir, 'other'), run)), {
      message: `another netoken agent (pid ${process.pid}) is running with the run directory ${run}: stop it first (detach would remove the hooks it keeps)`,
    });
    c.release();
    assert.equal(lockHolder(run), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  lockForDetach(agentDirs(dir, path.join(dir, 'run'))).release();
  assert.equal(existsSync(dir), false, 'detach of directories that are gone makes none');
});

test('lockHolder reads the pid of the FLOCK on this directory from /proc/locks, and no other', () => {
  const dir = tempDir();
  try {
    const st = statSync(dir);
    const major = (st.dev >> 8) & 0xfff;
    const minor = (st.dev & 0xff) | ((st.dev >> 12) & 0xfff00);
    const id = `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${st.ino}`;
    const locks = path.join(dir, 'locks');
    writeFileSync(
      locks,
      [
        `1: POSIX  ADVISORY  WRITE 111 ${id} 0 EOF`,
        `2: FLOCK  ADVISORY  READ 222 ${id} 0 EOF`,
        `3: FLOCK  ADVISORY  WRITE 333 ${id}0 0 EOF`,
        `3: -> FLOCK  ADVISORY  WRITE 444 ${id} 0 EOF`,
        `4: FLOCK  ADVISORY  WRITE 555 ${id} 0 EOF`,
        '',
      ].join('\n'),
    );
    assert.equal(lockHolder(dir, locks), 555);
    writeFileSync(locks, `4: FLOCK  ADVISORY  WRITE 0 ${id} 0 EOF\n`);
    assert.equal(lockHolder(dir, locks), undefined, 'a holder in a pid namespace not visible from here');
    assert.equal(lockHolder(path.join(dir, 'missing'), locks), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('lockStateDir waits for the holder, saying so, and takes the lock once it is let go', async () => {
  const dir = tempDir();
  const { log, lines } = recordingLogger();
  try {
    const holder = tryLockDir(dir);
    assert.ok(holder && 'release' in holder);
    setTimeout(() => holder.release(), 400);
    const started = Date.now();
    const lock = await lockAgentDirs(agentDirs(dir, path.join(dir, 'run')), {
      log,
      timeoutMs: 10_000,
      pollMs: 20,
      progressMs: 150,
    });
    assert.ok(Date.now() - started >= 350, 'it waited for the holder');
    assert.equal(lockHolder(dir), process.pid, 'the lock is held now');
    assert.equal(lockHolder(path.join(dir, 'run')), process.pid, 'on the run directory too (made)');
    lock.release();
    const text = lines.join('\n');
    assert.ok(text.includes(`is using the state directory ${dir}; waiting for it to stop`), text);
    assert.match(text, /still waiting for another netoken agent/, 'progress while it waits');
    assert.match(text, /the other agent stopped; this one takes over its directories/);
    assert.equal(lockHolder(path.join(dir, 'run')), undefined, 'both let go');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('lockStateDir gives up after its timeout with an error that names the directory and what to do', async () => {
  const dir = tempDir();
  const { log } = recordingLogger();
  try {
    const holder = tryLockDir(dir);
    assert.ok(holder && 'release' in holder);
    try {
      await assert.rejects(lockAgentDirs(agentDirs(dir, path.join(dir, 'run')), { log, timeoutMs: 300, pollMs: 20 }), {
        message: `another netoken agent (pid ${process.pid}) is using the state directory ${dir} and did not stop within 0.3 s: stop it first, or give this agent a --state-dir and --run-dir of its own`,
      });
      assert.equal(lockHolder(dir), process.pid, 'the holder keeps its lock');
    } finally {
      holder.release();
    }
    // A timeout of 0 gives up at once.
    const again = tryLockDir(dir);
    assert.ok(again && 'release' in again);
    await assert.rejects(lockAgentDirs(agentDirs(dir, path.join(dir, 'run')), { log, timeoutMs: 0 }), /did not stop within 0 s/);
    again.release();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a state directory removed by the holder as it stops (an idle agent does) is made again and locked', async () => {
  const parent = tempDir();
  const dir = path.join(parent, 'state');
  const { log } = recordingLogger();
  try {
    mkdirSync(dir, { mode: 0o700 });
    const holder = tryLockDir(dir);
    assert.ok(holder && 'release' in holder);
    setTimeout(() => {
      rmSync(dir, { recursive: true });
      holder.release();
    }, 200);
    const lock = await lockAgentDirs([{ dir, what: 'state directory' }], { log, timeoutMs: 10_000, pollMs: 20 });
    assert.equal(statSync(dir).mode & 0o777, 0o700, 'made again, mode 0700');
    assert.equal(lockHolder(dir), process.pid, 'the lock is on the directory that is there now');
    assert.equal(tryLockDir(path.join(parent, 'never')), null, 'a directory that is not there: no lock');
    lock.release();
  } finally {
    rmSync(parent, { recursive: true, force: true });
  }
});

test('a run directory another agent holds is waited for too, and the state directory is let go meanwhile', async () => {
  const parent = tempDir();
  const state = path.join(parent, 'state');
  const run = path.join(parent, 'run');
  const { log, lines } = recordingLogger();
  try {
    mkdirSync(run);
    const holder = tryLockDir(run);
    assert.ok(holder && 'release' in holder);
    const waiting = lockAgentDirs(agentDirs(state, run), { log, timeoutMs: 10_000, pollMs: 20 });
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(lockHolder(state), undefined, 'the state directory is not held while the run directory is busy');
    holder.release();
    const lock = await waiting;
    assert.equal(lockHolder(state), process.pid);
    assert.equal(lockHolder(run), process.pid);
    lock.release();
    assert.ok(lines.join('\n').includes(`is using the run directory ${run}; waiting for it to stop`));
  } finally {
    rmSync(parent, { recursive: true, force: true });
  }
});
