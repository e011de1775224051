/**
 * What a SYN's token option says, judged with a policy's keys as a receiver would judge it:
 * the rules of the ingress verifier (bpf/lib/verify.h: the first option of the policy's kind
 * and ExID counts, a length other than 12 is invalid, options that cannot be walked are
 * malformed), and for a value that is not the current one, which key and which epoch it
 * belongs to. `netoken inspect` prints these; the keys themselves are never part of a result.
 */
import { bindMask } from './abi.js';
import { type ParsedFrame } from './packet.js';
import { readSecretKey } from './policy.js';
import { epochAt, keyedToken } from './siphash.js';
import { effectiveSkewSeconds, type TokenMode, type TokenPolicy } from './types.js';

/** The Secret data keys a verifier accepts, in the order they are tried. */
export type KeyLabel = 'current' | 'previous' | 'next';
export const KEY_LABELS: readonly KeyLabel[] = ['current', 'previous', 'next'];

/** One policy's keys and option, ready to judge SYNs. Never print or log `keys`. */
export interface Keyring {
  policy: string;
  mode: TokenMode;
  kind: number;
  exid: number;
  /** Keyed only */
  epochSeconds: number;
  /** Keyed only: BindBit mask */
  bind: number;
  /** Keyed only: the grace around an epoch boundary in which neighbouring epochs are accepted */
  clockSkewSeconds: number;
  keys: { label: KeyLabel; key: Buffer }[];
}

export const VERDICTS = [
  'valid',
  'previous-epoch',
  'next-epoch',
  'previous-key',
  'next-key',
  'invalid',
  'missing',
  'malformed',
  'unverified',
] as const;
/**
 * valid: the current key (and, Keyed, the current epoch). previous-epoch / next-epoch (Keyed):
 * the current key, the epoch before or after the one at capture time. previous-key / next-key:
 * the Secret's `previous` or `next` key. invalid: none of them, or the option's length is not 12.
 * missing: no option of the policy's kind and ExID. malformed: the options cannot be walked
 * before it. unverified: an RFC 6994 option is there but no keys were given.
 */
export type Verdict = (typeof VERDICTS)[number];

export interface Judgement {
  verdict: Verdict;
  /** the option judged (or, without keys, the first experimental option), or null */
  option: { kind: number; exid: number; length: number } | null;
  /** the key whose value matched */
  key?: KeyLabel;
  /** Keyed: the epoch of the matching value relative to the capture time's epoch */
  epochOffset?: -1 | 0 | 1;
  /**
   * Keyed, a neighbouring epoch: how far the sender's clock is at least off from the capture
   * time (positive: ahead, negative: behind or the SYN is late), in seconds.
   */
  clockOffsetSeconds?: number;
  /** Keyed, a neighbouring epoch: is that offset within the policy's clock-skew grace around the boundary? */
  withinClockSkew?: boolean;
  /** why a value is invalid or malformed, in words (never the value) */
  detail?: string;
}

/**
 * The keys and option of a validated policy, read from its Secret: `current` (required),
 * `previous` and `next` when present. Throws naming the Secret, never showing a key.
 */
export function keyringFor(policy: TokenPolicy, secret: unknown, where: string): Keyring {
  const mode = policy.spec.token.mode;
  const keys: Keyring['keys'] = [];
  for (const label of KEY_LABELS) {
    const key = readSecretKey(secret, label, mode, where);
    if (key) keys.push({ label, key });
  }
  if (!keys.some((k) => k.label === 'current')) {
    throw new Error(`${where} (Secret "${policy.spec.token.secretRef.name}"): has no "current" key`);
  }
  const epochSeconds = policy.spec.token.epochSeconds ?? 0;
  return {
    policy: policy.metadata.name,
    mode,
    kind: policy.spec.option.kind,
    exid: policy.spec.option.experimentId,
    epochSeconds,
    bind: bindMask(policy.spec.token.bind),
    clockSkewSeconds: effectiveSkewSeconds(policy.spec.token),
    keys,
  };
}

function experimental(f: ParsedFrame): Judgement['option'] {
  for (const o of f.tcp?.options ?? []) {
    if ((o.kind === 253 || o.kind === 254) && o.length >= 4)
      return { kind: o.kind, exid: o.data.readUInt16BE(0), length: o.length };
  }
  return null;
}

/**
 * Judge one parsed SYN captured at `atMs` (unix milliseconds) with `ring`, or without keys
 * (null): then only whether an experimental option (kind 253 or 254) is there.
 */
export function judgeSyn(f: ParsedFrame, ring: Keyring | null, atMs: number): Judgement {
  const tcp = f.tcp;
  if (!tcp) return { verdict: 'malformed', option: null, detail: f.errors[0] ?? 'no TCP header' };
  if (!ring) {
    const option = experimental(f);
    if (option) return { verdict: 'unverified', option };
    return tcp.optionsError
      ? { verdict: 'malformed', option: null, detail: tcp.optionsError }
      : { verdict: 'missing', option: null };
  }
  const ours = tcp.options.find((o) => o.kind === ring.kind && o.length >= 4 && o.data.readUInt16BE(0) === ring.exid);
  if (!ours) {
    // The verifier stops where the walk fails: an option of ours after that point is not seen.
    return tcp.optionsError
      ? { verdict: 'malformed', option: null, detail: tcp.optionsError }
      : { verdict: 'missing', option: null };
  }
  const option = { kind: ours.kind, exid: ring.exid, length: ours.length };
  if (ours.length !== 12) return { verdict: 'invalid', option, detail: `option length ${ours.length}, want 12` };
  const value = ours.data.subarray(2, 10);
  if (ring.mode === 'Static') {
    const hit = ring.keys.find((k) => k.key.equals(value));
    if (!hit)
      return { verdict: 'invalid', option, detail: `matches none of the keys (${ring.keys.map((k) => k.label).join(', ')})` };
    return { verdict: hit.label === 'current' ? 'valid' : `${hit.label}-key`, option, key: hit.label };
  }
  if (f.src === null || f.dst === null) return { verdict: 'malformed', option, detail: 'no IP addresses' };
  const flow = { src: f.src, dst: f.dst, sport: tcp.sport, dport: tcp.dport, seq: tcp.seq };
  const epoch = epochAt(atMs, ring.epochSeconds);
  for (const k of ring.keys) {
    for (const offset of [0, -1, 1] as const) {
      if (!keyedToken(k.key, flow, ring.bind, epoch + BigInt(offset)).equals(value)) continue;
      const out: Judgement = { verdict: 'valid', option, key: k.label, epochOffset: offset };
      if (k.label !== 'current') out.verdict = `${k.label}-key`;
      else if (offset !== 0) out.verdict = offset < 0 ? 'previous-epoch' : 'next-epoch';
      if (offset !== 0) {
        const start = Number(epoch) * ring.epochSeconds * 1000;
        const ms = offset > 0 ? start + ring.epochSeconds * 1000 - atMs : -(atMs - start);
        out.clockOffsetSeconds = Math.round(ms) / 1000;
        out.withinClockSkew = Math.abs(ms) <= ring.clockSkewSeconds * 1000;
      }
      return out;
    }
  }
  return {
    verdict: 'invalid',
    option,
    detail: `matches none of the keys (${ring.keys.map((k) => k.label).join(', ')}) in epochs ${epoch - 1n}..${epoch + 1n}`,
  };
}
