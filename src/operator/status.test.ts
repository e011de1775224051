import { test } from 'node:test';
import assert from 'node:assert/strict';
import { findCondition } from '../lib/conditions.js';
import type { NodeInfo } from '../lib/cached.js';
import { type NodeReport, type RawNodeState, cacheNodeState } from './cache.js';
import { type AggregateInput, MAX_FAILED_NODES, aggregateStatus, currentStatus, progressOnly, stableJson } from './status.js';

const t0 = new Date('2026-03-01T10:00:00Z');
const t1 = new Date('2026-03-01T10:05:00Z');
const longAgo = '2026-01-01T00:00:00Z';

function node(name: string, labels: Record<string, string> = {}, created = longAgo): NodeInfo {
  return { metadata: { name, labels, creationTimestamp: created } };
}

type Entry = NonNullable<NonNullable<RawNodeState['status']>['policies']>[number];

/** A node's report as an agent writes it, through the operator's own cache transform. */
function report(name: string, policies: Entry[], extra: Partial<NonNullable<RawNodeState['status']>> = {}): NodeReport {
  return cacheNodeState({ metadata: { name }, status: { agent: { version: '0.1.0' }, policies, ...extra } } as RawNodeState);
}

function input(o: { generation: number; nodes: NodeInfo[]; reports: NodeReport[] } & Partial<AggregateInput>): AggregateInput {
  const byName = new Map(o.reports.map((r) => [r.metadata.name, r]));
  return { name: 'web', matched: o.nodes, reportOf: (n) => byName.get(n), now: t0, ...o };
}

test('two selected nodes, one ready and one failing: Ready False, Degraded True, the failing node listed', () => {
  const { status: s } = aggregateStatus(
    input({
      generation: 3,
      nodes: [node('n1'), node('n2')],
      reports: [
        report('n1', [{ name: 'web', generation: 3 }]),
        report('n2', [
          { name: 'web', generation: 3, errors: [{ reason: 'InterfaceNotFound', message: 'eth9: no such interface' }] },
        ]),
      ],
    }),
  );
  assert.deepEqual(s.nodes, { selected: 2, ready: 1, failed: 1, withoutAgent: 0 });
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
  const base = input({
    generation: 2,
    nodes: [node('a'), node('b')],
    reports: [report('a', [{ name: 'web', generation: 2 }]), report('b', [{ name: 'web', generation: 2 }])],
  });
  const { status: s } = aggregateStatus(base);
  assert.deepEqual(s.nodes, { selected: 2, ready: 2, failed: 0, withoutAgent: 0 });
  assert.equal(findCondition(s.conditions, 'Ready')?.status, 'True');
  assert.equal(findCondition(s.conditions, 'Ready')?.reason, 'AllNodesReady');
  assert.equal(findCondition(s.conditions, 'Degraded')?.status, 'False');
  assert.deepEqual(s.failedNodes, []);
  const again = aggregateStatus({ ...base, previous: s.conditions, now: t1 }).status;
  assert.equal(stableJson(again), stableJson(s), 'the same input gives the same status (no needless write)');
});

test('a node on an older generation, or whose agent has not listed the policy yet, is pending: Ready False NodesPending', () => {
  const { status: s } = aggregateStatus(
    input({
      generation: 5,
      nodes: [node('a'), node('b'), node('c')],
      reports: [report('a', [{ name: 'web', generation: 5 }]), report('b', [{ name: 'web', generation: 4 }]), report('c', [])],
    }),
  );
  assert.deepEqual(s.nodes, { selected: 3, ready: 1, failed: 0, withoutAgent: 0 });
  const ready = findCondition(s.conditions, 'Ready');
  assert.equal(ready?.reason, 'NodesPending');
  assert.match(ready?.message ?? '', /1 of 3 selected nodes applied generation 5; waiting for b, c/);
  assert.equal(findCondition(s.conditions, 'Degraded')?.status, 'False');
});

test('nodes without an agent never hold Ready back: counted and named with a reason, Windows nodes as NotLinux', () => {
  const { status: s, recheckAt } = aggregateStatus(
    input({
      generation: 1,
      nodes: [node('linux-1'), node('win-1', { 'kubernetes.io/os': 'windows' }), node('bare')],
      reports: [report('linux-1', [{ name: 'web', generation: 1 }])],
    }),
  );
  assert.deepEqual(s.nodes, { selected: 1, ready: 1, failed: 0, withoutAgent: 2 });
  const ready = findCondition(s.conditions, 'Ready');
  assert.equal(ready?.status, 'True');
  assert.equal(ready?.reason, 'AllNodesReady');
  assert.match(
    ready?.message ?? '',
    /applied on all 1 selected node at generation 1; 2 more matching nodes run no netoken agent and are left out: bare, win-1/,
  );
  assert.deepEqual(
    s.nodesWithoutAgent.map((n) => [n.node, n.reason]),
    [
      ['bare', 'NoAgent'],
      ['win-1', 'NotLinux'],
    ],
  );
  assert.equal(recheckAt, undefined, 'nothing changes by itself');
});

test('a report not written by an agent (no status.agent) does not make a node count', () => {
  const handMade = cacheNodeState({
    metadata: { name: 'a' },
    status: { policies: [{ name: 'web', generation: 1 }] },
  } as RawNodeState);
  const { status: s } = aggregateStatus(input({ generation: 1, nodes: [node('a')], reports: [handMade] }));
  assert.deepEqual(s.nodes, { selected: 0, ready: 0, failed: 0, withoutAgent: 1 });
  assert.equal(findCondition(s.conditions, 'Ready')?.reason, 'NoAgentOnSelectedNodes');
});

test('a node that just joined is not counted until its agent reports or its grace runs out; the status says when to look again', () => {
  const joined = '2026-03-01T09:59:30Z';
  const base = input({
    generation: 1,
    nodes: [node('old'), node('new', {}, joined)],
    reports: [report('old', [{ name: 'web', generation: 1 }])],
    agentGraceMs: 60_000,
  });
  const during = aggregateStatus(base);
  assert.deepEqual(during.status.nodes, { selected: 1, ready: 1, failed: 0, withoutAgent: 0 }, 'the joining node is in no count');
  assert.equal(findCondition(during.status.conditions, 'Ready')?.status, 'True');
  assert.equal(during.recheckAt, Date.parse(joined) + 60_000);
  const after = aggregateStatus({ ...base, now: new Date(Date.parse(joined) + 60_000) });
  assert.deepEqual(after.status.nodes, { selected: 1, ready: 1, failed: 0, withoutAgent: 1 });
  const reported = aggregateStatus({ ...base, reportOf: (n) => report(n, [{ name: 'web', generation: 1 }]) });
  assert.deepEqual(reported.status.nodes, { selected: 2, ready: 2, failed: 0, withoutAgent: 0 }, 'its agent reported: it counts');
});

test('a selector matching only nodes without an agent: Ready False NoAgentOnSelectedNodes; only joining ones: NodesPending', () => {
  const none = aggregateStatus(
    input({ generation: 1, nodes: [node('win', { 'kubernetes.io/os': 'windows' })], reports: [] }),
  ).status;
  assert.equal(findCondition(none.conditions, 'Ready')?.reason, 'NoAgentOnSelectedNodes');
  assert.match(
    findCondition(none.conditions, 'Ready')?.message ?? '',
    /matches 1 node, none of which runs the netoken agent: win \(NotLinux\)/,
  );
  const joining = aggregateStatus(input({ generation: 1, nodes: [node('new', {}, '2026-03-01T09:59:59Z')], reports: [] })).status;
  assert.equal(findCondition(joining.conditions, 'Ready')?.reason, 'NodesPending');
  assert.match(findCondition(joining.conditions, 'Ready')?.message ?? '', /waiting for the netoken agent to start on new/);
});

test('a selector matching no node: Ready False NoNodesSelected', () => {
  const { status: s } = aggregateStatus(input({ generation: 1, nodes: [], reports: [] }));
  assert.deepEqual(s.nodes, { selected: 0, ready: 0, failed: 0, withoutAgent: 0 });
  assert.equal(findCondition(s.conditions, 'Ready')?.reason, 'NoNodesSelected');
  assert.equal(findCondition(s.conditions, 'Degraded')?.status, 'False');
});

test('a policy problem (bad Secret) wins over node counts and sets Degraded with its reason', () => {
  const { status: s } = aggregateStatus(
    input({
      generation: 1,
      nodes: [node('a')],
      reports: [report('a', [{ name: 'web', generation: 1 }])],
      problem: { reason: 'SecretInvalid', message: 'current holds 5 bytes; a Static token needs exactly 8', degraded: true },
    }),
  );
  assert.equal(findCondition(s.conditions, 'Ready')?.reason, 'SecretInvalid');
  assert.equal(findCondition(s.conditions, 'Degraded')?.status, 'True');
  assert.equal(findCondition(s.conditions, 'Degraded')?.reason, 'SecretInvalid');
  assert.deepEqual(s.nodes, { selected: 1, ready: 1, failed: 0, withoutAgent: 0 }, 'counts still describe the nodes');
});

test('a note ends the Ready message (the key is one the operator generated)', () => {
  const { status: s } = aggregateStatus(
    input({
      generation: 1,
      nodes: [node('a')],
      reports: [report('a', [{ name: 'web', generation: 1 }])],
      note: 'the key is one the operator generated',
    }),
  );
  assert.match(findCondition(s.conditions, 'Ready')?.message ?? '', /at generation 1; the key is one the operator generated$/);
});

test('an interface that failed to attach (as older agents reported it) counts as a failure', () => {
  const { status: s } = aggregateStatus(
    input({
      generation: 1,
      nodes: [node('a')],
      reports: [
        report('a', [
          {
            name: 'web',
            generation: 1,
            interfaces: [{ name: 'eth0', direction: 'Egress', state: 'Failed', reason: 'AttachRefused' }],
          },
        ]),
      ],
    }),
  );
  assert.deepEqual(s.failedNodes, [{ node: 'a', reason: 'AttachRefused', message: 'eth0 (Egress): not attached' }]);
});

test('a node past its policy limit that does not list the policy: failed with TooManyPolicies, not pending for ever', () => {
  const { status: s } = aggregateStatus(
    input({
      generation: 1,
      nodes: [node('a')],
      reports: [report('a', [{ name: 'other', generation: 1 }], { policiesOverLimit: 2 })],
    }),
  );
  assert.deepEqual(s.nodes, { selected: 1, ready: 0, failed: 1, withoutAgent: 0 });
  assert.equal(s.failedNodes[0]?.reason, 'TooManyPolicies');
});

test(`failedNodes is sorted and capped at ${MAX_FAILED_NODES}; the count is not`, () => {
  const names = Array.from({ length: 25 }, (_, i) => `node-${String(i).padStart(2, '0')}`).reverse();
  const { status: s } = aggregateStatus(
    input({
      generation: 1,
      nodes: names.map((n) => node(n)),
      reports: names.map((n) =>
        report(n, [{ name: 'web', generation: 1, errors: [{ reason: 'ProgramRejected', message: 'verifier said no' }] }]),
      ),
    }),
  );
  assert.equal(s.nodes.failed, 25);
  assert.equal(s.failedNodes.length, MAX_FAILED_NODES);
  assert.deepEqual(
    s.failedNodes.map((f) => f.node),
    names.slice().sort().slice(0, MAX_FAILED_NODES),
  );
  assert.match(
    findCondition(s.conditions, 'Ready')?.message ?? '',
    /node-00 \(ProgramRejected\), node-01 \(ProgramRejected\), node-02 \(ProgramRejected\) and 22 more/,
  );
});

test('progressOnly: nodes catching up on a generation is progress; a new failure or a new reason is not', () => {
  const gen = (applied: number[]) =>
    aggregateStatus(
      input({
        generation: 2,
        nodes: applied.map((_, i) => node(`n${i}`)),
        reports: applied.map((g, i) => report(`n${i}`, [{ name: 'web', generation: g }])),
      }),
    ).status;
  const a = gen([2, 1, 1]);
  const b = gen([2, 2, 1]);
  assert.equal(progressOnly(a, b), true);
  assert.equal(progressOnly(b, gen([2, 2, 2])), false, 'Ready True is news');
  const failing = aggregateStatus(
    input({
      generation: 2,
      nodes: [node('n0'), node('n1')],
      reports: [
        report('n0', [{ name: 'web', generation: 2 }]),
        report('n1', [{ name: 'web', generation: 2, errors: [{ reason: 'X', message: 'y' }] }]),
      ],
    }),
  ).status;
  assert.equal(progressOnly(a, failing), false);
});

test('currentStatus picks the owned fields; stableJson ignores key order', () => {
  const cur = currentStatus({ nodes: { ready: 1, selected: 2, failed: 0 }, observedGeneration: 1, other: true });
  assert.deepEqual(Object.keys(cur).sort(), ['nodes', 'observedGeneration']);
  assert.equal(stableJson({ b: 1, a: [{ y: 1, x: 2 }] }), stableJson({ a: [{ x: 2, y: 1 }], b: 1 }));
});
