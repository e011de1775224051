/**
 * The agent in cluster mode against a real kube-apiserver: a network namespace stands for
 * the node, reaching the API server through a loopback bridge, with the Helm chart's RBAC
 * and nothing more. kubectl apply a policy → the node marks real handshakes and reports in
 * its TokenNodeState.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { TCP_ACK, TCP_SYN, findTokenOption, parseFrame } from '../../src/lib/packet.js';
import { toEthernet } from '../../src/lib/pcap.js';
import { agentIn, kernelHooks, type AgentRun } from '../lib/agent.js';
import { startCapture } from '../lib/capture.js';
import { bridgeLoopback, type LoopbackBridge } from '../lib/loopback-bridge.js';
import { createTopology, type Topology } from '../lib/netns.js';
import { connect, startServer, type TcpServer } from '../lib/tcp.js';
import { agentKubeconfig, installChartRbac } from './chart.js';
import { TestCluster } from './cluster.js';

const NS = 'netoken-system';
const NODE = 'node-a';
const KEY = Buffer.from('0a1b2c3d4e5f6071', 'hex');

interface NodeState {
  status?: {
    conditions?: { type: string; status: string; reason: string; message: string }[];
    policies?: { name: string; generation: number; interfaces: { name: string; state: string; attachMode?: string }[]; counters?: Record<string, number>; errors?: { reason: string; message: string }[] }[];
  };
  metadata: { ownerReferences?: { kind: string; name: string }[] };
}

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
  /** the server on the port the policy marks after the edit */
  let server2: TcpServer;

  const nodeState = async (): Promise<NodeState | null> => {
    const r = await cluster.kubectl(['get', 'tokennodestate', NODE, '-o', 'json']);
    return r.code === 0 ? (JSON.parse(r.stdout) as NodeState) : null;
  };
  const waitNodeState = async (pred: (s: NodeState) => boolean, what: string, ms = 20_000): Promise<NodeState> => {
    const end = Date.now() + ms;
    let last: NodeState | null = null;
    while (Date.now() < end) {
      last = await nodeState();
      if (last && pred(last)) return last;
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`timed out waiting for ${what}; TokenNodeState: ${JSON.stringify(last?.status, null, 1)}\nagent log:\n${agent.log().slice(-4000)}`);
  };
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
  });

  after(async () => {
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
    const st = await waitNodeState((s) => s.status?.policies?.[0]?.interfaces?.[0]?.state === 'Attached', 'web attached');
    assert.equal(st.metadata.ownerReferences?.[0]?.kind, 'Node', 'owned by its Node');
    assert.equal(st.status?.conditions?.find((c) => c.type === 'Ready')?.status, 'True');
    assert.equal(st.status?.policies?.[0]?.generation, 1);
    assert.equal((await synToServer(server.port))?.toString('hex'), KEY.toString('hex'));
    await waitNodeState((s) => (s.status?.policies?.[0]?.counters?.marked ?? 0) >= 1, 'counters reported');
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
    assert.equal(st.status?.policies?.find((p) => p.name === 'web')?.interfaces[0]?.state, 'Attached', 'web unaffected');
    await cluster.kubectlOk(['delete', 'tokenpolicy', 'ghost']);
    await waitNodeState((s) => s.status?.conditions?.find((c) => c.type === 'Degraded')?.status === 'False', 'not degraded after delete');
  });

  test('API server unreachable: marking never stops; an edit made meanwhile applies on return', async () => {
    await bridge.stop();
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal((await synToServer(server2.port))?.toString('hex'), KEY.toString('hex'), 'still marked while the API server is away');
    const server3 = await startServer(topo.server.ns, { port: 0 });
    try {
      await cluster.apply(policy('web', `nodeSelector: {matchLabels: {role: edge}}
interfaces: {names: [${topo.client.dev}]}
token: {mode: Static, secretRef: {name: web-token}}
egress: {destinations: [{cidr: ${topo.server.ipv4}/32, ports: [${server3.port}]}]}`));
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal((await synToServer(server2.port))?.toString('hex'), KEY.toString('hex'), 'the last good state holds');
      await bridge.start();
      await waitNodeState((s) => s.status?.policies?.find((p) => p.name === 'web')?.generation === 3, 'caught up to generation 3', 60_000);
      assert.equal((await synToServer(server3.port))?.toString('hex'), KEY.toString('hex'));
    } finally {
      await server3.stop();
    }
  });

  test('a node label change moves the policy off the node and back', async () => {
    await cluster.kubectlOk(['label', 'node', NODE, 'role-']);
    await waitNodeState((s) => (s.status?.policies ?? []).length === 0, 'policy off the node');
    assert.deepEqual((await kernelHooks(topo.client.ns, topo.client.dev)).tcx, [], 'hook removed');
    await cluster.kubectlOk(['label', 'node', NODE, 'role=edge']);
    await waitNodeState((s) => s.status?.policies?.[0]?.interfaces?.[0]?.state === 'Attached', 'policy back');
    assert.equal((await kernelHooks(topo.client.ns, topo.client.dev)).tcx.length, 1);
  });

  test('delete → hooks gone and the node reports nothing', async () => {
    await cluster.kubectlOk(['delete', 'tokenpolicy', 'web']);
    await waitNodeState((s) => (s.status?.policies ?? []).length === 0, 'policy removed');
    assert.deepEqual((await kernelHooks(topo.client.ns, topo.client.dev)).tcx, []);
    assert.ok(!agent.log().includes(KEY.toString('base64')) && !agent.log().includes(KEY.toString('hex')), 'the key never appears in the log');
  });
});
