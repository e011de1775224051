/**
 * The agent in cluster mode against a real kube-apiserver: a network namespace stands for
 * the node, reaching the API server through a loopback bridge, with the Helm chart's RBAC
 * and nothing more. kubectl apply a policy → the node marks real handshakes and reports in
 * its TokenNodeState.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { agentMetricsIn, kernelHooks, type AgentRun } from '../lib/agent.js';
import { type LoopbackBridge } from '../lib/loopback-bridge.js';
import { keySecret, nodeYaml, tokenPolicy as policy, yamlStream } from '../lib/manifests.js';
import { type Topology } from '../lib/netns.js';
import { type TcpServer } from '../lib/tcp.js';
import { type NodeState, type OperatorRun, policyAttached } from './chart.js';
import { type TestCluster, repoRoot } from './cluster.js';
import { ClusterNodes, NS } from './node-agents.js';
import { sleep, waitUntil } from '../../src/lib/wait.js';
import { reportedPolicies } from '../../src/agent/node-state.js';

const NODE = 'node-a';
const KEY = Buffer.from('0a1b2c3d4e5f6071', 'hex');

/** The status ('True', 'False', 'Unknown') of a TokenNodeState's or TokenPolicy's `type` condition. */
function conditionStatus(x: { status?: { conditions?: { type: string; status: string }[] } }, type: string): string | undefined {
  return x.status?.conditions?.find((c) => c.type === type)?.status;
}

describe('agent in cluster mode', () => {
  let env: ClusterNodes;
  let cluster: TestCluster;
  let topo: Topology;
  let bridge: LoopbackBridge;
  let agent: AgentRun;
  let server: TcpServer;
  let operator: OperatorRun;
  const OPERATOR_METRICS = 18000 + (process.pid % 20000);
  /** the server on the port the policy marks after the edit */
  let server2: TcpServer;

  const waitNodeState = (pred: (s: NodeState) => boolean, what: string, ms = 20_000): Promise<NodeState> =>
    env.nodeState(NODE, agent, pred, what, ms);
  const synToServer = (port: number): Promise<Buffer | null> => env.synToken(topo.server.ipv4, port);
  /** Applies policy "web": the edge node marks SYNs from the client to the server on `port`. */
  const applyWeb = (port: number): Promise<string> =>
    cluster.apply(
      policy(
        'web',
        `nodeSelector: {matchLabels: {role: edge}}
interfaces: {names: [${topo.client.dev}]}
token: {mode: Static, secretRef: {name: web-token}}
egress: {destinations: [{cidr: ${topo.server.ipv4}/32, ports: [${port}]}]}`,
      ),
    );

  before(async () => {
    env = await ClusterNodes.start('k8s');
    ({ cluster, topo } = env);
    server = await env.server();
    await cluster.apply(
      yamlStream([nodeYaml(NODE, { role: 'edge' }), keySecret('web-token', { current: KEY }, { namespace: NS })]),
    );
    bridge = await env.bridge('client');
    agent = await env.startAgent('client', NODE, 'k8s');
    // The operator as a real process, with the chart's RBAC: it rolls node reports up into policy status.
    operator = await env.startOperator('op-e2e', { metricsPort: OPERATOR_METRICS, extraArgs: ['--finalizer-timeout=30s'] });
  });

  type PolicyStatus = {
    status?: {
      observedGeneration?: number;
      conditions?: { type: string; status: string; reason: string }[];
      nodes?: { selected: number; ready: number; failed: number; withoutAgent: number };
      failedNodes?: { node: string; reason: string; message: string }[];
    };
  };
  const waitPolicy = async (
    name: string,
    pred: (p: PolicyStatus) => boolean,
    what: string,
    ms = 30_000,
  ): Promise<PolicyStatus> => {
    let last: PolicyStatus | null = null;
    return waitUntil(
      what,
      ms,
      async () => {
        const r = await cluster.kubectl(['get', 'tokenpolicy', name, '-o', 'json']);
        last = r.code === 0 ? (JSON.parse(r.stdout) as PolicyStatus) : null;
        return last && pred(last) ? last : undefined;
      },
      { everyMs: 300, context: () => `status: ${JSON.stringify(last?.status)}\noperator log:\n${operator.log().slice(-3000)}` },
    );
  };

  after(async () => {
    await env?.stop();
  });

  test('apply → the node marks real handshakes and reports Ready in its TokenNodeState', async () => {
    await applyWeb(server.port);
    const st = await waitNodeState((s) => policyAttached(s, 'web'), 'web attached');
    assert.equal(st.metadata.ownerReferences?.[0]?.kind, 'Node', 'owned by its Node');
    assert.equal(conditionStatus(st, 'Ready'), 'True');
    assert.equal(reportedPolicies(st.status)[0]?.generation, 1);
    const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
    assert.equal(st.status?.agent?.version, pkg.version, "the agent reports package.json's version");
    const shown = JSON.parse(await cluster.kubectlOk(['get', 'tokennodestate', NODE, '-o', 'json', '--show-managed-fields'])) as {
      metadata: { managedFields?: { manager: string }[] };
    };
    assert.deepEqual(
      [...new Set((shown.metadata.managedFields ?? []).map((f) => f.manager))],
      ['netoken-agent'],
      'filed under the agent',
    );
    assert.equal((await synToServer(server.port))?.toString('hex'), KEY.toString('hex'));
    await waitNodeState((s) => (reportedPolicies(s.status)[0]?.counters?.marked ?? 0) >= 1, 'counters reported');
    const p = await waitPolicy('web', (x) => conditionStatus(x, 'Ready') === 'True', 'web Ready');
    assert.deepEqual(p.status?.nodes, { selected: 1, ready: 1, failed: 0, withoutAgent: 0 });
    assert.equal(p.status?.observedGeneration, 1);
  });

  test('an edit applies: the generation moves and the new port is marked', async () => {
    server2 = await env.server();
    await applyWeb(server2.port);
    await waitNodeState((s) => reportedPolicies(s.status)[0]?.generation === 2, 'generation 2 applied');
    assert.equal((await synToServer(server2.port))?.toString('hex'), KEY.toString('hex'));
    assert.equal(await synToServer(server.port), null, 'the old port is no longer marked');
  });

  test('a missing interface degrades that policy only', async () => {
    await cluster.apply(
      policy(
        'ghost',
        `interfaces: {names: [nosuchif0]}
token: {mode: Static, secretRef: {name: web-token}}
egress: {}`,
      ),
    );
    const st = await waitNodeState((s) => conditionStatus(s, 'Degraded') === 'True', 'Degraded');
    const ghost = reportedPolicies(st.status).find((p) => p.name === 'ghost');
    assert.equal(ghost?.errors?.[0]?.reason, 'InterfaceNotFound');
    assert.match(ghost!.errors![0]!.message, /nosuchif0/);
    assert.ok(policyAttached(st, 'web'), 'web unaffected');
    const g = await waitPolicy('ghost', (x) => conditionStatus(x, 'Degraded') === 'True', 'ghost Degraded');
    assert.equal(g.status?.failedNodes?.[0]?.node, NODE);
    assert.match(JSON.stringify(g.status?.failedNodes), /nosuchif0/, 'the reason names the interface');
    await cluster.kubectlOk(['delete', 'tokenpolicy', 'ghost', '--wait=false']);
    await waitNodeState((s) => conditionStatus(s, 'Degraded') === 'False', 'not degraded after delete');
  });

  test('API server unreachable: marking never stops; an edit made meanwhile applies on return', async () => {
    await bridge.stop();
    await sleep(1500);
    assert.equal(
      (await synToServer(server2.port))?.toString('hex'),
      KEY.toString('hex'),
      'still marked while the API server is away',
    );
    const server3 = await env.server();
    await applyWeb(server3.port);
    await sleep(1000);
    assert.equal((await synToServer(server2.port))?.toString('hex'), KEY.toString('hex'), 'the last good state holds');
    await bridge.start();
    await waitNodeState(
      (s) => reportedPolicies(s.status).find((p) => p.name === 'web')?.generation === 3,
      'caught up to generation 3',
      60_000,
    );
    assert.equal((await synToServer(server3.port))?.toString('hex'), KEY.toString('hex'));
  });

  test('keys never appear in metrics, logs or status', async () => {
    const agentMetrics = await agentMetricsIn(topo.client.ns);
    assert.match(
      agentMetrics,
      new RegExp(`netoken_packets_total\\{policy="web",interface="[^"]+",reason="marked",node="${NODE}"\\} [1-9]`),
    );
    const opMetrics = await (await fetch(`http://127.0.0.1:${OPERATOR_METRICS}/metrics`)).text();
    const statuses = await cluster.kubectlOk(['get', 'tokenpolicies,tokennodestates', '-o', 'json']);
    const events = await cluster.kubectlOk(['get', 'events', '-A', '-o', 'json']);
    for (const [where, text] of [
      ['agent metrics', agentMetrics],
      ['operator metrics', opMetrics],
      ['agent log', agent.log()],
      ['operator log', operator.log()],
      ['status', statuses],
      ['events', events],
    ] as const) {
      for (const enc of [KEY.toString('hex'), KEY.toString('base64'), KEY.toString('base64url')]) {
        assert.ok(!text.includes(enc), `the key appears in ${where}`);
      }
    }
  });

  test('a node label change moves the policy off the node and back', async () => {
    await cluster.kubectlOk(['label', 'node', NODE, 'role-']);
    await waitNodeState((s) => reportedPolicies(s.status).length === 0, 'policy off the node');
    assert.deepEqual((await kernelHooks(topo.client.ns, topo.client.dev)).tcx, [], 'hook removed');
    await cluster.kubectlOk(['label', 'node', NODE, 'role=edge']);
    await waitNodeState((s) => policyAttached(s, 'web'), 'policy back');
    assert.equal((await kernelHooks(topo.client.ns, topo.client.dev)).tcx.length, 1);
  });

  test('delete → hooks gone, the node reports nothing, the finalizer is released', async () => {
    await cluster.kubectlOk(['delete', 'tokenpolicy', 'web', '--wait=false']);
    await waitNodeState((s) => reportedPolicies(s.status).length === 0, 'policy removed');
    assert.deepEqual((await kernelHooks(topo.client.ns, topo.client.dev)).tcx, []);
    const end = Date.now() + 30_000;
    while ((await cluster.kubectl(['get', 'tokenpolicy', 'web'])).code === 0 && Date.now() < end) await sleep(300);
    assert.notEqual(
      (await cluster.kubectl(['get', 'tokenpolicy', 'web'])).code,
      0,
      `the finalizer was released\n${operator.log().slice(-2000)}`,
    );
  });
});
