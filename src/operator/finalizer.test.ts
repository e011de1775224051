import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type NodeReport, type RawNodeState, cacheNodeState } from './cache.js';
import { FINALIZER, hasFinalizer, releaseDecision } from './finalizer.js';
import { orphanedNodeStates } from './nodes.js';

const deleted = '2026-03-01T12:00:00Z';
const at = (s: string): number => Date.parse(s);
const minute = 60_000;

function state(name: string, written: string, policies: string[]): NodeReport {
  return cacheNodeState({
    metadata: { name, managedFields: [{ time: written }] },
    status: { policies: policies.map((p) => ({ name: p, generation: 1 })) },
  } as RawNodeState);
}

test('the finalizer is found by name', () => {
  assert.equal(hasFinalizer({ finalizers: ['x', FINALIZER] }), true);
  assert.equal(hasFinalizer({ finalizers: ['x'] }), false);
  assert.equal(hasFinalizer(undefined), false);
  assert.equal(FINALIZER, 'netoken.io/cleanup');
});

test('released at once when no node lists the policy', () => {
  const d = releaseDecision({
    policy: 'web',
    deletionTimestamp: deleted,
    nodeStates: [state('a', deleted, ['other'])],
    nodeNames: new Set(['a']),
    timeoutMs: 2 * minute,
    now: at(deleted) + 1000,
  });
  assert.equal(d.release, true);
});

test('held while a node lists the policy, and woken when the timeout runs out', () => {
  const d = releaseDecision({
    policy: 'web',
    deletionTimestamp: deleted,
    nodeStates: [state('a', '2026-03-01T11:00:00Z', ['web']), state('b', deleted, [])],
    nodeNames: new Set(['a', 'b']),
    timeoutMs: 2 * minute,
    now: at(deleted) + 30_000,
  });
  assert.equal(d.release, false);
  assert.deepEqual(d.waitingOn, ['a']);
  assert.equal(d.recheckAfterMs, 90_000 + 250, 'recheck just after the timeout');
});

test('after the timeout, nodes that went silent or whose Node is gone are not waited for', () => {
  const d = releaseDecision({
    policy: 'web',
    deletionTimestamp: deleted,
    nodeStates: [state('silent', '2026-03-01T11:59:00Z', ['web']), state('gone', '2026-03-01T12:01:00Z', ['web'])],
    nodeNames: new Set(['silent']),
    timeoutMs: 2 * minute,
    now: at(deleted) + 2 * minute,
  });
  assert.equal(d.release, true);
  assert.deepEqual(d.givenUp.map((g) => g.node).sort(), ['gone', 'silent']);
});

test('after the timeout, a node that still writes is waited for until it too is silent for a whole timeout', () => {
  const input = {
    policy: 'web',
    deletionTimestamp: deleted,
    nodeStates: [state('busy', '2026-03-01T12:01:30Z', ['web'])],
    nodeNames: new Set(['busy']),
    timeoutMs: 2 * minute,
  };
  const d = releaseDecision({ ...input, now: at(deleted) + 2 * minute });
  assert.equal(d.release, false);
  assert.deepEqual(d.waitingOn, ['busy']);
  assert.equal(d.recheckAfterMs, 90_000 + 250, 'recheck when busy has been silent for a timeout');
  assert.equal(releaseDecision({ ...input, now: at('2026-03-01T12:03:31Z') }).release, true);
});

test('when a report was last written: the latest of managed-fields times and countersUpdatedAt', () => {
  const s = {
    metadata: {
      name: 'a',
      creationTimestamp: '2026-01-01T00:00:00Z',
      managedFields: [{ time: '2026-02-01T00:00:00Z' }, { time: new Date('2026-02-02T00:00:00Z') }],
    },
    status: { countersUpdatedAt: '2026-01-15T00:00:00Z' },
  } as unknown as RawNodeState;
  assert.equal(cacheNodeState(s).lastWrittenMs, at('2026-02-02T00:00:00Z'));
});

test('orphaned TokenNodeStates are those without a Node of the same name', () => {
  const got = orphanedNodeStates(
    [{ metadata: { name: 'b' } }, { metadata: { name: 'a' } }, { metadata: { name: 'c' } }],
    new Set(['a']),
  );
  assert.deepEqual(got, ['b', 'c']);
});
