import { test } from 'node:test';
import assert from 'node:assert/strict';
import { waitUntil } from './wait.js';

test('waitUntil returns the first value the probe gives, sync or async', async () => {
  let calls = 0;
  const got = await waitUntil('the third call', 5000, () => (++calls === 3 ? { calls } : undefined), { everyMs: 1 });
  assert.deepEqual(got, { calls: 3 });
  assert.equal(await waitUntil('a value', 5000, async () => 0), 0, 'a falsy value other than undefined ends the wait');
});

test('waitUntil times out naming what it waited for and what the caller adds', async () => {
  let probes = 0;
  await assert.rejects(
    waitUntil(
      'the moon',
      30,
      () => {
        probes++;
        return undefined;
      },
      { everyMs: 5, context: () => `last seen: ${probes} probes` },
    ),
    (err: Error) => /^timed out after 30 ms waiting for the moon\nlast seen: \d+ probes$/.test(err.message),
  );
  assert.ok(probes >= 2, `probed ${probes} times before giving up`);
});

test('an error the probe throws ends the wait at once', async () => {
  let probes = 0;
  await assert.rejects(
    waitUntil('anything', 5000, () => {
      probes++;
      throw new Error('the agent exited');
    }),
    /the agent exited/,
  );
  assert.equal(probes, 1);
});
