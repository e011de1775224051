/**
 * Why every veth end in our topologies has transmit checksum offload off.
 *
 * With offload on, veth hands a CHECKSUM_PARTIAL skb to its peer without ever computing the TCP
 * checksum: the field on the "wire" holds only the pseudo-header seed, the receiver trusts the
 * skb flag, and the connection works even if a program wrote a wrong checksum. A capture
 * therefore cannot tell a correct packet rewrite from a broken one. With offload off the stack
 * computes the full checksum before tc egress, so a program that rewrites a SYN must fix the
 * checksum itself, and captured frames (and TcpInCsumErrors) show whether it did.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startCapture } from '../lib/capture.js';
import { createTopology, type Topology } from '../lib/netns.js';
import { connect, startServer, tcpCounters } from '../lib/tcp.js';
import { parseFrame, TCP_ACK, TCP_SYN, type ParsedFrame } from '../../src/lib/packet.js';

interface Captured {
  syn: ParsedFrame[];
  synAck: ParsedFrame[];
}

/** Opens one IPv4 and one IPv6 connection and returns the SYNs seen by the server and the SYN-ACKs seen by the client. */
async function handshakeFrames(t: Topology): Promise<Captured> {
  const srv = await startServer(t.server.ns);
  const onServer = await startCapture(t.server.ns, t.server.dev, { filter: `tcp port ${srv.port}` });
  const onClient = await startCapture(t.client.ns, t.client.dev, { filter: `tcp port ${srv.port}` });
  for (const addr of [t.server.ipv4, t.server.ipv6 as string]) {
    const r = await connect(t.client.ns, addr, srv.port);
    assert.equal(
      r.ok,
      true,
      `connect to [${addr}]:${srv.port} (offload ${t.txChecksumOffload ? 'on' : 'off'}): got ${JSON.stringify(r)}`,
    );
  }
  const isFlags =
    (want: number) =>
    (p: ParsedFrame): boolean =>
      p.tcp !== null && (p.tcp.flags & (TCP_SYN | TCP_ACK)) === want;
  const server = (await onServer.stop()).frames.map(parseFrame);
  const client = (await onClient.stop()).frames.map(parseFrame);
  await srv.stop();
  return { syn: server.filter(isFlags(TCP_SYN)), synAck: client.filter(isFlags(TCP_SYN | TCP_ACK)) };
}

test('with tx checksum offload off (the default), captured SYNs and SYN-ACKs carry valid checksums', async () => {
  const t = await createTopology({ name: 'csum-off', kind: 'pair', ipv6: true });
  try {
    assert.equal(t.txChecksumOffload, false, 'offload must be off by default');
    const got = await handshakeFrames(t);
    for (const [what, frames] of [
      ['SYN on the server veth', got.syn],
      ['SYN-ACK on the client veth', got.synAck],
    ] as const) {
      assert.deepEqual(
        frames.map((p) => p.family).sort(),
        [4, 6],
        `${what}: families got ${JSON.stringify(frames.map((p) => p.family))}, want one IPv4 and one IPv6`,
      );
      for (const p of frames) {
        assert.equal(p.tcpChecksumOk, true, `${what} IPv${p.family}: TCP checksum ok got ${p.tcpChecksumOk}, want true`);
        if (p.family === 4) {
          assert.equal(p.ipv4ChecksumOk, true, `${what}: IPv4 header checksum ok got ${p.ipv4ChecksumOk}, want true`);
        }
      }
    }
    for (const ns of t.namespaces) {
      const c = await tcpCounters(ns);
      assert.equal(c.TcpInCsumErrors, 0, `${ns}: TcpInCsumErrors got ${c.TcpInCsumErrors}, want 0`);
    }
  } finally {
    await t.destroy();
  }
});

test('with tx checksum offload on, veth delivers SYNs whose checksum field is only the pseudo-header seed', async () => {
  const t = await createTopology({ name: 'csum-on', kind: 'pair', ipv6: true, txChecksumOffload: true });
  try {
    const got = await handshakeFrames(t);
    assert.equal(got.syn.length, 2, `SYNs captured: got ${got.syn.length}, want 2`);
    for (const p of got.syn) {
      // The connection above succeeded although these checksums are not valid: offload on hides checksum bugs.
      assert.equal(
        p.tcpChecksumOk,
        false,
        `IPv${p.family} SYN with offload on: checksum ok got ${p.tcpChecksumOk}, want false (not computed)`,
      );
      assert.equal(
        p.tcpChecksumIsPseudoSeed,
        true,
        `IPv${p.family} SYN with offload on: field got 0x${p.tcp?.checksum.toString(16)}, want the pseudo-header seed`,
      );
    }
  } finally {
    await t.destroy();
  }
});
