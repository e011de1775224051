/**
 * A key Secret deleted or holding garbage, in cluster mode against a real API server (the
 * agent with the chart's RBAC, no operator to heal the Secret): the policy reports
 * SecretUnavailable in its TokenNodeState (Degraded) and in `netoken status`, the log says
 * it, the keys read before stay in use (the policy keeps marking), the other policy is
 * untouched, the agent keeps running, and a fixed Secret applies its new key. No key
 * appears in the TokenNodeState, the events, /metrics, the log or `netoken status`.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { TCP_ACK, TCP_SYN, findTokenOption, parseFrame } from '../../src/lib/packet.js';
import { toEthernet } from '../../src/lib/pcap.js';
import { agentIn, type AgentRun } from '../lib/agent.js';
import { startCapture } from '../lib/capture.js';
import { bridgeLoopback, type LoopbackBridge } from '../lib/loopback-bridge.js';
import { createTopology, run, type Topology } from '../lib/netns.js';
import { connect, startServer, type TcpServer } from '../lib/tcp.js';
import { keyLeaks } from '../system/reliability-lib.js';
import { agentKubeconfig, installChartRbac, policyAttached, waitNodeState as waitNodeStateIn, type NodeState } from './chart.js';
import { TestCluster } from './cluster.js';

const NS = 'netoken-system';
const NODE = 'node-rel';
const GOOD = randomBytes(8);
const VICTIM = randomBytes(8);
const VICTIM2 = randomBytes(8);
const GARBAGE = randomBytes(5);


function secret(name: string, data: Record<string, Buffer>): string {
  return `apiVersion: v1
kind: Secret
metadata: {name: ${name}, namespace: ${NS}}
type: Opaque
data: {${Object.entries(data).map(([k, v]) => `${k}: ${v.toString('base64')}`).join(', ')}}
`;
}

describe('a key Secret deleted or holding garbage (cluster mode)', () => {
  let cluster: TestCluster;
  let topo: Topology;
  let bridge: LoopbackBridge;
  let agent: AgentRun;
  let p1: TcpServer;
  let p2: TcpServer;
  /** a second server address: the two policies must not claim the same prefix (the first name would win it) */
  let addr2 = '';

  const waitNodeState = (pred: (s: NodeState) => boolean, what: string, ms = 30_000): Promise<NodeState> =>
    waitNodeStateIn(cluster, NODE, pred, what, ms, () => agent.log());
  const policyOf = (s: NodeState, name: string): NonNullable<NonNullable<NodeState['status']>['policies']>[number] | undefined => s.status?.policies?.find((p) => p.name === name);
  const tokenTo = async (port: number): Promise<string | null> => {
    const cap = await startCapture(topo.server.ns, topo.server.dev, { filter: `tcp dst port ${port}` });
    const r = await connect(topo.client.ns, port === p2.port ? addr2 : topo.server.ipv4, port);
    const res = await cap.stop();
    assert.ok(r.ok, `handshake to ${port}: ${JSON.stringify(r)}`);
    const syn = res.frames.map((f) => parseFrame(toEthernet(res.linkType, f))).find((p) => p.tcp && (p.tcp.flags & (TCP_SYN | TCP_ACK)) === TCP_SYN);
    assert.ok(syn, 'the SYN was captured');
    return findTokenOption(syn, 253, 0x4e54)?.toString('hex') ?? null;
  };
  const alive = (): void => assert.ok(agent.child && agent.child.exitCode === null, `the agent is still running\n${agent.log().slice(-3000)}`);

  before(async () => {
    cluster = await TestCluster.start();
    topo = await createTopology({ name: 'relk8s', kind: 'pair' });
    bridge = await bridgeLoopback(topo.client.ns, Number(new URL(cluster.server).port));
    p1 = await startServer(topo.server.ns, { port: 0 });
    p2 = await startServer(topo.server.ns, { port: 0 });
    addr2 = topo.server.ipv4.replace(/\.\d+$/, '.77');
    await run('ip', ['-n', topo.server.ns, 'addr', 'add', `${addr2}/32`, 'dev', topo.server.dev]);
    await installChartRbac(cluster, NS);
    await cluster.apply(secret('good-key', { current: GOOD }) + '---\n' + secret('victim-key', { current: VICTIM }));
    const kubeconfig = await agentKubeconfig(cluster, NODE, NS);
    agent = agentIn(topo.client.ns, 'relk8s');
    await agent.startCluster(kubeconfig, NODE, NS);
    const policy = (name: string, secretName: string, addr: string, port: number): string => `apiVersion: netoken.io/v1alpha1
kind: TokenPolicy
metadata: {name: ${name}}
spec:
  interfaces: {names: [${topo.client.dev}]}
  token: {mode: Static, secretRef: {name: ${secretName}}}
  egress: {destinations: [{cidr: ${addr}/32, ports: [${port}]}]}
`;
    await cluster.apply(policy('good', 'good-key', topo.server.ipv4, p1.port) + '---\n' + policy('victim', 'victim-key', addr2, p2.port));
  });

  after(async () => {
    await agent?.cleanup();
    await p1?.stop();
    await p2?.stop();
    await bridge?.close();
    await topo?.destroy();
    await cluster?.stop();
  });

  test('both policies mark with their keys', async () => {
    await waitNodeState((s) => (s.status?.policies ?? []).length === 2 && s.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True', 'both applied');
    assert.equal(await tokenTo(p1.port), GOOD.toString('hex'));
    assert.equal(await tokenTo(p2.port), VICTIM.toString('hex'));
  });

  test('the Secret deleted: SecretUnavailable and Degraded, the log says it, the keys read before stay in use, the other policy is untouched', async () => {
    await cluster.kubectlOk(['delete', 'secret', '-n', NS, 'victim-key']);
    const s = await waitNodeState((x) => policyOf(x, 'victim')?.errors?.some((e) => e.reason === 'SecretUnavailable') === true, 'victim reports SecretUnavailable');
    const e = policyOf(s, 'victim')!.errors!.find((x) => x.reason === 'SecretUnavailable')!;
    assert.match(e.message, new RegExp(`Secret "victim-key" not found in namespace ${NS}; the keys read before stay in use`));
    const degraded = s.status?.conditions?.find((c) => c.type === 'Degraded');
    assert.equal(degraded?.status, 'True');
    assert.equal(degraded?.reason, 'SecretUnavailable');
    assert.deepEqual(policyOf(s, 'good')?.errors ?? [], [], 'good has no error');
    assert.ok(policyAttached(s, 'victim'), 'victim stays attached');
    assert.equal(await tokenTo(p2.port), VICTIM.toString('hex'), 'victim keeps marking with the key read before');
    assert.equal(await tokenTo(p1.port), GOOD.toString('hex'), 'good keeps marking');
    assert.ok(agent.log().split('\n').some((l) => /SecretUnavailable/.test(l) && /victim-key/.test(l)), 'a log line names the Secret');
    assert.match((await agent.cli(['status'])).stdout, /victim .*SecretUnavailable: Secret "victim-key" not found/);
    alive();
  });

  test('the Secret back holding garbage (5 bytes, or no current key): the same, with what is wrong; the key read before is still the one in use', async () => {
    for (const [what, data, want] of [
      ['5 bytes', { current: GARBAGE }, /current holds 5 bytes; a Static token needs exactly 8/],
      ['no current key', { previous: GARBAGE }, /has no "current" key/],
    ] as const) {
      await cluster.apply(secret('victim-key', data));
      const s = await waitNodeState((x) => policyOf(x, 'victim')?.errors?.some((e) => want.test(e.message)) === true, `victim reports ${what}`);
      assert.match(policyOf(s, 'victim')!.errors![0]!.message, /the keys read before stay in use/);
      assert.equal(await tokenTo(p2.port), VICTIM.toString('hex'), `${what}: still the key read before`);
      assert.equal(await tokenTo(p1.port), GOOD.toString('hex'));
      alive();
    }
  });

  test('a good Secret again: the new key applies and the error clears', async () => {
    await cluster.apply(secret('victim-key', { current: VICTIM2 }));
    await waitNodeState((x) => x.status?.conditions?.find((c) => c.type === 'Degraded')?.status === 'False', 'not degraded');
    assert.equal(await tokenTo(p2.port), VICTIM2.toString('hex'), 'the new key');
  });

  test('an agent restarted while the Secret is garbage cannot know the old key: the policy reports it and is not applied, the other goes on', async () => {
    await cluster.apply(secret('victim-key', { current: GARBAGE }));
    await waitNodeState((x) => policyOf(x, 'victim')?.errors?.some((e) => /holds 5 bytes/.test(e.message)) === true, 'garbage seen');
    await agent.stop('SIGKILL');
    const kubeconfig = await agentKubeconfig(cluster, NODE, NS);
    await agent.startCluster(kubeconfig, NODE, NS);
    const s = await waitNodeState((x) => {
      const v = policyOf(x, 'victim');
      return v !== undefined && (v.interfaces ?? []).length === 0 && v.errors?.some((e) => e.reason === 'SecretUnavailable' && !/stay in use/.test(e.message)) === true;
    }, 'victim not applied after the restart', 60_000);
    assert.ok(policyAttached(s, 'good'));
    assert.equal(await tokenTo(p1.port), GOOD.toString('hex'), 'good keeps marking');
    assert.equal(await tokenTo(p2.port), null, 'victim does not mark with a key it cannot read');
    await cluster.apply(secret('victim-key', { current: VICTIM2 }));
    await waitNodeState((x) => x.status?.conditions?.find((c) => c.type === 'Degraded')?.status === 'False', 'fixed after the restart');
    assert.equal(await tokenTo(p2.port), VICTIM2.toString('hex'));
  });

  test('no key or garbage in the TokenNodeState, events, metrics, the log or netoken status', async () => {
    const m = await run('nsenter', [`--net=/var/run/netns/${topo.client.ns}`, '--', process.execPath, '-e', 'fetch("http://127.0.0.1:9090/metrics").then(r => r.text()).then(t => process.stdout.write(t))']);
    assert.match(m.stdout, /netoken_packets_total\{policy="victim"/);
    const texts: Array<[string, string]> = [
      ['TokenNodeState', await cluster.kubectlOk(['get', 'tokennodestates,tokenpolicies', '-o', 'json'])],
      ['events', await cluster.kubectlOk(['get', 'events', '-A', '-o', 'json'])],
      ['metrics', m.stdout],
      ['agent log', agent.log()],
      ['netoken status', (await agent.cli(['status'])).stdout + (await agent.cli(['status', '-o', 'json'])).stdout],
    ];
    const leaks = texts.flatMap(([where, text]) => keyLeaks(where, text, [GOOD, VICTIM, VICTIM2, GARBAGE]));
    assert.deepEqual(leaks, []);
  });
});
