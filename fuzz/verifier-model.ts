/**
 * What the ingress verifier must do with a packet, worked out from the bytes and the
 * installed state (verifier-world.ts) alone: pass it uncounted (not an opening SYN, or no
 * rule for its port), count it as malformed under no policy (IPv6 headers it cannot see
 * past), or verify it: count one of valid / missing / invalid / malformed under the port's
 * policy and then, when it is not valid, count it exempt (its source is exempt under that
 * policy) or dropped (Enforce) or nothing (Monitor). Written from DESIGN.md and the counter
 * contract in bpf/abi.h; token values come from src/lib/siphash.ts, never from the BPF code.
 */
import { IngressActionCode, TokenModeCode } from '../src/lib/abi.js';
import { formatIp } from '../src/lib/cidr.js';
import { keyedToken } from '../src/lib/siphash.js';
import { TcAction, XdpAction } from '../src/native/bpf.js';
import type { Violation } from './check.js';
import { walkOptions, type CounterRef } from './model.js';
import { KEYED_EPOCH, policyById, type PolicyDef } from './world.js';
import { isExempt, ruleFor, rulesFor } from './verifier-world.js';

export type VerifyResult = 'verify_valid' | 'verify_missing' | 'verify_invalid' | 'verify_malformed';

export type VerifierVerdict =
  /** not looked at: passes, no counter */
  | { action: 'pass'; why: string }
  /** a first fragment the stack drops whatever the verifier does: either verdict, any verify_* count */
  | { action: 'kernel-drops'; why: string }
  /**
   * It may become a SYN the verifier cannot see whole (TCP header or options in a later
   * fragment, more IPv6 extension headers than it walks): under Enforce it must not pass,
   * since the stack reassembles it and nothing checked the token. How it is counted is the
   * verifier's choice.
   */
  | { action: 'unverifiable'; why: string; mustDrop: boolean; mayDrop: boolean }
  /** a SYN to a protected port: `result` under the policy, then exempt / dropped / nothing */
  | { action: 'verify'; policyId: number; result: VerifyResult; exempt: boolean; enforce: boolean; why: string };

const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;
const ETH_P_8021Q = 0x8100;
const ETH_P_8021AD = 0x88a8;
const IPPROTO_TCP = 6;
/** one 802.1Q or 802.1ad tag, or two (QinQ): DESIGN.md's "with or without a VLAN tag", bpf/lib/eth.h */
const VLAN_MAX_DEPTH = 2;
/** how many IPv6 extension headers are walked before the packet counts as unreadable */
const IPV6_EXT_MAX = 6;
const IPV6_EXT = new Set([0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254]);
const ESP = 50;
const AH = 51;
const FRAGMENT = 44;
const NO_NEXT_HEADER = 59;
const OPT_LEN = 12;

interface Syn {
  saddr: Buffer;
  daddr: Buffer;
  l4: number;
}

type Found =
  | Syn
  | { pass: string }
  | { kernelDrops: string }
  /** port: the destination port when the bytes hold it; optional: dropping it is allowed but not required */
  | { unverifiable: string; port: number | null; saddr: Buffer; optional?: boolean };

/**
 * The opening SYN in `f`, or why there is none to verify. Read as the verifier reads it
 * (the frame), except for first fragments: for those the IP length says what the stack
 * keeps of this fragment before reassembly, and that is what a verdict can rest on.
 */
function findSyn(f: Buffer): Found {
  if (f.length < 14) return { pass: 'shorter than an Ethernet header' };
  let proto = f.readUInt16BE(12);
  let l3 = 14;
  for (let i = 0; i < VLAN_MAX_DEPTH && (proto === ETH_P_8021Q || proto === ETH_P_8021AD); i++) {
    if (l3 + 4 > f.length) return { pass: 'truncated VLAN tag' };
    proto = f.readUInt16BE(l3 + 2);
    l3 += 4;
  }
  let saddr: Buffer;
  let daddr: Buffer;
  let l4: number;
  /** where the IP packet ends by its length field */
  let ipEnd: number;
  /** offset 0 with more fragments to come: the rest of the TCP segment arrives later */
  let firstFragment = false;
  /** IPv6: where the fragmentable part starts (after the fragment header) */
  let fragData = 0;
  if (proto === ETH_P_IP) {
    if (l3 + 20 > f.length) return { pass: 'truncated IPv4 header' };
    const b0 = f[l3] ?? 0;
    if (b0 >> 4 !== 4) return { pass: 'IPv4 version field is not 4' };
    if (f[l3 + 9] !== IPPROTO_TCP) return { pass: 'not TCP' };
    const frag = f.readUInt16BE(l3 + 6);
    if ((frag & 0x1fff) !== 0) return { pass: 'a later IPv4 fragment (no TCP header)' };
    if ((b0 & 0x0f) < 5) return { pass: 'IPv4 ihl below 5' };
    firstFragment = (frag & 0x2000) !== 0;
    saddr = f.subarray(l3 + 12, l3 + 16);
    daddr = f.subarray(l3 + 16, l3 + 20);
    l4 = l3 + (b0 & 0x0f) * 4;
    ipEnd = l3 + f.readUInt16BE(l3 + 2);
  } else if (proto === ETH_P_IPV6) {
    if (l3 + 40 > f.length) return { pass: 'truncated IPv6 header' };
    if ((f[l3] ?? 0) >> 4 !== 6) return { pass: 'IPv6 version field is not 6' };
    saddr = f.subarray(l3 + 8, l3 + 24);
    daddr = f.subarray(l3 + 24, l3 + 40);
    ipEnd = l3 + 40 + f.readUInt16BE(l3 + 4);
    let nh = f[l3 + 6] ?? 0;
    let off = 40;
    if (nh !== IPPROTO_TCP) {
      for (let i = 0; i < IPV6_EXT_MAX && IPV6_EXT.has(nh); i++) {
        if (nh === ESP) return { pass: 'ESP hides the upper layer' };
        if (l3 + off + 4 > f.length) return { unverifiable: 'a truncated IPv6 extension header (the stack drops it)', port: null, saddr, optional: true };
        const next = f[l3 + off] ?? 0;
        if (nh === FRAGMENT) {
          const word = f.readUInt16BE(l3 + off + 2);
          if ((word & 0xfff8) !== 0) return { pass: 'a later IPv6 fragment' };
          if (word & 1) firstFragment = true;
          off += 8;
          fragData = l3 + off;
        } else if (nh === AH) {
          off += ((f[l3 + off + 1] ?? 0) + 2) * 4;
        } else {
          off += ((f[l3 + off + 1] ?? 0) + 1) * 8;
        }
        nh = next;
      }
      if (IPV6_EXT.has(nh)) {
        if (nh === ESP) return { pass: 'ESP hides the upper layer' };
        return { unverifiable: `more than ${IPV6_EXT_MAX} IPv6 extension headers: the TCP header, if any, is out of sight`, port: null, saddr };
      }
      if (nh === NO_NEXT_HEADER) return { pass: 'no next header' };
      if (nh !== IPPROTO_TCP) return { pass: `upper layer ${nh} is not TCP` };
    }
    l4 = l3 + off;
  } else {
    return { pass: `EtherType 0x${proto.toString(16)}` };
  }
  if (firstFragment) {
    // The stack reassembles the segment: what is not in this fragment the verifier never sees.
    if (ipEnd > f.length || ipEnd < l4) return { kernelDrops: `a first fragment whose IP length (end ${ipEnd}) disagrees with the frame (${f.length}) or its headers (${l4})` };
    let tcpBytes = ipEnd - l4;
    if (proto === ETH_P_IP) {
      // A fragment that is not the last one is cut to a multiple of 8 bytes; an empty one is dropped.
      tcpBytes &= ~7;
      if (tcpBytes < 8) return { kernelDrops: 'an IPv4 first fragment with less than 8 bytes of data' };
    } else {
      if ((ipEnd - fragData) % 8 !== 0) return { kernelDrops: 'an IPv6 fragment whose length is not a multiple of 8' };
      // RFC 8200 4.5: a first fragment must hold the whole upper-layer header; Linux drops the others.
      if (tcpBytes < 20) return { kernelDrops: 'an IPv6 first fragment without the whole TCP header' };
    }
    if (tcpBytes >= 14 && ((f[l4 + 13] ?? 0) & 0x12) !== 0x02) return { pass: 'not an opening SYN (SYN without ACK)' };
    const port = f.readUInt16BE(l4 + 2);
    if (tcpBytes < 20) return { unverifiable: `an IPv4 first fragment that keeps ${tcpBytes} bytes of the TCP header`, port, saddr };
    const doff = (f[l4 + 12] ?? 0) >> 4;
    if (doff >= 5 && l4 + doff * 4 > ipEnd) {
      // Bytes past the IP length that complete the option area are not what the stack reassembles,
      // but a token found there is one for this flow: passing it gives a sender nothing a normal SYN would not.
      const readable = l4 + doff * 4 <= f.length;
      return { unverifiable: `a first fragment whose TCP options continue in a later fragment (doff ${doff}, ${ipEnd - l4} bytes here${readable ? ', the rest of the frame fills the option area' : ''})`, port, saddr, ...(readable ? { optional: true } : {}) };
    }
  }
  if (l4 + 20 > f.length) return { pass: 'truncated TCP header' };
  if (((f[l4 + 13] ?? 0) & 0x12) !== 0x02) return { pass: 'not an opening SYN (SYN without ACK)' };
  return { saddr, daddr, l4 };
}

/** Where our option is in an option area: the first option of our kind and ExID decides; an EOL ends the list. */
function findOption(opts: Buffer, kind: number, exid: number): { at: number; len: number } | 'missing' | 'malformed' {
  const w = walkOptions(opts, kind, exid);
  return w === 'eol' || w === 'end' ? 'missing' : w;
}

/** Every 8-byte value `p` accepts on this SYN: DESIGN.md's current and previous epoch, current and previous key. */
export function acceptedValues(p: PolicyDef, syn: { saddr: Buffer; daddr: Buffer; sport: number; dport: number; seq: number }): Buffer[] {
  if (p.mode === TokenModeCode.Static) return p.previous ? [p.current, p.previous] : [p.current];
  if (p.mode !== TokenModeCode.Keyed || p.epochSeconds === 0) return [];
  const flow = { src: formatIp(syn.saddr), dst: formatIp(syn.daddr), sport: syn.sport, dport: syn.dport, seq: syn.seq };
  const out: Buffer[] = [];
  for (const key of p.previous ? [p.current, p.previous] : [p.current]) {
    for (const epoch of [KEYED_EPOCH, KEYED_EPOCH - 1n]) out.push(keyedToken(key, flow, p.bind, epoch));
  }
  return out;
}

function synResult(f: Buffer, s: Syn, p: PolicyDef): { result: VerifyResult; why: string } {
  const doff = (f[s.l4 + 12] ?? 0) >> 4;
  if (doff < 5) return { result: 'verify_malformed', why: `doff ${doff}` };
  const optEnd = s.l4 + doff * 4;
  if (optEnd > f.length) return { result: 'verify_malformed', why: `the option area ends at ${optEnd}, past the packet (${f.length})` };
  const found = findOption(f.subarray(s.l4 + 20, optEnd), p.kind, p.exid);
  if (found === 'missing') return { result: 'verify_missing', why: 'no option of our kind and ExID before the end or an EOL' };
  if (found === 'malformed') return { result: 'verify_malformed', why: 'a bad option length before ours' };
  if (found.len !== OPT_LEN) return { result: 'verify_invalid', why: `our option has length ${found.len}` };
  const value = f.subarray(s.l4 + 20 + found.at + 4, s.l4 + 20 + found.at + OPT_LEN);
  const syn = { saddr: s.saddr, daddr: s.daddr, sport: f.readUInt16BE(s.l4), dport: f.readUInt16BE(s.l4 + 2), seq: f.readUInt32BE(s.l4 + 4) };
  const accepted = acceptedValues(p, syn);
  if (accepted.some((v) => v.equals(value))) return { result: 'verify_valid', why: `token ${value.toString('hex')} is one the policy accepts` };
  return { result: 'verify_invalid', why: accepted.length ? `token ${value.toString('hex')} is not one the policy accepts` : 'the policy accepts no value (keyed without an epoch length)' };
}

/** What the verifier must do with `frame` arriving on the device at `position` of the run's device list. */
export function verifierVerdict(frame: Buffer, position: number): VerifierVerdict {
  const found = findSyn(frame);
  if ('pass' in found) return { action: 'pass', why: found.pass };
  if ('unverifiable' in found) return unverifiable(found, position);
  if ('kernelDrops' in found) return { action: 'kernel-drops', why: found.kernelDrops };
  const dport = frame.readUInt16BE(found.l4 + 2);
  const rule = ruleFor(position, dport);
  if (!rule) return { action: 'pass', why: `no rule protects port ${dport} here` };
  const policy = policyById(rule.policyId);
  if (!policy) return { action: 'pass', why: `the rule for port ${dport} names policy slot ${rule.policyId}, which holds no policy` };
  const { result, why } = synResult(frame, found, policy);
  const exempt = result !== 'verify_valid' && isExempt(policy.id, found.saddr);
  return { action: 'verify', policyId: policy.id, result, exempt, enforce: rule.action === IngressActionCode.Enforce, why: `port ${dport}, policy ${policy.id}: ${why}` };
}

/**
 * A packet the verifier cannot check: with its port known, the port's rule decides (an
 * exempt source is never dropped); without, any enforcing rule on the device may apply.
 */
function unverifiable(u: { unverifiable: string; port: number | null; saddr: Buffer; optional?: boolean }, position: number): VerifierVerdict {
  const enforcing = (port: number | null): Array<{ policyId: number }> => {
    const rules = port === null ? rulesFor(position) : [ruleFor(position, port)].filter((x) => x !== undefined);
    return rules.filter((x) => x.action === IngressActionCode.Enforce && policyById(x.policyId) !== undefined);
  };
  const rules = enforcing(u.port);
  const exposed = rules.some((x) => !isExempt(x.policyId, u.saddr));
  const mustDrop = exposed && u.optional !== true;
  const mayDrop = u.port === null ? rules.length > 0 : exposed;
  return { action: 'unverifiable', why: `${u.unverifiable}${u.port !== null ? ` (port ${u.port})` : ''}`, mustDrop, mayDrop };
}

/** Must the verifier drop it? (For kernel-drops and some unverifiable packets it may, see mayDrop.) */
export function verdictDrops(v: VerifierVerdict): boolean {
  if (v.action === 'unverifiable') return v.mustDrop;
  return v.action === 'verify' && v.result !== 'verify_valid' && !v.exempt && v.enforce;
}

function mayDrop(v: VerifierVerdict): boolean {
  if (v.action === 'kernel-drops') return true;
  if (v.action === 'unverifiable') return v.mayDrop;
  return verdictDrops(v);
}

export function verifierKind(v: VerifierVerdict): string {
  if (v.action !== 'verify') return v.action;
  if (v.result === 'verify_valid') return 'valid';
  return v.exempt ? 'exempt' : v.enforce ? 'drop' : 'monitor';
}

/** The counters a verdict bumps; null where the count is the verifier's choice (kernel-drops, unverifiable). */
export function verifierCounters(v: VerifierVerdict): CounterRef[] | null {
  if (v.action === 'pass') return [];
  if (v.action === 'kernel-drops' || v.action === 'unverifiable') return null;
  const out: CounterRef[] = [{ policyId: v.policyId, counter: v.result }];
  if (v.result !== 'verify_valid') {
    if (v.exempt) out.push({ policyId: v.policyId, counter: 'verify_exempt' });
    else if (v.enforce) out.push({ policyId: v.policyId, counter: 'verify_dropped' });
  }
  return out;
}

export function describeVerifierVerdict(v: VerifierVerdict): string {
  switch (v.action) {
    case 'pass':
      return `pass, uncounted (${v.why})`;
    case 'kernel-drops':
      return `pass or drop, the stack drops it anyway (${v.why})`;
    case 'unverifiable':
      return `${v.mustDrop ? 'DROP' : v.mayDrop ? 'pass or drop' : 'pass'}: cannot be verified (${v.why})`;
    default:
      return `${verdictDrops(v) ? 'DROP' : 'pass'}, count ${v.result}${v.result === 'verify_valid' ? '' : v.exempt ? ' + verify_exempt' : v.enforce ? ' + verify_dropped' : ' (Monitor)'} (${v.why})`;
  }
}

export type VerifierHook = 'xdp' | 'tc';

/** The program's return values for pass and drop at each hook. */
export const VERDICT_CODES: Record<VerifierHook, { pass: number; drop: number; passName: string; dropName: string }> = {
  xdp: { pass: XdpAction.PASS, drop: XdpAction.DROP, passName: 'XDP_PASS', dropName: 'XDP_DROP' },
  tc: { pass: TcAction.UNSPEC, drop: TcAction.SHOT, passName: 'TC_ACT_UNSPEC', dropName: 'TC_ACT_SHOT' },
};

/** Check one run of the verifier: it returned pass or drop, changed nothing, and dropped exactly what the model drops. */
export function checkVerifierRun(hook: VerifierHook, input: Buffer, v: VerifierVerdict, retval: number, out: Buffer): Violation[] {
  const codes = VERDICT_CODES[hook];
  const violations: Violation[] = [];
  if (retval !== codes.pass && retval !== codes.drop) {
    violations.push({ invariant: 'returned', detail: `program returned ${retval}, want ${codes.passName} (${codes.pass}) or ${codes.dropName} (${codes.drop})` });
  }
  if (!out.equals(input)) violations.push({ invariant: 'unchanged', detail: `the verifier changed the packet (${input.length} bytes in, ${out.length} out): it must only read` });
  const dropped = retval === codes.drop;
  if (dropped && !mayDrop(v)) {
    const invariant = v.action !== 'verify' ? 'dropped-unverified' : v.result === 'verify_valid' ? 'dropped-valid' : v.exempt ? 'dropped-exempt' : 'dropped-monitor';
    violations.push({ invariant, detail: `dropped, want pass: ${describeVerifierVerdict(v)}` });
  } else if (!dropped && verdictDrops(v) && retval === codes.pass) {
    const invariant = v.action === 'unverifiable' ? 'passed-unverifiable' : 'passed-bad-token';
    violations.push({ invariant, detail: `passed under Enforce, want drop: ${describeVerifierVerdict(v)}` });
  }
  return violations;
}
