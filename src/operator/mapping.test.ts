import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { CachedSecret, NodeInfo } from '../lib/cached.js';
import { selectorMatches, type LabelSelector } from '../lib/types.js';
import { type CachedPolicy, type NodeReport, type RawNodeState, cacheNodeState } from './cache.js';
import { keyId } from './keys.js';
import { type NodeStateStatus, groupedReport, reportedPolicies } from '../agent/node-state.js';
import {
  type PolicyLookup,
  nodeStatesForNode,
  nodeStatesForNodeState,
  policiesForNode,
  policiesForNodeState,
  policiesForPolicy,
  policiesForSecret,
} from './mapping.js';

function policy(
  name: string,
  secret: string,
  o: { rv?: string; generation?: number; selector?: LabelSelector; deleting?: boolean; status?: unknown } = {},
): CachedPolicy {
  return {
    metadata: {
      name,
      resourceVersion: o.rv ?? '1',
      generation: o.generation ?? 1,
      uid: `uid-${name}`,
      ...(o.deleting ? { deletionTimestamp: '2026-03-01T00:00:00Z' } : {}),
    },
    spec: { nodeSelector: o.selector ?? {}, token: { mode: 'Static', secretRef: { name: secret } } },
    status: o.status,
  };
}

/** A lookup over a fixed set of policies and nodes. */
function lookupOf(policies: CachedPolicy[], nodes: NodeInfo[] = []): PolicyLookup {
  return {
    policiesUsingSecret: (s) => policies.filter((p) => p.spec?.token?.secretRef?.name === s).map((p) => p.metadata.name),
    policiesSelecting: (labels) =>
      policies.filter((p) => selectorMatches(p.spec?.nodeSelector ?? {}, labels)).map((p) => p.metadata.name),
    nodeLabels: (n) => nodes.find((x) => x.metadata.name === n)?.metadata.labels,
    isTerminating: (n) => policies.some((p) => p.metadata.name === n && p.metadata.deletionTimestamp !== undefined),
    secretOf: (n) => policies.find((p) => p.metadata.name === n)?.spec?.token?.secretRef?.name,
  };
}

const ids = (keys: { kind: 'policy' | 'nodestate'; name: string }[]): string[] => keys.map(keyId).sort();

test('policiesForPolicy: the policy and the policies sharing its Secret, before and after the change', () => {
  const lookup = lookupOf([policy('a', 'k1'), policy('b', 'k1'), policy('c', 'k2')]);
  assert.deepEqual(
    ids(policiesForPolicy(undefined, policy('a', 'k1'), lookup)),
    ['policy/a', 'policy/b'],
    'added: a and b, which shares k1',
  );
  assert.deepEqual(
    ids(policiesForPolicy(policy('c', 'k2'), policy('c', 'k1', { rv: '2', generation: 2 }), lookup)),
    ['policy/a', 'policy/b', 'policy/c'],
    'c moved from k2 to k1: itself, the holders of k1, and of k2 (only c, in this cache)',
  );
  assert.deepEqual(
    ids(policiesForPolicy(policy('gone', 'k1'), undefined, lookup)),
    ['policy/a', 'policy/b'],
    'a deleted policy is not reconciled itself, its Secret-mates are',
  );
  assert.deepEqual(
    policiesForPolicy(policy('a', 'k1', { rv: '5' }), policy('a', 'k1', { rv: '5' }), lookup),
    [],
    'the same resourceVersion is no change',
  );
});

test("policiesForPolicy: a status write or the finalizer added (the operator's own) or a label change is filtered out; generation, deletion, the finalizer lost and other finalizers are not", () => {
  const lookup = lookupOf([policy('a', 'k1')]);
  const before = policy('a', 'k1', { rv: '1' });
  assert.deepEqual(
    policiesForPolicy(before, policy('a', 'k1', { rv: '2', status: { observedGeneration: 1 } }), lookup),
    [],
    'status only',
  );
  assert.deepEqual(
    ids(policiesForPolicy(before, policy('a', 'k1', { rv: '2', generation: 2 }), lookup)),
    ['policy/a'],
    'a spec edit',
  );
  assert.deepEqual(
    ids(policiesForPolicy(before, policy('a', 'k1', { rv: '2', deleting: true }), lookup)),
    ['policy/a'],
    'deletion began',
  );
  const withFinalizers = (rv: string, finalizers: string[]): CachedPolicy => {
    const p = policy('a', 'k1', { rv });
    p.metadata.finalizers = finalizers;
    return p;
  };
  const ours = withFinalizers('2', ['netoken.io/cleanup']);
  assert.deepEqual(policiesForPolicy(before, ours, lookup), [], "the operator's finalizer added");
  assert.deepEqual(
    ids(policiesForPolicy(ours, withFinalizers('3', []), lookup)),
    ['policy/a'],
    "the operator's finalizer removed",
  );
  assert.deepEqual(
    ids(policiesForPolicy(ours, withFinalizers('3', ['netoken.io/cleanup', 'example.com/other']), lookup)),
    ['policy/a'],
    'another finalizer added',
  );
});

test('policiesForSecret: the policies that name the Secret, when it comes, goes, or its keys change', () => {
  const lookup = lookupOf([policy('a', 'k1'), policy('b', 'k1'), policy('c', 'k2')]);
  const secret = (rv: string, current = 'AAAAAAAAAAA=', annotations: Record<string, string> = {}): CachedSecret => ({
    metadata: { name: 'k1', namespace: 'ns', resourceVersion: rv, annotations },
    type: 'Opaque',
    data: { current },
  });
  assert.deepEqual(ids(policiesForSecret(undefined, secret('1'), lookup)), ['policy/a', 'policy/b']);
  assert.deepEqual(
    ids(policiesForSecret(secret('1'), secret('2', 'BBBBBBBBBBB='), lookup)),
    ['policy/a', 'policy/b'],
    'a new key',
  );
  assert.deepEqual(
    ids(policiesForSecret(secret('1'), secret('2', 'AAAAAAAAAAA=', { 'netoken.io/rotated-at': 'x' }), lookup)),
    ['policy/a', 'policy/b'],
    'rotated-at',
  );
  assert.deepEqual(policiesForSecret(secret('1'), secret('2'), lookup), [], 'rewritten with the same keys');
  assert.deepEqual(ids(policiesForSecret(secret('2'), undefined, lookup)), ['policy/a', 'policy/b']);
  assert.deepEqual(policiesForSecret(undefined, { metadata: { name: 'unrelated', resourceVersion: '1' } }, lookup), []);
});

test('policiesForNode: the policies whose selection of the node changes; a heartbeat touches none', () => {
  const lookup = lookupOf([
    policy('edge', 'k', { selector: { matchLabels: { role: 'edge' } } }),
    policy('all', 'k'),
    policy('db', 'k', { selector: { matchLabels: { role: 'db' } } }),
  ]);
  const node = (labels: Record<string, string>, rv: string): NodeInfo => ({
    metadata: { name: 'n1', labels, resourceVersion: rv },
  });
  assert.deepEqual(ids(policiesForNode(undefined, node({ role: 'edge' }, '1'), lookup)), ['policy/all', 'policy/edge'], 'joined');
  assert.deepEqual(
    ids(policiesForNode(node({ role: 'edge' }, '1'), node({ role: 'db' }, '2'), lookup)),
    ['policy/db', 'policy/edge'],
    'relabelled: all keeps selecting it',
  );
  assert.deepEqual(ids(policiesForNode(node({ role: 'edge' }, '2'), undefined, lookup)), ['policy/all', 'policy/edge'], 'left');
  assert.deepEqual(
    policiesForNode(node({ role: 'edge', z: '1' }, '1'), node({ z: '1', role: 'edge' }, '2'), lookup),
    [],
    'a heartbeat: same labels',
  );
  assert.deepEqual(
    ids(policiesForNode(node({ role: 'edge' }, '1'), node({ role: 'edge', 'kubernetes.io/os': 'windows' }, '2'), lookup)),
    ['policy/all', 'policy/edge'],
    'its OS changed: the policies that keep selecting it name why no agent runs there',
  );
});

test('nodeStatesForNode: a Node that left takes its TokenNodeState with it', () => {
  const node: NodeInfo = { metadata: { name: 'n1', resourceVersion: '1' } };
  assert.deepEqual(ids(nodeStatesForNode(node, undefined)), ['nodestate/n1']);
  assert.deepEqual(nodeStatesForNode(undefined, node), []);
  assert.deepEqual(nodeStatesForNode(node, { metadata: { name: 'n1', resourceVersion: '2' } }), []);
});

type Entry = NonNullable<NonNullable<RawNodeState['status']>['policies']>[number];

function report(rv: string, policies: Entry[], o: { agent?: boolean; written?: string; counters?: number } = {}): NodeReport {
  return cacheNodeState({
    metadata: { name: 'n1', resourceVersion: rv, managedFields: [{ time: o.written ?? '2026-03-01T00:00:00Z' }] },
    status: {
      ...(o.agent === false ? {} : { agent: { version: '0.1.0' } }),
      policies: policies.map((p) => ({ ...p, counters: { marked: o.counters ?? 0 } })),
    },
  } as unknown as RawNodeState);
}

test('policiesForNodeState: only the policies whose entry changed; counters moving touch nothing', () => {
  const nodes: NodeInfo[] = [{ metadata: { name: 'n1', labels: { role: 'edge' } } }];
  const lookup = lookupOf(
    [policy('a', 'k'), policy('b', 'k'), policy('c', 'k'), policy('edge', 'k', { selector: { matchLabels: { role: 'edge' } } })],
    nodes,
  );
  const ab = report('1', [
    { name: 'a', generation: 1 },
    { name: 'b', generation: 1 },
  ]);
  /** The policies touched when the node's report goes from `ab` to these entries. */
  const touched = (entries: Entry[]) => ids(policiesForNodeState(ab, report('2', entries), lookup));
  assert.deepEqual(
    touched([
      { name: 'a', generation: 2 },
      { name: 'b', generation: 1 },
    ]),
    ['policy/a'],
    'a moved on',
  );
  assert.deepEqual(
    touched([
      { name: 'b', generation: 1 },
      { name: 'c', generation: 1 },
    ]),
    ['policy/a', 'policy/c'],
    'a left, c joined',
  );
  assert.deepEqual(
    touched([
      { name: 'a', generation: 1, errors: [{ reason: 'X', message: 'y' }] },
      { name: 'b', generation: 1 },
    ]),
    ['policy/a'],
    'a failed',
  );
  assert.deepEqual(
    policiesForNodeState(
      ab,
      report(
        '2',
        [
          { name: 'a', generation: 1 },
          { name: 'b', generation: 1 },
        ],
        { counters: 7, written: '2026-03-01T00:05:00Z' },
      ),
      lookup,
    ),
    [],
    'counters only',
  );
  assert.deepEqual(policiesForNodeState(report('3', []), report('3', []), lookup), [], 'the same resourceVersion is no change');
});

test('a grouped report (applied) reads as the same policies as one entry each: switching form touches nothing', () => {
  const nodes: NodeInfo[] = [{ metadata: { name: 'n1' } }];
  const lookup = lookupOf([policy('a', 'k'), policy('b', 'k'), policy('c', 'k')], nodes);
  const status = {
    agent: { version: '0.1.0' },
    policies: [
      { name: 'a', generation: 2, keys: { signs: 3, accepts: [3, 4] }, interfaces: ['eth0'] },
      { name: 'b', generation: 1, interfaces: ['eth0'] },
      { name: 'c', generation: 1, interfaces: ['eth0'], errors: [{ reason: 'KernelRefused', message: 'no' }] },
    ],
    interfaces: [],
    conditions: [],
  } as unknown as NodeStateStatus;
  const cached = (rv: string, st: object): NodeReport =>
    cacheNodeState({ metadata: { name: 'n1', resourceVersion: rv }, status: st } as unknown as RawNodeState);
  const entries = cached('1', status);
  const wire = groupedReport(status);
  assert.deepEqual(
    wire.policies.map((p) => p.name),
    ['c'],
    'only the policy with something of its own keeps an entry',
  );
  assert.deepEqual(
    wire.applied.map((g) => [g.generation, g.names]),
    [
      [2, ['a']],
      [1, ['b']],
    ],
  );
  const grouped = cached('2', wire);
  assert.deepEqual([...grouped.applied].sort(), [...entries.applied].sort());
  assert.deepEqual([...grouped.keys].sort(), [...entries.keys].sort());
  assert.deepEqual([...grouped.failures], [...entries.failures]);
  assert.deepEqual(policiesForNodeState(entries, grouped, lookup), [], 'the same policies, only written smaller');
  assert.deepEqual(reportedPolicies(wire), status.policies, 'reportedPolicies gives back every entry');
});

test('policiesForNodeState: a node whose agent starts (or whose report goes) touches every policy that selects it', () => {
  const nodes: NodeInfo[] = [{ metadata: { name: 'n1', labels: { role: 'edge' } } }];
  const lookup = lookupOf(
    [
      policy('edge', 'k', { selector: { matchLabels: { role: 'edge' } } }),
      policy('db', 'k', { selector: { matchLabels: { role: 'db' } } }),
    ],
    nodes,
  );
  assert.deepEqual(
    ids(policiesForNodeState(undefined, report('1', []), lookup)),
    ['policy/edge'],
    'the first report: edge now counts the node',
  );
  assert.deepEqual(ids(policiesForNodeState(report('1', [{ name: 'edge', generation: 1 }]), undefined, lookup)), ['policy/edge']);
  assert.deepEqual(
    ids(policiesForNodeState(report('1', [], { agent: false }), report('2', []), lookup)),
    ['policy/edge'],
    'a hand-made report, then the agent writes it',
  );
});

test('policiesForNodeState: any write of a report wakes the deleted policies it still lists (their finalizer times nodes out)', () => {
  const lookup = lookupOf([policy('gone', 'k', { deleting: true }), policy('live', 'k')]);
  const entries = [
    { name: 'gone', generation: 1 },
    { name: 'live', generation: 1 },
  ];
  assert.deepEqual(
    ids(
      policiesForNodeState(report('1', entries), report('2', entries, { counters: 3, written: '2026-03-01T00:05:00Z' }), lookup),
    ),
    ['policy/gone'],
  );
});

test('nodeStatesForNodeState: a report whose Node does not exist is itself to be removed', () => {
  const exists = (n: string): boolean => n === 'n1';
  assert.deepEqual(nodeStatesForNodeState(report('1', []), exists), []);
  const ghost = cacheNodeState({ metadata: { name: 'ghost' } } as RawNodeState);
  assert.deepEqual(ids(nodeStatesForNodeState(ghost, exists)), ['nodestate/ghost']);
  assert.deepEqual(nodeStatesForNodeState(undefined, exists), []);
});
