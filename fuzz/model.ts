/**
 * What the egress marker must do with a packet, worked out from the bytes alone: mark it
 * (under which policy), pass it unchanged counting one skip reason, or pass it unchanged and
 * uncounted. Written from docs/wire-format.md and the counter contract in bpf/abi.h; where
 * the contract leaves a choice (which reason wins when several apply, how far IPv6 extension
 * headers are walked) it follows the order the marker documents in bpf/lib/mark.h. The fuzzer
 * compares every run against this, byte for byte and counter for counter.
 */
import { COUNTERS, TokenModeCode } from '../src/lib/abi.js';
import { ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP } from '../src/lib/packet.js';
import { HARD_HEADER_LEN, lookupPolicy, policyById, type Device, type PolicyDef } from './world.js';

export type CounterName = (typeof COUNTERS)[number];

/** A counter a verdict bumps on the case's device. */
export interface CounterRef {
  policyId: number;
  counter: CounterName;
}

export interface MarkLayout {
  family: 4 | 6;
  l3: number;
  l4: number;
  /** doff * 4 of the input */
  tcpLen: number;
  /** where our option goes in the option area: its length (appended), or the position of an EOL */
  at: number;
  policy: PolicyDef;
}

export type Verdict =
  /** not an opening SYN (or unreadable): unchanged, no counter */
  | { action: 'pass'; why: string }
  /** unchanged, one counter under (ifindex, policyId) */
  | { action: 'skip'; counter: CounterName; policyId: number; why: string }
  /** grown by our option, one `marked` under the policy */
  | { action: 'mark'; layout: MarkLayout };

const VLAN_MAX_DEPTH = 2;
const IPV6_EXT_MAX = 6;
const IPV6_EXT = new Set([0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254]);
const OPT_LEN = 12;
const MAX_OPT_SPACE = 40;
const TCPOPT_AO = 29;

interface Syn {
  family: 4 | 6;
  l3: number;
  l4: number;
  /** where what the stack keeps of the TCP bytes ends: the IP length, or a first fragment's cut */
  l4End: number;
  ipHlen: number;
  /** IPv4 tot_len or IPv6 payload_len */
  ipLen: number;
  /** doff * 4, 0 when not seen */
  tcpLen: number;
  firstFragment: boolean;
  ipv6Ext: boolean;
  /** the TCP header with its options does not all lie before l4End (or its flags are not seen) */
  cut: boolean;
  daddr: Buffer;
  dport: number;
}

function isSyn(flags: number): boolean {
  return (flags & 0x12) === 0x02;
}

/**
 * The programs' fast path (bpf/lib/syn.h nt_classify): reading only the frame, is this
 * certainly not an opening SYN? Everything else goes on to the slow path; a SYN seen whole
 * comes with its destination port, by which the verifier looks up its rule first.
 */
export function classify(f: Buffer): { pass: string } | { slow: true; dport: number | null } {
  let proto = f.readUInt16BE(12);
  let l3 = 14;
  for (let i = 0; i < VLAN_MAX_DEPTH && (proto === ETH_P_8021Q || proto === ETH_P_8021AD); i++) {
    if (l3 + 4 > f.length) return { slow: true, dport: null };
    proto = f.readUInt16BE(l3 + 2);
    l3 += 4;
  }
  if (proto === ETH_P_8021Q || proto === ETH_P_8021AD) return { slow: true, dport: null };
  let tcp: number;
  if (proto === ETH_P_IP) {
    if (l3 + 20 > f.length) return { slow: true, dport: null };
    const b0 = f[l3] ?? 0;
    if (b0 >> 4 !== 4 || (b0 & 0x0f) < 5) return { slow: true, dport: null };
    if (f[l3 + 9] !== IPPROTO_TCP) return { pass: 'not TCP' };
    const frag = f.readUInt16BE(l3 + 6);
    if ((frag & 0x1fff) !== 0) return { pass: 'later IPv4 fragment' };
    if (frag & 0x2000) return { slow: true, dport: null };
    tcp = l3 + (b0 & 0x0f) * 4;
  } else if (proto === ETH_P_IPV6) {
    if (l3 + 40 > f.length) return { slow: true, dport: null };
    if ((f[l3] ?? 0) >> 4 !== 6) return { slow: true, dport: null };
    const nh = f[l3 + 6] ?? 0;
    if (nh !== IPPROTO_TCP)
      return IPV6_EXT.has(nh) && nh !== 50
        ? { slow: true, dport: null }
        : { pass: nh === 50 ? 'ESP' : `upper layer ${nh} is not TCP` };
    tcp = l3 + 40;
  } else {
    return { pass: `EtherType 0x${proto.toString(16)}` };
  }
  if (tcp + 14 > f.length) return { slow: true, dport: null };
  if (!isSyn(f[tcp + 13] ?? 0)) return { pass: 'not an opening SYN' };
  return { slow: true, dport: f.readUInt16BE(tcp + 2) };
}

/**
 * Find the SYN in the frame, or say why there is none to look at, as the stack would see it:
 * the IP length bounds what belongs to the packet, and of a first fragment only what
 * reassembly keeps counts (its data cut to a multiple of 8 bytes). A frame whose IP or TCP
 * header cannot be read (broken, truncated, too many VLAN tags or extension headers) is
 * unreadable. Shared with the verifier's model (verifier-model.ts).
 */
export function findSyn(f: Buffer): Syn | { pass: string } | { unreadable: string } {
  const fast = classify(f);
  if ('pass' in fast) return fast;
  let proto = f.readUInt16BE(12);
  let l3 = 14;
  for (let i = 0; i < VLAN_MAX_DEPTH && (proto === ETH_P_8021Q || proto === ETH_P_8021AD); i++) {
    if (l3 + 4 > f.length) return { unreadable: 'truncated VLAN tag' };
    proto = f.readUInt16BE(l3 + 2);
    l3 += 4;
  }
  if (proto === ETH_P_8021Q || proto === ETH_P_8021AD) return { unreadable: `more than ${VLAN_MAX_DEPTH} VLAN tags` };
  let s: Omit<Syn, 'tcpLen' | 'dport' | 'cut'>;
  if (proto === ETH_P_IP) {
    if (l3 + 20 > f.length) return { unreadable: 'truncated IPv4 header' };
    const b0 = f[l3] ?? 0;
    if (b0 >> 4 !== 4) return { unreadable: 'IPv4 version field is not 4' };
    const ipHlen = (b0 & 0x0f) * 4;
    if (ipHlen < 20) return { unreadable: 'IPv4 ihl below 5' };
    if (f[l3 + 9] !== IPPROTO_TCP) return { pass: 'not TCP' };
    const frag = f.readUInt16BE(l3 + 6);
    if ((frag & 0x1fff) !== 0) return { pass: 'later IPv4 fragment' };
    const ipLen = f.readUInt16BE(l3 + 2);
    if (ipLen < ipHlen || l3 + ipLen > f.length)
      return { unreadable: `IPv4 total length ${ipLen} disagrees with its header or the frame` };
    const l4 = l3 + ipHlen;
    const firstFragment = (frag & 0x2000) !== 0;
    s = {
      family: 4,
      l3,
      l4,
      l4End: firstFragment ? l4 + ((ipLen - ipHlen) & ~7) : l3 + ipLen,
      ipHlen,
      ipLen,
      firstFragment,
      ipv6Ext: false,
      daddr: f.subarray(l3 + 16, l3 + 20),
    };
  } else if (proto === ETH_P_IPV6) {
    if (l3 + 40 > f.length) return { unreadable: 'truncated IPv6 header' };
    if ((f[l3] ?? 0) >> 4 !== 6) return { unreadable: 'IPv6 version field is not 6' };
    const ipLen = f.readUInt16BE(l3 + 4);
    const ipEnd = l3 + 40 + ipLen;
    if (ipEnd > f.length) return { unreadable: `IPv6 payload length ${ipLen} runs past the frame` };
    let nh = f[l3 + 6] ?? 0;
    let off = 40;
    let fragData = -1;
    if (nh !== IPPROTO_TCP) {
      for (let i = 0; i < IPV6_EXT_MAX && IPV6_EXT.has(nh); i++) {
        if (nh === 50) return { pass: 'ESP' };
        if (l3 + off + 4 > f.length) return { unreadable: 'truncated extension header' };
        const next = f[l3 + off] ?? 0;
        if (nh === 44) {
          const word = f.readUInt16BE(l3 + off + 2);
          if ((word & 0xfff8) !== 0) return { pass: 'later IPv6 fragment' };
          off += 8;
          if (word & 1) fragData = l3 + off;
        } else {
          const len = f[l3 + off + 1] ?? 0;
          off += nh === 51 ? (len + 2) * 4 : (len + 1) * 8;
        }
        nh = next;
      }
      if (IPV6_EXT.has(nh)) return { unreadable: `more than ${IPV6_EXT_MAX} extension headers` };
      if (nh === 59) return { pass: 'no next header' };
      if (nh !== IPPROTO_TCP) return { pass: `upper layer ${nh} is not TCP` };
    }
    const l4 = l3 + off;
    let l4End = ipEnd;
    if (fragData >= 0) {
      // RFC 8200 4.5: a first fragment without the whole TCP header is dropped.
      if (l4 + 20 > ipEnd || fragData > ipEnd) return { unreadable: 'an IPv6 first fragment without the whole TCP header' };
      l4End = fragData + ((ipEnd - fragData) & ~7);
    }
    s = {
      family: 6,
      l3,
      l4,
      l4End,
      ipHlen: off,
      ipLen,
      firstFragment: fragData >= 0,
      ipv6Ext: off > 40,
      daddr: f.subarray(l3 + 24, l3 + 40),
    };
  } else {
    return { pass: `EtherType 0x${proto.toString(16)}` };
  }
  if (s.l4 + 8 > s.l4End)
    return { unreadable: "not even the ports and sequence number in the IP length (or a first fragment's cut)" };
  const dport = f.readUInt16BE(s.l4 + 2);
  if (s.l4 + 20 > s.l4End) {
    if (s.l4 + 14 <= s.l4End) {
      if (!isSyn(f[s.l4 + 13] ?? 0)) return { pass: 'not an opening SYN' };
    } else if (!s.firstFragment) {
      return { unreadable: 'the TCP flags lie past the IP length' };
    }
    return { ...s, tcpLen: 0, dport, cut: true };
  }
  if (!isSyn(f[s.l4 + 13] ?? 0)) return { pass: 'not an opening SYN' };
  const tcpLen = ((f[s.l4 + 12] ?? 0) >> 4) * 4;
  return { ...s, tcpLen, dport, cut: tcpLen >= 20 && s.l4 + tcpLen > s.l4End };
}

/**
 * The walk over an option area, as the receiving stack reads it: where the first option of
 * kind `kind` with ExID `exid` starts, or how the walk ended (an EOL, a bad length, the end).
 */
export function walkOptions(opts: Buffer, kind: number, exid: number): { at: number; len: number } | 'eol' | 'malformed' | 'end' {
  let i = 0;
  while (i < opts.length) {
    const k = opts[i] ?? 0;
    if (k === 0) return 'eol';
    if (k === 1) {
      i++;
      continue;
    }
    if (i + 1 >= opts.length) return 'malformed';
    const len = opts[i + 1] ?? 0;
    if (len < 2 || i + len > opts.length) return 'malformed';
    if (k === kind && len >= 4 && opts.readUInt16BE(i + 2) === exid) return { at: i, len };
    i += len;
  }
  return 'end';
}

/** The walk over the existing options: may ours go in, and where (after the last option, or in place of an EOL)? */
export function optionsVerdict(opts: Buffer, kind: number, exid: number): CounterName | { at: number } {
  const w = walkOptions(opts, kind, exid);
  if (w === 'malformed') return 'skipped_malformed';
  if (typeof w === 'object') return 'skipped_present';
  if (carriesTcpAo(opts, w === 'eol' ? eolAt(opts) : opts.length)) return 'skipped_tcp_ao';
  if (opts.length + OPT_LEN > MAX_OPT_SPACE) return 'skipped_no_room';
  return { at: w === 'eol' ? eolAt(opts) : opts.length };
}

/** Where the walk meets the EOL that ends the list. */
export function eolAt(opts: Buffer): number {
  let i = 0;
  while (i < opts.length) {
    const k = opts[i] ?? 0;
    if (k === 0) return i;
    i += k === 1 ? 1 : Math.max(2, opts[i + 1] ?? 2);
  }
  return opts.length;
}

/** A TCP-AO option (kind 29) among the options before `end`. */
function carriesTcpAo(opts: Buffer, end: number): boolean {
  let i = 0;
  while (i < end) {
    const k = opts[i] ?? 0;
    if (k === 0) return false;
    if (k === 1) {
      i++;
      continue;
    }
    if (k === TCPOPT_AO) return true;
    i += Math.max(2, opts[i + 1] ?? 2);
  }
  return false;
}

export interface RunContext {
  device: Device;
  gsoSegs: number;
  gsoSize: number;
}

/** What the marker must do with `frame` on `ctx.device`. */
export function markerVerdict(frame: Buffer, ctx: RunContext): Verdict {
  const found = findSyn(frame);
  if ('pass' in found) return { action: 'pass', why: found.pass };
  if ('unreadable' in found) return { action: 'skip', counter: 'unreadable', policyId: 0, why: found.unreadable };
  const s = found;

  const policyId = lookupPolicy(s.daddr, s.dport);
  const policy = policyById(policyId);
  if (!policy)
    return {
      action: 'skip',
      counter: 'skipped_no_policy',
      policyId: 0,
      why: policyId ? `policy slot ${policyId} is empty` : 'no rule covers it',
    };
  const skip = (counter: CounterName, why: string): Verdict => ({ action: 'skip', counter, policyId, why });

  if (s.ipv6Ext) return skip('skipped_ipv6_ext_header', 'IPv6 extension headers');
  if (s.firstFragment) return skip('skipped_fragment', 'first fragment');
  if (ctx.gsoSegs > 1 || ctx.gsoSize !== 0) return skip('skipped_gso', 'GSO skb');
  if (s.cut) return skip('skipped_malformed', 'the TCP header runs past the IP length');
  if (s.tcpLen < 20) return skip('skipped_malformed', 'doff below 5');
  const headers = s.family === 4 ? s.ipHlen + s.tcpLen : s.ipHlen - 40 + s.tcpLen;
  if (s.ipLen > headers) return skip('skipped_payload', 'IP length counts data after the TCP header');
  if (s.ipLen < headers) return skip('skipped_malformed', 'IP length shorter than the headers');
  const l3Len = s.family === 4 ? s.ipLen : 40 + s.ipLen;
  if (frame.length !== s.l3 + l3Len) return skip('skipped_malformed', 'IP length disagrees with the frame length');

  const reason = optionsVerdict(frame.subarray(s.l4 + 20, s.l4 + s.tcpLen), policy.kind, policy.exid);
  if (typeof reason === 'string') return skip(reason, 'option list');
  if (frame.length + OPT_LEN > ctx.device.mtu + HARD_HEADER_LEN)
    return skip('skipped_mtu', `over the ${ctx.device.mtu}-byte MTU once grown`);
  if (policy.mode === TokenModeCode.Keyed && policy.epochSeconds === 0)
    return skip('skipped_no_clock', 'keyed policy without an epoch length');
  return { action: 'mark', layout: { family: s.family, l3: s.l3, l4: s.l4, tcpLen: s.tcpLen, at: reason.at, policy } };
}

export function describeVerdict(v: Verdict): string {
  switch (v.action) {
    case 'pass':
      return `pass unchanged, uncounted (${v.why})`;
    case 'skip':
      return `pass unchanged, count ${v.counter} under policy ${v.policyId} (${v.why})`;
    default:
      return `mark with policy ${v.layout.policy.id} (kind ${v.layout.policy.kind}, ExID 0x${v.layout.policy.exid.toString(16)}) at option byte ${v.layout.at}`;
  }
}
