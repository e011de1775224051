/**
 * Enforce must not be bypassed by packets the verifier cannot see whole but the stack turns
 * into a SYN: IPv4 and IPv6 SYNs sent as fragment sequences (a first fragment that holds
 * only part of the TCP header; one whose flags byte says ACK but is cut away by reassembly,
 * which keeps a multiple of 8 bytes of a fragment that is not the last, so that a later
 * fragment brings SYN; a first fragment that stops inside the options; overlapping
 * fragments), and an IPv6 SYN behind seven extension headers (the verifier walks six).
 * Raw frames from the client, a capture of what the server answers: a SYN-ACK to any of
 * them means a connection was opened without a token. Plain unmarked SYNs and SYNs behind
 * two extension headers are controls (dropped), and a SYN with the token sent in fragments
 * whose first holds its whole header is the control that must be answered.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { TCP_ACK, TCP_SYN, buildFrame, parseFrame, tokenOption } from '../../src/lib/packet.js';
import { toEthernet } from '../../src/lib/pcap.js';
import { TOKEN, agentIn, counter, policyYaml } from '../lib/agent.js';
import { startCapture } from '../lib/capture.js';
import { createTopology, permanentNeighbour, type Topology } from '../lib/netns.js';
import { sendFrame } from '../lib/raw-send.js';
import { startServer } from '../lib/tcp.js';

const topologies: Topology[] = [];
after(async () => {
  for (const t of topologies) await t.destroy();
});

describe('Enforce cannot be bypassed', () => {
  test('no handshake without a token: fragment sequences the stack reassembles into a SYN, IPv6 behind seven extension headers', async (t) => {
    const topo = await createTopology({ name: 'bypass', kind: 'pair', ipv6: true });
    topologies.push(topo);
    const agent = agentIn(topo.server.ns, 'bypass');
    try {
      const srv = await startServer(topo.server.ns, { port: 0 });
      agent.writePolicy(
        policyYaml([
          { name: 'guard', spec: `interfaces: {names: [${topo.server.dev}]}\ningress: {action: Enforce, ports: [${srv.port}]}` },
        ]),
      );
      await agent.start();
      await agent.waitStatus((s) => s.hooks.length === 1 && s.ready, 20_000, 'the verifier');
      // The server knows the client's MAC beforehand, so that it answers at once.
      for (const ip of [topo.client.ipv4, topo.client.ipv6!]) {
        await permanentNeighbour(topo.server.ns, ip, topo.client.mac, topo.server.dev);
      }
      const mac = { srcMac: topo.client.mac, dstMac: topo.server.mac };
      const opts = Buffer.from('020405b4', 'hex');
      const v4 = { ...mac, src: topo.client.ipv4, dst: topo.server.ipv4 };
      const v6 = { ...mac, src: topo.client.ipv6!, dst: topo.server.ipv6! };
      const cases: Array<{ sport: number; what: string; frames: Buffer[]; control: boolean }> = [];
      cases.push({
        sport: 41001,
        what: 'a plain SYN without a token (control)',
        control: true,
        frames: [buildFrame({ ...v4, tcp: { sport: 41001, dport: srv.port, seq: 1, flags: TCP_SYN, options: opts } })],
      });
      const whole = buildFrame({ ...v4, tcp: { sport: 41002, dport: srv.port, seq: 2, flags: TCP_SYN, options: opts } });
      const seg = whole.subarray(14 + 20);
      cases.push({
        sport: 41002,
        what: 'an IPv4 SYN in two fragments, 8 TCP bytes in the first',
        control: false,
        frames: [
          buildFrame({ ...v4, protocol: 6, payload: seg.subarray(0, 8), mf: true, fragOffset: 0, df: false, ipId: 0x4242 }),
          buildFrame({ ...v4, protocol: 6, payload: seg.subarray(8), mf: false, fragOffset: 1, df: false, ipId: 0x4242 }),
        ],
      });
      cases.push({
        sport: 41003,
        what: 'an IPv6 SYN behind two destination options headers (control)',
        control: true,
        frames: [
          buildFrame({
            ...v6,
            ipv6Ext: [{ type: 60 }, { type: 60 }],
            tcp: { sport: 41003, dport: srv.port, seq: 3, flags: TCP_SYN },
          }),
        ],
      });
      cases.push({
        sport: 41004,
        what: 'an IPv6 SYN behind seven destination options headers',
        control: false,
        frames: [
          buildFrame({
            ...v6,
            ipv6Ext: Array.from({ length: 7 }, () => ({ type: 60 })),
            tcp: { sport: 41004, dport: srv.port, seq: 4, flags: TCP_SYN },
          }),
        ],
      });
      // The TCP segment of a SYN, for cutting into fragments.
      const segment = (sport: number, family: 4 | 6, options = opts, payload = Buffer.alloc(0)): Buffer =>
        buildFrame({
          ...(family === 4 ? v4 : v6),
          tcp: { sport, dport: srv.port, seq: sport, flags: TCP_SYN, options },
          payload,
        }).subarray(14 + (family === 4 ? 20 : 40));
      const v4frag = (payload: Buffer, offset: number, more: boolean, id: number): Buffer =>
        buildFrame({ ...v4, protocol: 6, payload, mf: more, fragOffset: offset / 8, df: false, ipId: id });
      const v6frag = (payload: Buffer, offset: number, more: boolean, id: number): Buffer => {
        const word = offset | (more ? 1 : 0);
        return buildFrame({
          ...v6,
          ipv6Ext: [{ type: 44, body: Buffer.from([word >> 8, word & 0xff, 0, 0, 0x42, id & 0xff]) }],
          protocol: 6,
          payload,
        });
      };
      /**
       * An IPv4 SYN whose first fragment holds `firstLen` TCP bytes with ACK in the flags byte,
       * the second (IP id `id` for both) the rest from byte 8 on, which brings SYN.
       */
      const ackFirst = (sport: number, firstLen: number, id: number, what: string): void => {
        const seg = segment(sport, 4);
        const first = Buffer.from(seg.subarray(0, firstLen));
        first[13] = TCP_ACK;
        cases.push({ sport, what, control: false, frames: [v4frag(first, 0, true, id), v4frag(seg.subarray(8), 8, false, id)] });
      };
      // 14 bytes whose flags say ACK: reassembly keeps 8 of them, and the second fragment brings SYN.
      ackFirst(41005, 14, 0x4305, 'an IPv4 SYN whose 14-byte first fragment says ACK in the bytes reassembly drops');
      {
        // The same with the fragments the other way round.
        const seg = segment(41006, 4);
        const first = Buffer.from(seg.subarray(0, 13));
        cases.push({
          sport: 41006,
          what: 'the same, second fragment first, 13 bytes in the first',
          control: false,
          frames: [v4frag(seg.subarray(8), 8, false, 0x4306), v4frag(first, 0, true, 0x4306)],
        });
      }
      // 16 kept bytes say ACK; a fragment overlapping them says SYN: overlapping fragments kill the datagram.
      ackFirst(41007, 16, 0x4307, 'an IPv4 first fragment that says ACK, overlapped by one that says SYN');
      {
        // An IPv6 first fragment that stops inside the options (24 bytes: the header and the MSS option).
        const seg = segment(41008, 6, Buffer.from('020405b40402080a000000010000000001030307', 'hex'));
        cases.push({
          sport: 41008,
          what: 'an IPv6 first fragment that stops inside the options',
          control: false,
          frames: [v6frag(seg.subarray(0, 24), 0, true, 8), v6frag(seg.subarray(24), 24, false, 8)],
        });
      }
      {
        // The token in a SYN whose first fragment holds the whole header: legitimate, and answered.
        const seg = segment(41009, 4, Buffer.concat([opts, tokenOption(253, 0x4e54, TOKEN)]), Buffer.alloc(24, 7));
        cases.push({
          sport: 41009,
          what: 'a SYN with the token, its whole header in the first fragment (must be answered)',
          control: true,
          frames: [v4frag(seg.subarray(0, 40), 0, true, 0x4309), v4frag(seg.subarray(40), 40, false, 0x4309)],
        });
      }

      const cap = await startCapture(topo.client.ns, topo.client.dev, { filter: `tcp src port ${srv.port}` });
      for (const c of cases) for (const f of c.frames) await sendFrame(topo.client.ns, topo.client.dev, f);
      const answers = (await cap.stop({ settleMs: 800 })).frames.map((f) => parseFrame(toEthernet(1, f))).filter((p) => p.tcp);
      const opened: string[] = [];
      const legit = 41009;
      for (const c of cases) {
        const synAck = answers.some(
          (p) => p.tcp!.dport === c.sport && (p.tcp!.flags & (TCP_SYN | TCP_ACK)) === (TCP_SYN | TCP_ACK),
        );
        t.diagnostic(`${c.what}: ${synAck ? 'ANSWERED with a SYN-ACK' : 'no answer'}`);
        if (synAck && c.sport !== legit) opened.push(c.what);
        if (c.sport === legit) assert.ok(synAck, `${c.what}: the server must answer a fragmented SYN that carries the token`);
      }
      const report = await agent.statusReport();
      t.diagnostic(`verifier counters: ${report.counters.map((c) => `${c.policy}/${c.counter}=${c.value}`).join(' ')}`);
      assert.ok(
        counter(report, 'verify_dropped', 'guard') >= 7,
        'the controls and the cut first fragments were dropped by the verifier',
      );
      assert.ok(
        counter(report, 'verify_malformed', 'guard') >= 3,
        'first fragments cut inside the TCP header or options are counted malformed',
      );
      assert.ok(counter(report, 'verify_valid', 'guard') >= 1, 'the fragmented SYN with the token was valid');
      assert.deepEqual(opened, [], 'no connection may open without a token under Enforce');
      await srv.stop();
    } finally {
      await agent.cleanup();
    }
  });
});
