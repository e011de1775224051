/**
 * Ethernet / IPv4 / IPv6 / TCP frames as bytes: a builder for crafted test packets and a
 * parser that re-checks every checksum on its own. Used by the BPF packet tests, the demo
 * and anything that reads frames captured by tcpdump (see pcap.ts).
 */
import { formatIp, parseIp } from './cidr.js';

export const ETH_P_IP = 0x0800;
export const ETH_P_IPV6 = 0x86dd;
export const ETH_P_ARP = 0x0806;
export const ETH_P_8021Q = 0x8100;
export const ETH_P_8021AD = 0x88a8;

export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_ICMPV6 = 58;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;

const ETH_HLEN = 14;
const IPV4_HLEN = 20;
const IPV6_HLEN = 40;
const TCP_HLEN = 20;

/** 'full': correct checksum; 'partial': only the pseudo-header sum (as a CHECKSUM_PARTIAL skb carries it); a number: that value. */
export type ChecksumMode = 'full' | 'partial' | number;

export interface VlanTag {
  id: number;
  /** 0x8100 (802.1Q, default) or 0x88a8 (802.1ad) */
  tpid?: number;
  /** priority code point, 0..7 */
  pcp?: number;
}

export interface Ipv6ExtHeader {
  /** the next-header value that announces this header (0 hop-by-hop, 43 routing, 44 fragment, 60 destination, ...) */
  type: number;
  /** bytes after the next-header and length bytes; padded with zeros to a multiple of 8 with them */
  body?: Buffer;
}

export interface TcpSpec {
  sport: number;
  dport: number;
  seq?: number;
  ack?: number;
  /** TCP_* bits, default SYN */
  flags?: number;
  window?: number;
  urgent?: number;
  /** raw option bytes; zero-padded to a multiple of 4 unless doff is given */
  options?: Buffer;
  /** data offset in 32-bit words; default from the options (set it to build inconsistent headers) */
  doff?: number;
  /** TCP checksum, default 'full' */
  checksum?: ChecksumMode;
}

export interface FrameSpec {
  srcMac?: string;
  dstMac?: string;
  /** one tag, or outer-to-inner tags (QinQ) */
  vlan?: number | VlanTag | Array<number | VlanTag>;
  /** EtherType when no IP header is built (e.g. ARP); the payload follows the Ethernet header */
  etherType?: number;
  /** IPv4 or IPv6 addresses (both the same family) */
  src?: string;
  dst?: string;
  ttl?: number;
  /** IPv4 identification */
  ipId?: number;
  /** IPv4: don't fragment (default true unless fragmenting) */
  df?: boolean;
  /** IPv4: more fragments */
  mf?: boolean;
  /** IPv4 fragment offset in 8-byte units */
  fragOffset?: number;
  /** IPv4 options, zero-padded to a multiple of 4 (ihl 6..15) */
  ipOptions?: Buffer;
  /** IPv4 header checksum, default 'full' ('partial' is treated as 'full') */
  ipChecksum?: ChecksumMode;
  /** override IPv4 total length / IPv6 payload length (to build inconsistent packets) */
  ipLength?: number;
  /** IPv6 extension headers between the fixed header and the upper layer */
  ipv6Ext?: Ipv6ExtHeader[];
  /** IP protocol when no TCP header is built (UDP/ICMP carry `payload` as their whole body) */
  protocol?: number;
  tcp?: TcpSpec;
  /** TCP payload, or the upper-layer bytes for other protocols, or the L2 payload with etherType */
  payload?: Buffer;
}

function parseMac(text: string): Buffer {
  const parts = text.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) throw new Error(`"${text}" is not a MAC address`);
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

function formatMac(b: Buffer): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
}

function addr(text: string): Buffer {
  const b = parseIp(text);
  if (!b) throw new Error(`"${text}" is not an IP address`);
  return b;
}

function pad(b: Buffer, multiple: number): Buffer {
  const rem = b.length % multiple;
  return rem === 0 ? b : Buffer.concat([b, Buffer.alloc(multiple - rem)]);
}

/** One's-complement sum of 16-bit big-endian words, not folded (an odd last byte is padded with zero). */
function sum16(buf: Buffer, initial = 0): number {
  let s = initial;
  let i = 0;
  for (; i + 1 < buf.length; i += 2) s += buf.readUInt16BE(i);
  if (i < buf.length) s += (buf[i] ?? 0) << 8;
  return s;
}

function fold(sum: number): number {
  let s = sum;
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

/** IPv4 header checksum of `header`, computed as if its checksum field were zero. */
export function ipv4HeaderChecksum(header: Buffer): number {
  const h = Buffer.from(header);
  h.writeUInt16BE(0, 10);
  return ~fold(sum16(h)) & 0xffff;
}

/** The pseudo-header sum, folded and not complemented: what the TCP checksum field holds for CHECKSUM_PARTIAL. */
export function tcpPseudoHeaderSeed(src: Buffer, dst: Buffer, tcpLength: number): number {
  let s = sum16(src) + sum16(dst) + IPPROTO_TCP;
  // IPv4 carries the length as 16 bits, IPv6 as 32: the same sum for lengths below 64 KiB.
  s += (tcpLength >>> 16) + (tcpLength & 0xffff);
  return fold(s);
}

/** The full TCP checksum of `segment` (header + data), computed as if its checksum field were zero. */
export function tcpChecksum(src: Buffer, dst: Buffer, segment: Buffer): number {
  const seg = Buffer.from(segment);
  if (seg.length >= 18) seg.writeUInt16BE(0, 16);
  return ~fold(sum16(seg, tcpPseudoHeaderSeed(src, dst, seg.length))) & 0xffff;
}

function vlanTags(spec: FrameSpec['vlan']): VlanTag[] {
  if (spec === undefined) return [];
  const list = Array.isArray(spec) ? spec : [spec];
  return list.map((t) => (typeof t === 'number' ? { id: t } : t));
}

function buildTcp(t: TcpSpec, payload: Buffer): Buffer {
  const opts = t.doff === undefined ? pad(t.options ?? Buffer.alloc(0), 4) : (t.options ?? Buffer.alloc(0));
  const doff = t.doff ?? (TCP_HLEN + opts.length) / 4;
  const h = Buffer.alloc(TCP_HLEN);
  h.writeUInt16BE(t.sport, 0);
  h.writeUInt16BE(t.dport, 2);
  h.writeUInt32BE((t.seq ?? 0) >>> 0, 4);
  h.writeUInt32BE((t.ack ?? 0) >>> 0, 8);
  h.writeUInt8((doff & 0xf) << 4, 12);
  h.writeUInt8((t.flags ?? TCP_SYN) & 0xff, 13);
  h.writeUInt16BE(t.window ?? 64240, 14);
  h.writeUInt16BE(t.urgent ?? 0, 18);
  return Buffer.concat([h, opts, payload]);
}

/**
 * Build an Ethernet frame. Lengths and checksums are computed unless overridden, so a
 * test can build exactly the inconsistent packet it needs.
 */
export function buildFrame(spec: FrameSpec): Buffer {
  const payload = spec.payload ?? Buffer.alloc(0);
  const parts: Buffer[] = [parseMac(spec.dstMac ?? '02:00:00:00:00:02'), parseMac(spec.srcMac ?? '02:00:00:00:00:01')];
  const tags = vlanTags(spec.vlan);
  const src = spec.src === undefined ? undefined : addr(spec.src);
  const dst = spec.dst === undefined ? undefined : addr(spec.dst);
  const family = src ? (src.length === 4 ? 4 : 6) : undefined;
  const etherType = spec.etherType ?? (family === 4 ? ETH_P_IP : family === 6 ? ETH_P_IPV6 : undefined);
  if (etherType === undefined) throw new Error('buildFrame: give src/dst addresses or an etherType');

  const typeField = (v: number): Buffer => {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(v, 0);
    return b;
  };
  let nextType = tags.length > 0 ? (tags[0]?.tpid ?? ETH_P_8021Q) : etherType;
  parts.push(typeField(nextType));
  tags.forEach((tag, i) => {
    const tci = Buffer.alloc(2);
    tci.writeUInt16BE((((tag.pcp ?? 0) & 7) << 13) | (tag.id & 0xfff), 0);
    nextType = i + 1 < tags.length ? (tags[i + 1]?.tpid ?? ETH_P_8021Q) : etherType;
    parts.push(tci, typeField(nextType));
  });

  if (!src || !dst || spec.etherType !== undefined) {
    parts.push(payload);
    return Buffer.concat(parts);
  }
  if (src.length !== dst.length) throw new Error('buildFrame: src and dst must be the same address family');

  const proto = spec.tcp ? IPPROTO_TCP : (spec.protocol ?? IPPROTO_UDP);
  let l4 = spec.tcp ? buildTcp(spec.tcp, payload) : payload;

  if (spec.tcp) {
    const mode = spec.tcp.checksum ?? 'full';
    const value =
      mode === 'full' ? tcpChecksum(src, dst, l4) : mode === 'partial' ? tcpPseudoHeaderSeed(src, dst, l4.length) : mode;
    l4.writeUInt16BE(value & 0xffff, 16);
  }

  if (family === 4) {
    const opts = pad(spec.ipOptions ?? Buffer.alloc(0), 4);
    const ihl = (IPV4_HLEN + opts.length) / 4;
    if (ihl > 15) throw new Error(`buildFrame: ${opts.length} bytes of IPv4 options do not fit (at most 40)`);
    const h = Buffer.alloc(IPV4_HLEN);
    h.writeUInt8(0x40 | ihl, 0);
    h.writeUInt16BE(spec.ipLength ?? ihl * 4 + l4.length, 2);
    h.writeUInt16BE(spec.ipId ?? 0x1234, 4);
    const fragmenting = spec.mf === true || (spec.fragOffset ?? 0) > 0;
    const df = spec.df ?? !fragmenting;
    h.writeUInt16BE((df ? 0x4000 : 0) | (spec.mf ? 0x2000 : 0) | ((spec.fragOffset ?? 0) & 0x1fff), 6);
    h.writeUInt8(spec.ttl ?? 64, 8);
    h.writeUInt8(proto, 9);
    src.copy(h, 12);
    dst.copy(h, 16);
    const header = Buffer.concat([h, opts]);
    const mode = spec.ipChecksum ?? 'full';
    header.writeUInt16BE(typeof mode === 'number' ? mode & 0xffff : ipv4HeaderChecksum(header), 10);
    parts.push(header, l4);
    return Buffer.concat(parts);
  }

  const ext = spec.ipv6Ext ?? [];
  const extBufs = ext.map((e, i) => {
    const next = i + 1 < ext.length ? (ext[i + 1]?.type ?? proto) : proto;
    const body = pad(Buffer.concat([Buffer.alloc(2), e.body ?? Buffer.alloc(6)]), 8);
    body.writeUInt8(next, 0);
    // AH counts 4-byte units minus 2; the others 8-byte units minus 1 (the fragment header's is reserved, 0).
    body.writeUInt8(e.type === 51 ? body.length / 4 - 2 : body.length / 8 - 1, 1);
    return body;
  });
  l4 = Buffer.concat([...extBufs, l4]);
  const h = Buffer.alloc(IPV6_HLEN);
  h.writeUInt32BE(0x60000000, 0);
  h.writeUInt16BE(spec.ipLength ?? l4.length, 4);
  h.writeUInt8(ext.length > 0 ? (ext[0]?.type ?? proto) : proto, 6);
  h.writeUInt8(spec.ttl ?? 64, 7);
  src.copy(h, 8);
  dst.copy(h, 24);
  parts.push(h, l4);
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------------------
// Parsing

export interface TcpOption {
  kind: number;
  /** the length byte (1 for EOL and NOP, which have none) */
  length: number;
  /** the bytes after kind and length */
  data: Buffer;
}

export interface ParsedTcp {
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  /** TCP_* bits */
  flags: number;
  /** data offset in 32-bit words */
  doff: number;
  window: number;
  checksum: number;
  /** the raw option area (doff * 4 - 20 bytes, or what the frame holds of it) */
  optionBytes: Buffer;
  /** options decoded up to the first error; an EOL ends the list */
  options: TcpOption[];
  /** why decoding stopped early, or null */
  optionsError: string | null;
  payload: Buffer;
}

export interface ParsedFrame {
  dstMac: string;
  srcMac: string;
  /** 802.1Q / 802.1ad VLAN ids, outer first */
  vlanIds: number[];
  /** the EtherType after the tags */
  etherType: number;
  family: 4 | 6 | null;
  /** offset of the IP header (or of the L2 payload) from the start of the frame */
  l3Offset: number;
  /** offset of the upper-layer header, or null when there is no IP header */
  l4Offset: number | null;
  src: string | null;
  dst: string | null;
  /** IPv4 protocol / the IPv6 next header after the extension headers */
  protocol: number | null;
  /** IPv4 header length in bytes */
  ipv4HeaderLength: number | null;
  ipTotalLength: number | null;
  payloadLength: number | null;
  /** IPv4: more fragments / fragment offset (8-byte units) */
  moreFragments: boolean;
  fragOffset: number;
  /** the next-header values of the IPv6 extension headers, in order */
  ipv6ExtHeaders: number[];
  /** null for IPv6 and non-IP frames */
  ipv4ChecksumOk: boolean | null;
  tcp: ParsedTcp | null;
  /** the TCP checksum, independently recomputed over pseudo-header + segment, is right */
  tcpChecksumOk: boolean | null;
  /** the TCP checksum field holds exactly the pseudo-header seed (a CHECKSUM_PARTIAL packet before the device sums it) */
  tcpChecksumIsPseudoSeed: boolean | null;
  /** parse problems (truncation, lengths that disagree) */
  errors: string[];
}

/** Decode a TCP option area; stops at EOL (included) or at the first malformed option. */
export function parseTcpOptions(area: Buffer): { options: TcpOption[]; error: string | null } {
  const options: TcpOption[] = [];
  let off = 0;
  while (off < area.length) {
    const kind = area[off] ?? 0;
    if (kind === 0 || kind === 1) {
      options.push({ kind, length: 1, data: Buffer.alloc(0) });
      off++;
      if (kind === 0) break;
      continue;
    }
    if (off + 1 >= area.length) return { options, error: `option kind ${kind} at byte ${off} has no length byte` };
    const len = area[off + 1] ?? 0;
    if (len < 2) return { options, error: `option kind ${kind} at byte ${off} has length ${len} (< 2)` };
    if (off + len > area.length) {
      return {
        options,
        error: `option kind ${kind} at byte ${off} has length ${len}, past the end of the ${area.length}-byte option area`,
      };
    }
    options.push({ kind, length: len, data: Buffer.from(area.subarray(off + 2, off + len)) });
    off += len;
  }
  return { options, error: null };
}

const IPV6_EXT_WALKABLE = new Set([0, 43, 44, 60, 51, 135, 139, 140, 253, 254]);

/** Parse an Ethernet frame (as built above or as captured by tcpdump on an Ethernet link). */
export function parseFrame(buf: Buffer): ParsedFrame {
  const errors: string[] = [];
  const out: ParsedFrame = {
    dstMac: '',
    srcMac: '',
    vlanIds: [],
    etherType: 0,
    family: null,
    l3Offset: 0,
    l4Offset: null,
    src: null,
    dst: null,
    protocol: null,
    ipv4HeaderLength: null,
    ipTotalLength: null,
    payloadLength: null,
    moreFragments: false,
    fragOffset: 0,
    ipv6ExtHeaders: [],
    ipv4ChecksumOk: null,
    tcp: null,
    tcpChecksumOk: null,
    tcpChecksumIsPseudoSeed: null,
    errors,
  };
  if (buf.length < ETH_HLEN) {
    errors.push(`frame of ${buf.length} bytes is shorter than an Ethernet header`);
    return out;
  }
  out.dstMac = formatMac(buf.subarray(0, 6));
  out.srcMac = formatMac(buf.subarray(6, 12));
  let off = 12;
  let type = buf.readUInt16BE(off);
  off += 2;
  while (type === ETH_P_8021Q || type === ETH_P_8021AD) {
    if (off + 4 > buf.length) {
      errors.push('truncated VLAN tag');
      return out;
    }
    out.vlanIds.push(buf.readUInt16BE(off) & 0xfff);
    type = buf.readUInt16BE(off + 2);
    off += 4;
  }
  out.etherType = type;
  out.l3Offset = off;

  let src: Buffer;
  let dst: Buffer;
  let l4: number;
  let l3End: number;
  if (type === ETH_P_IP) {
    if (off + IPV4_HLEN > buf.length) {
      errors.push('truncated IPv4 header');
      return out;
    }
    const ihl = ((buf[off] ?? 0) & 0xf) * 4;
    out.family = 4;
    out.ipv4HeaderLength = ihl;
    out.ipTotalLength = buf.readUInt16BE(off + 2);
    const frag = buf.readUInt16BE(off + 6);
    out.moreFragments = (frag & 0x2000) !== 0;
    out.fragOffset = frag & 0x1fff;
    out.protocol = buf[off + 9] ?? 0;
    src = Buffer.from(buf.subarray(off + 12, off + 16));
    dst = Buffer.from(buf.subarray(off + 16, off + 20));
    out.src = formatIp(src);
    out.dst = formatIp(dst);
    if (ihl < IPV4_HLEN || off + ihl > buf.length) {
      errors.push(`bad IPv4 header length ${ihl}`);
      return out;
    }
    const header = buf.subarray(off, off + ihl);
    // As a receiver checks: the header including its checksum sums to 0xffff.
    out.ipv4ChecksumOk = fold(sum16(header)) === 0xffff;
    l4 = off + ihl;
    l3End = off + out.ipTotalLength;
    if (out.fragOffset !== 0) return out;
  } else if (type === ETH_P_IPV6) {
    if (off + IPV6_HLEN > buf.length) {
      errors.push('truncated IPv6 header');
      return out;
    }
    out.family = 6;
    out.payloadLength = buf.readUInt16BE(off + 4);
    src = Buffer.from(buf.subarray(off + 8, off + 24));
    dst = Buffer.from(buf.subarray(off + 24, off + 40));
    out.src = formatIp(src);
    out.dst = formatIp(dst);
    let next = buf[off + 6] ?? 0;
    l4 = off + IPV6_HLEN;
    l3End = l4 + out.payloadLength;
    while (IPV6_EXT_WALKABLE.has(next)) {
      if (l4 + 8 > buf.length) {
        errors.push('truncated IPv6 extension header');
        return out;
      }
      out.ipv6ExtHeaders.push(next);
      const hlen = next === 51 ? ((buf[l4 + 1] ?? 0) + 2) * 4 : next === 44 ? 8 : ((buf[l4 + 1] ?? 0) + 1) * 8;
      const isLaterFragment = next === 44 && (buf.readUInt16BE(l4 + 2) & 0xfff8) !== 0;
      next = buf[l4] ?? 0;
      l4 += hlen;
      if (isLaterFragment) {
        out.protocol = next;
        return out;
      }
    }
    if (next === 50) out.ipv6ExtHeaders.push(50);
    out.protocol = next;
  } else {
    return out;
  }
  out.l4Offset = l4;
  if (l3End > buf.length)
    errors.push(`IP length says ${l3End - out.l3Offset} bytes, the frame holds ${buf.length - out.l3Offset}`);
  if (out.protocol !== IPPROTO_TCP) return out;

  const end = Math.min(l3End, buf.length);
  if (l4 + TCP_HLEN > end) {
    errors.push('truncated TCP header');
    return out;
  }
  const doff = (buf[l4 + 12] ?? 0) >> 4;
  const hdrEnd = Math.min(l4 + Math.max(doff * 4, TCP_HLEN), end);
  if (doff < 5) errors.push(`TCP data offset ${doff} is below 5`);
  else if (l4 + doff * 4 > end) errors.push(`TCP data offset ${doff} runs past the end of the segment`);
  const optionBytes = Buffer.from(buf.subarray(l4 + TCP_HLEN, hdrEnd));
  const decoded = parseTcpOptions(optionBytes);
  const checksum = buf.readUInt16BE(l4 + 16);
  out.tcp = {
    sport: buf.readUInt16BE(l4),
    dport: buf.readUInt16BE(l4 + 2),
    seq: buf.readUInt32BE(l4 + 4),
    ack: buf.readUInt32BE(l4 + 8),
    flags: buf[l4 + 13] ?? 0,
    doff,
    window: buf.readUInt16BE(l4 + 14),
    checksum,
    optionBytes,
    options: decoded.options,
    optionsError: decoded.error,
    payload: Buffer.from(buf.subarray(hdrEnd, end)),
  };
  if (l3End <= buf.length) {
    const segment = buf.subarray(l4, l3End);
    // As a receiver checks: pseudo-header + segment, checksum included, sum to 0xffff.
    out.tcpChecksumOk = fold(sum16(segment, tcpPseudoHeaderSeed(src, dst, segment.length))) === 0xffff;
    out.tcpChecksumIsPseudoSeed = tcpPseudoHeaderSeed(src, dst, segment.length) === checksum;
  }
  return out;
}

/**
 * The value of the first RFC 6994 option with this kind and ExID (the bytes after the
 * ExID), or null when the frame has none.
 */
export function findTokenOption(parsed: ParsedFrame, kind: number, exid: number): Buffer | null {
  for (const o of parsed.tcp?.options ?? []) {
    if (o.kind === kind && o.length >= 4 && o.data.readUInt16BE(0) === exid) return Buffer.from(o.data.subarray(2));
  }
  return null;
}

/** The 12-byte token option: kind | 12 | ExID (big-endian) | value[8]. */
export function tokenOption(kind: number, exid: number, value: Buffer): Buffer {
  if (value.length !== 8) throw new Error(`a token value has 8 bytes, got ${value.length}`);
  const o = Buffer.alloc(12);
  o.writeUInt8(kind, 0);
  o.writeUInt8(12, 1);
  o.writeUInt16BE(exid, 2);
  value.copy(o, 4);
  return o;
}
