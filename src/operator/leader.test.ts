import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultIdentity, mayAcquire } from './leader.js';

const rec = (holder: string, leaseDurationSeconds = 15) => ({
  holder,
  leaseDurationSeconds,
  renewTime: '2026-03-01T12:00:00.000000Z',
  transitions: 0,
});

test('a free Lease, or our own, can be taken at once', () => {
  assert.equal(mayAcquire(undefined, 'me', 0, 1), true);
  assert.equal(mayAcquire(rec(''), 'me', 1000, 1001), true, 'released Lease (empty holder)');
  assert.equal(mayAcquire(rec('me'), 'me', 1000, 1001), true);
});

test("another holder's Lease is taken only a full lease duration after it was last seen to change", () => {
  const seen = 100_000;
  assert.equal(mayAcquire(rec('other'), 'me', seen, seen + 14_999), false);
  assert.equal(mayAcquire(rec('other'), 'me', seen, seen + 15_000), true);
  assert.equal(mayAcquire(rec('other', 60), 'me', seen, seen + 30_000), false, "the holder's own duration counts");
});

test('identity is the pod name in a cluster, else host and pid', () => {
  assert.equal(defaultIdentity({ POD_NAME: 'netoken-operator-7d9f-abc' }), 'netoken-operator-7d9f-abc');
  assert.match(defaultIdentity({}), new RegExp(`_${process.pid}$`));
});
