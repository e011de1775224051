/**
 * The addon's SYN capture on loopback: real handshakes over IPv4 and IPv6 give exactly their
 * SYNs, each once sent and once received; SYN-ACKs, ACKs, data and UDP never pass the
 * kernel filter; bad arguments and a closed handle fail as the addon's errors do.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import net from 'node:net';
import { once } from 'node:events';
import { TCP_ACK, TCP_SYN, parseFrame } from '../lib/packet.js';
import { binding, type CapturedFrame } from './binding.js';
import { isNativeError } from './errors.js';
import { sleep } from '../lib/wait.js';

const LO = 1;

async function handshake(host: string): Promise<number> {
  const server = net.createServer((s) => s.end('bye')).listen(0, host);
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const c = net.connect(port, host);
  c.on('data', () => undefined);
  await once(c, 'close');
  server.close();
  return port;
}

function asEthernet(f: CapturedFrame): Buffer {
  const eth = Buffer.alloc(14);
  eth.writeUInt16BE(f.protocol, 12);
  return Buffer.concat([eth, f.data]);
}

test('only opening SYNs pass the filter, once each way on loopback, IPv4 and IPv6', async () => {
  const cap = binding().openSynCapture(LO);
  try {
    const p4 = await handshake('127.0.0.1');
    const p6 = await handshake('::1');
    const udp = createSocket('udp4');
    await new Promise<void>((res) => udp.send('not a SYN', p4, '127.0.0.1', () => res()));
    udp.close();
    await sleep(100);
    const frames = cap.recv(1000);
    for (const f of frames) {
      const p = parseFrame(asEthernet(f));
      assert.ok(p.tcp, `only TCP passes: got EtherType 0x${f.protocol.toString(16)}, protocol ${p.protocol}`);
      assert.equal(p.tcp.flags & (TCP_SYN | TCP_ACK), TCP_SYN, `only SYNs without ACK pass: flags 0x${p.tcp.flags.toString(16)}`);
      assert.equal(f.ifindex, LO);
      assert.ok(f.tsSec > 1_600_000_000, 'a kernel timestamp');
    }
    for (const [port, family] of [
      [p4, 0x0800],
      [p6, 0x86dd],
    ] as const) {
      const ours = frames.filter((f) => f.protocol === family && parseFrame(asEthernet(f)).tcp?.dport === port);
      assert.deepEqual(ours.map((f) => f.pktType).sort(), [0, 4], `the SYN to ${port}: once sent (4), once received (0)`);
      assert.equal(ours[0]!.length, ours[0]!.data.length, 'a SYN fits the snap length');
    }
    assert.ok(
      cap.stats().packets >= frames.length,
      `stats count what was kept: ${JSON.stringify(cap.stats())} for ${frames.length}`,
    );
    assert.equal(cap.stats().drops, 0);
    assert.deepEqual(cap.recv(), [], 'nothing left: recv never blocks');
  } finally {
    cap.close();
  }
  cap.close();
  assert.equal(cap.fd, -1, 'close is idempotent');
  assert.throws(
    () => cap.recv(),
    (e: unknown) => isNativeError(e) && e.code === 'EBADF' && e.syscall === 'recvmsg',
  );
});

test('a snap length out of range, an ifindex that is no interface', () => {
  assert.throws(() => binding().openSynCapture(LO, { snaplen: 10 }), /options\.snaplen must be in \[64, 65535\], got 10/);
  assert.throws(
    () => binding().openSynCapture(0x7fffff00),
    (e: unknown) => isNativeError(e) && e.code === 'ENODEV' && e.syscall === 'bind',
  );
});
