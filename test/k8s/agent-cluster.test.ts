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
import { TCP_ACK, TCP_SYN, findTokenOption, parseFrame } from '../../src/lib/packet.js';
import { toEthernet } from '../../src/lib/pcap.js';
import { agentIn, agentMetricsIn, kernelHooks, type AgentRun } from '../lib/agent.js';
import { startCapture } from '../lib/capture.js';
import { bridgeLoopback, type LoopbackBridge } from '../lib/loopback-bridge.js';
import { createTopology, type Topology } from '../lib/netns.js';
import { connect, startServer, type TcpServer } from '../lib/tcp.js';
import { type NodeState, type OperatorRun, agentKubeconfig, installChartRbac, policyAttached, startOperator, waitNodeState as waitNodeStateIn } from './chart.js';
import { TestCluster, repoRoot } from './cluster.js';
import { sleep, waitUntil } from '../../src/lib/wait.js';

const NS = 'netoken-system';
const NODE = 'node-a';
const KEY = Buffer.from('0a1b2c3d4e5f6071', 'hex');


function policy(name: string, spec: string): string {
  return `apiVersion: netoken.io/v1alpha1
kind: TokenPolicy
metadata: {name: ${name}}
spec:
${spec.replace(/^/gm, '  ')}
`;
}

describe('agent in cluster mode', () => {
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
    waitNodeStateIn(cluster, NODE, pred, what, ms, () => agent.log());
  const synToServer = async (port: number): Promise<Buffer | null> => {
    const cap = await startCapture(topo.server.ns, topo.server.dev, { filter: 'tcp' });
    const r = await connect(topo.client.ns, topo.server.ipv4, port);
    const res = await cap.stop();
    assert.ok(r.ok, `handshake to ${port}: ${JSON.stringify(r)}`);
    const syn = res.frames.map((f) => parseFrame(toEthernet(res.linkType, f))).find((p) => p.tcp && p.tcp.flags & TCP_SYN && !(p.tcp.flags & TCP_ACK));
    assert.ok(syn, 'the SYN reached the server');
    assert.equal(syn.tcpChecksumOk, true);
    return findTokenOption(syn, 253, 0x4e54);
  };

  before(async () => {
    cluster = await TestCluster.start();
    topo = await createTopology({ name: 'k8s', kind: 'pair' });
    const port = Number(new URL(cluster.server).port);
    bridge = await bridgeLoopback(topo.client.ns, port);
    server = await startServer(topo.server.ns, { port: 0 });
    await cluster.apply(`apiVersion: v1
kind: Namespace
metadata: {name: ${NS}}
---
apiVersion: v1
kind: Node
metadata: {name: ${NODE}, labels: {role: edge}}
---
apiVersion: v1
kind: Secret
metadata: {name: web-token, namespace: ${NS}}
type: Opaque
data: {current: ${KEY.toString('base64')}}
`);
    // The agent runs with exactly the chart's RBAC and admission policy, as a Pod-bound token on its node.
    await installChartRbac(cluster, NS);
    const kubeconfig = await agentKubeconfig(cluster, NODE, NS);
    agent = agentIn(topo.client.ns, 'k8s');
    await agent.startCluster(kubeconfig, NODE, NS);
    // The operator as a real process, with the chart's RBAC: it rolls node reports up into policy status.
    operator = await startOperator(cluster, OPERATOR_METRICS, { namespace: NS, podName: 'op-e2e', extraArgs: ['--finalizer-timeout=30s'] });
  });

  type PolicyStatus = { status?: { observedGeneration?: number; conditions?: { type: string; status: string; reason: string }[]; nodes?: { selected: number; ready: number; failed: number; withoutAgent: number }; failedNodes?: { node: string; reason: string; message: string }[] } };
  const waitPolicy = async (name: string, pred: (p: PolicyStatus) => boolean, what: string, ms = 30_000): Promise<PolicyStatus> => {
    let last: PolicyStatus | null = null;
    return waitUntil(what, ms, async () => {
      const r = await cluster.kubectl(['get', 'tokenpolicy', name, '-o', 'json']);
      last = r.code === 0 ? (JSON.parse(r.stdout) as PolicyStatus) : null;
      return last && pred(last) ? last : undefined;
    }, { everyMs: 300, context: () => `status: ${JSON.stringify(last?.status)}\noperator log:\n${operator.log().slice(-3000)}` });
  };

  after(async () => {
    operator?.child.kill('SIGTERM');
    await agent?.cleanup();
    await server?.stop();
    await server2?.stop();
    await bridge?.close();
    await topo?.destroy();
    await cluster?.stop();
  });

  test('apply → the node marks real handshakes and reports Ready in its TokenNodeState', async () => {
    await cluster.apply(policy('web', `nodeSelector: {matchLabels: {role: edge}}
interfaces: {names: [${topo.client.dev}]}
token: {mode: Static, secretRef: {name: web-token}}
egress: {destinations: [{cidr: ${topo.server.ipv4}/32, ports: [${server.port}]}]}`));
    const st = await waitNodeState((s) => policyAttached(s, 'web'), 'web attached');
    assert.equal(st.metadata.ownerReferences?.[0]?.kind, 'Node', 'owned by its Node');
    assert.equal(st.status?.conditions?.find((c) => c.type === 'Ready')?.status, 'True');
    assert.equal(st.status?.policies?.[0]?.generation, 1);
    const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
    assert.equal(st.status?.agent?.version, pkg.version, "the agent reports package.json's version");
    assert.equal((await synToServer(server.port))?.toString('hex'), KEY.toString('hex'));
    await waitNodeState((s) => (s.status?.policies?.[0]?.counters?.marked ?? 0) >= 1, 'counters reported');
    const p = await waitPolicy('web', (x) => x.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True', 'web Ready');
    assert.deepEqual(p.status?.nodes, { selected: 1, ready: 1, failed: 0, withoutAgent: 0 });
    assert.equal(p.status?.observedGeneration, 1);
  });

  test('an edit applies: the generation moves and the new port is marked', async () => {
    server2 = await startServer(topo.server.ns, { port: 0 });
    await cluster.apply(policy('web', `nodeSelector: {matchLabels: {role: edge}}
interfaces: {names: [${topo.client.dev}]}
token: {mode: Static, secretRef: {name: web-token}}
egress: {destinations: [{cidr: ${topo.server.ipv4}/32, ports: [${server2.port}]}]}`));
    await waitNodeState((s) => s.status?.policies?.[0]?.generation === 2, 'generation 2 applied');
    assert.equal((await synToServer(server2.port))?.toString('hex'), KEY.toString('hex'));
    assert.equal(await synToServer(server.port), null, 'the old port is no longer marked');
  });

  test('a missing interface degrades that policy only', async () => {
    await cluster.apply(policy('ghost', `interfaces: {names: [nosuchif0]}
token: {mode: Static, secretRef: {name: web-token}}
egress: {}`));
    const st = await waitNodeState((s) => s.status?.conditions?.find((c) => c.type === 'Degraded')?.status === 'True', 'Degraded');
    const ghost = st.status?.policies?.find((p) => p.name === 'ghost');
    assert.equal(ghost?.errors?.[0]?.reason, 'InterfaceNotFound');
    assert.match(ghost!.errors![0]!.message, /nosuchif0/);
    assert.ok(policyAttached(st, 'web'), 'web unaffected');
    const g = await waitPolicy('ghost', (x) => x.status?.conditions?.find((c) => c.type === 'Degraded')?.status === 'True', 'ghost Degraded');
    assert.equal(g.status?.failedNodes?.[0]?.node, NODE);
    assert.match(JSON.stringify(g.status?.failedNodes), /nosuchif0/, 'the reason names the interface');
    await cluster.kubectlOk(['delete', 'tokenpolicy', 'ghost', '--wait=false']);
    await waitNodeState((s) => s.status?.conditions?.find((c) => c.type === 'Degraded')?.status === 'False', 'not degraded after delete');
  });

  test('API server unreachable: marking never stops; an edit made meanwhile applies on return', async () => {
    await bridge.stop();
    await sleep(1500);
    assert.equal((await synToServer(server2.port))?.toString('hex'), KEY.toString('hex'), 'still marked while the API server is away');
    const server3 = await startServer(topo.server.ns, { port: 0 });
    try {
      await cluster.apply(policy('web', `nodeSelector: {matchLabels: {role: edge}}
interfaces: {names: [${topo.client.dev}]}
token: {mode: Static, secretRef: {name: web-token}}
egress: {destinations: [{cidr: ${topo.server.ipv4}/32, ports: [${server3.port}]}]}`));
      await sleep(1000);
      assert.equal((await synToServer(server2.port))?.toString('hex'), KEY.toString('hex'), 'the last good state holds');
      await bridge.start();
      await waitNodeState((s) => s.status?.policies?.find((p) => p.name === 'web')?.generation === 3, 'caught up to generation 3', 60_000);
      assert.equal((await synToServer(server3.port))?.toString('hex'), KEY.toString('hex'));
    } finally {
      await server3.stop();
    }
  });

  test('keys never appear in metrics, logs or status', async () => {
    const agentMetrics = await agentMetricsIn(topo.client.ns);
    assert.match(agentMetrics, new RegExp(`netoken_packets_total\\{policy="web",interface="[^"]+",reason="marked",node="${NODE}"\\} [1-9]`));
    const opMetrics = await (await fetch(`http://127.0.0.1:${OPERATOR_METRICS}/metrics`)).text();
    const statuses = await cluster.kubectlOk(['get', 'tokenpolicies,tokennodestates', '-o', 'json']);
    const events = await cluster.kubectlOk(['get', 'events', '-A', '-o', 'json']);
    for (const [where, text] of [['agent metrics', agentMetrics], ['operator metrics', opMetrics], ['agent log', agent.log()], ['operator log', operator.log()], ['status', statuses], ['events', events]] as const) {
      for (const enc of [KEY.toString('hex'), KEY.toString('base64'), KEY.toString('base64url')]) {
        assert.ok(!text.includes(enc), `the key appears in ${where}`);
      }
    }
  });

  test('a node label change moves the policy off the node and back', async () => {
    await cluster.kubectlOk(['label', 'node', NODE, 'role-']);
    await waitNodeState((s) => (s.status?.policies ?? []).length === 0, 'policy off the node');
    assert.deepEqual((await kernelHooks(topo.client.ns, topo.client.dev)).tcx, [], 'hook removed');
    await cluster.kubectlOk(['label', 'node', NODE, 'role=edge']);
    await waitNodeState((s) => policyAttached(s, 'web'), 'policy back');
    assert.equal((await kernelHooks(topo.client.ns, topo.client.dev)).tcx.length, 1);
  });

  test('delete → hooks gone, the node reports nothing, the finalizer is released', async () => {
    await cluster.kubectlOk(['delete', 'tokenpolicy', 'web', '--wait=false']);
    await waitNodeState((s) => (s.status?.policies ?? []).length === 0, 'policy removed');
    assert.deepEqual((await kernelHooks(topo.client.ns, topo.client.dev)).tcx, []);
    const end = Date.now() + 30_000;
    while ((await cluster.kubectl(['get', 'tokenpolicy', 'web'])).code === 0 && Date.now() < end) await sleep(300);
    assert.notEqual((await cluster.kubectl(['get', 'tokenpolicy', 'web'])).code, 0, `the finalizer was released\n${operator.log().slice(-2000)}`);
  });
});
