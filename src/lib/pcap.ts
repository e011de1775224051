/**
 * A small reader and writer for classic pcap files as written by `tcpdump -w`: either byte
 * order, microsecond or nanosecond timestamps, link types Ethernet, Linux cooked (SLL and
 * SLL2) and raw IP. No dependency on a test runner, so the demo and `netoken inspect` use it too.
 */
import { ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6 } from './packet.js';

export const LINKTYPE_ETHERNET = 1;
export const LINKTYPE_LINUX_SLL = 113;
export const LINKTYPE_LINUX_SLL2 = 276;
/** IPv4 or IPv6 without a link-layer header (tcpdump on tun and WireGuard devices) */
export const LINKTYPE_RAW = 101;

/** sll_pkttype of a frame this host sent (PACKET_OUTGOING); the others are frames it received. */
export const PACKET_OUTGOING = 4;

const MAGIC_MICRO = 0xa1b2c3d4;
const MAGIC_NANO = 0xa1b23c4d;
const MAGIC_PCAPNG = 0x0a0d0d0a;
const GLOBAL_HEADER_LEN = 24;
const RECORD_HEADER_LEN = 16;
const SLL_HEADER_LEN = 16;
const SLL2_HEADER_LEN = 20;
const ETH_HEADER_LEN = 14;
const VLAN_TAG_LEN = 4;

export interface PcapPacket {
  /** capture time, seconds part */
  tsSec: number;
  /** capture time, nanoseconds part (microsecond files are scaled up) */
  tsNsec: number;
  /** the captured bytes (at most snaplen) */
  data: Buffer;
  /** the length of the frame on the wire */
  origLen: number;
}

export interface Pcap {
  linkType: number;
  snaplen: number;
  nanosecond: boolean;
  packets: PcapPacket[];
}

/** Parses a classic pcap file; throws on a foreign or broken header; a trailing record cut short mid-write is dropped. */
export function parsePcap(buf: Buffer): Pcap {
  if (buf.length < GLOBAL_HEADER_LEN) {
    throw new Error(`pcap: file is ${buf.length} bytes, shorter than the ${GLOBAL_HEADER_LEN}-byte global header`);
  }
  const magicLE = buf.readUInt32LE(0);
  const magicBE = buf.readUInt32BE(0);
  let littleEndian: boolean;
  let nanosecond: boolean;
  if (magicLE === MAGIC_MICRO || magicLE === MAGIC_NANO) {
    littleEndian = true;
    nanosecond = magicLE === MAGIC_NANO;
  } else if (magicBE === MAGIC_MICRO || magicBE === MAGIC_NANO) {
    littleEndian = false;
    nanosecond = magicBE === MAGIC_NANO;
  } else if (magicBE === MAGIC_PCAPNG) {
    throw new Error('pcap: this is a pcapng file; write classic pcap (tcpdump -w does by default)');
  } else {
    throw new Error(`pcap: unknown magic 0x${magicBE.toString(16).padStart(8, '0')}`);
  }
  const u32 = (off: number): number => (littleEndian ? buf.readUInt32LE(off) : buf.readUInt32BE(off));
  const major = littleEndian ? buf.readUInt16LE(4) : buf.readUInt16BE(4);
  if (major !== 2) {
    throw new Error(`pcap: unsupported major version ${major}, want 2`);
  }
  const snaplen = u32(16);
  // The upper bits of the link-type field may carry FCS information (pcap spec); the type is the low 28 bits.
  const linkType = u32(20) & 0x0fffffff;

  const packets: PcapPacket[] = [];
  let off = GLOBAL_HEADER_LEN;
  while (off + RECORD_HEADER_LEN <= buf.length) {
    const tsSec = u32(off);
    const frac = u32(off + 4);
    const inclLen = u32(off + 8);
    const origLen = u32(off + 12);
    const start = off + RECORD_HEADER_LEN;
    if (start + inclLen > buf.length) {
      break;
    }
    packets.push({
      tsSec,
      tsNsec: nanosecond ? frac : frac * 1000,
      data: Buffer.from(buf.subarray(start, start + inclLen)),
      origLen,
    });
    off = start + inclLen;
  }
  return { linkType, snaplen, nanosecond, packets };
}

export interface NetworkLayer {
  /** EtherType of the network-layer header, after any VLAN tags */
  etherType: number;
  /** byte offset of the network-layer header in the frame */
  offset: number;
  /** VLAN ids of the 802.1Q/802.1ad tags in the frame, outermost first */
  vlanIds: number[];
}

/** Locates the network-layer header of a captured frame, skipping VLAN tags; undefined for an unknown link type or a short frame. */
export function networkLayer(linkType: number, frame: Buffer): NetworkLayer | undefined {
  let typeOff: number;
  switch (linkType) {
    case LINKTYPE_ETHERNET:
      typeOff = 12;
      break;
    case LINKTYPE_LINUX_SLL:
      typeOff = 14;
      break;
    case LINKTYPE_LINUX_SLL2:
      typeOff = 0;
      break;
    case LINKTYPE_RAW: {
      const version = (frame[0] ?? 0) >> 4;
      if (version !== 4 && version !== 6) return undefined;
      return { etherType: version === 4 ? ETH_P_IP : ETH_P_IPV6, offset: 0, vlanIds: [] };
    }
    default:
      return undefined;
  }
  let headerEnd =
    linkType === LINKTYPE_ETHERNET ? ETH_HEADER_LEN : linkType === LINKTYPE_LINUX_SLL ? SLL_HEADER_LEN : SLL2_HEADER_LEN;
  if (frame.length < headerEnd) {
    return undefined;
  }
  let etherType = frame.readUInt16BE(typeOff);
  const vlanIds: number[] = [];
  // Bounded: more than two tags (QinQ) is not something a sane capture of ours contains.
  while ((etherType === ETH_P_8021Q || etherType === ETH_P_8021AD) && vlanIds.length < 4) {
    if (frame.length < headerEnd + VLAN_TAG_LEN) {
      return undefined;
    }
    vlanIds.push(frame.readUInt16BE(headerEnd) & 0x0fff);
    etherType = frame.readUInt16BE(headerEnd + 2);
    headerEnd += VLAN_TAG_LEN;
  }
  return { etherType, offset: headerEnd, vlanIds };
}

/** The Linux packet type of a cooked (SLL/SLL2) frame, e.g. PACKET_OUTGOING; undefined for other link types. */
export function packetType(linkType: number, frame: Buffer): number | undefined {
  if (linkType === LINKTYPE_LINUX_SLL && frame.length >= SLL_HEADER_LEN) return frame.readUInt16BE(0);
  if (linkType === LINKTYPE_LINUX_SLL2 && frame.length >= SLL2_HEADER_LEN) return frame.readUInt8(10);
  return undefined;
}

/**
 * Returns the frame as Ethernet: as is for Ethernet captures; cooked (SLL/SLL2) headers become a
 * 14-byte Ethernet header (source = the cooked address, destination zero), raw IP gets one.
 */
export function toEthernet(linkType: number, frame: Buffer): Buffer {
  if (linkType === LINKTYPE_ETHERNET) {
    return frame;
  }
  let addr: Buffer;
  let protocol: number;
  let payload: Buffer;
  const raw = linkType === LINKTYPE_RAW ? networkLayer(linkType, frame) : undefined;
  if (raw) {
    addr = Buffer.alloc(0);
    protocol = raw.etherType;
    payload = frame;
  } else if (linkType === LINKTYPE_LINUX_SLL && frame.length >= SLL_HEADER_LEN) {
    const addrLen = Math.min(frame.readUInt16BE(4), 8);
    addr = frame.subarray(6, 6 + addrLen);
    protocol = frame.readUInt16BE(14);
    payload = frame.subarray(SLL_HEADER_LEN);
  } else if (linkType === LINKTYPE_LINUX_SLL2 && frame.length >= SLL2_HEADER_LEN) {
    const addrLen = Math.min(frame.readUInt8(11), 8);
    addr = frame.subarray(12, 12 + addrLen);
    protocol = frame.readUInt16BE(0);
    payload = frame.subarray(SLL2_HEADER_LEN);
  } else {
    throw new Error(`pcap: cannot convert link type ${linkType} (frame of ${frame.length} bytes) to Ethernet`);
  }
  const eth = Buffer.alloc(ETH_HEADER_LEN);
  addr.copy(eth, 6, 0, Math.min(addr.length, 6));
  eth.writeUInt16BE(protocol, 12);
  return Buffer.concat([eth, payload]);
}

/** The global header of a classic little-endian nanosecond pcap file. */
export function pcapHeader(linkType: number, snaplen = 262144): Buffer {
  const header = Buffer.alloc(GLOBAL_HEADER_LEN);
  header.writeUInt32LE(MAGIC_NANO, 0);
  header.writeUInt16LE(2, 4);
  header.writeUInt16LE(4, 6);
  header.writeUInt32LE(snaplen, 16);
  header.writeUInt32LE(linkType, 20);
  return header;
}

/** One record of a pcapHeader() file: the record header, then the captured bytes. */
export function pcapRecord(p: PcapPacket): Buffer {
  const rec = Buffer.alloc(RECORD_HEADER_LEN);
  rec.writeUInt32LE(p.tsSec >>> 0, 0);
  rec.writeUInt32LE(p.tsNsec >>> 0, 4);
  rec.writeUInt32LE(p.data.length, 8);
  rec.writeUInt32LE(p.origLen >>> 0, 12);
  return Buffer.concat([rec, p.data]);
}

/** A Linux cooked (SLL) header: what `tcpdump -i any` writes before each frame. */
export function sllHeader(pktType: number, hatype: number, addr: Buffer, protocol: number): Buffer {
  const h = Buffer.alloc(SLL_HEADER_LEN);
  h.writeUInt16BE(pktType, 0);
  h.writeUInt16BE(hatype, 2);
  h.writeUInt16BE(Math.min(addr.length, 8), 4);
  addr.copy(h, 6, 0, Math.min(addr.length, 8));
  h.writeUInt16BE(protocol, 14);
  return h;
}

/** Write Ethernet frames as a pcap file, one second apart from startTime. */
export function writePcap(frames: readonly Buffer[], startTime = 0): Buffer {
  return Buffer.concat([
    pcapHeader(LINKTYPE_ETHERNET),
    ...frames.map((data, i) => pcapRecord({ tsSec: Math.floor(startTime) + i, tsNsec: 0, data, origLen: data.length })),
  ]);
}
