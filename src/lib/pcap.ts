/**
 * A small reader for classic pcap files as written by `tcpdump -w`: either byte order,
 * microsecond or nanosecond timestamps, link types Ethernet, Linux cooked (SLL) and SLL2.
 * No dependency on a test runner, so the demo can use it too.
 */

export const LINKTYPE_ETHERNET = 1;
export const LINKTYPE_LINUX_SLL = 113;
export const LINKTYPE_LINUX_SLL2 = 276;
/** the IP header first, no link-layer header (tun and other L3 devices) */
export const LINKTYPE_RAW = 101;

export const ETH_P_IP = 0x0800;
export const ETH_P_IPV6 = 0x86dd;
export const ETH_P_8021Q = 0x8100;
export const ETH_P_8021AD = 0x88a8;

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
    case LINKTYPE_RAW:
      return frame.length > 0 ? { etherType: (frame[0] ?? 0) >> 4 === 6 ? 0x86dd : 0x0800, offset: 0, vlanIds: [] } : undefined;
    default:
      return undefined;
  }
  let headerEnd = linkType === LINKTYPE_ETHERNET ? ETH_HEADER_LEN : linkType === LINKTYPE_LINUX_SLL ? SLL_HEADER_LEN : SLL2_HEADER_LEN;
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

/** Returns the frame as Ethernet: as is for Ethernet captures; cooked (SLL/SLL2) headers become a 14-byte Ethernet header (source = the cooked address, destination zero). */
export function toEthernet(linkType: number, frame: Buffer): Buffer {
  if (linkType === LINKTYPE_ETHERNET) {
    return frame;
  }
  let addr: Buffer;
  let protocol: number;
  let payload: Buffer;
  if (linkType === LINKTYPE_LINUX_SLL && frame.length >= SLL_HEADER_LEN) {
    const addrLen = Math.min(frame.readUInt16BE(4), 8);
    addr = frame.subarray(6, 6 + addrLen);
    protocol = frame.readUInt16BE(14);
    payload = frame.subarray(SLL_HEADER_LEN);
  } else if (linkType === LINKTYPE_LINUX_SLL2 && frame.length >= SLL2_HEADER_LEN) {
    const addrLen = Math.min(frame.readUInt8(11), 8);
    addr = frame.subarray(12, 12 + addrLen);
    protocol = frame.readUInt16BE(0);
    payload = frame.subarray(SLL2_HEADER_LEN);
  } else if (linkType === LINKTYPE_RAW && frame.length > 0) {
    // The IP header first (devices without a link-layer header): its version says which.
    addr = Buffer.alloc(0);
    protocol = (frame[0] ?? 0) >> 4 === 6 ? 0x86dd : 0x0800;
    payload = frame;
  } else {
    throw new Error(`pcap: cannot convert link type ${linkType} (frame of ${frame.length} bytes) to Ethernet`);
  }
  const eth = Buffer.alloc(ETH_HEADER_LEN);
  addr.copy(eth, 6, 0, Math.min(addr.length, 6));
  eth.writeUInt16BE(protocol, 12);
  return Buffer.concat([eth, payload]);
}

/** Write frames as a classic little-endian microsecond pcap file with Ethernet link type. */
export function writePcap(frames: readonly Buffer[], startTime = 0): Buffer {
  const header = Buffer.alloc(24);
  header.writeUInt32LE(MAGIC_MICRO, 0);
  header.writeUInt16LE(2, 4);
  header.writeUInt16LE(4, 6);
  header.writeUInt32LE(262144, 16);
  header.writeUInt32LE(LINKTYPE_ETHERNET, 20);
  const parts: Buffer[] = [header];
  frames.forEach((frame, i) => {
    const rec = Buffer.alloc(16);
    rec.writeUInt32LE(Math.floor(startTime) + i, 0);
    rec.writeUInt32LE(frame.length, 8);
    rec.writeUInt32LE(frame.length, 12);
    parts.push(rec, frame);
  });
  return Buffer.concat(parts);
}
