/**
 * What the egress marker must do with a packet, worked out from the bytes alone: mark it
 * (under which policy), pass it unchanged counting one skip reason, or pass it unchanged and
 * uncounted. Written from DESIGN.md and the counter contract in bpf/abi.h; where the contract
 * leaves a choice (which reason wins when several apply, how far IPv6 extension headers are
 * walked) it follows the order the marker documents in bpf/lib/mark.h. The fuzzer compares
 * every run against this, byte for byte and counter for counter.
 */
import { COUNTERS, TokenModeCode } from '../src/lib/abi.js';
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
  policy: PolicyDef;
}

export type Verdict =
  /** not an opening SYN (or unreadable): unchanged, no counter */
  | { action: 'pass'; why: string }
  /** unchanged, one counter under (ifindex, policyId) */
  | { action: 'skip'; counter: CounterName; policyId: number; why: string }
  /** grown by our option, one `marked` under the policy */
  | { action: 'mark'; layout: MarkLayout };

const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;
const ETH_P_8021Q = 0x8100;
const ETH_P_8021AD = 0x88a8;
const IPPROTO_TCP = 6;
const VLAN_MAX_DEPTH = 2;
const IPV6_EXT_MAX = 6;
const IPV6_EXT = new Set([0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254]);
const OPT_LEN = 12;
const MAX_OPT_SPACE = 40;

interface Syn {
  family: 4 | 6;
  l3: number;
  l4: number;
  ipHlen: number;
  /** IPv4 tot_len or IPv6 payload_len */
  ipLen: number;
  tcpLen: number;
  firstFragment: boolean;
  ipv6Ext: boolean;
  daddr: Buffer;
  dport: number;
}

function isSyn(flags: number): boolean {
  return (flags & 0x12) === 0x02;
}

/** Find the SYN in the frame, or say why there is none to look at. */
function findSyn(f: Buffer): Syn | { pass: string } | { opaque: string } {
  let proto = f.readUInt16BE(12);
  let l3 = 14;
  for (let i = 0; i < VLAN_MAX_DEPTH && (proto === ETH_P_8021Q || proto === ETH_P_8021AD); i++) {
    if (l3 + 4 > f.length) return { pass: 'truncated VLAN tag' };
    proto = f.readUInt16BE(l3 + 2);
    l3 += 4;
  }
  let s: Omit<Syn, 'tcpLen' | 'dport'>;
  if (proto === ETH_P_IP) {
    if (l3 + 20 > f.length) return { pass: 'truncated IPv4 header' };
    const b0 = f[l3] ?? 0;
    const frag = f.readUInt16BE(l3 + 6);
    if (b0 >> 4 !== 4) return { pass: 'IPv4 version field is not 4' };
    if (f[l3 + 9] !== IPPROTO_TCP) return { pass: 'not TCP' };
    if ((frag & 0x1fff) !== 0) return { pass: 'later IPv4 fragment' };
    const ipHlen = (b0 & 0x0f) * 4;
    if (ipHlen < 20) return { pass: 'IPv4 ihl below 5' };
    s = {
      family: 4,
      l3,
      l4: l3 + ipHlen,
      ipHlen,
      ipLen: f.readUInt16BE(l3 + 2),
      firstFragment: (frag & 0x3fff) === 0x2000,
      ipv6Ext: false,
      daddr: f.subarray(l3 + 16, l3 + 20),
    };
  } else if (proto === ETH_P_IPV6) {
    if (l3 + 40 > f.length) return { pass: 'truncated IPv6 header' };
    let nh = f[l3 + 6] ?? 0;
    if ((f[l3] ?? 0) >> 4 !== 6) {
      // The SYN test reads the version only for packets it sends down the slow path.
      return { pass: 'IPv6 version field is not 6' };
    }
    let off = 40;
    if (nh !== IPPROTO_TCP) {
      let i = 0;
      for (; i < IPV6_EXT_MAX && IPV6_EXT.has(nh); i++) {
        if (nh === 50) return { pass: 'ESP' };
        if (l3 + off + 4 > f.length) return { opaque: 'truncated extension header' };
        if (nh === 44) {
          if ((f.readUInt16BE(l3 + off + 2) & 0xfff8) !== 0) return { pass: 'later IPv6 fragment' };
          nh = f[l3 + off] ?? 0;
          off += 8;
        } else {
          const len = f[l3 + off + 1] ?? 0;
          const next = f[l3 + off] ?? 0;
          off += nh === 51 ? (len + 2) * 4 : (len + 1) * 8;
          nh = next;
        }
      }
      if (IPV6_EXT.has(nh)) return { opaque: `more than ${IPV6_EXT_MAX} extension headers` };
      if (nh !== IPPROTO_TCP) return { pass: `upper layer ${nh} is not TCP` };
    }
    s = {
      family: 6,
      l3,
      l4: l3 + off,
      ipHlen: off,
      ipLen: f.readUInt16BE(l3 + 4),
      firstFragment: false,
      ipv6Ext: off > 40,
      daddr: f.subarray(l3 + 24, l3 + 40),
    };
  } else {
    return { pass: `EtherType 0x${proto.toString(16)}` };
  }
  if (s.l4 + 20 > f.length) return { pass: 'truncated TCP header' };
  if (!isSyn(f[s.l4 + 13] ?? 0)) return { pass: 'not an opening SYN' };
  return { ...s, tcpLen: ((f[s.l4 + 12] ?? 0) >> 4) * 4, dport: f.readUInt16BE(s.l4 + 2) };
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

/** The walk over the existing options: may ours be appended? */
export function optionsVerdict(opts: Buffer, kind: number, exid: number): CounterName | null {
  const w = walkOptions(opts, kind, exid);
  if (w === 'eol') return 'skipped_eol';
  if (w === 'malformed') return 'skipped_malformed';
  if (w !== 'end') return 'skipped_present';
  if (opts.length + OPT_LEN > MAX_OPT_SPACE) return 'skipped_no_room';
  return null;
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
  if ('opaque' in found) return { action: 'skip', counter: 'skipped_ipv6_ext_header', policyId: 0, why: found.opaque };
  const s = found;

  const policyId = lookupPolicy(s.daddr, s.dport);
  const policy = policyById(policyId);
  if (!policy) return { action: 'skip', counter: 'skipped_no_policy', policyId: 0, why: policyId ? `policy slot ${policyId} is empty` : 'no rule covers it' };
  const skip = (counter: CounterName, why: string): Verdict => ({ action: 'skip', counter, policyId, why });

  if (s.firstFragment) return skip('skipped_fragment', 'first fragment');
  if (s.ipv6Ext) return skip('skipped_ipv6_ext_header', 'IPv6 extension headers');
  if (ctx.gsoSegs > 1 || ctx.gsoSize !== 0) return skip('skipped_gso', 'GSO skb');
  if (s.tcpLen < 20) return skip('skipped_malformed', 'doff below 5');
  const headers = s.family === 4 ? s.ipHlen + s.tcpLen : s.ipHlen - 40 + s.tcpLen;
  if (s.ipLen > headers) return skip('skipped_payload', 'IP length counts data after the TCP header');
  if (s.ipLen < headers) return skip('skipped_malformed', 'IP length shorter than the headers');
  const l3Len = s.family === 4 ? s.ipLen : 40 + s.ipLen;
  if (frame.length !== s.l3 + l3Len) return skip('skipped_malformed', 'IP length disagrees with the frame length');

  const reason = optionsVerdict(frame.subarray(s.l4 + 20, s.l4 + s.tcpLen), policy.kind, policy.exid);
  if (reason) return skip(reason, 'option list');
  if (frame.length + OPT_LEN > ctx.device.mtu + HARD_HEADER_LEN) return skip('skipped_mtu', `over the ${ctx.device.mtu}-byte MTU once grown`);
  if (policy.mode === TokenModeCode.Keyed && policy.epochSeconds === 0) return skip('skipped_no_clock', 'keyed policy without an epoch length');
  return { action: 'mark', layout: { family: s.family, l3: s.l3, l4: s.l4, tcpLen: s.tcpLen, policy } };
}

export function describeVerdict(v: Verdict): string {
  switch (v.action) {
    case 'pass':
      return `pass unchanged, uncounted (${v.why})`;
    case 'skip':
      return `pass unchanged, count ${v.counter} under policy ${v.policyId} (${v.why})`;
    default:
      return `mark with policy ${v.layout.policy.id} (kind ${v.layout.policy.kind}, ExID 0x${v.layout.policy.exid.toString(16)})`;
  }
}
