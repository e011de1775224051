/**
 * The agent's TokenNodeState writer against a real API server, with the counter interval at its
 * default of 5 minutes: counters alone wait for the interval, but a change of what the node
 * applies is written at once, even while a counters-only write is pending. Plain policies go on
 * the wire grouped (status.applied), and against a CRD older than that the writer falls back to
 * one entry per policy.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import type { AgentStatus, NodePolicyStatus } from '../../src/agent/agent.js';
import {
  NodeStateWriter,
  type NodeStateWriterOptions,
  type AppliedGroup,
  type NodeStateStatus,
  reportedPolicies,
} from '../../src/agent/node-state.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { silentLogger } from '../../src/lib/log.js';
import { API_GROUP, API_VERSION } from '../../src/lib/types.js';
import { sleep, waitUntil } from '../../src/lib/wait.js';
import { TestCluster, repoRoot } from './cluster.js';
import { recordingLogger } from '../lib/log.js';

const NODE = 'writer-node';

function policy(name: string, marked: number): NodePolicyStatus {
  return {
    name,
    generation: 1,
    selected: true,
    id: 1,
    interfaces: ['eth0'],
    errors: [],
    warnings: [],
    counters: { marked: String(marked) },
  };
}

function agentStatus(policies: NodePolicyStatus[]): AgentStatus {
  return {
    updatedAt: new Date().toISOString(),
    programId: 1,
    ready: true,
    policies,
    hooks: [],
    interfaces: [],
    hookErrors: [],
    documentErrors: [],
    reconciles: 1,
    lastReconcileMs: 1,
  };
}

describe('TokenNodeState writer with the default counter interval', () => {
  let cluster: TestCluster;
  let custom: CustomObjectsApi;
  let writer: NodeStateWriter;

  /** The report as written (status.applied kept as groups). */
  const raw = async (node = NODE): Promise<(NodeStateStatus & { applied?: AppliedGroup[] }) | undefined> => {
    try {
      return (
        (await custom.getClusterCustomObject({
          group: API_GROUP,
          version: API_VERSION,
          plural: 'tokennodestates',
          name: node,
        })) as { status?: NodeStateStatus & { applied?: AppliedGroup[] } }
      ).status;
    } catch {
      return undefined;
    }
  };
  /** The report with every policy as an entry. */
  const report = async (node = NODE): Promise<NodeStateStatus | undefined> => {
    const st = await raw(node);
    return st && { ...st, policies: reportedPolicies(st) };
  };
  const plain = (n: number): NodePolicyStatus[] =>
    Array.from({ length: n }, (_, i) => ({ ...policy(`plain-${String(i).padStart(3, '0')}`, 0), generation: 1 + (i % 2) }));

  const loadKc = (): KubeConfig => {
    const kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfig);
    return kc;
  };
  /** A writer of `node`'s report: counters every 5 minutes, 200 ms between writes unless `o` says otherwise. */
  const nodeWriter = (node: string, o: Partial<NodeStateWriterOptions> = {}): NodeStateWriter =>
    new NodeStateWriter({
      kc: loadKc(),
      nodeName: node,
      log: silentLogger(),
      counterIntervalMs: 300_000,
      minWriteIntervalMs: 200,
      ...o,
    });

  before(async () => {
    cluster = await TestCluster.start();
    const kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfig);
    custom = kc.makeApiClient(CustomObjectsApi);
    writer = nodeWriter(NODE);
  });

  after(async () => {
    writer?.stop();
    await cluster?.stop();
  });

  test('a policy applied while a counters-only write waits for its interval is reported at once', async () => {
    writer.update(agentStatus([policy('a', 1)]));
    await waitUntil('the first report', 20_000, async () => ((await report())?.policies.length === 1 ? true : undefined));
    // The report can be read back before the writer has taken the response of its write.
    await waitUntil('the writer to count its first write', 5_000, () => writer.writes >= 1 || undefined);
    assert.equal(writer.writes, 1);

    // Counters alone: not written before the counter interval.
    writer.update(agentStatus([policy('a', 2)]));
    await sleep(1000);
    assert.equal(writer.writes, 1, 'counters alone wait for the counter interval');
    assert.deepEqual((await report())?.policies[0]?.counters, { marked: 1 });

    // A policy applied: written within the minimum interval, not when the counters would be.
    const t0 = Date.now();
    writer.update(agentStatus([policy('a', 3), policy('b', 1)]));
    const st = await waitUntil('the report to list the new policy', 20_000, async () => {
      const r = await report();
      return r?.policies.some((p) => p.name === 'b') ? r : undefined;
    });
    assert.ok(Date.now() - t0 < 10_000, `written ${Date.now() - t0} ms after the change`);
    assert.deepEqual(
      st.policies.map((p) => [p.name, p.counters]),
      [
        ['a', { marked: 3 }],
        ['b', { marked: 1 }],
      ],
      'with the newest counters',
    );
    await waitUntil('the writer to count its second write', 5_000, () => writer.writes >= 2 || undefined);
    await sleep(500);
    assert.equal(writer.writes, 2, 'one write for the new policy, none after it');
  });
  test('the end of a burst is written at once, sooner than the interval, at most once per settledWriteEveryMs', async () => {
    const node = 'settled-node';
    const w = nodeWriter(node, { minWriteIntervalMs: 60_000, settledWriteEveryMs: 120_000 });
    const listed = async (name: string): Promise<true | undefined> => {
      const st = await raw(node);
      return (st && reportedPolicies(st).some((p) => p.name === name)) || undefined;
    };
    try {
      w.update(agentStatus([policy('first', 0)]), true);
      await waitUntil('the first report', 20_000, () => listed('first'));
      await waitUntil('the writer to count it', 5_000, () => w.writes >= 1 || undefined);

      // In the middle of a burst (more to apply): the interval holds.
      w.update(agentStatus([policy('first', 0), policy('mid', 0)]), false);
      await sleep(1000);
      assert.equal(await listed('mid'), undefined, 'a change with more to come waits for the interval');

      // The burst is over: written at once.
      const t0 = Date.now();
      w.update(agentStatus([policy('first', 0), policy('mid', 0), policy('last', 0)]), true);
      await waitUntil('the settled report', 10_000, () => listed('last'));
      assert.ok(Date.now() - t0 < 5000, `written ${Date.now() - t0} ms after the agent settled`);
      await waitUntil('the writer to count it', 5_000, () => w.writes >= 2 || undefined);

      // Another settled change soon after: the early write is spent; the interval holds again.
      w.update(agentStatus([policy('first', 0), policy('mid', 0), policy('last', 0), policy('later', 0)]), true);
      await sleep(1000);
      assert.equal(await listed('later'), undefined, 'one early write per settledWriteEveryMs');
      assert.equal(w.writes, 2);
    } finally {
      w.stop();
    }
  });
  test('plain policies go on the wire as groups of names and read back as every policy', async () => {
    const node = 'grouped-node';
    const w = nodeWriter(node);
    try {
      w.update(agentStatus([...plain(300), policy('counted', 5)]));
      const st = await waitUntil('the grouped report', 20_000, async () =>
        (await raw(node))?.applied?.length ? raw(node) : undefined,
      );
      assert.deepEqual(
        st?.policies.map((p) => p.name),
        ['counted'],
        'only the policy with counters keeps an entry',
      );
      assert.deepEqual(
        st?.applied?.map((g) => [g.generation, g.interfaces, g.names.length]),
        [
          [1, ['eth0'], 150],
          [2, ['eth0'], 150],
        ],
      );
      const all = reportedPolicies(st);
      assert.equal(all.length, 301);
      assert.deepEqual(
        all.find((p) => p.name === 'plain-001'),
        { name: 'plain-001', generation: 2, interfaces: ['eth0'] },
      );
      const grouped = JSON.stringify(st).length;
      const entries = JSON.stringify({ ...st, applied: undefined, policies: all }).length;
      assert.ok(grouped * 2 < entries, `grouped ${grouped} bytes, as entries ${entries} bytes`);
    } finally {
      w.stop();
    }
  });

  test('against a CRD older than status.applied, every policy is written as an entry', async () => {
    const crd = readFileSync(join(repoRoot, 'crds/tokennodestate.yaml'), 'utf8');
    const old = crd.replace(/\n {16}applied:\n[\s\S]*?(?=\n {16}policiesOverLimit:)/, '');
    assert.ok(!/\n {16}applied:/.test(old) && old.length < crd.length, 'the test CRD lacks status.applied');
    await cluster.kubectlOk(['apply', '-f', '-'], { input: old });
    // The API server takes a moment to serve the older schema; a writer started before would
    // see status.applied kept, and rightly keep writing groups. A probe object tells when it prunes.
    await cluster.apply('apiVersion: netoken.io/v1alpha1\nkind: TokenNodeState\nmetadata: {name: schema-probe}\n');
    await waitUntil(
      'the API server prunes status.applied',
      30_000,
      async () => {
        const r = await cluster.kubectl([
          'patch',
          'tokennodestate',
          'schema-probe',
          '--subresource=status',
          '--type=merge',
          '-p',
          JSON.stringify({ status: { applied: [{ generation: 1, names: ['probe'] }] } }),
          '-o',
          'json',
        ]);
        return r.code === 0 && (JSON.parse(r.stdout) as { status?: { applied?: unknown } }).status?.applied === undefined
          ? true
          : undefined;
      },
      { everyMs: 500 },
    );
    await cluster.kubectlOk(['delete', 'tokennodestate', 'schema-probe']);
    const node = 'old-crd-node';
    const { log, lines } = recordingLogger();
    const w = nodeWriter(node, { log });
    try {
      const st = await waitUntil(
        'every policy listed as an entry',
        30_000,
        async () => {
          w.update(agentStatus(plain(40)));
          const r = await raw(node);
          return r && r.policies.length === 40 ? r : undefined;
        },
        { everyMs: 500 },
      );
      assert.equal(st.applied, undefined);
      assert.ok(
        lines.some((l) => /predates grouped reports/.test(l)),
        `the writer said why it writes entries; log:\n${lines.join('')}`,
      );
    } finally {
      w.stop();
      await cluster.kubectlOk(['apply', '-f', '-'], { input: crd });
    }
  });
});
