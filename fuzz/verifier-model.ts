/**
 * What the ingress verifier must do with a packet, worked out from the bytes and the
 * installed state (verifier-world.ts) alone: pass it uncounted (not an opening SYN, or no
 * rule for its port), count it unreadable under no policy and drop it where a policy
 * enforces on the device (an IP frame whose headers cannot be read), or verify it: count one
 * of valid / missing / invalid / malformed under the port's policy and then, when it is not
 * valid, count it exempt (its source is exempt under that policy) or dropped (Enforce) or
 * nothing (Monitor). What a frame holds is read as the stack reads it (model.ts's findSyn):
 * the IP length bounds the packet, and of a first fragment only what reassembly keeps
 * counts. Written from the README's contract and the counter contract in bpf/abi.h; token
 * values come from src/lib/siphash.ts, never from the BPF code.
 */
import { IngressActionCode, TokenModeCode } from '../src/lib/abi.js';
import { formatIp } from '../src/lib/cidr.js';
import { keyedToken } from '../src/lib/siphash.js';
import { TcAction, XdpAction } from '../src/native/bpf.js';
import type { Violation } from './check.js';
import { classify, findSyn, walkOptions, type CounterRef } from './model.js';
import { acceptedEpochs, policyById, type PolicyDef } from './world.js';
import { isExempt, ruleFor, rulesFor } from './verifier-world.js';

export type VerifyResult = 'verify_valid' | 'verify_missing' | 'verify_invalid' | 'verify_malformed';

export type VerifierVerdict =
  /** not looked at: passes, no counter */
  | { action: 'pass'; why: string }
  /**
   * An IP frame the verifier cannot read: the stack may still find a SYN in it, and nothing
   * tells its port. Counted unreadable under no policy; dropped (and counted dropped under
   * that policy) where `enforcingPolicy` enforces on the device.
   */
  | { action: 'unreadable'; why: string; enforcingPolicy: number | null }
  /** a SYN to a protected port: `result` under the policy, then exempt / dropped / nothing */
  | { action: 'verify'; policyId: number; result: VerifyResult; exempt: boolean; enforce: boolean; why: string };

const OPT_LEN = 12;

/** Where our option is in an option area: the first option of our kind and ExID decides; an EOL ends the list. */
function findOption(opts: Buffer, kind: number, exid: number): { at: number; len: number } | 'missing' | 'malformed' {
  const w = walkOptions(opts, kind, exid);
  return w === 'eol' || w === 'end' ? 'missing' : w;
}

/**
 * Every 8-byte value `p` accepts on this SYN: the current and the previous token or key;
 * for keyed tokens, of the current epoch and of those the policy's clock skew reaches
 * (world.ts's acceptedEpochs).
 */
export function acceptedValues(
  p: PolicyDef,
  syn: { saddr: Buffer; daddr: Buffer; sport: number; dport: number; seq: number },
): Buffer[] {
  if (p.mode === TokenModeCode.Static) return p.previous ? [p.current, p.previous] : [p.current];
  if (p.mode !== TokenModeCode.Keyed || p.epochSeconds === 0) return [];
  const flow = { src: formatIp(syn.saddr), dst: formatIp(syn.daddr), sport: syn.sport, dport: syn.dport, seq: syn.seq };
  const out: Buffer[] = [];
  for (const key of p.previous ? [p.current, p.previous] : [p.current]) {
    for (const epoch of acceptedEpochs(p)) out.push(keyedToken(key, flow, p.bind, epoch));
  }
  return out;
}

function synResult(
  f: Buffer,
  s: { l4: number; saddr: Buffer; daddr: Buffer; cut: boolean; tcpLen: number },
  p: PolicyDef,
): { result: VerifyResult; why: string } {
  if (s.cut)
    return {
      result: 'verify_malformed',
      why: 'its TCP header or options go on past what the stack keeps of this packet (the IP length, or a first fragment cut to 8-byte units)',
    };
  if (s.tcpLen < 20) return { result: 'verify_malformed', why: `doff ${s.tcpLen / 4}` };
  const found = findOption(f.subarray(s.l4 + 20, s.l4 + s.tcpLen), p.kind, p.exid);
  if (found === 'missing') return { result: 'verify_missing', why: 'no option of our kind and ExID before the end or an EOL' };
  if (found === 'malformed') return { result: 'verify_malformed', why: 'a bad option length before ours' };
  if (found.len !== OPT_LEN) return { result: 'verify_invalid', why: `our option has length ${found.len}` };
  const value = f.subarray(s.l4 + 20 + found.at + 4, s.l4 + 20 + found.at + OPT_LEN);
  const syn = {
    saddr: s.saddr,
    daddr: s.daddr,
    sport: f.readUInt16BE(s.l4),
    dport: f.readUInt16BE(s.l4 + 2),
    seq: f.readUInt32BE(s.l4 + 4),
  };
  const accepted = acceptedValues(p, syn);
  if (accepted.some((v) => v.equals(value)))
    return { result: 'verify_valid', why: `token ${value.toString('hex')} is one the policy accepts` };
  return {
    result: 'verify_invalid',
    why: accepted.length
      ? `token ${value.toString('hex')} is not one the policy accepts`
      : 'the policy accepts no value (keyed without an epoch length)',
  };
}

/** The policy that enforces on the device at `position` for what has no port it can see, as the agent picks it (the first Enforce rule). */
function enforcingPolicy(position: number): number | null {
  const e = rulesFor(position).find((x) => x.action === IngressActionCode.Enforce);
  return e ? e.policyId : null;
}

/** What the verifier must do with `frame` arriving on the device at `position` of the run's device list. */
export function verifierVerdict(frame: Buffer, position: number): VerifierVerdict {
  // A SYN the fast path sees whole: its port's rule is looked up before anything else is read
  // (port 0 reads as "not seen" there: such a SYN goes on to the slow path whole).
  const fast = classify(frame);
  if ('slow' in fast && fast.dport && !ruleFor(position, fast.dport))
    return { action: 'pass', why: `no rule protects port ${fast.dport} here` };
  const found = findSyn(frame);
  if ('pass' in found) return { action: 'pass', why: found.pass };
  if ('unreadable' in found) return { action: 'unreadable', why: found.unreadable, enforcingPolicy: enforcingPolicy(position) };
  const saddr = found.family === 4 ? frame.subarray(found.l3 + 12, found.l3 + 16) : frame.subarray(found.l3 + 8, found.l3 + 24);
  const dport = found.dport;
  const rule = ruleFor(position, dport);
  if (!rule) return { action: 'pass', why: `no rule protects port ${dport} here` };
  const policy = policyById(rule.policyId);
  if (!policy)
    return { action: 'pass', why: `the rule for port ${dport} names policy slot ${rule.policyId}, which holds no policy` };
  const { result, why } = synResult(frame, { ...found, saddr }, policy);
  const exempt = result !== 'verify_valid' && isExempt(policy.id, saddr);
  return {
    action: 'verify',
    policyId: policy.id,
    result,
    exempt,
    enforce: rule.action === IngressActionCode.Enforce,
    why: `port ${dport}, policy ${policy.id}: ${why}`,
  };
}

/** Must the verifier drop it? */
export function verdictDrops(v: VerifierVerdict): boolean {
  if (v.action === 'unreadable') return v.enforcingPolicy !== null;
  return v.action === 'verify' && v.result !== 'verify_valid' && !v.exempt && v.enforce;
}

export function verifierKind(v: VerifierVerdict): string {
  if (v.action !== 'verify') return v.action;
  if (v.result === 'verify_valid') return 'valid';
  return v.exempt ? 'exempt' : v.enforce ? 'drop' : 'monitor';
}

/** The counters a verdict bumps. */
export function verifierCounters(v: VerifierVerdict): CounterRef[] {
  if (v.action === 'pass') return [];
  if (v.action === 'unreadable') {
    const out: CounterRef[] = [{ policyId: 0, counter: 'unreadable' }];
    if (v.enforcingPolicy !== null) out.push({ policyId: v.enforcingPolicy, counter: 'verify_dropped' });
    return out;
  }
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
    case 'unreadable':
      return `${v.enforcingPolicy !== null ? `DROP (policy ${v.enforcingPolicy} enforces here)` : 'pass'}, count unreadable (${v.why})`;
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
export function checkVerifierRun(
  hook: VerifierHook,
  input: Buffer,
  v: VerifierVerdict,
  retval: number,
  out: Buffer,
): Violation[] {
  const codes = VERDICT_CODES[hook];
  const violations: Violation[] = [];
  if (retval !== codes.pass && retval !== codes.drop) {
    violations.push({
      invariant: 'returned',
      detail: `program returned ${retval}, want ${codes.passName} (${codes.pass}) or ${codes.dropName} (${codes.drop})`,
    });
  }
  if (!out.equals(input))
    violations.push({
      invariant: 'unchanged',
      detail: `the verifier changed the packet (${input.length} bytes in, ${out.length} out): it must only read`,
    });
  const dropped = retval === codes.drop;
  const must = verdictDrops(v);
  if (dropped && !must) {
    const invariant =
      v.action !== 'verify'
        ? 'dropped-unverified'
        : v.result === 'verify_valid'
          ? 'dropped-valid'
          : v.exempt
            ? 'dropped-exempt'
            : 'dropped-monitor';
    violations.push({ invariant, detail: `dropped, want pass: ${describeVerifierVerdict(v)}` });
  } else if (!dropped && must && retval === codes.pass) {
    const invariant = v.action === 'unreadable' ? 'passed-unreadable' : 'passed-bad-token';
    violations.push({ invariant, detail: `passed under Enforce, want drop: ${describeVerifierVerdict(v)}` });
  }
  return violations;
}
