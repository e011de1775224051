/**
 * The invariants every marker output must hold. The structural checks on a grown packet
 * re-parse it with src/lib/packet.ts and recompute both checksums from the bytes, sharing
 * nothing with the BPF code or with the reference model; the decision checks compare what
 * happened with model.ts.
 */
import {
  ipv4HeaderChecksum,
  parseFrame,
  parseTcpOptions,
  tcpChecksum,
  tcpPseudoHeaderSeed,
  TCP_ACK,
  TCP_SYN,
  type ParsedFrame,
} from '../src/lib/packet.js';
import type { Verdict } from './model.js';
import { TokenModeCode } from '../src/lib/abi.js';
import { POLICIES, tokenValue, type PolicyDef } from './world.js';
import { TcAction } from '../src/native/bpf.js';

export interface Violation {
  /** a stable name: returned, unmarked-identical, missed-mark, marked-length, ... */
  invariant: string;
  detail: string;
}

const OPT_LEN = 12;

/** a - b in 16-bit one's complement, with 0 and 0xffff the same number. */
export function onesSub(a: number, b: number): number {
  let s = a + (~b & 0xffff);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s === 0xffff ? 0 : s;
}

const hex16 = (n: number): string => `0x${n.toString(16).padStart(4, '0')}`;

/** Check one run of the marker: `input` went in, `out` came out with `retval`; `verdict` is the model's. */
export function checkMarkerRun(input: Buffer, verdict: Verdict, retval: number, out: Buffer): Violation[] {
  const v: Violation[] = [];
  // TC_ACT_UNSPEC (TCX_NEXT) is the only verdict the marker may give (TC_ACT_SHOT means a write failed half-way).
  if (retval !== TcAction.UNSPEC)
    v.push({ invariant: 'returned', detail: `program returned ${retval}, want TC_ACT_UNSPEC (-1)` });
  if (out.equals(input)) {
    if (verdict.action === 'mark')
      v.push({ invariant: 'missed-mark', detail: 'passed unchanged, but it is an eligible SYN its policy covers' });
    return v;
  }
  if (verdict.action !== 'mark') {
    v.push({ invariant: 'unmarked-identical', detail: `changed a packet it must pass byte-identical (${verdict.why})` });
  }
  const policy =
    verdict.action === 'mark'
      ? verdict.layout.policy
      : verdict.action === 'skip'
        ? POLICIES.find((p) => p.id === verdict.policyId)
        : undefined;
  v.push(...checkMarked(input, out, policy ?? null));
  return v;
}

/**
 * Where a mark puts our option in an option area: in place of the EOL that ends the list
 * (the EOL and its padding move behind ours), or after the last option.
 */
function insertionPoint(area: Buffer): number {
  let off = 0;
  for (const o of parseTcpOptions(area).options) {
    if (o.kind === 0) return off;
    off += o.length;
  }
  return area.length;
}

/**
 * Structural checks on a packet the marker changed: it must be `input` with exactly our
 * 12-byte option written at the end of its option list (after the last option, or over an
 * EOL and its padding, which then follow as zeros), lengths and data offset raised by 12,
 * both checksums right (or, for an input whose checksum was already off, off by exactly as
 * much: CHECKSUM_NONE update semantics). `policy` is the policy whose option should appear;
 * null when unknown.
 */
export function checkMarked(input: Buffer, out: Buffer, policy: PolicyDef | null): Violation[] {
  const v: Violation[] = [];
  if (out.length !== input.length + OPT_LEN) {
    v.push({
      invariant: 'marked-length',
      detail: `output is ${out.length} bytes, input ${input.length}: a changed packet must grow by exactly ${OPT_LEN}`,
    });
    return v;
  }
  const pi = parseFrame(input);
  const po = parseFrame(out);
  const ti = pi.tcp;
  const to = po.tcp;
  if (!ti || pi.l4Offset === null || pi.family === null) {
    v.push({ invariant: 'marked-eligible', detail: 'the input has no readable TCP header, yet it was changed' });
    return v;
  }
  v.push(...eligibility(input, pi, policy));
  if (!to || po.l4Offset !== pi.l4Offset || po.l3Offset !== pi.l3Offset) {
    v.push({ invariant: 'marked-headers', detail: 'the output headers do not parse at the input offsets' });
    return v;
  }
  const l3 = pi.l3Offset;
  const l4 = pi.l4Offset;

  // Lengths: what the headers say must match the frame.
  if (po.errors.length > 0)
    v.push({ invariant: 'marked-headers', detail: `output does not parse cleanly: ${po.errors.join('; ')}` });
  if (to.doff !== ti.doff + OPT_LEN / 4)
    v.push({ invariant: 'marked-headers', detail: `doff ${to.doff}, want ${ti.doff + OPT_LEN / 4}` });
  if (pi.family === 4 && po.ipTotalLength !== out.length - l3)
    v.push({ invariant: 'marked-headers', detail: `IPv4 total length ${po.ipTotalLength}, the frame holds ${out.length - l3}` });
  if (pi.family === 6 && po.payloadLength !== out.length - l3 - 40)
    v.push({
      invariant: 'marked-headers',
      detail: `IPv6 payload length ${po.payloadLength}, the frame holds ${out.length - l3 - 40}`,
    });
  if (l4 + to.doff * 4 !== out.length)
    v.push({
      invariant: 'marked-headers',
      detail: `TCP header ends at ${l4 + to.doff * 4}, the frame at ${out.length}: the option must be the last bytes`,
    });

  // Every input byte is kept, except the fields a mark has to change and the option list from where ours goes.
  const at = insertionPoint(ti.optionBytes);
  const from = l4 + 20 + at;
  const lenOff = pi.family === 4 ? l3 + 2 : l3 + 4;
  const changeable = new Set<number>([lenOff, lenOff + 1, l4 + 12, l4 + 16, l4 + 17]);
  if (pi.family === 4) changeable.add(l3 + 10).add(l3 + 11);
  const changed: number[] = [];
  for (let i = 0; i < Math.min(input.length, from); i++) if (!changeable.has(i) && out[i] !== input[i]) changed.push(i);
  if (changed.length > 0)
    v.push({
      invariant: 'marked-bytes',
      detail: `bytes changed that a mark must keep, at offsets ${changed.slice(0, 12).join(',')}`,
    });
  if (out.readUInt16BE(lenOff) !== input.readUInt16BE(lenOff) + OPT_LEN) {
    v.push({
      invariant: 'marked-headers',
      detail: `IP length field ${out.readUInt16BE(lenOff)}, want input ${input.readUInt16BE(lenOff)} + ${OPT_LEN}`,
    });
  }
  if (((out[l4 + 12] ?? 0) & 0x0f) !== ((input[l4 + 12] ?? 0) & 0x0f))
    v.push({ invariant: 'marked-bytes', detail: 'the reserved bits next to the data offset changed' });

  // The option list: well formed, our option exactly once, where the list ended, with the policy's value, zeros after it.
  if (to.optionsError) v.push({ invariant: 'marked-option', detail: `output option list is malformed: ${to.optionsError}` });
  const tail = out.subarray(from + OPT_LEN);
  if (tail.some((b) => b !== 0))
    v.push({
      invariant: 'marked-option',
      detail: `after our option (at option byte ${at}) come ${tail.toString('hex')}, want the EOL and zeros`,
    });
  const appended = out.subarray(from, from + OPT_LEN);
  const candidates = policy ? [policy] : POLICIES.filter((p) => p.kind === appended[0] && p.exid === appended.readUInt16BE(2));
  const p = candidates[0];
  if (!p) {
    v.push({ invariant: 'marked-option', detail: `appended bytes ${appended.toString('hex')} are no policy's option` });
  } else {
    const { src, dst } = addresses(input, pi);
    const value = tokenValue(p, { saddr: src, daddr: dst, sport: ti.sport, dport: ti.dport, seq: ti.seq });
    if (!value) {
      v.push({ invariant: 'marked-option', detail: `policy ${p.id} has no value to put on this SYN, yet it was marked` });
    } else {
      const want = Buffer.concat([Buffer.from([p.kind, OPT_LEN, p.exid >> 8, p.exid & 0xff]), value]);
      if (!appended.equals(want))
        v.push({
          invariant: 'marked-option',
          detail: `appended ${appended.toString('hex')}, want ${want.toString('hex')} (policy ${p.id}, ${p.mode === TokenModeCode.Keyed ? 'keyed' : 'static'})`,
        });
    }
    const ours = to.options.filter((o) => o.kind === p.kind && o.length >= 4 && o.data.readUInt16BE(0) === p.exid);
    if (ours.length !== 1)
      v.push({
        invariant: 'marked-option',
        detail: `our option (kind ${p.kind}, ExID ${hex16(p.exid)}) appears ${ours.length} times, want exactly once`,
      });
  }

  // Checksums, recomputed here from the bytes.
  if (pi.family === 4) {
    const ihl = pi.ipv4HeaderLength ?? 20;
    const errIn = onesSub(input.readUInt16BE(l3 + 10), ipv4HeaderChecksum(input.subarray(l3, l3 + ihl)));
    const errOut = onesSub(out.readUInt16BE(l3 + 10), ipv4HeaderChecksum(out.subarray(l3, l3 + ihl)));
    if (errOut !== errIn) {
      v.push({
        invariant: 'ip-checksum',
        detail:
          errIn === 0
            ? `IPv4 header checksum ${hex16(out.readUInt16BE(l3 + 10))} is wrong (off by ${hex16(errOut)})`
            : `input header checksum was off by ${hex16(errIn)}, output is off by ${hex16(errOut)}: the update must carry the error unchanged`,
      });
    }
  }
  const { src, dst } = addresses(input, pi);
  const segIn = input.subarray(l4);
  const segOut = out.subarray(l4);
  const csIn = input.readUInt16BE(l4 + 16);
  const csOut = out.readUInt16BE(l4 + 16);
  const errIn = onesSub(csIn, tcpChecksum(src, dst, segIn));
  const errOut = onesSub(csOut, tcpChecksum(src, dst, segOut));
  if (errOut !== errIn) {
    const partialIn = csIn === tcpPseudoHeaderSeed(src, dst, segIn.length);
    v.push({
      invariant: 'tcp-checksum',
      detail:
        errIn === 0
          ? `TCP checksum ${hex16(csOut)} is wrong, want ${hex16(tcpChecksum(src, dst, segOut))}`
          : `input TCP checksum was off by ${hex16(errIn)}${partialIn ? ' (a CHECKSUM_PARTIAL-style pseudo-header seed)' : ''}, output is off by ${hex16(errOut)}: on a CHECKSUM_NONE skb the update must carry the error unchanged`,
    });
  }
  return v;
}

function addresses(frame: Buffer, p: ParsedFrame): { src: Buffer; dst: Buffer } {
  const l3 = p.l3Offset;
  return p.family === 4
    ? { src: frame.subarray(l3 + 12, l3 + 16), dst: frame.subarray(l3 + 16, l3 + 20) }
    : { src: frame.subarray(l3 + 8, l3 + 24), dst: frame.subarray(l3 + 24, l3 + 40) };
}

/** The marker's rule (docs/wire-format.md, "Which SYNs are marked"), checked on the input of a packet that was marked: only a payload-less, well-formed SYN with room may grow. */
function eligibility(input: Buffer, pi: ParsedFrame, policy: PolicyDef | null): Violation[] {
  const t = pi.tcp;
  if (!t) return [];
  const why: string[] = [];
  if ((t.flags & (TCP_SYN | TCP_ACK)) !== TCP_SYN) why.push(`flags 0x${t.flags.toString(16)} are not an opening SYN`);
  if (t.payload.length > 0) why.push(`it carries ${t.payload.length} bytes of data`);
  if (pi.moreFragments || pi.fragOffset !== 0) why.push('it is an IPv4 fragment');
  if (pi.ipv6ExtHeaders.length > 0) why.push('it has IPv6 extension headers');
  if (pi.errors.length > 0) why.push(`its headers are inconsistent (${pi.errors.join('; ')})`);
  const ipLen = pi.family === 4 ? (pi.ipTotalLength ?? 0) : 40 + (pi.payloadLength ?? 0);
  if (pi.l3Offset + ipLen !== input.length)
    why.push(`the IP length (${ipLen}) disagrees with the frame (${input.length - pi.l3Offset})`);
  if (t.doff < 5) why.push(`doff ${t.doff}`);
  const opts = parseTcpOptions(t.optionBytes);
  if (opts.error) why.push(`its options are malformed (${opts.error})`);
  if (opts.options.some((o) => o.kind === 29)) why.push('it carries TCP-AO, whose MAC covers the options');
  if (t.optionBytes.length + OPT_LEN > 40) why.push(`${t.optionBytes.length} option bytes leave no room for ${OPT_LEN}`);
  if (policy && opts.options.some((o) => o.kind === policy.kind && o.length >= 4 && o.data.readUInt16BE(0) === policy.exid))
    why.push('it already carries our option');
  return why.length > 0 ? [{ invariant: 'marked-eligible', detail: `marked a packet that must pass: ${why.join('; ')}` }] : [];
}
