import { test } from 'node:test';
import assert from 'node:assert/strict';
import { findCondition } from '../lib/conditions.js';
import { MAX_FAILED_NODES, type NodeStateLike, aggregateStatus, currentStatus, stableJson } from './status.js';

const t0 = new Date('2026-03-01T10:00:00Z');
const t1 = new Date('2026-03-01T10:05:00Z');

function node(name: string, labels: Record<string, string> = {}): { metadata: { name: string; labels: Record<string, string> } } {
  return { metadata: { name, labels } };
}

function state(name: string, policies: NonNullable<NonNullable<NodeStateLike['status']>['policies']>): NodeStateLike {
  return { metadata: { name }, status: { policies } };
}

const edge = { matchLabels: { role: 'edge' } };

test('two selected nodes, one ready and one failing: Ready False, Degraded True, the failing node listed', () => {
  const s = aggregateStatus({
    name: 'web',
    generation: 3,
    selector: edge,
    nodes: [node('n1', { role: 'edge' }), node('n2', { role: 'edge' }), node('n3', { role: 'db' })],
    nodeStates: [
      state('n1', [{ name: 'web', generation: 3, errors: [] }]),
      state('n2', [{ name: 'web', generation: 3, errors: [{ reason: 'InterfaceNotFound', message: 'eth9: no such interface' }] }]),
      state('n3', [{ name: 'web', generation: 3 }]),
    ],
    now: t0,
  });
  assert.deepEqual(s.nodes, { selected: 2, ready: 1, failed: 1 }, 'n3 is not selected');
  assert.equal(s.observedGeneration, 3);
  assert.deepEqual(s.failedNodes, [{ node: 'n2', reason: 'InterfaceNotFound', message: 'eth9: no such interface' }]);
  const ready = findCondition(s.conditions, 'Ready');
  const degraded = findCondition(s.conditions, 'Degraded');
  assert.equal(ready?.status, 'False');
  assert.equal(ready?.reason, 'NodesFailing');
  assert.match(ready?.message ?? '', /1 of 2 selected nodes failed to apply the policy: n2 \(InterfaceNotFound\)/);
  assert.equal(degraded?.status, 'True');
  assert.equal(degraded?.reason, 'NodesFailing');
  assert.equal(ready?.observedGeneration, 3);
});

test('every selected node at the current generation: Ready True AllNodesReady; transition time kept while unchanged', () => {
  const input = {
    name: 'web',
    generation: 2,
    selector: {},
    nodes: [node('a'), node('b')],
    nodeStates: [state('a', [{ name: 'web', generation: 2 }]), state('b', [{ name: 'web', generation: 2, errors: [] }])],
  };
  const s = aggregateStatus({ ...input, now: t0 });
  assert.deepEqual(s.nodes, { selected: 2, ready: 2, failed: 0 });
  assert.equal(findCondition(s.conditions, 'Ready')?.status, 'True');
  assert.equal(findCondition(s.conditions, 'Ready')?.reason, 'AllNodesReady');
  assert.equal(findCondition(s.conditions, 'Degraded')?.status, 'False');
  assert.deepEqual(s.failedNodes, []);
  const again = aggregateStatus({ ...input, previous: s.conditions, now: t1 });
  assert.equal(stableJson(again), stableJson(s), 'the same input gives the same status (no needless write)');
});

test('a node on an older generation, or without a report, is pending: Ready False NodesPending, not Degraded', () => {
  const s = aggregateStatus({
    name: 'web',
    generation: 5,
    selector: {},
    nodes: [node('a'), node('b'), node('c')],
    nodeStates: [state('a', [{ name: 'web', generation: 5 }]), state('b', [{ name: 'web', generation: 4 }])],
    now: t0,
  });
  assert.deepEqual(s.nodes, { selected: 3, ready: 1, failed: 0 });
  const ready = findCondition(s.conditions, 'Ready');
  assert.equal(ready?.reason, 'NodesPending');
  assert.match(ready?.message ?? '', /1 of 3 selected nodes applied generation 5; waiting for b, c/);
  assert.equal(findCondition(s.conditions, 'Degraded')?.status, 'False');
});

test('a selector matching no node: Ready False NoNodesSelected', () => {
  const s = aggregateStatus({ name: 'web', generation: 1, selector: edge, nodes: [node('a')], nodeStates: [], now: t0 });
  assert.deepEqual(s.nodes, { selected: 0, ready: 0, failed: 0 });
  assert.equal(findCondition(s.conditions, 'Ready')?.reason, 'NoNodesSelected');
  assert.equal(findCondition(s.conditions, 'Degraded')?.status, 'False');
});

test('a policy problem (bad Secret) wins over node counts and sets Degraded with its reason', () => {
  const s = aggregateStatus({
    name: 'web',
    generation: 1,
    selector: {},
    nodes: [node('a')],
    nodeStates: [state('a', [{ name: 'web', generation: 1 }])],
    problem: { reason: 'SecretInvalid', message: 'current holds 5 bytes; a Static token needs exactly 8', degraded: true },
    now: t0,
  });
  assert.equal(findCondition(s.conditions, 'Ready')?.reason, 'SecretInvalid');
  assert.equal(findCondition(s.conditions, 'Degraded')?.status, 'True');
  assert.equal(findCondition(s.conditions, 'Degraded')?.reason, 'SecretInvalid');
  assert.deepEqual(s.nodes, { selected: 1, ready: 1, failed: 0 }, 'counts still describe the nodes');
});

test('an interface that failed to attach counts as a failure even without an error entry', () => {
  const s = aggregateStatus({
    name: 'web',
    generation: 1,
    selector: {},
    nodes: [node('a')],
    nodeStates: [state('a', [{ name: 'web', generation: 1, interfaces: [{ name: 'eth0', direction: 'Egress', state: 'Failed', reason: 'AttachRefused' }] }])],
    now: t0,
  });
  assert.deepEqual(s.failedNodes, [{ node: 'a', reason: 'AttachRefused', message: 'eth0 (Egress): not attached' }]);
});

test(`failedNodes is sorted and capped at ${MAX_FAILED_NODES}; the count is not`, () => {
  const names = Array.from({ length: 25 }, (_, i) => `node-${String(i).padStart(2, '0')}`).reverse();
  const s = aggregateStatus({
    name: 'web',
    generation: 1,
    selector: {},
    nodes: names.map((n) => node(n)),
    nodeStates: names.map((n) => state(n, [{ name: 'web', generation: 1, errors: [{ reason: 'ProgramRejected', message: 'verifier said no' }] }])),
    now: t0,
  });
  assert.equal(s.nodes.failed, 25);
  assert.equal(s.failedNodes.length, MAX_FAILED_NODES);
  assert.deepEqual(s.failedNodes.map((f) => f.node), names.slice().sort().slice(0, MAX_FAILED_NODES));
  assert.match(findCondition(s.conditions, 'Ready')?.message ?? '', /node-00 \(ProgramRejected\), node-01 \(ProgramRejected\), node-02 \(ProgramRejected\) and 22 more/);
});

test('currentStatus picks the owned fields; stableJson ignores key order', () => {
  const cur = currentStatus({ nodes: { ready: 1, selected: 2, failed: 0 }, observedGeneration: 1, other: true });
  assert.deepEqual(Object.keys(cur).sort(), ['nodes', 'observedGeneration']);
  assert.equal(stableJson({ b: 1, a: [{ y: 1, x: 2 }] }), stableJson({ a: [{ x: 2, y: 1 }], b: 1 }));
});
