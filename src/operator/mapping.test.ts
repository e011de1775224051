import { test } from 'node:test';
import assert from 'node:assert/strict';
import { keyId } from './keys.js';
import {
  type PolicyLookup, type PolicyRef, nodeStatesForNode, nodeStatesForNodeState, policiesForNode, policiesForNodeState, policiesForPolicy, policiesForSecret,
} from './mapping.js';
import type { NodeStateLike } from './status.js';

function policy(name: string, secret: string, rv = '1'): PolicyRef {
  return { metadata: { name, resourceVersion: rv }, spec: { token: { secretRef: { name: secret } } } };
}

/** A lookup over a fixed set of policies. */
function lookupOf(policies: PolicyRef[]): PolicyLookup {
  return {
    policiesUsingSecret: (s) => policies.filter((p) => p.spec?.token?.secretRef?.name === s).map((p) => p.metadata?.name ?? ''),
    allPolicies: () => policies.map((p) => p.metadata?.name ?? ''),
  };
}

const ids = (keys: { kind: 'policy' | 'nodestate'; name: string }[]): string[] => keys.map(keyId).sort();

test('policiesForPolicy: the policy and the policies sharing its Secret, before and after the change', () => {
  const lookup = lookupOf([policy('a', 'k1'), policy('b', 'k1'), policy('c', 'k2')]);
  assert.deepEqual(ids(policiesForPolicy(undefined, policy('a', 'k1'), lookup)), ['policy/a', 'policy/b'], 'added: a and b, which shares k1');
  assert.deepEqual(
    ids(policiesForPolicy(policy('c', 'k2', '1'), policy('c', 'k1', '2'), lookup)),
    ['policy/a', 'policy/b', 'policy/c'],
    'c moved from k2 to k1: itself, the holders of k1, and of k2 (only c, in this cache)',
  );
  assert.deepEqual(ids(policiesForPolicy(policy('gone', 'k1'), undefined, lookup)), ['policy/a', 'policy/b'], 'a deleted policy is not reconciled itself, its Secret-mates are');
  assert.deepEqual(policiesForPolicy(policy('a', 'k1', '5'), policy('a', 'k1', '5'), lookup), [], 'the same resourceVersion is no change');
});

test('policiesForSecret: the policies that name the Secret, on every change', () => {
  const lookup = lookupOf([policy('a', 'k1'), policy('b', 'k1'), policy('c', 'k2')]);
  const secret = (rv: string) => ({ metadata: { name: 'k1', namespace: 'ns', resourceVersion: rv } });
  assert.deepEqual(ids(policiesForSecret(undefined, secret('1'), lookup)), ['policy/a', 'policy/b']);
  assert.deepEqual(ids(policiesForSecret(secret('1'), secret('2'), lookup)), ['policy/a', 'policy/b']);
  assert.deepEqual(ids(policiesForSecret(secret('2'), undefined, lookup)), ['policy/a', 'policy/b']);
  assert.deepEqual(policiesForSecret(undefined, { metadata: { name: 'unrelated', resourceVersion: '1' } }, lookup), []);
});

test('policiesForNode: a node joining, leaving or relabelled touches every policy; other node changes none', () => {
  const lookup = lookupOf([policy('a', 'k1'), policy('b', 'k2')]);
  const node = (labels: Record<string, string>, rv: string) => ({ metadata: { name: 'n1', labels, resourceVersion: rv } });
  assert.deepEqual(ids(policiesForNode(undefined, node({ role: 'edge' }, '1'), lookup)), ['policy/a', 'policy/b']);
  assert.deepEqual(ids(policiesForNode(node({ role: 'edge' }, '1'), node({ role: 'db' }, '2'), lookup)), ['policy/a', 'policy/b']);
  assert.deepEqual(ids(policiesForNode(node({ role: 'edge' }, '2'), undefined, lookup)), ['policy/a', 'policy/b']);
  assert.deepEqual(policiesForNode(node({ role: 'edge', z: '1' }, '1'), node({ z: '1', role: 'edge' }, '2'), lookup), [], 'a heartbeat: same labels');
});

test('nodeStatesForNode: a Node that left takes its TokenNodeState with it', () => {
  const node = { metadata: { name: 'n1', resourceVersion: '1' } };
  assert.deepEqual(ids(nodeStatesForNode(node, undefined)), ['nodestate/n1']);
  assert.deepEqual(nodeStatesForNode(undefined, node), []);
  assert.deepEqual(nodeStatesForNode(node, { metadata: { name: 'n1', resourceVersion: '2' } }), []);
});

test('policiesForNodeState: the policies a report lists now or listed before', () => {
  const report = (rv: string, ...policies: string[]): NodeStateLike & { metadata: { resourceVersion: string } } => ({
    metadata: { name: 'n1', resourceVersion: rv },
    status: { policies: policies.map((name) => ({ name, generation: 1 })) },
  });
  assert.deepEqual(ids(policiesForNodeState(undefined, report('1', 'a', 'b'))), ['policy/a', 'policy/b']);
  assert.deepEqual(ids(policiesForNodeState(report('1', 'a', 'b'), report('2', 'b', 'c'))), ['policy/a', 'policy/b', 'policy/c'], 'a left the report, c joined');
  assert.deepEqual(ids(policiesForNodeState(report('2', 'b'), undefined)), ['policy/b'], 'a deleted report: what it listed');
  assert.deepEqual(policiesForNodeState(report('3', 'a'), report('3', 'a')), [], 'the same resourceVersion is no change');
});

test('nodeStatesForNodeState: a report whose Node does not exist is itself to be removed', () => {
  const exists = (n: string): boolean => n === 'n1';
  assert.deepEqual(nodeStatesForNodeState({ metadata: { name: 'n1' } }, exists), []);
  assert.deepEqual(ids(nodeStatesForNodeState({ metadata: { name: 'ghost' } }, exists)), ['nodestate/ghost']);
  assert.deepEqual(nodeStatesForNodeState(undefined, exists), []);
});
