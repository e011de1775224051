/**
 * Fragment sequences against the ingress verifier, end to end: a TCP segment (a SYN with a
 * valid, a wrong or no token, or something else) cut into IPv4 or IPv6 fragments the way a
 * sender or an attacker may cut it (tiny first fragments, sizes the stack trims, flags that
 * say ACK in bytes reassembly drops, overlaps that rewrite the header, duplicates, any
 * order, two first fragments, atomic fragments), each fragment run through the verifier,
 * and what it lets through put back together as the stack does (reassembly.ts). The promise
 * checked: no SYN without a valid token comes out of reassembly toward a port a policy
 * enforces, unless its source is exempt. Every fragment is also held to the per-packet model
 * (verifier-model.ts).
 */
import { TokenModeCode, IngressActionCode } from '../src/lib/abi.js';
import { buildFrame, tokenOption, TCP_ACK, TCP_PSH, TCP_SYN, type Ipv6ExtHeader } from '../src/lib/packet.js';
import { formatIp } from '../src/lib/cidr.js';
import { keyedToken } from '../src/lib/siphash.js';
import type { NativeProgram } from '../src/native/binding.js';
import type { Violation } from './check.js';
import type { FuzzCase } from './generate.js';
import { walkOptions, type CounterRef } from './model.js';
import { Reassembler, type Reassembled } from './reassembly.js';
import { Rng } from './rng.js';
import {
  checkVerifierRun,
  acceptedValues,
  describeVerifierVerdict,
  verifierCounters,
  verifierVerdict,
  VERDICT_CODES,
  type VerifierHook,
  type VerifierVerdict,
} from './verifier-model.js';
import { INGRESS_RULES, isExempt, ruleFor } from './verifier-world.js';
import { epochOf, policyById, type Device } from './world.js';

/** What became of one sequence. */
export interface SequenceVerdict {
  /** the per-packet model's verdict on each fragment, in the order sent */
  frames: VerifierVerdict[];
  /** what reassembly made of the fragments the verifier let through */
  outcome: string;
}

const STACK = (rng: Rng): Buffer =>
  Buffer.concat([Buffer.from('020405b40402080a', 'hex'), rng.bytes(8), Buffer.from('01030307', 'hex')]);

/** Protected ports of the device the sequences arrive on (position 0), Enforce first. */
const PORTS = (INGRESS_RULES[0] ?? []).filter((r) => r.port !== 0).map((r) => r.port);

interface Piece {
  offset: number;
  bytes: Buffer;
  more: boolean;
  why: string;
}

/** Build sequence `index` of `seed`. */
export function generateFragmentCase(seed: number, index: number): FuzzCase {
  const rng = Rng.forCase(seed, index);
  const recipe: string[] = [];
  const family: 4 | 6 = rng.chance(0.5) ? 4 : 6;
  const src =
    family === 4
      ? rng.weighted<string>([
          [8, `10.${rng.int(256)}.${rng.int(256)}.${rng.range(1, 254)}`],
          [1, `10.9.${rng.int(256)}.${rng.range(1, 254)}`],
        ])
      : rng.weighted<string>([
          [8, `2001:db8:${rng.int(0x10000).toString(16)}::${rng.range(1, 0xffff).toString(16)}`],
          [1, `2001:db8:9::${rng.range(1, 0xffff).toString(16)}`],
        ]);
  const dst =
    family === 4 ? `10.${rng.int(256)}.${rng.int(256)}.${rng.range(1, 254)}` : `2001:db8:${rng.int(0x10000).toString(16)}::1`;
  const dport = rng.chance(0.9) ? rng.pick(PORTS) : rng.int(0x10000);
  const sport = rng.int(0x10000);
  const seq = rng.u32();
  const rule = ruleFor(0, dport);
  const policy = rule ? policyById(rule.policyId) : undefined;
  // What the segment says and carries.
  const flags = rng.weighted<number>([
    [80, TCP_SYN],
    [10, TCP_ACK],
    [5, TCP_SYN | TCP_ACK],
    [5, TCP_ACK | TCP_PSH],
  ]);
  const token = rng.weighted<string>([
    [45, 'valid'],
    [30, 'none'],
    [25, 'wrong'],
  ]);
  let value = rng.bytes(8);
  if (token === 'valid' && policy?.mode === TokenModeCode.Static) value = policy.current;
  if (token === 'valid' && policy?.mode === TokenModeCode.Keyed && policy.epochSeconds !== 0) {
    value = keyedToken(policy.current, { src, dst, sport, dport, seq }, policy.bind, epochOf(policy));
  }
  const opts: Buffer[] = [];
  if (rng.chance(0.7)) opts.push(STACK(rng));
  if (token !== 'none') opts.push(tokenOption(policy?.kind ?? 253, policy?.exid ?? 0x4e54, value));
  const payload = rng.chance(0.7) ? rng.bytes(rng.range(1, 80)) : Buffer.alloc(0);
  const whole = buildFrame({ src, dst, tcp: { sport, dport, seq, flags, options: Buffer.concat(opts) }, payload });
  const l4 = 14 + (family === 4 ? 20 : 40);
  const seg = whole.subarray(l4);
  recipe.push(
    `ipv${family} ${src}:${sport} -> ${dst}:${dport} flags 0x${flags.toString(16)} token ${token}${policy ? ` (policy ${policy.id})` : ''}, ${seg.length} TCP bytes`,
  );

  const pieces = cut(rng, seg, family, recipe);
  const id = rng.u32();
  const frames = pieces.map((p) => {
    if (family === 4) {
      return buildFrame({
        src,
        dst,
        protocol: 6,
        payload: p.bytes,
        mf: p.more,
        fragOffset: p.offset / 8,
        df: false,
        ipId: id & 0xffff,
      });
    }
    const word = p.offset | (p.more ? 1 : 0);
    const frag: Ipv6ExtHeader = {
      type: 44,
      body: Buffer.from([word >> 8, word & 0xff, id >>> 24, (id >>> 16) & 0xff, (id >>> 8) & 0xff, id & 0xff]),
    };
    return buildFrame({ src, dst, ipv6Ext: [frag], protocol: 6, payload: p.bytes });
  });
  recipe.push(
    `fragments: ${pieces.map((p) => `[${p.offset}+${p.bytes.length}${p.more ? ' MF' : ''}${p.why ? ` ${p.why}` : ''}]`).join(' ')}`,
  );
  return { seed, index, frame: frames[0] as Buffer, frames, device: 0, gsoSegs: 0, gsoSize: 0, recipe };
}

/** Cut `seg` into fragments (offsets in 8-byte units), in the order they are sent. */
function cut(rng: Rng, seg: Buffer, family: 4 | 6, recipe: string[]): Piece[] {
  const how = rng.weighted<string>([
    [14, 'clean'],
    [12, 'tiny first'],
    [12, 'flags in the cut bytes'],
    [10, 'overlap rewrites the header'],
    [6, 'duplicate'],
    [6, 'two first fragments'],
    [4, 'first stops in the options'],
    [3, 'whole'],
  ]);
  recipe.push(`cut: ${how}`);
  const tail = (from: number): Piece[] =>
    from < seg.length ? [{ offset: from, bytes: seg.subarray(from), more: false, why: '' }] : [];
  const split = (from: number): Piece[] => {
    // The rest in pieces of multiples of 8, the last one whatever is left.
    const out: Piece[] = [];
    let at = from;
    while (seg.length - at > 16 && rng.chance(0.5)) {
      const n = 8 * rng.range(1, Math.max(1, Math.floor((seg.length - at - 1) / 8)));
      out.push({ offset: at, bytes: seg.subarray(at, at + n), more: true, why: '' });
      at += n;
    }
    return [...out, ...tail(at)];
  };
  let pieces: Piece[];
  switch (how) {
    case 'clean': {
      const first = 8 * rng.range(1, Math.max(1, Math.floor(seg.length / 8)));
      pieces =
        first >= seg.length ? tail(0) : [{ offset: 0, bytes: seg.subarray(0, first), more: true, why: '' }, ...split(first)];
      break;
    }
    case 'tiny first': {
      // Any size: the stack keeps a multiple of 8 of it (IPv4) or drops it (IPv6).
      const n = Math.min(seg.length - 1, rng.range(1, 24));
      pieces = [{ offset: 0, bytes: seg.subarray(0, n), more: true, why: '' }, ...split(n & ~7)];
      break;
    }
    case 'flags in the cut bytes': {
      // 9..15 bytes whose flags byte (13) says ACK: the stack keeps 8 and a later fragment brings the real flags.
      const n = rng.range(9, 15);
      const first = Buffer.from(seg.subarray(0, n));
      if (n > 13) first[13] = rng.pick([TCP_ACK, TCP_ACK | TCP_PSH, 0]);
      pieces = [{ offset: 0, bytes: first, more: true, why: 'ACK-looking' }, ...split(8)];
      break;
    }
    case 'overlap rewrites the header': {
      const first = 8 * rng.range(1, Math.max(1, Math.min(4, Math.floor(seg.length / 8))));
      const base =
        first >= seg.length ? tail(0) : [{ offset: 0, bytes: seg.subarray(0, first), more: true, why: '' }, ...split(first)];
      // Another copy of some bytes of the header, with the flags or an option changed.
      const at = 8 * rng.int(Math.min(3, Math.floor(seg.length / 8)) + 1);
      const len = Math.min(seg.length - at, 8 * rng.range(1, 4));
      const bytes = Buffer.from(seg.subarray(at, at + Math.max(0, len)));
      if (13 - at >= 0 && 13 - at < bytes.length) bytes[13 - at] = rng.pick([TCP_SYN, TCP_ACK]);
      if (bytes.length > 0) bytes[rng.int(bytes.length)] = rng.int(256);
      const extra: Piece = { offset: at, bytes, more: at + bytes.length < seg.length, why: 'rewritten' };
      base.splice(rng.int(base.length + 1), 0, extra);
      pieces = base;
      break;
    }
    case 'duplicate': {
      const first = 8 * rng.range(1, Math.max(1, Math.floor(seg.length / 8)));
      pieces =
        first >= seg.length ? tail(0) : [{ offset: 0, bytes: seg.subarray(0, first), more: true, why: '' }, ...split(first)];
      const again = rng.pick(pieces);
      const copy = Buffer.from(again.bytes);
      if (rng.chance(0.6) && copy.length > 0) copy[rng.int(copy.length)] = rng.int(256);
      pieces.splice(rng.int(pieces.length + 1), 0, {
        ...again,
        bytes: rng.chance(0.3) ? copy.subarray(0, Math.max(1, copy.length - 8)) : copy,
        why: 'again',
      });
      break;
    }
    case 'two first fragments': {
      const a = rng.range(8, Math.min(seg.length, 40));
      const b = 8 * rng.range(1, Math.max(1, Math.floor(seg.length / 8)));
      const short = Buffer.from(seg.subarray(0, a));
      if (short.length > 13) short[13] = TCP_ACK;
      pieces = [
        { offset: 0, bytes: short, more: true, why: 'ACK-looking' },
        ...(b >= seg.length ? tail(0) : [{ offset: 0, bytes: seg.subarray(0, b), more: true, why: '' }, ...split(b)]),
      ];
      break;
    }
    case 'first stops in the options': {
      const doffLen = ((seg[12] ?? 0) >> 4) * 4;
      const n = Math.max(8, Math.min(seg.length - 1, rng.range(20, Math.max(21, doffLen))));
      pieces = [{ offset: 0, bytes: seg.subarray(0, n), more: true, why: '' }, ...split(family === 4 ? n & ~7 : n)];
      break;
    }
    default:
      pieces = [{ offset: 0, bytes: seg, more: false, why: 'atomic' }];
      break;
  }
  // Any order; in IPv4, fragment offsets count 8-byte units, so only those starts can be sent.
  pieces = pieces.filter((p) => p.offset % 8 === 0 && p.bytes.length > 0);
  if (rng.chance(0.3)) {
    for (let i = pieces.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [pieces[i], pieces[j]] = [pieces[j] as Piece, pieces[i] as Piece];
    }
    recipe.push('shuffled');
  }
  return pieces;
}

/**
 * A datagram the stack put back together: a violation when it is a SYN to a port a policy
 * enforces on the device, from a source that policy does not exempt, without a token it
 * accepts. Checksums are not looked at: an attacker can always make them right.
 */
export function judgeReassembled(d: Reassembled, position: number): { outcome: string; violation?: Violation } {
  if (d.protocol !== 6) return { outcome: 'reassembled, not TCP' };
  const seg = d.data;
  if (seg.length < 20) return { outcome: 'reassembled, TCP header too short for the stack' };
  const doff = ((seg[12] ?? 0) >> 4) * 4;
  if (doff < 20 || doff > seg.length) return { outcome: 'reassembled, data offset the stack refuses' };
  if (((seg[13] ?? 0) & (TCP_SYN | TCP_ACK)) !== TCP_SYN) return { outcome: 'reassembled, not an opening SYN' };
  const dport = seg.readUInt16BE(2);
  const rule = ruleFor(position, dport);
  const policy = rule ? policyById(rule.policyId) : undefined;
  if (!rule || !policy || rule.action !== IngressActionCode.Enforce)
    return { outcome: 'reassembled SYN to a port nothing enforces' };
  if (isExempt(policy.id, d.saddr)) return { outcome: 'reassembled SYN from an exempt source' };
  const w = walkOptions(seg.subarray(20, doff), policy.kind, policy.exid);
  if (typeof w === 'object' && w.len === 12) {
    const value = seg.subarray(20 + w.at + 4, 20 + w.at + 12);
    const syn = { saddr: d.saddr, daddr: d.daddr, sport: seg.readUInt16BE(0), dport, seq: seg.readUInt32BE(4) };
    if (acceptedValues(policy, syn).some((v) => v.equals(value))) return { outcome: 'reassembled SYN with a valid token' };
  }
  return {
    outcome: 'BYPASS',
    violation: {
      invariant: 'reassembled-bypass',
      detail: `the stack reassembles a SYN ${formatIp(d.saddr)}:${seg.readUInt16BE(0)} -> ${formatIp(d.daddr)}:${dport} without a valid token (policy ${policy.id} enforces): ${seg.subarray(0, doff).toString('hex')}`,
    },
  };
}

/** Run a sequence through `prog` (the verifier at `hook`) on `device` at `position`, and reassemble what passes. */
export function runSequence(
  prog: NativeProgram,
  hook: VerifierHook,
  c: FuzzCase,
  device: Device,
  position: number,
  ctxIn: (frame: Buffer) => Buffer | undefined,
): { verdict: SequenceVerdict; retval: number; out: Buffer; violations: Violation[] } {
  const frames = c.frames ?? [c.frame];
  const verdicts: VerifierVerdict[] = [];
  const violations: Violation[] = [];
  const stack = new Reassembler();
  const outcomes: string[] = [];
  let lastRetval = NaN;
  for (const [i, frame] of frames.entries()) {
    const v = verifierVerdict(frame, position);
    verdicts.push(v);
    const ctx = ctxIn(frame);
    const r = prog.testRun({ data: frame, ...(ctx ? { ctxIn: ctx } : {}) });
    lastRetval = r.retval;
    for (const x of checkVerifierRun(hook, frame, v, r.retval, r.data))
      violations.push({ invariant: x.invariant, detail: `fragment ${i}: ${x.detail}` });
    if (r.retval !== VERDICT_CODES[hook].pass) continue;
    const e = stack.push(frame);
    if (e.event === 'complete' || e.event === 'whole') {
      const j = judgeReassembled(e.datagram, position);
      outcomes.push(j.outcome);
      if (j.violation) violations.push(j.violation);
    }
  }
  const outcome = outcomes.length ? outcomes.join(', ') : 'nothing reassembled';
  return { verdict: { frames: verdicts, outcome }, retval: lastRetval, out: frames[frames.length - 1] as Buffer, violations };
}

export function sequenceCounters(v: SequenceVerdict): CounterRef[] {
  return v.frames.flatMap((f) => verifierCounters(f));
}

export function describeSequence(v: SequenceVerdict): string {
  return `${v.frames.map((f, i) => `fragment ${i}: ${describeVerifierVerdict(f)}`).join('; ')}; then: ${v.outcome}`;
}

/** The tally's name for a sequence: what reassembly made of it (the first datagram, if several). */
export function sequenceKind(v: SequenceVerdict): string {
  const first = v.outcome.split(', ')[0] ?? v.outcome;
  return first.replace(/^reassembled (SYN )/, '$1');
}
