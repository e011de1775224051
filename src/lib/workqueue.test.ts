import { test } from 'node:test';
import assert from 'node:assert/strict';
import { silentLogger } from './log.js';
import { sleep, waitUntil } from './wait.js';
import { KeyedQueue, type ReconcileFn } from './workqueue.js';

/** A reconcile that records start/end of each run and waits `ms` (or what `gate` says). */
function recorder(ms = 5): { log: string[]; fn: ReconcileFn; running: () => number; maxParallelPerKey: Map<string, number> } {
  const log: string[] = [];
  const active = new Map<string, number>();
  const maxParallelPerKey = new Map<string, number>();
  let running = 0;
  const fn: ReconcileFn = async (key) => {
    running++;
    active.set(key, (active.get(key) ?? 0) + 1);
    maxParallelPerKey.set(key, Math.max(maxParallelPerKey.get(key) ?? 0, active.get(key) ?? 0));
    log.push(`start ${key}`);
    await sleep(ms);
    log.push(`end ${key}`);
    active.set(key, (active.get(key) ?? 1) - 1);
    running--;
  };
  return { log, fn, running: () => running, maxParallelPerKey };
}

test('keys run first in, first out, and a waiting key enqueued again runs once', async () => {
  const r = recorder(1);
  const q = new KeyedQueue({ reconcile: r.fn, log: silentLogger(), concurrency: 1 });
  for (const k of ['a', 'b', 'a', 'c', 'b', 'a']) q.enqueue(k);
  q.resume();
  await q.idle();
  const starts = r.log.filter((l) => l.startsWith('start')).map((l) => l.slice(6));
  assert.deepEqual(starts, ['a', 'b', 'c'], `run order: got ${starts.join(',')}, want a,b,c`);
});

test('one reconcile at a time per key; a key enqueued while running runs once more afterwards', async () => {
  const r = recorder(20);
  const q = new KeyedQueue({ reconcile: r.fn, log: silentLogger(), concurrency: 4 });
  q.resume();
  q.enqueue('a');
  await sleep(5);
  // a is running now: these three coalesce into one more run after it
  q.enqueue('a');
  q.enqueue('a');
  q.enqueue('a');
  q.enqueue('b');
  await q.idle();
  const runsOfA = r.log.filter((l) => l === 'start a').length;
  assert.equal(runsOfA, 2, `runs of a: got ${runsOfA}, want 2 (the running one and one coalesced rerun)`);
  assert.equal(r.maxParallelPerKey.get('a'), 1, 'a never ran twice at once');
  const aRuns = r.log.filter((l) => l.endsWith(' a'));
  assert.deepEqual(aRuns, ['start a', 'end a', 'start a', 'end a'], 'the rerun starts after the first run ended');
});

test('different keys run in parallel up to the concurrency limit', async () => {
  let running = 0;
  let peak = 0;
  const q = new KeyedQueue({
    reconcile: async () => {
      running++;
      peak = Math.max(peak, running);
      await sleep(20);
      running--;
    },
    log: silentLogger(),
    concurrency: 3,
  });
  for (let i = 0; i < 10; i++) q.enqueue(`k${i}`);
  q.resume();
  await q.idle();
  assert.equal(peak, 3, `peak parallel reconciles: got ${peak}, want 3`);
});

test('a paused queue runs nothing but keeps the keys for when it resumes', async () => {
  const r = recorder(1);
  const q = new KeyedQueue({ reconcile: r.fn, log: silentLogger() });
  q.enqueue('a');
  q.enqueue('b');
  await sleep(20);
  assert.equal(r.log.length, 0, `nothing runs while paused, got ${r.log.join(', ')}`);
  assert.equal(q.depth, 2);
  q.resume();
  await q.idle();
  assert.equal(r.log.filter((l) => l.startsWith('start')).length, 2);
});

test('a failing key is retried with a growing backoff; success resets it', async () => {
  const times: number[] = [];
  let calls = 0;
  const done: boolean[] = [];
  const q = new KeyedQueue({
    reconcile: async () => {
      times.push(Date.now());
      calls++;
      if (calls < 3) throw new Error('not yet');
    },
    log: silentLogger(),
    baseBackoffMs: 30,
    onDone: (_k, _s, outcome) => done.push(outcome === 'success'),
  });
  q.resume();
  q.enqueue('x');
  const deadline = Date.now() + 2000;
  while (calls < 3 && Date.now() < deadline) await sleep(5);
  assert.equal(calls, 3, 'two failures, then a success');
  assert.deepEqual(done, [false, false, true]);
  const gap1 = (times[1] ?? 0) - (times[0] ?? 0);
  const gap2 = (times[2] ?? 0) - (times[1] ?? 0);
  assert.ok(gap1 >= 25, `first retry after ~30 ms, got ${gap1}`);
  assert.ok(gap2 >= 55, `second retry after ~60 ms, got ${gap2}`);
});

test('requeueAfterMs runs the key again later; the earliest request wins', async () => {
  const runs: number[] = [];
  const start = Date.now();
  const q = new KeyedQueue({
    reconcile: async () => {
      runs.push(Date.now() - start);
      return runs.length === 1 ? { requeueAfterMs: 60 } : undefined;
    },
    log: silentLogger(),
  });
  q.resume();
  q.enqueue('x');
  q.enqueueAfter('y', 10_000);
  q.enqueueAfter('y', 30);
  const deadline = Date.now() + 2000;
  while (runs.length < 3 && Date.now() < deadline) await sleep(5);
  assert.equal(runs.length, 3, `x twice and y once, got ${runs.length} runs`);
  assert.ok((runs[2] ?? 0) >= 55, `x's second run came after its requeue delay, at ${runs[2]} ms`);
  await q.close();
});

test('the last successful run decides the requeue: a later run that asks for none drops an earlier request', async () => {
  const runs: string[] = [];
  const start = Date.now();
  const q = new KeyedQueue({
    reconcile: async (k) => {
      runs.push(`${k}@${Date.now() - start}`);
      const n = runs.filter((r) => r.startsWith(`${k}@`)).length;
      // x: its first run asks for 600 ms, its second (an event 20 ms in) for nothing.
      // y: its first run asks for 300 ms, its second (an event 20 ms in) for 800 ms.
      if (k === 'x') return n === 1 ? { requeueAfterMs: 600 } : undefined;
      return n === 1 ? { requeueAfterMs: 300 } : n === 2 ? { requeueAfterMs: 800 } : undefined;
    },
    log: silentLogger(),
  });
  q.resume();
  q.enqueue('x');
  q.enqueue('y');
  await sleep(20);
  q.enqueue('x');
  q.enqueue('y');
  await sleep(1300);
  const of = (k: string): number[] => runs.filter((r) => r.startsWith(`${k}@`)).map((r) => Number(r.split('@')[1]));
  assert.equal(of('x').length, 2, `x ran for the two events only: ${runs.join(' ')}`);
  assert.equal(of('y').length, 3, `y ran for the two events and the last requeue: ${runs.join(' ')}`);
  assert.ok((of('y')[2] ?? 0) >= 800, `y's requeue is the later one its last run asked for: ${runs.join(' ')}`);
  await q.close();
});

test('typed keys: equal keys (by keyId) coalesce, and reconcile gets the key as a value', async () => {
  const seen: { kind: string; name: string }[] = [];
  const q = new KeyedQueue<{ kind: string; name: string }>({
    reconcile: async (k) => {
      seen.push(k);
    },
    keyId: (k) => `${k.kind}/${k.name}`,
    log: silentLogger(),
    concurrency: 1,
  });
  q.enqueue({ kind: 'policy', name: 'web' });
  q.enqueue({ kind: 'nodestate', name: 'web' });
  q.enqueue({ kind: 'policy', name: 'web' });
  assert.equal(q.depth, 2, 'policy/web once, nodestate/web once');
  q.resume();
  await q.idle();
  assert.deepEqual(seen, [
    { kind: 'policy', name: 'web' },
    { kind: 'nodestate', name: 'web' },
  ]);
});

test('batching delay: changes to a key within the delay cost one reconcile; keys run in arrival order', async () => {
  const r = recorder(1);
  // A delay far above the 40 ms the enqueues take, so a late timer on a busy machine changes nothing.
  const q = new KeyedQueue({ reconcile: r.fn, log: silentLogger(), concurrency: 1, batchDelayMs: 400 });
  q.resume();
  const t0 = Date.now();
  q.enqueue('a');
  await sleep(20);
  q.enqueue('b');
  q.enqueue('a');
  await sleep(20);
  q.enqueue('a');
  assert.equal(r.log.length, 0, 'nothing runs within the batching delay');
  await q.idle();
  const starts = r.log.filter((l) => l.startsWith('start')).map((l) => l.slice(6));
  assert.deepEqual(starts, ['a', 'b'], `one run each, in arrival order: got ${starts.join(',')}`);
  assert.ok(Date.now() - t0 >= 415, 'b waited its own delay too');
});

/** A reconcile of `ms` that records when each run started and ended. */
function timedRuns(ms: number): { runs: { start: number; end: number }[]; fn: ReconcileFn } {
  const runs: { start: number; end: number }[] = [];
  const fn: ReconcileFn = async () => {
    const run = { start: Date.now(), end: 0 };
    runs.push(run);
    await sleep(ms);
    run.end = Date.now();
  };
  return { runs, fn };
}

test('burstDelayMs: once a run covered a burst of changes, changes during it or just after wait the burst delay; a change on its own waits the batching delay', async () => {
  const r = timedRuns(30);
  const q = new KeyedQueue({ reconcile: r.fn, log: silentLogger(), concurrency: 1, batchDelayMs: 20, burstDelayMs: 500 });
  q.resume();
  const runEnded = (n: number): Promise<true> =>
    waitUntil(`run ${n} to end`, 5000, () => (r.runs[n - 1]?.end ? true : undefined), { everyMs: 2 });

  // One change, and one more right after its run: the batching delay each time.
  q.enqueue('node');
  await runEnded(1);
  q.enqueue('node');
  await q.idle();
  assert.equal(r.runs.length, 2);
  const single = r.runs[1]!.start - r.runs[0]!.end;
  assert.ok(single < 400, `a change on its own waits the batching delay (${single} ms)`);

  // A burst: five changes in one batch, one more during the run and two after it: one more run, the burst delay after the first.
  r.runs.length = 0;
  for (let i = 0; i < 5; i++) q.enqueue('node');
  await waitUntil('the burst to start running', 5000, () => (r.runs.length === 1 ? true : undefined), { everyMs: 2 });
  q.enqueue('node');
  await runEnded(1);
  q.enqueue('node');
  q.enqueue('node');
  await q.idle();
  assert.equal(r.runs.length, 2, 'the changes during and after the burst run cost one more run');
  const gap = r.runs[1]!.start - r.runs[0]!.end;
  assert.ok(gap >= 490, `in a burst the next run waits the burst delay: ${gap} ms`);

  // That run covered three changes (under four): the burst is over.
  r.runs.length = 0;
  const t0 = Date.now();
  q.enqueue('node');
  await q.idle();
  const after = r.runs[0]!.start - t0;
  assert.ok(after < 400, `after the burst a change waits the batching delay again (${after} ms)`);

  // enqueueNow during a burst run: again at once.
  for (let i = 0; i < 5; i++) q.enqueue('node');
  await q.idle();
  const now = await rerunGap(q, r, () => q.enqueueNow('node'));
  assert.ok(now < 400, `enqueueNow: at once, even in a burst (${now} ms)`);
});

test('onBurstEnd: once per burst, a burst delay after its last run; never for a change on its own', async () => {
  const ends: number[] = [];
  const inBurst: boolean[] = [];
  const r = timedRuns(20);
  const q: KeyedQueue = new KeyedQueue({
    reconcile: async (k) => {
      inBurst.push(q.bursting(k));
      await r.fn(k);
    },
    log: silentLogger(),
    concurrency: 1,
    batchDelayMs: 20,
    burstDelayMs: 300,
    onBurstEnd: () => ends.push(Date.now()),
  });
  q.resume();

  // A change on its own: not a burst, and no burst end.
  q.enqueue('node');
  await q.idle();
  await sleep(600);
  assert.deepEqual(inBurst, [false]);
  assert.equal(ends.length, 0, 'a change on its own is no burst');

  // A burst in three runs (five changes, more during each run): one end, after the last run.
  for (let i = 0; i < 5; i++) q.enqueue('node');
  for (let n = 1; n <= 2; n++) {
    await waitUntil(`run ${n} of the burst`, 5000, () => (r.runs.length === 1 + n ? true : undefined), { everyMs: 2 });
    for (let i = 0; i < 2; i++) q.enqueue('node');
  }
  await q.idle();
  assert.equal(r.runs.length, 4, 'the burst cost three runs');
  assert.deepEqual(inBurst.slice(1), [true, true, true], 'each run of the burst knows it is one');
  assert.equal(ends.length, 0, 'no end before a burst delay has passed without a change');
  await waitUntil('the burst end', 5000, () => (ends.length === 1 ? true : undefined), { everyMs: 5 });
  const quiet = ends[0]! - r.runs[3]!.end;
  assert.ok(quiet >= 290 && quiet < 700, `the end is reported a burst delay after the last run (${quiet} ms)`);
  await sleep(600);
  assert.equal(ends.length, 1, 'once');
  await q.close();
});

test('without burstDelayMs a key changed while it runs runs again at once', async () => {
  const r = timedRuns(30);
  const q = new KeyedQueue({ reconcile: r.fn, log: silentLogger(), concurrency: 1, batchDelayMs: 500 });
  q.resume();
  const gap = await rerunGap(q, r, () => q.enqueue('node'));
  assert.ok(gap < 400, `again at once: ${gap} ms`);
});

/** Runs a key, calls `during` while it runs, and returns the ms between the end of that run and the start of the next. */
async function rerunGap(q: KeyedQueue<string>, r: ReturnType<typeof timedRuns>, during: () => void): Promise<number> {
  r.runs.length = 0;
  q.enqueueNow('node');
  await sleep(10);
  during();
  await q.idle();
  assert.equal(r.runs.length, 2, 'one more run');
  return r.runs[1]!.start - r.runs[0]!.end;
}

test('enqueueNow skips the batching delay', async () => {
  const r = recorder(1);
  const q = new KeyedQueue({ reconcile: r.fn, log: silentLogger(), batchDelayMs: 10_000 });
  q.resume();
  q.enqueue('slow');
  q.enqueueNow('fast');
  await sleep(30);
  assert.deepEqual(r.log, ['start fast', 'end fast']);
  await q.close();
});

test('a conflict is no failure: the key runs again at once, then after short growing pauses, without a warning', async () => {
  const times: number[] = [];
  const outcomes: string[] = [];
  const warnings: string[] = [];
  const log = silentLogger();
  log.warn = ((m: string) => warnings.push(m)) as unknown as typeof log.warn;
  const conflict = Object.assign(new Error('conflict'), { code: 409 });
  const q = new KeyedQueue({
    reconcile: async () => {
      times.push(Date.now());
      if (times.length < 4) throw conflict;
    },
    log,
    baseBackoffMs: 5000,
    isConflict: (e) => (e as { code?: number }).code === 409,
    onDone: (_k, _s, outcome) => outcomes.push(outcome),
  });
  q.resume();
  q.enqueue('x');
  const deadline = Date.now() + 2000;
  while (times.length < 4 && Date.now() < deadline) await sleep(2);
  assert.deepEqual(outcomes, ['conflict', 'conflict', 'conflict', 'success']);
  assert.ok(
    (times[3] ?? 0) - (times[0] ?? 0) < 500,
    `three conflicts cost ${(times[3] ?? 0) - (times[0] ?? 0)} ms, not a failure's 5 s backoff`,
  );
  assert.deepEqual(warnings, [], 'no warning for a conflict');
  await q.close();
});

test('retries of all keys together stay under the retry token bucket', async () => {
  const runs = new Map<string, number>();
  const q = new KeyedQueue({
    reconcile: async (k) => {
      runs.set(k, (runs.get(k) ?? 0) + 1);
      throw new Error('down');
    },
    log: silentLogger(),
    concurrency: 10,
    baseBackoffMs: 1,
    maxBackoffMs: 1,
    retryQps: 20,
    retryBurst: 5,
  });
  q.resume();
  for (let i = 0; i < 10; i++) q.enqueue(`k${i}`);
  await sleep(300);
  await q.close();
  const total = [...runs.values()].reduce((a, b) => a + b, 0);
  // 10 first runs, 5 retries from the burst, then 20 per second: about 21 in 300 ms (not hundreds).
  assert.ok(total >= 15 && total <= 30, `runs in 300 ms: got ${total}, want about 21`);
});
