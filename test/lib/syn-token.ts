/**
 * What a peer sees of one handshake: the token option on the SYN, captured on the server side
 * of a pair topology.
 */
import assert from 'node:assert/strict';
import { NT_OPT_EXID_DEFAULT, NT_OPT_KIND_DEFAULT } from '../../src/lib/abi.js';
import { TCP_ACK, TCP_SYN, findTokenOption, parseFrame } from '../../src/lib/packet.js';
import { toEthernet } from '../../src/lib/pcap.js';
import { startCapture } from './capture.js';
import type { Topology } from './netns.js';
import { connect } from './tcp.js';

/**
 * The token on the SYN of one handshake from the client side of `t` to `addr`:`port`
 * (captured on the server side), or null when unmarked. The handshake must complete and
 * the SYN's TCP checksum must be right.
 */
export async function tokenOnSyn(t: Topology, addr: string, port: number): Promise<Buffer | null> {
  const cap = await startCapture(t.server.ns, t.server.dev, { filter: `tcp and dst host ${addr} and dst port ${port}` });
  const r = await connect(t.client.ns, addr, port);
  const res = await cap.stop();
  assert.ok(r.ok, `handshake to ${addr}:${port}: ${JSON.stringify(r)}`);
  const syn = res.frames
    .map((f) => parseFrame(toEthernet(res.linkType, f)))
    .find((p) => p.tcp && (p.tcp.flags & (TCP_SYN | TCP_ACK)) === TCP_SYN);
  assert.ok(syn, `the SYN to ${addr}:${port} was captured`);
  assert.equal(syn.tcpChecksumOk, true, 'the SYN has a right TCP checksum');
  return findTokenOption(syn, NT_OPT_KIND_DEFAULT, NT_OPT_EXID_DEFAULT);
}
