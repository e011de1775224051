import { test } from 'node:test';
import assert from 'node:assert/strict';
import v8 from 'node:v8';
import { DAEMON_MALLOC_ARENA_MAX, DAEMON_NODE_OPTIONS, MemorySettler, daemonEnv } from './memory.js';
import { sleep, waitUntil } from './wait.js';

const live = (): number => v8.getHeapStatistics().used_heap_size;
const MiB = 1048576;

/** About `mib` MiB of small objects, as a burst of watch events or reconciles leaves them. */
function burst(mib: number): object[] {
  const out: object[] = [];
  for (let i = 0; i < (mib * MiB) / 64; i++) out.push({ name: `policy-${i}`, generation: i, ready: true });
  return out;
}

test('a settle frees what a burst left behind and hands the C heap back', () => {
  let released = 0;
  const s = new MemorySettler({ release: () => released++, checkMs: 60_000 });
  try {
    let garbage: object[] | null = burst(40);
    const before = live();
    garbage = null;
    s.settle();
    assert.equal(garbage, null);
    const after = live();
    assert.ok(before - after > 20 * MiB, `the live heap went from ${before / MiB} MiB to ${after / MiB} MiB`);
    assert.equal(released, 1, 'release ran once, after the collection');
    assert.equal(s.settles, 1);
  } finally {
    s.close();
  }
});

test('touches during a burst settle once, quietMs after the last', async () => {
  const s = new MemorySettler({ quietMs: 150, checkMs: 60_000 });
  try {
    for (let i = 0; i < 5; i++) {
      s.touch();
      await sleep(50);
    }
    assert.equal(s.settles, 0, 'no settle while work keeps coming');
    await waitUntil('the settle after the burst', 5000, () => (s.settles === 1 ? true : undefined), { everyMs: 10 });
    await sleep(400);
    assert.equal(s.settles, 1, 'one settle per burst, none while idle');
  } finally {
    s.close();
  }
});

test('a burst that does not end settles when the live heap has grown by growthMiB', async () => {
  const s = new MemorySettler({ quietMs: 60_000, checkMs: 50, growthMiB: 8 });
  try {
    await sleep(120);
    assert.equal(s.settles, 0, 'no settle without growth');
    const kept = burst(24);
    await waitUntil('a settle for the growth', 5000, () => (s.settles >= 1 ? true : undefined), { everyMs: 10 });
    const n = s.settles;
    await sleep(300);
    assert.equal(s.settles, n, 'what is still live is the new baseline: no settle after settle');
    assert.ok(kept.length > 0);
  } finally {
    s.close();
  }
});

test('a settle for growth during a burst leaves the settle after the burst due', async () => {
  const s = new MemorySettler({ quietMs: 1500, checkMs: 50, growthMiB: 8 });
  try {
    s.touch();
    const kept = burst(24);
    await waitUntil('a settle for the growth', 5000, () => (s.settles >= 1 ? true : undefined), { everyMs: 10 });
    const n = s.settles;
    await waitUntil('the settle after the burst', 5000, () => (s.settles > n ? true : undefined), { everyMs: 10 });
    assert.ok(kept.length > 0);
  } finally {
    s.close();
  }
});

test('the settle after a burst collects and releases once more a second later', async () => {
  let released = 0;
  const s = new MemorySettler({ quietMs: 20, checkMs: 60_000, release: () => released++ });
  try {
    s.touch();
    await waitUntil('the first release', 2000, () => (released === 1 ? true : undefined), { everyMs: 5 });
    await waitUntil('the second release', 3000, () => (released === 2 ? true : undefined), { everyMs: 10 });
    await sleep(1500);
    assert.equal(released, 2, 'two per burst, no more');
    assert.equal(s.settles, 1);
  } finally {
    s.close();
  }
});

test('a closed settler does nothing more', async () => {
  const s = new MemorySettler({ quietMs: 20, checkMs: 60_000 });
  s.touch();
  s.close();
  await sleep(100);
  assert.equal(s.settles, 0);
});

test('daemonEnv adds the daemon options to NODE_OPTIONS and keeps the rest', () => {
  assert.equal(daemonEnv({ PATH: '/bin' }).NODE_OPTIONS, DAEMON_NODE_OPTIONS);
  const env = daemonEnv({ PATH: '/bin', NODE_OPTIONS: '--enable-source-maps' });
  assert.equal(env.NODE_OPTIONS, `--enable-source-maps ${DAEMON_NODE_OPTIONS}`);
  assert.equal(env.PATH, '/bin');
});

test('daemonEnv sets one malloc arena unless the caller chose a number', () => {
  assert.equal(daemonEnv({ PATH: '/bin' }).MALLOC_ARENA_MAX, DAEMON_MALLOC_ARENA_MAX);
  assert.equal(daemonEnv({ MALLOC_ARENA_MAX: '4' }).MALLOC_ARENA_MAX, '4');
});
