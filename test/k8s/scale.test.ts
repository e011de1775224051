/**
 * The control plane at the policy limit, against a real API server with the real operator and
 * a cluster-mode agent in a network namespace: one `kubectl create` of 1024 TokenPolicies for
 * one node — one more than a node can apply. The node applies 1023 (each marks its own
 * destination on the wire), reports them in one small TokenNodeState that the API server takes,
 * counts the one past the limit, and the operator reports 1023 policies Ready and the last one
 * failing on that node with TooManyPolicies, instead of pending for ever. The agent reconciles a
 * few times, not once per policy, and the operator's status writes do not make it reconcile.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import { MAX_POLICIES_PER_NODE } from '../../src/lib/abi.js';
import { API_GROUP, API_VERSION } from '../../src/lib/types.js';
import { sleep, waitUntil } from '../../src/lib/wait.js';
import { type AgentRun } from '../lib/agent.js';
import { keySecret, nodeYaml, tokenPolicy, yamlStream } from '../lib/manifests.js';
import { run, type Topology } from '../lib/netns.js';
import { type TcpServer } from '../lib/tcp.js';
import { type NodeState, type OperatorRun, waitNodeState } from './chart.js';
import { type TestCluster } from './cluster.js';
import { ClusterNodes, NS } from './node-agents.js';
import { reportedPolicies } from '../../src/agent/node-state.js';

const NODE = 'node-scale';
const POLICIES = MAX_POLICIES_PER_NODE + 1;
const KEY = randomBytes(8);
const name = (i: number): string => `scale-${String(i).padStart(4, '0')}`;
const destination = (i: number): string => `198.18.${i >> 8}.${i & 255}`;

interface PolicyItem {
  metadata: { name: string; generation: number; resourceVersion: string };
  status?: {
    conditions?: { type: string; status: string; reason: string }[];
    nodes?: { selected: number; ready: number; failed: number };
    failedNodes?: { node: string; reason: string }[];
  };
}

describe(`${POLICIES} policies for one node: the limit, on the wire and in status`, () => {
  let env: ClusterNodes;
  let cluster: TestCluster;
  let topo: Topology;
  let agent: AgentRun;
  let operator: OperatorRun;
  let server: TcpServer;
  let custom: CustomObjectsApi;

  const policies = async (): Promise<PolicyItem[]> =>
    (
      (await custom.listClusterCustomObject({ group: API_GROUP, version: API_VERSION, plural: 'tokenpolicies' })) as {
        items: PolicyItem[];
      }
    ).items;
  const ready = (p: PolicyItem): boolean => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
  const context = (): string => `agent log:\n${agent.log().slice(-3000)}\noperator log:\n${operator.log().slice(-3000)}`;

  before(async () => {
    env = await ClusterNodes.start('scale');
    ({ cluster, topo } = env);
    const kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfig);
    custom = kc.makeApiClient(CustomObjectsApi);
    server = await env.server();
    // Three of the destinations are addresses of the peer, so handshakes to them can be captured there.
    for (const i of [0, 700, MAX_POLICIES_PER_NODE])
      await run('ip', ['-n', topo.server.ns, 'addr', 'add', `${destination(i)}/32`, 'dev', topo.server.dev]);
    await run('ip', ['-n', topo.client.ns, 'route', 'add', '198.18.0.0/16', 'dev', topo.client.dev]);
    await cluster.apply(
      yamlStream([nodeYaml(NODE, { role: 'scale' }), keySecret('scale-token', { current: KEY }, { namespace: NS })]),
    );
    agent = await env.startAgent('client', NODE, 'scale', ['--log-level', 'info']);
    operator = await env.startOperator('op-scale');
    await agent.waitStatus((s) => s.ready, 60_000, 'the agent synced');
  });

  after(async () => {
    await env?.stop();
  });

  test('one kubectl create: 1023 applied and Ready, the one past the limit failing with TooManyPolicies', async (t) => {
    const reconcilesBefore = agent.status()?.reconciles ?? 0;
    const t0 = Date.now();
    const docs = Array.from({ length: POLICIES }, (_, i) =>
      tokenPolicy(
        name(i),
        `nodeSelector: {matchLabels: {role: scale}}
interfaces: {names: [${topo.client.dev}]}
token: {secretRef: {name: scale-token}}
egress: {destinations: [{cidr: ${destination(i)}/32, ports: [${server.port}]}]}`,
      ),
    );
    await cluster.kubectlOk(['create', '-f', '-'], { input: yamlStream(docs), timeoutMs: 180_000 });

    const st = await agent.waitStatus(
      (s) => s.policies.filter((p) => p.id > 0).length === MAX_POLICIES_PER_NODE && s.policies.length === POLICIES,
      120_000,
      `${MAX_POLICIES_PER_NODE} policies applied`,
    );
    const over = st.policies.filter((p) => p.id === 0);
    assert.deepEqual(
      over.map((p) => [p.name, p.errors[0]?.reason]),
      [[name(MAX_POLICIES_PER_NODE), 'TooManyPolicies']],
    );
    const reconciles = st.reconciles - reconcilesBefore;
    // kubectl creates one policy at a time, for as long as the machine lets it: the agent
    // reconciles at most once per batching delay (100 ms) while they come, never once a policy.
    const windows = Math.ceil((Date.now() - t0) / 100);
    assert.ok(
      reconciles <= windows + 5 && reconciles < POLICIES / 2,
      `the agent coalesced the burst: ${reconciles} reconciles for ${POLICIES} policies in ${windows} batching windows`,
    );

    // The agent may have reported 1023 policies before kubectl created the last one (a pause in
    // the burst ends it); the report that counts the one past the limit follows.
    type Report = NodeState['status'] & { policiesOverLimit?: number };
    const report = await waitNodeState(
      cluster,
      NODE,
      (s) => reportedPolicies(s.status).length === MAX_POLICIES_PER_NODE && (s.status as Report)?.policiesOverLimit === 1,
      'the report lists 1023 policies and counts 1 past the limit',
      60_000,
      () => agent.log(),
    );
    const bytes = JSON.stringify(report.status).length;
    assert.ok(bytes < 100 * MAX_POLICIES_PER_NODE, `a small report: ${bytes} bytes for ${MAX_POLICIES_PER_NODE} policies`);
    assert.match(
      report.status?.conditions?.find((c) => c.type === 'Degraded')?.message ?? '',
      /1 more policies select this node than the 1023 it can apply; not applied: scale-1023/,
    );

    let seen = 0;
    const items = await waitUntil(
      `${MAX_POLICIES_PER_NODE} policies Ready`,
      120_000,
      async () => {
        const all = await policies();
        seen = all.filter(ready).length;
        return seen === MAX_POLICIES_PER_NODE &&
          all.find((p) => p.metadata.name === name(MAX_POLICIES_PER_NODE))?.status?.nodes?.failed === 1
          ? all
          : undefined;
      },
      { everyMs: 500, context: () => `${seen} Ready\n${context()}` },
    );
    t.diagnostic(
      `${POLICIES} policies: applied by the agent in ${reconciles} reconciles, a report of ${bytes} bytes, all Ready ${((Date.now() - t0) / 1000).toFixed(1)} s after kubectl create began`,
    );
    const last = items.find((p) => p.metadata.name === name(MAX_POLICIES_PER_NODE));
    assert.equal(last?.status?.conditions?.find((c) => c.type === 'Ready')?.reason, 'NodesFailing');
    assert.deepEqual(
      last?.status?.failedNodes?.map((f) => [f.node, f.reason]),
      [[NODE, 'TooManyPolicies']],
    );
    assert.deepEqual(items.find((p) => p.metadata.name === name(700))?.status?.nodes, {
      selected: 1,
      ready: 1,
      failed: 0,
      withoutAgent: 0,
    });

    // On the wire: a policy in the middle marks its destination; the one past the limit does not.
    for (const [i, marked] of [
      [0, true],
      [700, true],
      [MAX_POLICIES_PER_NODE, false],
    ] as const) {
      assert.equal(
        (await env.synToken(destination(i), server.port))?.toString('hex') ?? null,
        marked ? KEY.toString('hex') : null,
        `${name(i)} ${marked ? 'marks' : 'does not mark'}`,
      );
    }
  });

  test("the operator's status writes, finalizers and labels on policies cost the agent no reconcile", async () => {
    await sleep(3000);
    const before = agent.status()?.reconciles ?? 0;
    // What a policy's spec does not say: its status, its labels, another Secret in the namespace, the Node's status.
    await cluster.kubectlOk([
      'patch',
      'tokenpolicy',
      name(5),
      '--subresource=status',
      '--type=merge',
      '-p',
      '{"status":{"observedGeneration":1}}',
    ]);
    await cluster.kubectlOk(['label', 'tokenpolicy', name(6), 'team=web']);
    await cluster.kubectlOk(['create', 'secret', 'generic', 'unrelated', '-n', NS, '--from-literal=x=y']);
    await cluster.kubectlOk(['annotate', 'node', NODE, 'heartbeat=1']);
    await sleep(3000);
    assert.equal(agent.status()?.reconciles, before, 'nothing the node does changed');
    // A spec edit does reconcile.
    await cluster.kubectlOk([
      'patch',
      'tokenpolicy',
      name(6),
      '--type=merge',
      '-p',
      `{"spec":{"egress":{"destinations":[{"cidr":"${destination(6)}/32","ports":[1]}]}}}`,
    ]);
    await agent.waitStatus(
      (s) => s.reconciles > before && s.policies.find((p) => p.name === name(6))?.generation === 2,
      20_000,
      'the edit applied',
    );
  });
});
