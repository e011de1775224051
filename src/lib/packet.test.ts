import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  buildFrame,
  findTokenOption,
  ipv4HeaderChecksum,
  parseFrame,
  parseTcpOptions,
  tcpChecksum,
  tcpPseudoHeaderSeed,
  tokenOption,
  ETH_P_ARP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  TCP_ACK,
  TCP_SYN,
} from './packet.js';
import { parsePcap, toEthernet, writePcap } from './pcap.js';

/** MSS 1460, SACK-permitted, timestamps, NOP, window scale 7: what Linux puts in a SYN (20 bytes). */
const LINUX_SYN_OPTIONS = Buffer.from('020405b40402080a0001e24000000000' + '01030307', 'hex');

test('an IPv4 SYN round-trips through build and parse with correct checksums', () => {
  const frame = buildFrame({
    src: '192.0.2.1',
    dst: '203.0.113.7',
    tcp: { sport: 40000, dport: 443, seq: 0x11223344, flags: TCP_SYN, options: LINUX_SYN_OPTIONS },
  });
  assert.equal(frame.length, 14 + 20 + 40, `frame length: got ${frame.length}, want 74`);
  const p = parseFrame(frame);
  assert.deepEqual(p.errors, [], `parse errors: ${p.errors.join('; ')}`);
  assert.equal(p.family, 4);
  assert.equal(p.l3Offset, 14);
  assert.equal(p.l4Offset, 34);
  assert.equal(p.src, '192.0.2.1');
  assert.equal(p.dst, '203.0.113.7');
  assert.equal(p.ipTotalLength, 60);
  assert.equal(p.ipv4ChecksumOk, true, 'IPv4 header checksum');
  assert.equal(p.tcpChecksumOk, true, 'TCP checksum');
  assert.ok(p.tcp);
  assert.equal(p.tcp.sport, 40000);
  assert.equal(p.tcp.dport, 443);
  assert.equal(p.tcp.seq, 0x11223344);
  assert.equal(p.tcp.flags, TCP_SYN);
  assert.equal(p.tcp.doff, 10);
  assert.deepEqual(
    p.tcp.options.map((o) => [o.kind, o.length]),
    [
      [2, 4],
      [4, 2],
      [8, 10],
      [1, 1],
      [3, 3],
    ],
  );
  assert.equal(p.tcp.optionsError, null);
  assert.equal(p.tcp.payload.length, 0);
});

test('checksums agree with an RFC 1071 example and with tcpdump', () => {
  // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum (folded) to ddf2.
  const hdr = Buffer.from('0001f203f4f5f6f7000000000000000000000000', 'hex');
  assert.equal(ipv4HeaderChecksum(hdr), ~0xddf2 & 0xffff);

  const frames = [
    buildFrame({
      src: '10.1.2.3',
      dst: '10.4.5.6',
      ipOptions: Buffer.from([1, 1, 1, 0]),
      tcp: { sport: 1234, dport: 80, seq: 7, options: LINUX_SYN_OPTIONS },
    }),
    buildFrame({
      src: '2001:db8::1',
      dst: '2001:db8::2',
      vlan: 42,
      tcp: { sport: 5555, dport: 443, seq: 99, options: LINUX_SYN_OPTIONS },
    }),
    buildFrame({
      src: '10.1.2.3',
      dst: '10.4.5.6',
      tcp: { sport: 1, dport: 2, flags: TCP_ACK | TCP_SYN },
      payload: Buffer.from('odd'),
    }),
  ];
  const dir = mkdtempSync(path.join(tmpdir(), 'netoken-packet-'));
  try {
    const file = path.join(dir, 'f.pcap');
    writeFileSync(file, writePcap(frames));
    const text = execFileSync('tcpdump', ['-nn', '-vv', '-r', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const verdicts = [...text.matchAll(/cksum 0x[0-9a-f]+ \((correct|incorrect[^)]*)\)/g)].map((m) => m[1]);
    assert.deepEqual(verdicts, ['correct', 'correct', 'correct'], `tcpdump says:\n${text}`);
    assert.doesNotMatch(text, /bad cksum/, `tcpdump flags an IPv4 header checksum:\n${text}`);

    // And the frames come back byte for byte through a pcap tcpdump itself wrote.
    const copy = path.join(dir, 'copy.pcap');
    execFileSync('tcpdump', ['-r', file, '-w', copy], { stdio: 'ignore' });
    const cap = parsePcap(readFileSync(copy));
    const back = cap.packets.map((r) => toEthernet(cap.linkType, r.data));
    assert.deepEqual(back, frames);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("checksum 'partial' leaves exactly the pseudo-header seed, as a CHECKSUM_PARTIAL skb carries it", () => {
  const frame = buildFrame({ src: '192.0.2.1', dst: '192.0.2.2', tcp: { sport: 1, dport: 2, checksum: 'partial' } });
  const p = parseFrame(frame);
  const src = Buffer.from([192, 0, 2, 1]);
  const dst = Buffer.from([192, 0, 2, 2]);
  // Seed by hand: c000 + 0201 + c000 + 0202 + 0006 + 0014 = 1841d -> 841e.
  assert.equal(tcpPseudoHeaderSeed(src, dst, 20), 0x841e);
  assert.equal(p.tcp?.checksum, 0x841e);
  assert.equal(p.tcpChecksumIsPseudoSeed, true);
  assert.equal(p.tcpChecksumOk, false);
  const full = parseFrame(buildFrame({ src: '192.0.2.1', dst: '192.0.2.2', tcp: { sport: 1, dport: 2 } }));
  assert.equal(full.tcp?.checksum, tcpChecksum(src, dst, frame.subarray(34)));
  assert.equal(full.tcpChecksumOk, true);
});

test('explicit checksum values and lengths are written as given', () => {
  const frame = buildFrame({
    src: '192.0.2.1',
    dst: '192.0.2.2',
    ipChecksum: 0xbeef,
    ipLength: 99,
    tcp: { sport: 1, dport: 2, checksum: 0x1234 },
  });
  const p = parseFrame(frame);
  assert.equal(frame.readUInt16BE(24), 0xbeef);
  assert.equal(p.ipTotalLength, 99);
  assert.equal(p.tcp?.checksum, 0x1234);
  assert.equal(p.ipv4ChecksumOk, false);
  assert.ok(
    p.errors.some((e) => /IP length/.test(e)),
    `want a length error, got ${JSON.stringify(p.errors)}`,
  );
});

test('VLAN and QinQ tags are built and parsed, outer first', () => {
  const one = parseFrame(buildFrame({ vlan: 100, src: '192.0.2.1', dst: '192.0.2.2', tcp: { sport: 1, dport: 2 } }));
  assert.deepEqual(one.vlanIds, [100]);
  assert.equal(one.l3Offset, 18);
  assert.equal(one.tcpChecksumOk, true);
  const qinq = buildFrame({
    vlan: [{ id: 7, tpid: 0x88a8 }, { id: 300 }],
    src: '2001:db8::1',
    dst: '2001:db8::2',
    tcp: { sport: 1, dport: 2 },
  });
  assert.equal(qinq.readUInt16BE(12), 0x88a8);
  assert.equal(qinq.readUInt16BE(16), 0x8100);
  assert.equal(qinq.readUInt16BE(20), 0x86dd);
  const p = parseFrame(qinq);
  assert.deepEqual(p.vlanIds, [7, 300]);
  assert.equal(p.l3Offset, 22);
  assert.equal(p.l4Offset, 62);
  assert.equal(p.tcpChecksumOk, true);
});

test('IPv6 extension headers are built and walked to the TCP header', () => {
  const frame = buildFrame({
    src: '2001:db8::1',
    dst: '2001:db8::2',
    ipv6Ext: [{ type: 0 }, { type: 60, body: Buffer.alloc(14) }],
    tcp: { sport: 1000, dport: 443 },
  });
  const p = parseFrame(frame);
  assert.deepEqual(p.ipv6ExtHeaders, [0, 60]);
  assert.equal(frame[14 + 6], 0, 'first next header is hop-by-hop');
  assert.equal(p.l4Offset, 14 + 40 + 8 + 16);
  assert.equal(p.payloadLength, 8 + 16 + 20);
  assert.equal(p.protocol, IPPROTO_TCP);
  assert.equal(p.tcp?.dport, 443);
  assert.equal(p.tcpChecksumOk, true);
});

test('IPv4 fragments: a later fragment has no TCP header', () => {
  const first = parseFrame(buildFrame({ src: '192.0.2.1', dst: '192.0.2.2', mf: true, tcp: { sport: 1, dport: 2 } }));
  assert.equal(first.moreFragments, true);
  assert.equal(first.fragOffset, 0);
  assert.ok(first.tcp);
  const later = parseFrame(
    buildFrame({ src: '192.0.2.1', dst: '192.0.2.2', fragOffset: 3, protocol: IPPROTO_TCP, payload: Buffer.alloc(8) }),
  );
  assert.equal(later.fragOffset, 3);
  assert.equal(later.tcp, null);
});

test('UDP and ARP frames parse without a TCP part', () => {
  const udp = parseFrame(buildFrame({ src: '192.0.2.1', dst: '192.0.2.2', protocol: IPPROTO_UDP, payload: Buffer.alloc(12) }));
  assert.equal(udp.protocol, IPPROTO_UDP);
  assert.equal(udp.tcp, null);
  assert.equal(udp.tcpChecksumOk, null);
  const arp = parseFrame(buildFrame({ etherType: ETH_P_ARP, payload: Buffer.alloc(28) }));
  assert.equal(arp.etherType, ETH_P_ARP);
  assert.equal(arp.family, null);
});

test('option decoding reports each kind of malformed option', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['length 0', '02000000', /length 0/],
    ['length 1', '0101fd01', /length 1/],
    ['past the end', '0101fd08', /past the end/],
    ['no length byte', '010101fd', /no length byte/],
  ];
  for (const [name, hex, want] of cases) {
    const { error } = parseTcpOptions(Buffer.from(hex, 'hex'));
    assert.match(error ?? '', want, `${name}: got ${String(error)}`);
  }
  const eol = parseTcpOptions(Buffer.from('02040218000000000', 'hex'));
  assert.deepEqual(
    eol.options.map((o) => o.kind),
    [2, 0],
    'an EOL ends the list',
  );
  // A frame whose doff claims more than the segment holds.
  const p = parseFrame(buildFrame({ src: '192.0.2.1', dst: '192.0.2.2', tcp: { sport: 1, dport: 2, doff: 8 } }));
  assert.ok(
    p.errors.some((e) => /data offset 8/.test(e)),
    JSON.stringify(p.errors),
  );
});

test('findTokenOption finds our kind and ExID only', () => {
  const value = Buffer.from('0102030405060708', 'hex');
  const opts = Buffer.concat([
    Buffer.from('020405b4', 'hex'),
    tokenOption(253, 0x1111, Buffer.alloc(8, 9)),
    tokenOption(253, 0x4e54, value),
  ]);
  const p = parseFrame(buildFrame({ src: '192.0.2.1', dst: '192.0.2.2', tcp: { sport: 1, dport: 2, options: opts } }));
  assert.deepEqual(findTokenOption(p, 253, 0x4e54), value);
  assert.equal(findTokenOption(p, 254, 0x4e54), null);
  assert.equal(findTokenOption(p, 253, 0x2222), null);
  assert.throws(() => tokenOption(253, 1, Buffer.alloc(4)), /8 bytes/);
});
