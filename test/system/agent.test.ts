/**
 * The standalone agent for real: the `netoken` CLI in a network namespace, real TCP
 * handshakes over veth with transmit checksum offload off, the SYN checked as the
 * server received it.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { TCP_ACK, TCP_SYN, findTokenOption, parseFrame, type ParsedFrame } from '../../src/lib/packet.js';
import { toEthernet } from '../../src/lib/pcap.js';
import { TOKEN, agentIn, counter, kernelHooks, policyYaml } from '../lib/agent.js';
import { startCapture } from '../lib/capture.js';
import { createTopology, exec, type Topology } from '../lib/netns.js';
import { connect, startServer, tcpCounters } from '../lib/tcp.js';

const KIND = 253;
const EXID = 0x4e54;

function syns(cap: { linkType: number; frames: Buffer[] }): ParsedFrame[] {
  return cap.frames
    .map((f) => parseFrame(toEthernet(cap.linkType, f)))
    .filter((p) => p.tcp && p.tcp.flags & TCP_SYN && !(p.tcp.flags & TCP_ACK));
}

function assertWellFormed(p: ParsedFrame): void {
  assert.deepEqual(p.errors, [], `parse errors in ${p.src} > ${p.dst}`);
  if (p.family === 4) assert.equal(p.ipv4ChecksumOk, true, 'IPv4 header checksum');
  assert.equal(p.tcpChecksumOk, true, `TCP checksum of the SYN ${p.src} > ${p.dst}`);
  assert.equal(p.tcp?.optionsError, null, 'the option list is well formed');
}

const topologies: Topology[] = [];
after(async () => {
  for (const t of topologies) await t.destroy();
});

describe('standalone agent on a veth pair', () => {
  test('marks covered SYNs (IPv4 and IPv6) that complete their handshakes; others pass untouched', async () => {
    const t = await createTopology({ name: 'mark', kind: 'pair', ipv6: true });
    topologies.push(t);
    const agent = agentIn(t.client.ns, 'mark');
    try {
      const server = await startServer(t.server.ns, { port: 0 });
      agent.writePolicy(
        policyYaml([
          {
            name: 'web',
            spec: `interfaces: {names: [${t.client.dev}]}
egress:
  destinations:
    - {cidr: ${t.server.ipv4}/32, ports: [${server.port}]}
    - {cidr: "${t.server.ipv6}/128"}`,
          },
        ]),
      );
      await agent.start();
      await agent.waitStatus((s) => s.hooks.length === 1 && s.ready, 15_000, 'the hook');
      const csumBefore = await tcpCounters(t.server.ns);
      const cap = await startCapture(t.server.ns, t.server.dev, { filter: 'tcp' });
      const r4 = await connect(t.client.ns, t.server.ipv4, server.port);
      const r6 = await connect(t.client.ns, t.server.ipv6!, server.port);
      const other = await startServer(t.server.ns, { port: 0 });
      const rOther = await connect(t.client.ns, t.server.ipv4, other.port);
      const got = syns(await cap.stop());
      assert.ok(
        r4.ok && r6.ok && rOther.ok,
        `handshakes: v4 ${JSON.stringify(r4)} v6 ${JSON.stringify(r6)} other ${JSON.stringify(rOther)}`,
      );
      assert.equal(got.length, 3, `want 3 SYNs at the server, got ${got.length}`);
      for (const p of got) assertWellFormed(p);
      const v4 = got.find((p) => p.family === 4 && p.tcp?.dport === server.port)!;
      const v6 = got.find((p) => p.family === 6)!;
      const plain = got.find((p) => p.tcp?.dport === other.port)!;
      assert.equal(findTokenOption(v4, KIND, EXID)?.toString('hex'), TOKEN.toString('hex'), 'IPv4 SYN carries the token');
      assert.equal(findTokenOption(v6, KIND, EXID)?.toString('hex'), TOKEN.toString('hex'), 'IPv6 SYN carries the token');
      assert.equal(findTokenOption(plain, KIND, EXID), null, 'a port outside the policy is not marked');
      const last = v4.tcp!.options.at(-1)!;
      assert.equal(last.kind, KIND, 'the token is appended after the existing options');
      assert.equal(last.length, 12);
      const csumAfter = await tcpCounters(t.server.ns);
      assert.equal((csumAfter.TcpInCsumErrors ?? 0) - (csumBefore.TcpInCsumErrors ?? 0), 0, 'no checksum errors at the server');
      const report = await agent.statusReport();
      assert.equal(counter(report, 'marked', 'web'), 2);
      assert.equal(counter(report, 'skipped_no_policy'), 1);
      await other.stop();
      await server.stop();
    } finally {
      await agent.cleanup();
    }
  });

  test('a router marks forwarded SYNs (fully checksummed packets)', async () => {
    const t = await createTopology({ name: 'fwd', kind: 'routed' });
    topologies.push(t);
    const router = t.router!;
    const agent = agentIn(router.ns, 'fwd');
    try {
      const server = await startServer(t.server.ns, { port: 0 });
      agent.writePolicy(
        policyYaml([
          {
            name: 'fwd',
            spec: `interfaces: {names: [${router.toServer.dev}]}\negress: {destinations: [{cidr: ${t.server.ipv4}/32}]}`,
          },
        ]),
      );
      await agent.start();
      await agent.waitStatus((s) => s.hooks.length === 1, 15_000, 'the hook on the router');
      const cap = await startCapture(t.server.ns, t.server.dev, { filter: 'tcp' });
      const r = await connect(t.client.ns, t.server.ipv4, server.port);
      const got = syns(await cap.stop());
      assert.ok(r.ok, `forwarded handshake: ${JSON.stringify(r)}`);
      assert.equal(got.length, 1);
      assertWellFormed(got[0]!);
      assert.equal(findTokenOption(got[0]!, KIND, EXID)?.toString('hex'), TOKEN.toString('hex'));
      await server.stop();
    } finally {
      await agent.cleanup();
    }
  });

  test('restart: marking never stops, nothing is attached twice, pinned state is reused', async () => {
    const t = await createTopology({ name: 'rst', kind: 'pair' });
    topologies.push(t);
    const agent = agentIn(t.client.ns, 'rst');
    try {
      const server = await startServer(t.server.ns, { port: 0 });
      agent.writePolicy(policyYaml([{ name: 'r', spec: `interfaces: {names: [${t.client.dev}]}\negress: {}` }]));
      await agent.start();
      const s1 = await agent.waitStatus((s) => s.hooks.length === 1, 15_000, 'the hook');
      const link1 = s1.hooks[0]!.linkId;
      assert.ok((await connect(t.client.ns, t.server.ipv4, server.port)).ok);

      await agent.stop('SIGKILL');
      // The agent is gone; the pinned link keeps marking.
      const cap = await startCapture(t.server.ns, t.server.dev, { filter: 'tcp' });
      assert.ok((await connect(t.client.ns, t.server.ipv4, server.port)).ok);
      const during = syns(await cap.stop());
      assert.equal(
        findTokenOption(during[0]!, KIND, EXID)?.toString('hex'),
        TOKEN.toString('hex'),
        'marked while the agent is down',
      );

      await agent.start();
      const s2 = await agent.waitStatus(
        (s) => s.reconciles >= 1 && s.programId !== s1.programId && s.hooks.length === 1,
        15_000,
        'the restarted agent',
      );
      assert.equal(s2.hooks[0]!.linkId, link1, 'the pinned link is reused, not re-created');
      const hooks = await kernelHooks(t.client.ns, t.client.dev);
      assert.deepEqual(hooks.tcx, [s2.programId], 'exactly one program at egress: the new one');
      assert.ok((await connect(t.client.ns, t.server.ipv4, server.port)).ok);
      const report = await agent.statusReport();
      assert.equal(counter(report, 'marked', 'r'), 3, 'counters kept counting across the restart');
      await server.stop();
    } finally {
      await agent.cleanup();
    }
  });

  test('follows the file: edits, deletions, an interface that appears later; detach leaves nothing', async () => {
    const t = await createTopology({ name: 'edit', kind: 'pair' });
    topologies.push(t);
    const agent = agentIn(t.client.ns, 'edit');
    const late = `ntl${process.pid % 100000}`;
    try {
      agent.writePolicy(
        policyYaml([
          { name: 'a', spec: `interfaces: {names: [${t.client.dev}]}\negress: {destinations: [{cidr: 192.0.2.0/24}]}` },
          { name: 'b', spec: `interfaces: {names: [${late}]}\negress: {}` },
        ]),
      );
      await agent.start();
      const s1 = await agent.waitStatus((s) => s.hooks.length === 1, 15_000, 'policy a attached');
      const b1 = s1.policies.find((p) => p.name === 'b')!;
      assert.equal(b1.errors[0]?.reason, 'InterfaceNotFound');
      assert.match(b1.errors[0]!.message, new RegExp(`"${late}" does not exist`));
      assert.equal(s1.ready, false);

      await exec(t.client.ns, 'ip', ['link', 'add', late, 'type', 'veth', 'peer', 'name', `${late}p`]);
      const s2 = await agent.waitStatus((s) => s.hooks.length === 2 && s.ready, 15_000, 'the late interface attached');
      assert.deepEqual(s2.hooks.map((h) => h.name).sort(), [t.client.dev, late].sort());

      // an invalid edit of a keeps a's last good version and is reported by position and field
      agent.writePolicy(
        policyYaml([
          { name: 'a', spec: `interfaces: {names: [${t.client.dev}]}\negress: {destinations: [{cidr: 192.0.2.0/33}]}` },
          { name: 'b', spec: `interfaces: {names: [${late}]}\negress: {}` },
        ]),
      );
      const s3 = await agent.waitStatus((s) => s.documentErrors.length > 0, 15_000, 'the rejected edit');
      assert.match(s3.documentErrors[0]!.where, /document 1 \(TokenPolicy "a"\)/);
      assert.match(s3.documentErrors[0]!.message, /spec\.egress\.destinations\[0\]\.cidr/);
      assert.equal(s3.hooks.length, 2, 'nothing was lost');

      // deleting b removes its hook
      agent.writePolicy(
        policyYaml([
          { name: 'a', spec: `interfaces: {names: [${t.client.dev}]}\negress: {destinations: [{cidr: 192.0.2.0/24}]}` },
        ]),
      );
      await agent.waitStatus((s) => s.hooks.length === 1 && s.documentErrors.length === 0, 15_000, 'b removed');
      assert.deepEqual((await kernelHooks(t.client.ns, late)).tcx, [], 'no program left on the late interface');

      await agent.stop();
      assert.equal((await kernelHooks(t.client.ns, t.client.dev)).tcx.length, 1, 'hooks stay after a graceful stop');
      const d = await agent.cli(['detach']);
      assert.equal(d.code, 0, d.stderr);
      assert.deepEqual(await kernelHooks(t.client.ns, t.client.dev), { tcx: [], tc: null, clsact: false });
      const { existsSync } = await import('node:fs');
      assert.equal(existsSync(agent.stateDir), false, 'no pins left');
    } finally {
      await agent.cleanup();
    }
  });

  test('clsact fallback: our filter only; a qdisc that existed before stays after detach', async () => {
    const t = await createTopology({ name: 'tc', kind: 'pair' });
    topologies.push(t);
    const agent = agentIn(t.client.ns, 'tc');
    try {
      await exec(t.client.ns, 'tc', ['qdisc', 'add', 'dev', t.client.dev, 'clsact']);
      const server = await startServer(t.server.ns, { port: 0 });
      agent.writePolicy(policyYaml([{ name: 't', spec: `interfaces: {names: [${t.client.dev}]}\negress: {}` }]));
      await agent.start(['--attach', 'tc']);
      const s = await agent.waitStatus((x) => x.hooks.length === 1, 15_000, 'the tc hook');
      assert.equal(s.hooks[0]!.mode, 'tc');
      const cap = await startCapture(t.server.ns, t.server.dev, { filter: 'tcp' });
      assert.ok((await connect(t.client.ns, t.server.ipv4, server.port)).ok);
      const got = syns(await cap.stop());
      assertWellFormed(got[0]!);
      assert.equal(findTokenOption(got[0]!, KIND, EXID)?.toString('hex'), TOKEN.toString('hex'));
      await agent.stop('SIGKILL');
      await agent.start(['--attach', 'tc']);
      await agent.waitStatus((x) => x.programId !== s.programId && x.hooks.length === 1, 15_000, 'restarted');
      const h = await kernelHooks(t.client.ns, t.client.dev);
      assert.notEqual(h.tc, null, 'our filter is there');
      const filters = await exec(t.client.ns, 'tc', ['filter', 'show', 'dev', t.client.dev, 'egress']);
      assert.equal((filters.stdout.match(/handle 0x4e54 /g) ?? []).length, 1, `one filter of ours:\n${filters.stdout}`);
      await agent.stop();
      assert.equal((await agent.cli(['detach'])).code, 0);
      assert.deepEqual(
        await kernelHooks(t.client.ns, t.client.dev),
        { tcx: [], tc: null, clsact: true },
        'the pre-existing clsact stays',
      );
      await server.stop();
    } finally {
      await agent.cleanup();
    }
  });
});
