/**
 * SYNs whose option list ends in an EOL (what BSD and macOS stacks send: MSS, NOP, window
 * scale, NOP, NOP, timestamps, SACK-permitted, EOL) leave a marking node with the token
 * where the EOL was, the EOL and padding after it, and both checksums right: checked on the
 * wire with transmit checksum offload off, and by the receiving stack, which answers them.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { TCP_ACK, TCP_SYN, buildFrame, findTokenOption, parseFrame, tokenOption } from '../../src/lib/packet.js';
import { toEthernet } from '../../src/lib/pcap.js';
import { TOKEN, agentIn, counter, policyYaml } from '../lib/agent.js';
import { startCapture } from '../lib/capture.js';
import { createTopology, permanentNeighbour, type Topology } from '../lib/netns.js';
import { sendFrame } from '../lib/raw-send.js';
import { startServer } from '../lib/tcp.js';

/** 23 bytes of options ending in an EOL, one byte of padding. */
const BSD_OPTIONS = Buffer.from('020405b4' + '01030306' + '0101080a' + '1122334400000000' + '04020000', 'hex');

const topologies: Topology[] = [];
after(async () => {
  for (const t of topologies) await t.destroy();
});

test("EOL-padded SYNs (the BSD layout) are marked: the token in the EOL's place, checksums right on the wire, answered by the server", async (t) => {
  const topo = await createTopology({ name: 'eol', kind: 'pair', ipv6: true });
  topologies.push(topo);
  assert.equal(topo.txChecksumOffload, false, 'transmit checksum offload is off');
  const agent = agentIn(topo.client.ns, 'eol');
  try {
    const srv = await startServer(topo.server.ns, { port: 0 });
    agent.writePolicy(policyYaml([{ name: 'mark', spec: `interfaces: {names: [${topo.client.dev}]}\negress: {}` }]));
    await agent.start();
    await agent.waitStatus((s) => s.hooks.length === 1 && s.ready, 20_000, 'the marker');
    // The server answers at once: it knows the client's MAC.
    for (const ip of [topo.client.ipv4, topo.client.ipv6!]) {
      await permanentNeighbour(topo.server.ns, ip, topo.client.mac, topo.server.dev);
    }
    const mac = { srcMac: topo.client.mac, dstMac: topo.server.mac };
    const syns = [
      buildFrame({
        ...mac,
        src: topo.client.ipv4,
        dst: topo.server.ipv4,
        tcp: { sport: 42001, dport: srv.port, seq: 1001, flags: TCP_SYN, options: BSD_OPTIONS },
      }),
      buildFrame({
        ...mac,
        src: topo.client.ipv6!,
        dst: topo.server.ipv6!,
        tcp: { sport: 42002, dport: srv.port, seq: 1002, flags: TCP_SYN, options: BSD_OPTIONS },
      }),
    ];
    const atServer = await startCapture(topo.server.ns, topo.server.dev, { filter: `tcp port ${srv.port}` });
    const atClient = await startCapture(topo.client.ns, topo.client.dev, { filter: `tcp src port ${srv.port}` });
    for (const f of syns) await sendFrame(topo.client.ns, topo.client.dev, f);
    const seen = (await atServer.stop({ settleMs: 800 })).frames.map((f) => parseFrame(toEthernet(1, f)));
    const answers = (await atClient.stop()).frames.map((f) => parseFrame(toEthernet(1, f)));
    const want = Buffer.concat([BSD_OPTIONS.subarray(0, 22), tokenOption(253, 0x4e54, TOKEN), Buffer.alloc(2)]);
    for (const sport of [42001, 42002]) {
      const syn = seen.find((p) => p.tcp?.sport === sport && (p.tcp.flags & (TCP_SYN | TCP_ACK)) === TCP_SYN);
      assert.ok(syn?.tcp, `the SYN from port ${sport} reached the server`);
      assert.deepEqual(
        syn.tcp.optionBytes,
        want,
        `IPv${syn.family}: the options as marked:\n got  ${syn.tcp.optionBytes.toString('hex')}\n want ${want.toString('hex')}`,
      );
      assert.deepEqual(findTokenOption(syn, 253, 0x4e54), TOKEN);
      assert.deepEqual(syn.errors, []);
      assert.equal(syn.tcpChecksumOk, true, `IPv${syn.family}: TCP checksum on the wire`);
      if (syn.family === 4) assert.equal(syn.ipv4ChecksumOk, true, 'IPv4 header checksum on the wire');
      const synAck = answers.some((p) => p.tcp?.dport === sport && (p.tcp.flags & (TCP_SYN | TCP_ACK)) === (TCP_SYN | TCP_ACK));
      assert.ok(synAck, `IPv${syn.family}: the server answered the marked SYN with a SYN-ACK (its stack accepted the checksum)`);
      t.diagnostic(`IPv${syn.family} SYN: options ${syn.tcp.optionBytes.toString('hex')}, checksums right, answered`);
    }
    const report = await agent.statusReport();
    assert.equal(counter(report, 'marked', 'mark'), 2, 'both counted marked');
    assert.equal(counter(report, 'skipped_eol'), 0, 'none skipped for its EOL');
    await srv.stop();
  } finally {
    await agent.cleanup();
  }
});
