/**
 * Enforce must not be bypassed by packets the verifier cannot see whole but the stack turns
 * into a SYN: an IPv4 SYN sent as two fragments whose first one holds only 8 bytes of the
 * TCP header, and an IPv6 SYN behind seven extension headers (the verifier walks six).
 * Raw frames from the client, a capture of what the server answers: a SYN-ACK to any of
 * them means a connection was opened without a token. Plain unmarked SYNs and SYNs behind
 * two extension headers are the controls (dropped today).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { TCP_ACK, TCP_SYN, buildFrame, parseFrame } from '../../src/lib/packet.js';
import { toEthernet } from '../../src/lib/pcap.js';
import { agentIn, counter, policyYaml } from '../lib/agent.js';
import { startCapture } from '../lib/capture.js';
import { createTopology, exec, type Topology } from '../lib/netns.js';
import { sendFrame } from '../lib/raw-send.js';
import { startServer } from '../lib/tcp.js';

const topologies: Topology[] = [];
after(async () => {
  for (const t of topologies) await t.destroy();
});

describe('Enforce cannot be bypassed', () => {
  test('no handshake without a token: tiny IPv4 first fragments, IPv6 behind seven extension headers', async (t) => {
    const topo = await createTopology({ name: 'bypass', kind: 'pair', ipv6: true });
    topologies.push(topo);
    const agent = agentIn(topo.server.ns, 'bypass');
    try {
      const srv = await startServer(topo.server.ns, { port: 0 });
      agent.writePolicy(policyYaml([{ name: 'guard', spec: `interfaces: {names: [${topo.server.dev}]}\ningress: {action: Enforce, ports: [${srv.port}]}` }]));
      await agent.start();
      await agent.waitStatus((s) => s.hooks.length === 1 && s.ready, 20_000, 'the verifier');
      // The server knows the client's MAC beforehand, so that it answers at once.
      for (const ip of [topo.client.ipv4, topo.client.ipv6!]) {
        await exec(topo.server.ns, 'ip', ['neigh', 'replace', ip, 'lladdr', topo.client.mac, 'dev', topo.server.dev, 'nud', 'permanent']);
      }
      const mac = { srcMac: topo.client.mac, dstMac: topo.server.mac };
      const opts = Buffer.from('020405b4', 'hex');
      const v4 = { ...mac, src: topo.client.ipv4, dst: topo.server.ipv4 };
      const v6 = { ...mac, src: topo.client.ipv6!, dst: topo.server.ipv6! };
      const cases: Array<{ sport: number; what: string; frames: Buffer[]; control: boolean }> = [];
      cases.push({ sport: 41001, what: 'a plain SYN without a token (control)', control: true, frames: [buildFrame({ ...v4, tcp: { sport: 41001, dport: srv.port, seq: 1, flags: TCP_SYN, options: opts } })] });
      const whole = buildFrame({ ...v4, tcp: { sport: 41002, dport: srv.port, seq: 2, flags: TCP_SYN, options: opts } });
      const seg = whole.subarray(14 + 20);
      cases.push({
        sport: 41002, what: 'an IPv4 SYN in two fragments, 8 TCP bytes in the first', control: false,
        frames: [
          buildFrame({ ...v4, protocol: 6, payload: seg.subarray(0, 8), mf: true, fragOffset: 0, df: false, ipId: 0x4242 }),
          buildFrame({ ...v4, protocol: 6, payload: seg.subarray(8), mf: false, fragOffset: 1, df: false, ipId: 0x4242 }),
        ],
      });
      cases.push({ sport: 41003, what: 'an IPv6 SYN behind two destination options headers (control)', control: true, frames: [buildFrame({ ...v6, ipv6Ext: [{ type: 60 }, { type: 60 }], tcp: { sport: 41003, dport: srv.port, seq: 3, flags: TCP_SYN } })] });
      cases.push({ sport: 41004, what: 'an IPv6 SYN behind seven destination options headers', control: false, frames: [buildFrame({ ...v6, ipv6Ext: Array.from({ length: 7 }, () => ({ type: 60 })), tcp: { sport: 41004, dport: srv.port, seq: 4, flags: TCP_SYN } })] });

      const cap = await startCapture(topo.client.ns, topo.client.dev, { filter: `tcp src port ${srv.port}` });
      for (const c of cases) for (const f of c.frames) await sendFrame(topo.client.ns, topo.client.dev, f);
      const answers = (await cap.stop({ settleMs: 800 })).frames.map((f) => parseFrame(toEthernet(1, f))).filter((p) => p.tcp);
      const opened: string[] = [];
      for (const c of cases) {
        const synAck = answers.some((p) => p.tcp!.dport === c.sport && (p.tcp!.flags & (TCP_SYN | TCP_ACK)) === (TCP_SYN | TCP_ACK));
        t.diagnostic(`${c.what}: ${synAck ? 'ANSWERED with a SYN-ACK' : 'no answer'}`);
        if (synAck) opened.push(c.what);
      }
      const report = await agent.statusReport();
      t.diagnostic(`verifier counters: ${report.counters.map((c) => `${c.policy}/${c.counter}=${c.value}`).join(' ')}`);
      assert.ok(counter(report, 'verify_dropped', 'guard') >= 2, 'the controls were dropped by the verifier');
      assert.deepEqual(opened, [], 'no connection may open without a token under Enforce');
      await srv.stop();
    } finally {
      await agent.cleanup();
    }
  });
});
