/**
 * The ingress verifier for real: `netoken agent` processes in network namespaces, one
 * server verifying SYNs on several veth links (XDP), clients that mark with the right key,
 * a wrong key, an expired key or not at all, raw SYNs that replay a captured token on a
 * new source port, key rotation under load, and XDP next to someone else's XDP program.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import {
  TCP_ACK,
  TCP_RST,
  TCP_SYN,
  buildFrame,
  findTokenOption,
  parseFrame,
  tokenOption,
  type ParsedFrame,
} from '../../src/lib/packet.js';
import { toEthernet } from '../../src/lib/pcap.js';
import { BIND_ALL, epochAt, keyedToken } from '../../src/lib/siphash.js';
import type { AgentStatus } from '../../src/agent/agent.js';
import { agentIn, bindingScriptIn, counter, type AgentRun } from '../lib/agent.js';
import { startCapture } from '../lib/capture.js';
import { fixture } from '../lib/native.js';
import { createTopology, exec, spawnIn, waitForExit, type Topology } from '../lib/netns.js';
import { sendFrame } from '../lib/raw-send.js';
import { createStar, type Star } from '../lib/star.js';
import { connect, startServer, synsSent, tcpCounters } from '../lib/tcp.js';
import { sleep } from '../../src/lib/wait.js';
import { PACKAGE_ROOT } from '../../src/lib/package.js';

const CONNECT_LOOP = path.join(PACKAGE_ROOT, 'dist/test/lib/connect-loop.js');
const KIND = 253;
const EXID = 0x4e54;
const EPOCH_SECONDS = 60;
/** Short enough that a failed connect sends exactly one SYN (the first retransmission comes after 1 s). */
const FAIL_TIMEOUT_MS = 700;

const K0 = randomBytes(16);
const K1 = randomBytes(16);
const K2 = randomBytes(16);
const WRONG = randomBytes(16);

function secretYaml(name: string, current: Buffer, previous?: Buffer): string {
  return `apiVersion: v1
kind: Secret
metadata: {name: ${name}}
type: Opaque
data:
  current: ${current.toString('base64')}
${previous ? `  previous: ${previous.toString('base64')}\n` : ''}`;
}

/** A Keyed TokenPolicy; `spec` is YAML at two spaces under spec (interfaces, egress, ingress, nodeSelector). */
function keyedPolicyYaml(name: string, secret: string, spec: string, epochSeconds = EPOCH_SECONDS): string {
  return `apiVersion: netoken.io/v1alpha1
kind: TokenPolicy
metadata: {name: ${name}}
spec:
  token: {mode: Keyed, secretRef: {name: ${secret}}, epochSeconds: ${epochSeconds}}
  option: {kind: ${KIND}, experimentId: 0x${EXID.toString(16)}}
${spec.replace(/^/gm, '  ')}
`;
}

function docs(...d: string[]): string {
  return d.join('---\n');
}

/** Wait until the agent has reconciled again after a change of its policy file. */
async function reconciled(agent: AgentRun, before: AgentStatus, what: string): Promise<AgentStatus> {
  return agent.waitStatus((s) => s.reconciles > before.reconciles && s.documentErrors.length === 0, 15_000, what);
}

/** Program ids TCX runs at the ingress of `ifindex` in `ns`, as the kernel reports them. */
async function tcxIngress(ns: string, ifindex: number): Promise<number[]> {
  const script = `console.log(JSON.stringify(binding().tcxQuery(Number(process.argv[1]), 'ingress')));`;
  const stdout = await bindingScriptIn(ns, script, [String(ifindex)]);
  return JSON.parse(stdout) as number[];
}

function synsOf(cap: { linkType: number; frames: Buffer[] }): ParsedFrame[] {
  return cap.frames.map((f) => parseFrame(toEthernet(cap.linkType, f))).filter((p) => p.tcp);
}

const stars: Star[] = [];
const topologies: Topology[] = [];
after(async () => {
  for (const s of stars) await s.destroy();
  for (const t of topologies) await t.destroy();
});

describe('ingress verifier, standalone agents in network namespaces', () => {
  test('Enforce: the right key connects; unmarked, wrong-key, replayed and expired-key SYNs do not; exempt sources do; counters are exact', async () => {
    const star = await createStar({ name: 'enf', clients: 5 });
    stars.push(star);
    const [good, unmarked, wrong, old, exempt] = star.clients as [
      (typeof star.clients)[0],
      (typeof star.clients)[0],
      (typeof star.clients)[0],
      (typeof star.clients)[0],
      (typeof star.clients)[0],
    ];
    const serverAgent = agentIn(star.serverNs, 'vsrv');
    const marking: [AgentRun, Buffer][] = [
      [agentIn(good.ns, 'vgood'), K1],
      [agentIn(wrong.ns, 'vwrong'), WRONG],
      [agentIn(old.ns, 'vold'), K0],
    ];
    const all = [serverAgent, ...marking.map(([a]) => a)];
    try {
      const server = await startServer(star.serverNs, { port: 0 });
      const port = server.port;
      const ifPattern = `${good.serverDev.slice(0, -1)}*`;
      const guard = (current: Buffer, previous?: Buffer): string =>
        docs(
          keyedPolicyYaml(
            'guard',
            'guard-key',
            `interfaces: {patterns: ["${ifPattern}"]}
ingress:
  action: Enforce
  ports: [${port}]
  exemptSources: [${exempt.ipv4}/32]
  replayLimit: 1`,
          ),
          secretYaml('guard-key', current, previous),
        );
      serverAgent.writePolicy(guard(K1, K0));
      await serverAgent.start();
      for (const [agent, key] of marking) {
        const c = star.clients.find((x) => x.ns === agent.ns)!;
        agent.writePolicy(
          docs(
            keyedPolicyYaml(
              'mark',
              'mark-key',
              `interfaces: {names: [${c.dev}]}\negress: {destinations: [{cidr: 10.88.0.0/16, ports: [${port}]}, {cidr: "fd00:88::/32", ports: [${port}]}]}`,
            ),
            secretYaml('mark-key', key),
          ),
        );
        await agent.start();
      }
      const s0 = await serverAgent.waitStatus((s) => s.hooks.length === 5 && s.ready, 20_000, 'the verifier on all five links');
      for (const h of s0.hooks) {
        assert.equal(h.direction, 'ingress');
        assert.equal(
          h.mode,
          'tcx',
          `a veth is verified at tc (TCX), not at XDP on copies of its packets: ${h.name} is ${h.mode}`,
        );
      }
      for (const [agent] of marking) await agent.waitStatus((s) => s.hooks.length === 1 && s.ready, 20_000, 'the marker');
      const table = (await serverAgent.cli(['status'])).stdout;
      assert.match(
        table,
        new RegExp(`${good.serverDev}\\s+\\d+\\s+ingress\\s+tcx\\s+\\d+\\s+\\d+\\s+yes\\s+0\\s+guard`),
        `status shows the hook live, nothing unreadable:\n${table}`,
      );

      const before = new Map<string, Record<string, number>>();
      for (const c of star.clients) before.set(c.ns, await tcpCounters(c.ns));

      // Phase A: the server accepts K1 (current) and K0 (previous).
      const cap = await startCapture(good.ns, good.dev, { filter: 'tcp' });
      const rGood4 = await connect(good.ns, good.serverIpv4, port);
      const rGood6 = await connect(good.ns, good.serverIpv6, port);
      const rOld = await connect(old.ns, old.serverIpv4, port);
      const rUnmarked = await connect(unmarked.ns, unmarked.serverIpv4, port, { timeoutMs: FAIL_TIMEOUT_MS });
      const rWrong = await connect(wrong.ns, wrong.serverIpv4, port, { timeoutMs: FAIL_TIMEOUT_MS });
      const rExempt = await connect(exempt.ns, exempt.serverIpv4, port);
      assert.ok(rGood4.ok, `right key, IPv4: ${JSON.stringify(rGood4)}`);
      assert.ok(rGood6.ok, `right key, IPv6: ${JSON.stringify(rGood6)}`);
      assert.ok(rOld.ok, `the previous key during the overlap: ${JSON.stringify(rOld)}`);
      assert.equal(rUnmarked.connected, false, `unmarked: ${JSON.stringify(rUnmarked)}`);
      assert.equal(rWrong.connected, false, `wrong key: ${JSON.stringify(rWrong)}`);
      assert.ok(rExempt.ok, `exempt source without a token: ${JSON.stringify(rExempt)}`);

      // Raw SYNs from the good client's address: its captured token on a new source port,
      // a fresh valid token sent twice at once (the replay limit is 1), malformed options.
      const first = synsOf(await cap.stop()).find((p) => p.family === 4 && p.tcp!.flags === TCP_SYN && p.tcp!.dport === port);
      assert.ok(first?.tcp, "the good client's SYN was captured");
      const token = findTokenOption(first, KIND, EXID);
      assert.ok(token, "the good client's SYN carries a token");
      const frameFor = (sport: number, seq: number, options: Buffer): Buffer =>
        buildFrame({
          srcMac: good.mac,
          dstMac: good.serverMac,
          src: good.ipv4,
          dst: good.serverIpv4,
          tcp: { sport, dport: port, seq, flags: TCP_SYN, options },
        });
      const stolenPort = first.tcp.sport === 65535 ? 1024 : first.tcp.sport + 1;
      const freshPort = 50123;
      const freshSeq = 0x12345678;
      const fresh = keyedToken(
        K1,
        { src: good.ipv4, dst: good.serverIpv4, sport: freshPort, dport: port, seq: freshSeq },
        BIND_ALL,
        epochAt(Date.now(), EPOCH_SECONDS),
      );
      const rawCap = await startCapture(good.ns, good.dev, { filter: `tcp and src port ${port}` });
      await sendFrame(good.ns, good.dev, frameFor(stolenPort, first.tcp.seq, first.tcp.optionBytes));
      await sendFrame(good.ns, good.dev, frameFor(freshPort, freshSeq, tokenOption(KIND, EXID, fresh)), 2);
      await sendFrame(
        good.ns,
        good.dev,
        frameFor(freshPort + 1, 1, Buffer.concat([Buffer.from('0101fd01', 'hex'), tokenOption(KIND, EXID, fresh)])),
      );
      const answers = synsOf(await rawCap.stop({ settleMs: 500 }));
      const synAcks = (p: number): number =>
        answers.filter((a) => a.tcp!.dport === p && a.tcp!.flags === (TCP_SYN | TCP_ACK)).length;
      assert.equal(synAcks(stolenPort), 0, 'the captured token on a new source port gets no SYN-ACK');
      assert.equal(synAcks(freshPort), 1, 'a fresh valid token is answered once; its instant copy is over the replay limit');
      assert.equal(synAcks(freshPort + 1), 0, 'malformed options get no SYN-ACK');
      assert.equal(answers.filter((a) => a.tcp!.flags & TCP_RST).length, 0, 'nothing was refused by the server itself');

      // Phase B: rotate the server to K2 (current) and K1 (previous): K0 has expired.
      const sA = serverAgent.status()!;
      serverAgent.writePolicy(guard(K2, K1));
      await reconciled(serverAgent, sA, 'the rotated key');
      const rGoodB = await connect(good.ns, good.serverIpv4, port);
      const rOldB = await connect(old.ns, old.serverIpv4, port, { timeoutMs: FAIL_TIMEOUT_MS });
      assert.ok(rGoodB.ok, `K1 is now the previous key and still valid: ${JSON.stringify(rGoodB)}`);
      assert.equal(rOldB.connected, false, `K0 expired: ${JSON.stringify(rOldB)}`);

      // Counters: exactly what each client sent (SYNs counted by its own stack) and the raw frames.
      const sent = new Map<string, number>();
      for (const c of star.clients) sent.set(c.ns, await synsSent(c.ns, before.get(c.ns)!));
      const n = (c: { ns: string }): number => sent.get(c.ns)!;
      // good: 3 connections, old: 2 connections (one per phase, each at least one SYN).
      assert.ok(
        n(good) >= 3 && n(old) >= 2 && n(unmarked) >= 1 && n(wrong) >= 1 && n(exempt) >= 1,
        `SYNs sent: ${JSON.stringify(Object.fromEntries(sent))}`,
      );
      const oldRetries = n(old) - 2;
      assert.equal(
        oldRetries,
        0,
        'the old-key client sent one SYN per connection (a retransmission would make the phase split ambiguous)',
      );
      const want = {
        verify_valid: n(good) + 1 /* old, phase A */ + 1 /* fresh raw */,
        verify_missing: n(unmarked) + n(exempt),
        verify_invalid: n(wrong) + 1 /* old, phase B */ + 1 /* stolen */,
        verify_malformed: 1,
        verify_replay: 1,
        verify_exempt: n(exempt),
        verify_dropped: n(unmarked) + n(wrong) + 1 /* old, phase B */ + 1 /* stolen */ + 1 /* malformed */ + 1 /* replay */,
      };
      const report = await serverAgent.statusReport();
      const got = Object.fromEntries(Object.keys(want).map((k) => [k, counter(report, k, 'guard')]));
      assert.deepEqual(got, want, `server counters (SYNs sent: ${JSON.stringify(Object.fromEntries(sent))})`);
      assert.equal(
        report.counters.filter((c) => c.policy !== 'guard').length,
        0,
        `no counters outside the policy: ${JSON.stringify(report.counters)}`,
      );
      // Per interface: the exempt client's counts are on its own link.
      assert.equal(
        report.counters
          .filter((c) => c.interface === exempt.serverDev && c.counter === 'verify_exempt')
          .reduce((x, c) => x + Number(c.value), 0),
        n(exempt),
      );
      await server.stop();

      // detach removes every XDP program of ours
      await serverAgent.stop();
      assert.equal((await serverAgent.cli(['detach'])).code, 0);
      for (const c of star.clients) {
        const { stdout } = await exec(star.serverNs, 'ip', ['-j', 'link', 'show', 'dev', c.serverDev]);
        assert.doesNotMatch(stdout, /"xdp"/, `no XDP left on ${c.serverDev}: ${stdout}`);
      }
      assert.equal(existsSync(serverAgent.stateDir), false, 'no pins left');
    } finally {
      for (const a of all) await a.cleanup();
    }
  });

  test('key rotation while a client connects in a loop loses no connection', async (ctx) => {
    const star = await createStar({ name: 'rot', clients: 1 });
    stars.push(star);
    const c = star.clients[0]!;
    const server = agentIn(star.serverNs, 'rsrv');
    const client = agentIn(c.ns, 'rcli');
    try {
      const echo = await startServer(star.serverNs, { port: 0 });
      // One file for both nodes, as one Secret serves the cluster: each agent picks its policy by node label.
      const file = (current: Buffer, previous?: Buffer): string =>
        docs(
          keyedPolicyYaml(
            'mark',
            'shared-key',
            `nodeSelector: {matchLabels: {role: client}}\ninterfaces: {names: [${c.dev}]}\negress: {destinations: [{cidr: ${c.serverIpv4}/32}]}`,
            2,
          ),
          keyedPolicyYaml(
            'guard',
            'shared-key',
            `nodeSelector: {matchLabels: {role: server}}\ninterfaces: {names: [${c.serverDev}]}\ningress: {action: Enforce, ports: [${echo.port}]}`,
            2,
          ),
          secretYaml('shared-key', current, previous),
        );
      server.writePolicy(file(K0));
      client.writePolicy(file(K0));
      await server.start(['--node-label', 'role=server']);
      await client.start(['--node-label', 'role=client']);
      await server.waitStatus((s) => s.hooks.length === 1 && s.ready, 20_000, 'the verifier');
      await client.waitStatus((s) => s.hooks.length === 1 && s.ready, 20_000, 'the marker');
      const before = await tcpCounters(c.ns);

      const loop = spawnIn(c.ns, process.execPath, [CONNECT_LOOP, c.serverIpv4, String(echo.port), '12000', '5000']);
      let out = '';
      loop.stdout?.setEncoding('utf8');
      loop.stdout?.on('data', (d: string) => (out += d));
      await sleep(1500);
      // The operator's order: verifiers learn the new key first, markers switch, the old key goes.
      let s = server.status()!;
      server.writePolicy(file(K1, K0));
      s = await reconciled(server, s, 'server: K1 added');
      await sleep(1000);
      let cs = client.status()!;
      client.writePolicy(file(K1, K0));
      cs = await reconciled(client, cs, 'client: marks with K1');
      await sleep(1500);
      server.writePolicy(file(K1));
      client.writePolicy(file(K1));
      await reconciled(server, s, 'server: K0 gone');
      await reconciled(client, cs, 'client: K0 gone');
      // A second full rotation, the same way.
      await sleep(1000);
      s = server.status()!;
      server.writePolicy(file(K2, K1));
      s = await reconciled(server, s, 'server: K2 added');
      cs = client.status()!;
      client.writePolicy(file(K2, K1));
      cs = await reconciled(client, cs, 'client: marks with K2');
      await sleep(500);
      server.writePolicy(file(K2));
      await reconciled(server, s, 'server: K1 gone');
      assert.ok(await waitForExit(loop, 20_000), 'the loop ends');
      const summary = JSON.parse(out.trim()) as { attempts: number; ok: number; failures: unknown[]; maxMs: number };
      assert.deepEqual(
        summary.failures,
        [],
        `every connection during the rotations completed (${summary.ok}/${summary.attempts})`,
      );
      assert.ok(summary.attempts >= 50, `the loop kept connecting: ${summary.attempts} connections`);
      const report = await server.statusReport();
      const syns = await synsSent(c.ns, before);
      assert.equal(counter(report, 'verify_dropped', 'guard'), 0, 'no SYN was dropped');
      assert.equal(counter(report, 'verify_valid', 'guard'), syns, `every SYN the client sent was valid (${syns})`);
      ctx.diagnostic(
        `${summary.ok}/${summary.attempts} connections through two key rotations and epoch changes every 2 s, slowest ${summary.maxMs} ms, ${syns} SYNs all valid`,
      );
      await echo.stop();
    } finally {
      await server.cleanup();
      await client.cleanup();
    }
  });

  test("someone else's XDP program keeps its interface: asked to verify at XDP there, the hook fails clearly; when it is gone, ours goes in; detach leaves theirs", async () => {
    const t = await createTopology({ name: 'xdpbusy', kind: 'pair' });
    topologies.push(t);
    const agent = agentIn(t.server.ns, 'xbusy');
    try {
      const echo = await startServer(t.server.ns, { port: 0 });
      const noop = fixture('foreign');
      await exec(t.server.ns, 'ip', ['link', 'set', 'dev', t.server.dev, 'xdpgeneric', 'obj', noop, 'sec', 'xdp']);
      const foreign = async (): Promise<string> =>
        (await exec(t.server.ns, 'ip', ['-d', '-j', 'link', 'show', 'dev', t.server.dev])).stdout;
      assert.match(await foreign(), /foreign_xdp/, 'the other program is attached');
      const policy = (note: string): string =>
        docs(
          `# ${note}\n` +
            keyedPolicyYaml(
              'guard',
              'k',
              `interfaces: {names: [${t.server.dev}]}\ningress: {action: Enforce, ports: [${echo.port}]}`,
            ),
          secretYaml('k', K1),
        );
      agent.writePolicy(policy('first'));
      await agent.start(['--ingress-attach', 'xdp-native']);
      const s1 = await agent.waitStatus((s) => s.hookErrors.length === 1, 20_000, 'the refused verifier hook');
      assert.equal(s1.hooks.length, 0);
      assert.match(s1.hookErrors[0]!.message, /another XDP program \(id \d+\) is attached to .*; it is not ours to replace/);
      assert.equal(s1.ready, false, 'not ready: a hook it was asked for is missing');
      assert.match(await foreign(), /foreign_xdp/, 'the other program is still there');
      assert.deepEqual(await tcxIngress(t.server.ns, t.server.ifindex), [], 'nothing of ours at tc either: XDP was asked for');

      // The other program goes; the next reconcile puts the verifier at XDP.
      await exec(t.server.ns, 'ip', ['link', 'set', 'dev', t.server.dev, 'xdpgeneric', 'off']);
      const st = agent.status()!;
      agent.writePolicy(policy('second'));
      const s2 = await agent.waitStatus(
        (s) => s.reconciles > st.reconciles && s.hooks[0]?.mode === 'xdp-native',
        15_000,
        'the verifier at XDP',
      );
      assert.equal(s2.hooks.length, 1);
      assert.equal(s2.ready, true);
      const r2 = await connect(t.client.ns, t.server.ipv4, echo.port, { timeoutMs: FAIL_TIMEOUT_MS });
      assert.equal(r2.connected, false, 'enforced at XDP');
      assert.equal(counter(await agent.statusReport(), 'verify_dropped', 'guard'), 1);

      // Someone replaces our XDP program while the agent is down: detach must leave theirs alone.
      await agent.stop();
      await exec(t.server.ns, 'ip', ['link', 'set', 'dev', t.server.dev, 'xdp', 'off']);
      await exec(t.server.ns, 'ip', ['link', 'set', 'dev', t.server.dev, 'xdpgeneric', 'obj', noop, 'sec', 'xdp']);
      assert.equal((await agent.cli(['detach'])).code, 0);
      assert.match(await foreign(), /foreign_xdp/, 'detach does not touch an XDP program that is not ours');
      await exec(t.server.ns, 'ip', ['link', 'set', 'dev', t.server.dev, 'xdpgeneric', 'off']);
      await echo.stop();
    } finally {
      await agent.cleanup();
    }
  });

  test('restart: the XDP verifier keeps enforcing while the agent is down; the new agent swaps its program in; deleting the policy removes it', async () => {
    const t = await createTopology({ name: 'xrst', kind: 'pair' });
    topologies.push(t);
    const agent = agentIn(t.server.ns, 'xrst');
    try {
      const echo = await startServer(t.server.ns, { port: 0 });
      const xdpProg = async (): Promise<number> => {
        const { stdout } = await exec(t.server.ns, 'ip', ['-j', 'link', 'show', 'dev', t.server.dev]);
        const [l] = JSON.parse(stdout) as Array<{ xdp?: { prog?: { id?: number } } }>;
        return l?.xdp?.prog?.id ?? 0;
      };
      const policy = docs(
        keyedPolicyYaml(
          'guard',
          'k',
          `interfaces: {names: [${t.server.dev}]}\ningress: {action: Enforce, ports: [${echo.port}]}`,
        ),
        secretYaml('k', K1),
      );
      agent.writePolicy(policy);
      await agent.start(['--ingress-attach', 'xdp-native']);
      const s1 = await agent.waitStatus((s) => s.hooks.length === 1 && s.ready, 20_000, 'the verifier');
      assert.equal(await xdpProg(), s1.hooks[0]!.progId);

      await agent.stop('SIGKILL');
      const down = await connect(t.client.ns, t.server.ipv4, echo.port, { timeoutMs: FAIL_TIMEOUT_MS });
      assert.equal(down.connected, false, 'still enforced while the agent is down');

      await agent.start(['--ingress-attach', 'xdp-native']);
      const s2 = await agent.waitStatus(
        (s) => s.hooks.length === 1 && s.hooks[0]!.progId !== s1.hooks[0]!.progId,
        20_000,
        'the restarted agent',
      );
      assert.equal(s2.hooks[0]!.mode, 'xdp-native');
      assert.equal(await xdpProg(), s2.hooks[0]!.progId, 'the new program replaced the old one in place');
      assert.deepEqual(await tcxIngress(t.server.ns, t.server.ifindex), [], 'and nothing else was attached');
      const report = await agent.statusReport();
      assert.equal(counter(report, 'verify_dropped', 'guard'), 1, 'the counter kept the drop made while the agent was down');

      const st = agent.status()!;
      agent.writePolicy(secretYaml('k', K1));
      await agent.waitStatus((s) => s.reconciles > st.reconciles && s.hooks.length === 0, 15_000, 'the policy gone');
      assert.equal(await xdpProg(), 0, 'no XDP program left');
      const up = await connect(t.client.ns, t.server.ipv4, echo.port);
      assert.ok(up.ok, `unverified again: ${JSON.stringify(up)}`);
      await echo.stop();
    } finally {
      await agent.cleanup();
    }
  });
});
