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
import { TCP_ACK, TCP_SYN, findTokenOption, parseFrame } from '../../src/lib/packet.js';
import { toEthernet } from '../../src/lib/pcap.js';
import { API_GROUP, API_VERSION } from '../../src/lib/types.js';
import { sleep, waitUntil } from '../../src/lib/wait.js';
import { agentIn, type AgentRun } from '../lib/agent.js';
import { startCapture } from '../lib/capture.js';
import { bridgeLoopback, type LoopbackBridge } from '../lib/loopback-bridge.js';
import { createTopology, run, type Topology } from '../lib/netns.js';
import { connect, startServer, type TcpServer } from '../lib/tcp.js';
import { type NodeState, type OperatorRun, agentKubeconfig, installChartRbac, startOperator, waitNodeState } from './chart.js';
import { TestCluster, freePorts } from './cluster.js';

const NS = 'netoken-system';
const NODE = 'node-scale';
const POLICIES = MAX_POLICIES_PER_NODE + 1;
const KEY = randomBytes(8);
const name = (i: number): string => `scale-${String(i).padStart(4, '0')}`;
const destination = (i: number): string => `198.18.${i >> 8}.${i & 255}`;

interface PolicyItem {
  metadata: { name: string; generation: number; resourceVersion: string };
  status?: { conditions?: { type: string; status: string; reason: string }[]; nodes?: { selected: number; ready: number; failed: number }; failedNodes?: { node: string; reason: string }[] };
}

describe(`${POLICIES} policies for one node: the limit, on the wire and in status`, () => {
  let cluster: TestCluster;
  let topo: Topology;
  let bridge: LoopbackBridge;
  let agent: AgentRun;
  let operator: OperatorRun;
  let server: TcpServer;
  let custom: CustomObjectsApi;

  const policies = async (): Promise<PolicyItem[]> =>
    ((await custom.listClusterCustomObject({ group: API_GROUP, version: API_VERSION, plural: 'tokenpolicies' })) as { items: PolicyItem[] }).items;
  const ready = (p: PolicyItem): boolean => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
  const context = (): string => `agent log:\n${agent.log().slice(-3000)}\noperator log:\n${operator.log().slice(-3000)}`;

  before(async () => {
    cluster = await TestCluster.start();
    const kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfig);
    custom = kc.makeApiClient(CustomObjectsApi);
    topo = await createTopology({ name: 'scale', kind: 'pair' });
    bridge = await bridgeLoopback(topo.client.ns, Number(new URL(cluster.server).port));
    server = await startServer(topo.server.ns, { port: 0 });
    // Three of the destinations are addresses of the peer, so handshakes to them can be captured there.
    for (const i of [0, 700, MAX_POLICIES_PER_NODE]) await run('ip', ['-n', topo.server.ns, 'addr', 'add', `${destination(i)}/32`, 'dev', topo.server.dev]);
    await run('ip', ['-n', topo.client.ns, 'route', 'add', '198.18.0.0/16', 'dev', topo.client.dev]);
    await installChartRbac(cluster, NS);
    await cluster.apply(`apiVersion: v1
kind: Node
metadata: {name: ${NODE}, labels: {role: scale}}
---
apiVersion: v1
kind: Secret
metadata: {name: scale-token, namespace: ${NS}}
type: Opaque
data: {current: ${KEY.toString('base64')}}
`);
    agent = agentIn(topo.client.ns, 'scale');
    await agent.startCluster(await agentKubeconfig(cluster, NODE, NS), NODE, NS, ['--log-level', 'info']);
    operator = await startOperator(cluster, (await freePorts(1))[0] as number, { namespace: NS, podName: 'op-scale' });
    await agent.waitStatus((s) => s.ready, 60_000, 'the agent synced');
  });

  after(async () => {
    operator?.child.kill('SIGTERM');
    await agent?.cleanup();
    await server?.stop();
    await bridge?.close();
    await topo?.destroy();
    await cluster?.stop();
  });

  test('one kubectl create: 1023 applied and Ready, the one past the limit failing with TooManyPolicies', async (t) => {
    const reconcilesBefore = agent.status()?.reconciles ?? 0;
    const t0 = Date.now();
    const docs = Array.from({ length: POLICIES }, (_, i) => `apiVersion: netoken.io/v1alpha1
kind: TokenPolicy
metadata: {name: ${name(i)}}
spec:
  nodeSelector: {matchLabels: {role: scale}}
  interfaces: {names: [${topo.client.dev}]}
  token: {secretRef: {name: scale-token}}
  egress: {destinations: [{cidr: ${destination(i)}/32, ports: [${server.port}]}]}
`);
    await cluster.kubectlOk(['create', '-f', '-'], { input: docs.join('---\n'), timeoutMs: 180_000 });

    const st = await agent.waitStatus((s) => s.policies.filter((p) => p.id > 0).length === MAX_POLICIES_PER_NODE && s.policies.length === POLICIES, 120_000, `${MAX_POLICIES_PER_NODE} policies applied`);
    const over = st.policies.filter((p) => p.id === 0);
    assert.deepEqual(over.map((p) => [p.name, p.errors[0]?.reason]), [[name(MAX_POLICIES_PER_NODE), 'TooManyPolicies']]);
    const reconciles = st.reconciles - reconcilesBefore;
    // kubectl creates one policy at a time, for as long as the machine lets it: the agent
    // reconciles at most once per batching delay (100 ms) while they come, never once a policy.
    const windows = Math.ceil((Date.now() - t0) / 100);
    assert.ok(reconciles <= windows + 5 && reconciles < POLICIES / 2, `the agent coalesced the burst: ${reconciles} reconciles for ${POLICIES} policies in ${windows} batching windows`);

    const report = await waitNodeState(cluster, NODE, (s) => (s.status?.policies?.length ?? 0) === MAX_POLICIES_PER_NODE, 'the report lists 1023 policies', 60_000, () => agent.log());
    const extra = report.status as NodeState['status'] & { policiesOverLimit?: number };
    assert.equal(extra?.policiesOverLimit, 1);
    const bytes = JSON.stringify(report.status).length;
    assert.ok(bytes < 100 * MAX_POLICIES_PER_NODE, `a small report: ${bytes} bytes for ${MAX_POLICIES_PER_NODE} policies`);
    assert.match(report.status?.conditions?.find((c) => c.type === 'Degraded')?.message ?? '', /1 more policies select this node than the 1023 it can apply; not applied: scale-1023/);

    let seen = 0;
    const items = await waitUntil(`${MAX_POLICIES_PER_NODE} policies Ready`, 120_000, async () => {
      const all = await policies();
      seen = all.filter(ready).length;
      return seen === MAX_POLICIES_PER_NODE && all.find((p) => p.metadata.name === name(MAX_POLICIES_PER_NODE))?.status?.nodes?.failed === 1 ? all : undefined;
    }, { everyMs: 500, context: () => `${seen} Ready\n${context()}` });
    t.diagnostic(`${POLICIES} policies: applied by the agent in ${reconciles} reconciles, a report of ${bytes} bytes, all Ready ${((Date.now() - t0) / 1000).toFixed(1)} s after kubectl create began`);
    const last = items.find((p) => p.metadata.name === name(MAX_POLICIES_PER_NODE));
    assert.equal(last?.status?.conditions?.find((c) => c.type === 'Ready')?.reason, 'NodesFailing');
    assert.deepEqual(last?.status?.failedNodes?.map((f) => [f.node, f.reason]), [[NODE, 'TooManyPolicies']]);
    assert.deepEqual(items.find((p) => p.metadata.name === name(700))?.status?.nodes, { selected: 1, ready: 1, failed: 0, withoutAgent: 0 });

    // On the wire: a policy in the middle marks its destination; the one past the limit does not.
    for (const [i, marked] of [[0, true], [700, true], [MAX_POLICIES_PER_NODE, false]] as const) {
      const cap = await startCapture(topo.server.ns, topo.server.dev, { filter: `tcp and dst host ${destination(i)}` });
      const r = await connect(topo.client.ns, destination(i), server.port);
      const res = await cap.stop();
      assert.ok(r.ok, `handshake to ${destination(i)}: ${JSON.stringify(r)}`);
      const syn = res.frames.map((f) => parseFrame(toEthernet(res.linkType, f))).find((p) => p.tcp && (p.tcp.flags & (TCP_SYN | TCP_ACK)) === TCP_SYN);
      assert.ok(syn, `the SYN to ${destination(i)} was captured`);
      assert.equal(findTokenOption(syn, 253, 0x4e54)?.toString('hex') ?? null, marked ? KEY.toString('hex') : null, `${name(i)} ${marked ? 'marks' : 'does not mark'}`);
    }
  });

  test("the operator's status writes, finalizers and labels on policies cost the agent no reconcile", async () => {
    await sleep(3000);
    const before = agent.status()?.reconciles ?? 0;
    // What a policy's spec does not say: its status, its labels, another Secret in the namespace, the Node's status.
    await cluster.kubectlOk(['patch', 'tokenpolicy', name(5), '--subresource=status', '--type=merge', '-p', '{"status":{"observedGeneration":1}}']);
    await cluster.kubectlOk(['label', 'tokenpolicy', name(6), 'team=web']);
    await cluster.kubectlOk(['create', 'secret', 'generic', 'unrelated', '-n', NS, '--from-literal=x=y']);
    await cluster.kubectlOk(['annotate', 'node', NODE, 'heartbeat=1']);
    await sleep(3000);
    assert.equal(agent.status()?.reconciles, before, 'nothing the node does changed');
    // A spec edit does reconcile.
    await cluster.kubectlOk(['patch', 'tokenpolicy', name(6), '--type=merge', '-p', `{"spec":{"egress":{"destinations":[{"cidr":"${destination(6)}/32","ports":[1]}]}}}`]);
    await agent.waitStatus((s) => s.reconciles > before && s.policies.find((p) => p.name === name(6))?.generation === 2, 20_000, 'the edit applied');
  });
});
