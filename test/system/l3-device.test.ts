/**
 * Devices without a link-layer header (tun, WireGuard, ipip, sit): frames start with the IP
 * header. Two tun devices joined by a relay stand for such a link: the marker on the
 * client's device puts the token on real SYNs (checked as the client's stack sent them,
 * checksums recomputed here), and the verifier on the server's device refuses SYNs without
 * one (real connections, counted) and lets marked ones in.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { findTokenOption, parseFrame, TCP_ACK, TCP_SYN } from '../../src/lib/packet.js';
import { TOKEN, agentIn, counter, policyYaml } from '../lib/agent.js';
import { createTopology, type Topology } from '../lib/netns.js';
import { connect, startServer } from '../lib/tcp.js';
import { createTunLink } from '../lib/tun.js';

const topologies: Topology[] = [];
after(async () => {
  for (const t of topologies) await t.destroy();
});

test('on tun devices the marker marks real SYNs (checksums right) and the verifier refuses unmarked ones, IPv4 and IPv6', async (t) => {
  const topo = await createTopology({ name: 'l3', kind: 'pair', ipv6: true });
  topologies.push(topo);
  const link = await createTunLink(topo);
  const marker = agentIn(topo.client.ns, 'l3m');
  const verifier = agentIn(topo.server.ns, 'l3v');
  try {
    const srv = await startServer(topo.server.ns, { port: 0 });
    verifier.writePolicy(
      policyYaml([
        { name: 'guard', spec: `interfaces: {names: [${link.server.dev}]}\ningress: {action: Enforce, ports: [${srv.port}]}` },
      ]),
    );
    await verifier.start();
    const vs = await verifier.waitStatus((s) => s.hooks.length === 1 && s.ready, 20_000, 'the verifier on the tun device');
    assert.equal(vs.hooks[0]!.name, link.server.dev);
    assert.ok(
      ['tcx', 'tc'].includes(vs.hooks[0]!.mode),
      `a device without a link-layer header is verified at tc, got ${vs.hooks[0]!.mode}`,
    );

    // Nothing marks yet: the verifier refuses the SYNs, the connections time out.
    for (const addr of [link.server.ipv4, link.server.ipv6]) {
      const r = await connect(topo.client.ns, addr, srv.port, { timeoutMs: 1500 });
      assert.equal(r.connected, false, `an unmarked SYN to [${addr}]:${srv.port} must not connect: ${JSON.stringify(r)}`);
    }
    let report = await verifier.statusReport();
    assert.ok(counter(report, 'verify_missing', 'guard') >= 2, `missing tokens counted: ${JSON.stringify(report.counters)}`);
    assert.ok(counter(report, 'verify_dropped', 'guard') >= 2, 'and dropped');
    assert.equal(counter(report, 'unreadable'), 0, 'the IP header is found where it is: nothing unreadable');

    marker.writePolicy(
      policyYaml([
        {
          name: 'mark',
          spec: `interfaces: {names: [${link.client.dev}]}\negress: {destinations: [{cidr: 10.77.0.0/24, ports: [${srv.port}]}, {cidr: "fd77::/64", ports: [${srv.port}]}]}`,
        },
      ]),
    );
    await marker.start();
    const ms = await marker.waitStatus((s) => s.hooks.length === 1 && s.ready, 20_000, 'the marker on the tun device');
    t.diagnostic(
      `marker hook: ${ms.hooks[0]!.name} ${ms.hooks[0]!.mode}; verifier hook: ${vs.hooks[0]!.name} ${vs.hooks[0]!.mode}`,
    );
    const sent = link.frames().length;
    for (const addr of [link.server.ipv4, link.server.ipv6]) {
      const r = await connect(topo.client.ns, addr, srv.port, { timeoutMs: 3000 });
      assert.equal(r.ok, true, `a marked SYN to [${addr}]:${srv.port} connects: ${JSON.stringify(r)}`);
    }
    const syns = link
      .frames()
      .slice(sent)
      .map(parseFrame)
      .filter((p) => p.tcp && (p.tcp.flags & (TCP_SYN | TCP_ACK)) === TCP_SYN && p.tcp.dport === srv.port);
    assert.deepEqual(syns.map((p) => p.family).sort(), [4, 6], 'one IPv4 and one IPv6 SYN crossed the link');
    for (const p of syns) {
      assert.deepEqual(
        findTokenOption(p, 253, 0x4e54),
        TOKEN,
        `IPv${p.family}: the token on the SYN as the client's stack sent it`,
      );
      assert.deepEqual(p.errors, [], `IPv${p.family}: ${p.errors.join('; ')}`);
      assert.equal(p.tcpChecksumOk, true, `IPv${p.family}: TCP checksum`);
      if (p.family === 4) assert.equal(p.ipv4ChecksumOk, true, 'IPv4 header checksum');
    }
    report = await verifier.statusReport();
    assert.ok(counter(report, 'verify_valid', 'guard') >= 2, `valid tokens counted: ${JSON.stringify(report.counters)}`);
    const mr = await marker.statusReport();
    assert.ok(counter(mr, 'marked', 'mark') >= 2, `marked counted: ${JSON.stringify(mr.counters)}`);
    await srv.stop();
  } finally {
    await marker.cleanup();
    await verifier.cleanup();
    await link.close();
  }
});
