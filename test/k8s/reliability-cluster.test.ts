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
import { type AgentRun } from '../lib/agent.js';
import { keySecret, tokenPolicy, yamlStream } from '../lib/manifests.js';
import { run, type Topology } from '../lib/netns.js';
import { type TcpServer } from '../lib/tcp.js';
import { keyLeaks } from '../system/reliability-lib.js';
import { agentKubeconfig, policyAttached, type NodeState } from './chart.js';
import { type TestCluster } from './cluster.js';
import { ClusterNodes, NS } from './node-agents.js';
import { reportedPolicies } from '../../src/agent/node-state.js';

const NODE = 'node-rel';
const GOOD = randomBytes(8);
const VICTIM = randomBytes(8);
const VICTIM2 = randomBytes(8);
const GARBAGE = randomBytes(5);

const secret = (name: string, data: Record<string, Buffer>): string => keySecret(name, data, { namespace: NS });

describe('a key Secret deleted or holding garbage (cluster mode)', () => {
  let env: ClusterNodes;
  let cluster: TestCluster;
  let topo: Topology;
  let agent: AgentRun;
  let p1: TcpServer;
  let p2: TcpServer;
  /** a second server address: the two policies must not claim the same prefix (the first name would win it) */
  let addr2 = '';

  const waitNodeState = (pred: (s: NodeState) => boolean, what: string, ms = 30_000): Promise<NodeState> =>
    env.nodeState(NODE, agent, pred, what, ms);
  const policyOf = (s: NodeState, name: string): NonNullable<NonNullable<NodeState['status']>['policies']>[number] | undefined =>
    reportedPolicies(s.status).find((p) => p.name === name);
  const tokenTo = async (port: number): Promise<string | null> =>
    (await env.synToken(port === p2.port ? addr2 : topo.server.ipv4, port))?.toString('hex') ?? null;
  const alive = (): void =>
    assert.ok(agent.child && agent.child.exitCode === null, `the agent is still running\n${agent.log().slice(-3000)}`);

  before(async () => {
    env = await ClusterNodes.start('relk8s');
    ({ cluster, topo } = env);
    p1 = await env.server();
    p2 = await env.server();
    addr2 = topo.server.ipv4.replace(/\.\d+$/, '.77');
    await run('ip', ['-n', topo.server.ns, 'addr', 'add', `${addr2}/32`, 'dev', topo.server.dev]);
    await cluster.apply(yamlStream([secret('good-key', { current: GOOD }), secret('victim-key', { current: VICTIM })]));
    agent = await env.startAgent('client', NODE, 'relk8s');
    const policy = (name: string, secretName: string, addr: string, port: number): string =>
      tokenPolicy(
        name,
        `interfaces: {names: [${topo.client.dev}]}
token: {mode: Static, secretRef: {name: ${secretName}}}
egress: {destinations: [{cidr: ${addr}/32, ports: [${port}]}]}`,
      );
    await cluster.apply(
      yamlStream([policy('good', 'good-key', topo.server.ipv4, p1.port), policy('victim', 'victim-key', addr2, p2.port)]),
    );
  });

  after(async () => {
    await env?.stop();
  });

  test('both policies mark with their keys', async () => {
    await waitNodeState(
      (s) => reportedPolicies(s.status).length === 2 && s.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True',
      'both applied',
    );
    assert.equal(await tokenTo(p1.port), GOOD.toString('hex'));
    assert.equal(await tokenTo(p2.port), VICTIM.toString('hex'));
  });

  test('the Secret deleted: SecretUnavailable and Degraded, the log says it, the keys read before stay in use, the other policy is untouched', async () => {
    await cluster.kubectlOk(['delete', 'secret', '-n', NS, 'victim-key']);
    const s = await waitNodeState(
      (x) => policyOf(x, 'victim')?.errors?.some((e) => e.reason === 'SecretUnavailable') === true,
      'victim reports SecretUnavailable',
    );
    const e = policyOf(s, 'victim')!.errors!.find((x) => x.reason === 'SecretUnavailable')!;
    assert.match(e.message, new RegExp(`Secret "victim-key" not found in namespace ${NS}; the keys read before stay in use`));
    const degraded = s.status?.conditions?.find((c) => c.type === 'Degraded');
    assert.equal(degraded?.status, 'True');
    assert.equal(degraded?.reason, 'SecretUnavailable');
    assert.deepEqual(policyOf(s, 'good')?.errors ?? [], [], 'good has no error');
    assert.ok(policyAttached(s, 'victim'), 'victim stays attached');
    assert.equal(await tokenTo(p2.port), VICTIM.toString('hex'), 'victim keeps marking with the key read before');
    assert.equal(await tokenTo(p1.port), GOOD.toString('hex'), 'good keeps marking');
    assert.ok(
      agent
        .log()
        .split('\n')
        .some((l) => /SecretUnavailable/.test(l) && /victim-key/.test(l)),
      'a log line names the Secret',
    );
    assert.match((await agent.cli(['status'])).stdout, /victim .*SecretUnavailable: Secret "victim-key" not found/);
    alive();
  });

  test('the Secret back holding garbage (5 bytes, or no current key): the same, with what is wrong; the key read before is still the one in use', async () => {
    for (const [what, data, want] of [
      ['5 bytes', { current: GARBAGE }, /current holds 5 bytes; a Static token needs exactly 8/],
      ['no current key', { previous: GARBAGE }, /has no "current" key/],
    ] as const) {
      await cluster.apply(secret('victim-key', data));
      const s = await waitNodeState(
        (x) => policyOf(x, 'victim')?.errors?.some((e) => want.test(e.message)) === true,
        `victim reports ${what}`,
      );
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
    await waitNodeState(
      (x) => policyOf(x, 'victim')?.errors?.some((e) => /holds 5 bytes/.test(e.message)) === true,
      'garbage seen',
    );
    await agent.stop('SIGKILL');
    const kubeconfig = await agentKubeconfig(cluster, NODE, NS);
    await agent.startCluster(kubeconfig, NODE, NS);
    const s = await waitNodeState(
      (x) => {
        const v = policyOf(x, 'victim');
        return (
          v !== undefined &&
          (v.interfaces ?? []).length === 0 &&
          v.errors?.some((e) => e.reason === 'SecretUnavailable' && !/stay in use/.test(e.message)) === true
        );
      },
      'victim not applied after the restart',
      60_000,
    );
    assert.ok(policyAttached(s, 'good'));
    assert.equal(await tokenTo(p1.port), GOOD.toString('hex'), 'good keeps marking');
    assert.equal(await tokenTo(p2.port), null, 'victim does not mark with a key it cannot read');
    await cluster.apply(secret('victim-key', { current: VICTIM2 }));
    await waitNodeState(
      (x) => x.status?.conditions?.find((c) => c.type === 'Degraded')?.status === 'False',
      'fixed after the restart',
    );
    assert.equal(await tokenTo(p2.port), VICTIM2.toString('hex'));
  });

  test('no key or garbage in the TokenNodeState, events, metrics, the log or netoken status', async () => {
    const m = await run('nsenter', [
      `--net=/var/run/netns/${topo.client.ns}`,
      '--',
      process.execPath,
      '-e',
      'fetch("http://127.0.0.1:9090/metrics").then(r => r.text()).then(t => process.stdout.write(t))',
    ]);
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
