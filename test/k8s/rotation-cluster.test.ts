/**
 * Key rotation across nodes against a real kube-apiserver: two network namespaces stand for
 * two nodes, each with a cluster-mode agent reaching the API server through its own loopback
 * bridge. Node A marks (policy "mark"), node B enforces (policy "guard"); both policies share
 * one operator-made key Secret. Connections run from A to B while the key rotates several
 * times, with B's and then A's view of the API cut for part of the time: not one connection
 * fails and B counts no invalid token. Then a revocation: A, cut off and still signing with
 * the leaked key, is refused within seconds.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { ROOT, counter, type AgentRun } from '../lib/agent.js';
import { type LoopbackBridge } from '../lib/loopback-bridge.js';
import { nodeYaml, tokenPolicy, yamlStream } from '../lib/manifests.js';
import { spawnIn, waitForExit, type Topology } from '../lib/netns.js';
import { connect, type TcpServer } from '../lib/tcp.js';
import { type OperatorRun } from './chart.js';
import { type TestCluster } from './cluster.js';
import { ClusterNodes, NS } from './node-agents.js';
import { sleep, waitUntil } from '../../src/lib/wait.js';
import { type NodeStateStatus, reportedPolicies } from '../../src/agent/node-state.js';

const CONNECT_LOOP = path.join(ROOT, 'dist/test/lib/connect-loop.js');
const EPOCH_SECONDS = 5;
const RETIRE_MARGIN = '2s';

interface Secret {
  metadata: { annotations?: Record<string, string>; resourceVersion: string };
  data?: Record<string, string>;
}
interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
}
interface Policy {
  status?: { conditions?: Condition[] };
}
interface NodeKeysReport {
  status?: NodeStateStatus;
}

describe('key rotation across two nodes', () => {
  let env: ClusterNodes;
  let cluster: TestCluster;
  let topo: Topology;
  let bridgeA: LoopbackBridge;
  let bridgeB: LoopbackBridge;
  let agentA: AgentRun;
  let agentB: AgentRun;
  let operator: OperatorRun;
  let echo: TcpServer;
  const OPERATOR_METRICS = 19000 + (process.pid % 20000);

  const logs = (): string => `\noperator log:\n${operator?.log().slice(-4000)}\nagent B log:\n${agentB?.log().slice(-2000)}`;
  const getJson = async <T>(args: string[]): Promise<T | undefined> => {
    const r = await cluster.kubectl(['get', ...args, '-o', 'json']);
    return r.code === 0 ? (JSON.parse(r.stdout) as T) : undefined;
  };
  const secret = (): Promise<Secret | undefined> => getJson<Secret>(['secret', '-n', NS, 'rot-key']);
  const generation = (s: Secret | undefined): number => Number(s?.metadata.annotations?.['netoken.io/key-generation']);
  const eventually = <T>(what: string, ms: number, probe: () => Promise<T | undefined>): Promise<T> =>
    waitUntil(what, ms, probe, { everyMs: 250, context: logs });
  const reported = async (node: string, policy: string): Promise<{ signs: number; accepts: number[] } | undefined> =>
    reportedPolicies((await getJson<NodeKeysReport>(['tokennodestate', node]))?.status).find((p) => p.name === policy)?.keys;
  const keyRotation = async (policy: string): Promise<Condition | undefined> =>
    (await getJson<Policy>(['tokenpolicy', policy]))?.status?.conditions?.find((c) => c.type === 'KeyRotation');
  /** Waits until the Secret is back to one key, at generation `g`. */
  const idleAt = (g: number, ms = 90_000): Promise<Secret> =>
    eventually(`rotation to generation ${g} done`, ms, async () => {
      const s = await secret();
      return s && generation(s) === g && Object.keys(s.data ?? {}).join() === 'current' ? s : undefined;
    });
  const rotate = (value: string): Promise<unknown> =>
    cluster.kubectlOk(['annotate', 'tokenpolicy', 'mark', `netoken.io/rotate=${value}`, '--overwrite']);

  before(async () => {
    env = await ClusterNodes.start('rot');
    ({ cluster, topo } = env);
    echo = await env.server();
    const token = `token: {mode: Keyed, epochSeconds: ${EPOCH_SECONDS}, secretRef: {name: rot-key}}`;
    await cluster.apply(
      yamlStream([
        nodeYaml('node-a', { role: 'client' }),
        nodeYaml('node-b', { role: 'server' }),
        tokenPolicy(
          'mark',
          `nodeSelector: {matchLabels: {role: client}}
interfaces: {names: [${topo.client.dev}]}
${token}
egress: {destinations: [{cidr: ${topo.server.ipv4}/32, ports: [${echo.port}]}]}`,
        ),
        tokenPolicy(
          'guard',
          `nodeSelector: {matchLabels: {role: server}}
interfaces: {names: [${topo.server.dev}]}
${token}
ingress: {action: Enforce, ports: [${echo.port}]}`,
        ),
      ]),
    );
    operator = await env.startOperator('op-rot', {
      metricsPort: OPERATOR_METRICS,
      extraArgs: [`--key-retire-margin=${RETIRE_MARGIN}`],
    });
    bridgeA = await env.bridge('client');
    bridgeB = await env.bridge('server');
    agentA = await env.startAgent('client', 'node-a', 'rot-a');
    agentB = await env.startAgent('server', 'node-b', 'rot-b');
    await eventually('both nodes hold key generation 1', 60_000, async () => {
      const a = await reported('node-a', 'mark');
      const b = await reported('node-b', 'guard');
      return a?.signs === 1 && b?.signs === 1 ? true : undefined;
    });
  });

  after(async () => {
    await env?.stop();
  });

  test('the key rotates four times while A connects to B, with B and then A cut off from the API for a while: no connection fails, no token is refused', async (t) => {
    const verifierBefore = await agentB.statusReport();
    const loop = spawnIn(topo.client.ns, process.execPath, [
      CONNECT_LOOP,
      topo.server.ipv4,
      String(echo.port),
      String(15 * 60_000),
      '5000',
      '20',
    ]);
    let out = '';
    loop.stdout?.setEncoding('utf8');
    loop.stdout?.on('data', (d: string) => (out += d));
    const stages: string[] = [];
    try {
      // 1. A plain rotation: publish, switch, retire.
      await rotate('r1');
      // Both nodes report within a second, so `next` may come and go between two looks: the
      // generation moving on is the sign it was published.
      const published = await eventually('generation 2 published', 20_000, async () => {
        const s = await secret();
        return s?.data?.next || generation(s) >= 2 ? true : undefined;
      });
      assert.ok(published);
      await idleAt(2);
      stages.push('rotation 1 done');

      // 2. B cut off: the new key is published but markers must not switch until B accepts it.
      await bridgeB.stop();
      await rotate('r2');
      await eventually('generation 3 published', 20_000, async () => ((await secret())?.data?.next ? true : undefined));
      await eventually('node A accepts generation 3', 20_000, async () =>
        (await reported('node-a', 'mark'))?.accepts.includes(3) ? true : undefined,
      );
      await sleep(8000);
      const held = await secret();
      assert.equal(generation(held), 2, 'markers still sign with generation 2 while B has not accepted 3');
      assert.ok(held?.data?.next, 'generation 3 is still only published');
      const waiting = await keyRotation('mark');
      assert.equal(waiting?.status, 'True');
      assert.match(waiting?.message ?? '', /key generation 3 published: 1 of 2 nodes accept it; waiting for node-b/);
      assert.equal(
        await keyRotation('guard').then((c) => c?.message),
        waiting?.message,
        'the policy sharing the Secret says the same',
      );
      await bridgeB.start();
      await idleAt(3);
      stages.push('rotation 2 (B cut) done');

      // 3. B cut, then A cut once it accepts the new key: B back, markers switch, A has not seen
      //    it and signs with the old key, which B still accepts; the old key waits for A.
      await bridgeB.stop();
      await rotate('r3');
      await eventually('node A accepts generation 4', 30_000, async () =>
        (await reported('node-a', 'mark'))?.accepts.includes(4) ? true : undefined,
      );
      await bridgeA.stop();
      await bridgeB.start();
      await eventually('markers switched to generation 4', 60_000, async () =>
        generation(await secret()) === 4 ? true : undefined,
      );
      await sleep(EPOCH_SECONDS * 1000 + 10_000);
      const retiring = await secret();
      assert.equal(generation(retiring), 4);
      assert.ok(retiring?.data?.previous, 'generation 3 is still accepted: node A has not reported signing with 4');
      assert.match((await keyRotation('mark'))?.message ?? '', /1 of 2 nodes sign with it; waiting for node-a/);
      await bridgeA.start();
      await idleAt(4);
      stages.push('rotation 3 (B, then A cut) done');

      // 4. One more, undisturbed.
      await rotate('r4');
      await idleAt(5);
      stages.push('rotation 4 done');
    } finally {
      await bridgeA.start().catch(() => undefined);
      await bridgeB.start().catch(() => undefined);
      loop.kill('SIGTERM');
      assert.ok(await waitForExit(loop, 20_000), 'the loop ends');
      t.diagnostic(`stages: ${stages.join('; ')}`);
    }
    const verifierAfter = await agentB.statusReport();
    const summary = JSON.parse(out.trim()) as { attempts: number; ok: number; failures: { at: number; error: string }[] };
    const d = (name: string): number => counter(verifierAfter, name, 'guard') - counter(verifierBefore, name, 'guard');
    t.diagnostic(
      `${summary.attempts} connections, ${summary.failures.length} failed; B counted ${d('verify_valid')} valid, ${d('verify_invalid')} invalid, ${d('verify_missing')} missing`,
    );
    assert.ok(summary.attempts >= 200, `the loop kept connecting: ${summary.attempts}`);
    assert.deepEqual(summary.failures.slice(0, 5), [], 'no connection failed');
    assert.equal(d('verify_invalid'), 0, 'B refused no token');
    assert.ok(
      d('verify_valid') >= summary.attempts,
      `every SYN was checked and valid (${d('verify_valid')} for ${summary.attempts})`,
    );

    // What users see: the steps as Events, the nodes' reports, the condition.
    const events = await cluster.kubectl([
      'get',
      'events',
      '-A',
      '--field-selector',
      'involvedObject.kind=TokenPolicy',
      '-o',
      'json',
    ]);
    const reasons = (JSON.parse(events.stdout) as { items: { reason: string; involvedObject: { name: string } }[] }).items.map(
      (e) => e.reason,
    );
    for (const r of ['KeyGenerated', 'RotationStarted', 'KeySwitched', 'KeyRetired'])
      assert.ok(reasons.includes(r), `an Event ${r}: ${reasons.join(', ')}`);
    // B reports the retired key gone with its next write, which may come a few seconds after the Secret lost it.
    await eventually('node-b reports key generation 5 only', 30_000, async () => {
      const r = await reported('node-b', 'guard');
      return r?.signs === 5 && r.accepts.length === 1 && r.accepts[0] === 5 ? r : undefined;
    });
    const idle = await eventually('the KeyRotation condition Idle', 30_000, async () => {
      const c = await keyRotation('mark');
      return c?.reason === 'Idle' ? c : undefined;
    });
    assert.equal(idle.message, 'no rotation under way; markers sign with key generation 5');
  });

  test('netoken.io/revoke: the leaked key is refused within seconds, also from a node that has not seen the new one', async (t) => {
    const before = await agentB.statusReport();
    // A is cut off: it keeps signing with the leaked key.
    await bridgeA.stop();
    const leaked = (await secret())?.data?.current;
    const t0 = Date.now();
    await cluster.kubectlOk(['annotate', 'tokenpolicy', 'mark', 'netoken.io/revoke=leak-1']);
    let refusedAfter: number | undefined;
    while (Date.now() - t0 < 30_000) {
      const r = await connect(topo.client.ns, topo.server.ipv4, echo.port, { timeoutMs: 800 });
      if (!r.ok) {
        refusedAfter = Date.now() - t0;
        break;
      }
      await sleep(100);
    }
    t.diagnostic(`old-key SYNs refused ${refusedAfter} ms after the annotation`);
    assert.ok(refusedAfter !== undefined && refusedAfter < 10_000, `refused within 10 s (${refusedAfter} ms)`);
    const s = await secret();
    assert.notEqual(s?.data?.current, leaked);
    assert.deepEqual(Object.keys(s?.data ?? {}), ['current'], 'no old key kept');
    const after1 = await agentB.statusReport();
    assert.ok(
      counter(after1, 'verify_invalid', 'guard') > counter(before, 'verify_invalid', 'guard'),
      'B counts the refused SYNs as invalid',
    );
    const cond = await keyRotation('mark');
    assert.equal(cond?.reason, 'Revoked');
    const events = await cluster.kubectl([
      'get',
      'events',
      '-A',
      '--field-selector',
      'involvedObject.name=mark,reason=KeyRevoked',
      '-o',
      'json',
    ]);
    const ev = (JSON.parse(events.stdout) as { items: { type: string; message: string }[] }).items;
    assert.equal(ev[0]?.type, 'Warning');
    assert.match(ev[0]?.message ?? '', /revoked at once \(annotation netoken.io\/revoke=leak-1\)/);

    // A back: it learns the new key and connects again.
    await bridgeA.start();
    await eventually('A connects with the new key', 60_000, async () =>
      (await connect(topo.client.ns, topo.server.ipv4, echo.port, { timeoutMs: 2000 })).ok ? true : undefined,
    );

    // No key in events, conditions or node reports.
    const texts = [
      (await cluster.kubectl(['get', 'events', '-A', '-o', 'json'])).stdout,
      (await cluster.kubectl(['get', 'tokenpolicies', '-o', 'json'])).stdout,
      (await cluster.kubectl(['get', 'tokennodestates', '-o', 'json'])).stdout,
      operator.log(),
      agentA.log(),
      agentB.log(),
    ];
    const keys = [leaked, (await secret())?.data?.current].filter((k): k is string => !!k);
    for (const k of keys) {
      const hex = Buffer.from(k, 'base64').toString('hex');
      for (const text of texts) assert.ok(!text.includes(k) && !text.includes(hex), 'a key appears in events, status or a log');
    }
  });
});
