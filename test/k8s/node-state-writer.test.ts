/**
 * The agent's TokenNodeState writer against a real API server, with the counter interval at its
 * default of 5 minutes: counters alone wait for the interval, but a change of what the node
 * applies is written at once, even while a counters-only write is pending.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import type { AgentStatus, NodePolicyStatus } from '../../src/agent/agent.js';
import { NodeStateWriter, type NodeStateStatus } from '../../src/agent/node-state.js';
import { silentLogger } from '../../src/lib/log.js';
import { API_GROUP, API_VERSION } from '../../src/lib/types.js';
import { sleep, waitUntil } from '../../src/lib/wait.js';
import { TestCluster } from './cluster.js';

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

  const report = async (): Promise<NodeStateStatus | undefined> => {
    try {
      return (
        (await custom.getClusterCustomObject({
          group: API_GROUP,
          version: API_VERSION,
          plural: 'tokennodestates',
          name: NODE,
        })) as { status?: NodeStateStatus }
      ).status;
    } catch {
      return undefined;
    }
  };

  before(async () => {
    cluster = await TestCluster.start();
    const kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfig);
    custom = kc.makeApiClient(CustomObjectsApi);
    writer = new NodeStateWriter({
      kc,
      nodeName: NODE,
      log: silentLogger(),
      counterIntervalMs: 300_000,
      minWriteIntervalMs: 200,
    });
  });

  after(async () => {
    writer?.stop();
    await cluster?.stop();
  });

  test('a policy applied while a counters-only write waits for its interval is reported at once', async () => {
    writer.update(agentStatus([policy('a', 1)]));
    await waitUntil('the first report', 20_000, async () => ((await report())?.policies.length === 1 ? true : undefined));
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
    assert.equal(writer.writes, 2);
  });
});
