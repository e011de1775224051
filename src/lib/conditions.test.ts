import { test } from 'node:test';
import assert from 'node:assert/strict';
import { findCondition, setCondition } from './conditions.js';

test('setCondition keeps the transition time unless the status changes', () => {
  const t0 = new Date('2026-01-01T00:00:00Z');
  const t1 = new Date('2026-01-01T00:05:00Z');
  let c = setCondition([], { type: 'Ready', status: 'False', reason: 'Applying', message: 'a' }, t0);
  c = setCondition(c, { type: 'Degraded', status: 'False', reason: 'AsExpected', message: '' }, t0);
  c = setCondition(c, { type: 'Ready', status: 'False', reason: 'Applying', message: 'b' }, t1);
  assert.equal(findCondition(c, 'Ready')?.lastTransitionTime, '2026-01-01T00:00:00Z');
  assert.equal(findCondition(c, 'Ready')?.message, 'b');
  c = setCondition(c, { type: 'Ready', status: 'True', reason: 'Applied', message: '' }, t1);
  assert.equal(findCondition(c, 'Ready')?.lastTransitionTime, '2026-01-01T00:05:00Z');
  assert.equal(c.length, 2);
  assert.equal(findCondition(c, 'Missing'), undefined);
});
