import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  LINKTYPE_ETHERNET,
  LINKTYPE_LINUX_SLL,
  LINKTYPE_LINUX_SLL2,
  LINKTYPE_RAW,
  PACKET_OUTGOING,
  networkLayer,
  packetType,
  parsePcap,
  pcapHeader,
  pcapRecord,
  sllHeader,
  toEthernet,
} from './pcap.js';

/** A classic pcap file with the given magic, byte order and link type holding `frames`. */
function pcapFile(frames: Buffer[], opts: { nano: boolean; littleEndian: boolean; linkType: number }): Buffer {
  const w32 = (b: Buffer, v: number, off: number): void => {
    if (opts.littleEndian) b.writeUInt32LE(v, off);
    else b.writeUInt32BE(v, off);
  };
  const w16 = (b: Buffer, v: number, off: number): void => {
    if (opts.littleEndian) b.writeUInt16LE(v, off);
    else b.writeUInt16BE(v, off);
  };
  const header = Buffer.alloc(24);
  w32(header, opts.nano ? 0xa1b23c4d : 0xa1b2c3d4, 0);
  w16(header, 2, 4);
  w16(header, 4, 6);
  w32(header, 65535, 16);
  w32(header, opts.linkType, 20);
  const parts: Buffer[] = [header];
  frames.forEach((f, i) => {
    const rec = Buffer.alloc(16);
    w32(rec, 1_700_000_000 + i, 0);
    w32(rec, opts.nano ? 123_456_789 : 123_456, 4);
    w32(rec, f.length, 8);
    w32(rec, f.length + 10, 12);
    parts.push(rec, f);
  });
  return Buffer.concat(parts);
}

const ipv4Payload = Buffer.from('4500001400000000400600000a0000010a000002', 'hex');

function ethernetFrame(vlanIds: number[]): Buffer {
  const macs = Buffer.from('020000000001020000000002', 'hex');
  const tags = vlanIds.map((id, i) => {
    const t = Buffer.alloc(4);
    t.writeUInt16BE(i === 0 && vlanIds.length > 1 ? 0x88a8 : 0x8100, 0);
    t.writeUInt16BE(id, 2);
    return t;
  });
  const out: Buffer[] = [macs];
  for (const t of tags) out.push(t);
  const type = Buffer.alloc(2);
  type.writeUInt16BE(0x0800, 0);
  out.push(type, ipv4Payload);
  return Buffer.concat(out);
}

test('parsePcap reads microsecond and nanosecond files in both byte orders', () => {
  const frames = [ethernetFrame([]), Buffer.from('abcdef', 'hex')];
  for (const nano of [false, true]) {
    for (const littleEndian of [true, false]) {
      const got = parsePcap(pcapFile(frames, { nano, littleEndian, linkType: LINKTYPE_ETHERNET }));
      const label = `nano=${nano} littleEndian=${littleEndian}`;
      assert.equal(got.linkType, LINKTYPE_ETHERNET, `${label}: linkType got ${got.linkType}, want 1`);
      assert.equal(got.nanosecond, nano, `${label}: nanosecond got ${got.nanosecond}, want ${nano}`);
      assert.equal(got.packets.length, 2, `${label}: packets got ${got.packets.length}, want 2`);
      assert.deepEqual(got.packets[0]?.data, frames[0], `${label}: first frame bytes differ`);
      assert.deepEqual(got.packets[1]?.data, frames[1], `${label}: second frame bytes differ`);
      assert.equal(got.packets[1]?.tsSec, 1_700_000_001, `${label}: tsSec got ${got.packets[1]?.tsSec}`);
      assert.equal(got.packets[0]?.tsNsec, 123_456_789 - (nano ? 0 : 789), `${label}: tsNsec got ${got.packets[0]?.tsNsec}`);
      assert.equal(got.packets[0]?.origLen, frames[0]!.length + 10, `${label}: origLen got ${got.packets[0]?.origLen}`);
    }
  }
});

test('parsePcap drops a record cut short at the end of the file', () => {
  const full = pcapFile([ethernetFrame([]), ethernetFrame([])], { nano: false, littleEndian: true, linkType: 1 });
  const got = parsePcap(full.subarray(0, full.length - 5));
  assert.equal(got.packets.length, 1, `packets got ${got.packets.length}, want 1`);
});

test('parsePcap rejects pcapng and garbage with a message naming the problem', () => {
  const ng = Buffer.alloc(32);
  ng.writeUInt32BE(0x0a0d0d0a, 0);
  assert.throws(() => parsePcap(ng), /pcapng/);
  assert.throws(() => parsePcap(Buffer.alloc(32, 0x11)), /unknown magic/);
  assert.throws(() => parsePcap(Buffer.alloc(10)), /shorter than/);
});

test('networkLayer skips 802.1Q and 802.1ad tags', () => {
  for (const ids of [[], [100], [7, 42]]) {
    const got = networkLayer(LINKTYPE_ETHERNET, ethernetFrame(ids));
    assert.deepEqual(got, { etherType: 0x0800, offset: 14 + 4 * ids.length, vlanIds: ids }, `vlan ids ${JSON.stringify(ids)}`);
  }
  assert.equal(networkLayer(LINKTYPE_ETHERNET, Buffer.alloc(10)), undefined, 'a 10-byte frame has no network layer');
  assert.equal(networkLayer(9999, ethernetFrame([])), undefined, 'unknown link type');
});

test('cooked SLL and SLL2 frames become Ethernet frames with the same network layer', () => {
  const mac = Buffer.from('0a0b0c0d0e0f', 'hex');
  const sll = Buffer.alloc(16);
  sll.writeUInt16BE(4, 0); // sent by us
  sll.writeUInt16BE(1, 2); // ARPHRD_ETHER
  sll.writeUInt16BE(6, 4);
  mac.copy(sll, 6);
  sll.writeUInt16BE(0x0800, 14);
  const sll2 = Buffer.alloc(20);
  sll2.writeUInt16BE(0x0800, 0);
  sll2.writeUInt32BE(3, 4);
  sll2.writeUInt16BE(1, 8);
  sll2.writeUInt8(4, 10);
  sll2.writeUInt8(6, 11);
  mac.copy(sll2, 12);
  for (const [linkType, hdr] of [
    [LINKTYPE_LINUX_SLL, sll],
    [LINKTYPE_LINUX_SLL2, sll2],
  ] as const) {
    const frame = Buffer.concat([hdr, ipv4Payload]);
    assert.deepEqual(
      networkLayer(linkType, frame),
      { etherType: 0x0800, offset: hdr.length, vlanIds: [] },
      `link type ${linkType}`,
    );
    const eth = toEthernet(linkType, frame);
    assert.deepEqual(eth.subarray(6, 12), mac, `link type ${linkType}: source MAC`);
    assert.equal(eth.readUInt16BE(12), 0x0800, `link type ${linkType}: EtherType`);
    assert.deepEqual(eth.subarray(14), ipv4Payload, `link type ${linkType}: payload`);
    assert.equal(packetType(linkType, frame), PACKET_OUTGOING, `link type ${linkType}: the packet type says sent by us`);
  }
  assert.deepEqual(sllHeader(4, 1, mac, 0x0800), sll, 'sllHeader writes what tcpdump -i any writes');
  assert.equal(packetType(LINKTYPE_ETHERNET, ethernetFrame([])), undefined, 'Ethernet frames carry no packet type');
});

test('raw IP captures (tun, WireGuard) read as Ethernet frames of the right EtherType', () => {
  const v6 = Buffer.concat([Buffer.from('60000000000006ff', 'hex'), Buffer.alloc(32)]);
  assert.deepEqual(networkLayer(LINKTYPE_RAW, ipv4Payload), { etherType: 0x0800, offset: 0, vlanIds: [] });
  assert.deepEqual(networkLayer(LINKTYPE_RAW, v6), { etherType: 0x86dd, offset: 0, vlanIds: [] });
  assert.equal(networkLayer(LINKTYPE_RAW, Buffer.from('00', 'hex')), undefined, 'not IP');
  assert.equal(toEthernet(LINKTYPE_RAW, v6).readUInt16BE(12), 0x86dd);
  assert.deepEqual(toEthernet(LINKTYPE_RAW, ipv4Payload).subarray(14), ipv4Payload);
  assert.throws(() => toEthernet(LINKTYPE_RAW, Buffer.from('00', 'hex')), /cannot convert link type 101/);
});

test('pcapHeader and pcapRecord write what parsePcap reads back, nanoseconds included', () => {
  const frames = [ethernetFrame([]), ethernetFrame([7])];
  const file = Buffer.concat([
    pcapHeader(LINKTYPE_ETHERNET, 1000),
    ...frames.map((data, i) => pcapRecord({ tsSec: 1_700_000_000 + i, tsNsec: 999_999_999 - i, data, origLen: data.length + 4 })),
  ]);
  const back = parsePcap(file);
  assert.equal(back.linkType, LINKTYPE_ETHERNET);
  assert.equal(back.snaplen, 1000);
  assert.equal(back.nanosecond, true);
  assert.deepEqual(
    back.packets,
    frames.map((data, i) => ({ tsSec: 1_700_000_000 + i, tsNsec: 999_999_999 - i, data, origLen: data.length + 4 })),
  );
});
