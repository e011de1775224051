/**
 * The policy state the fuzzer installs in the marker's maps, and the same state as plain
 * data for the reference model: a handful of static policies with different kinds, ExIDs
 * and awkward token bytes, destination rules with and without port lists, nested prefixes,
 * a rule that points at an empty policy slot, and rules for an interface no case runs on.
 */
import type { NativeObject } from '../src/native/binding.js';
import { BindBit, encodeClock, encodeEgressRule, encodeLpmKey, encodePolicy, TokenModeCode } from '../src/lib/abi.js';
import { CounterSlots } from '../src/agent/counters.js';
import { raiseEgressGeneration } from '../src/agent/map-sync.js';
import { cidrContains, formatIp, parseCidr, type Cidr } from '../src/lib/cidr.js';
import { BIND_ALL, keyedToken } from '../src/lib/siphash.js';

export interface PolicyDef {
  id: number;
  mode: TokenModeCode;
  kind: number;
  exid: number;
  /** Static: the 8 value bytes put on the wire; Keyed: the 16-byte SipHash key */
  current: Buffer;
  /** the rotated-out token or key: the marker must never use it */
  previous?: Buffer;
  /** Keyed only */
  epochSeconds: number;
  /** Keyed only: the clock skew the verifier tolerates (struct nt_policy.skew_seconds) */
  skewSeconds: number;
  bind: number;
}

export interface RuleDef {
  cidr: Cidr;
  policyId: number;
  /** empty = every destination port */
  ports: number[];
}

/** A device the cases run on: BPF_PROG_TEST_RUN's skb->dev, picked by ctx ifindex. */
export interface Device {
  name: string;
  ifindex: number;
  mtu: number;
}

/** Ethernet hard_header_len of lo and veth: bpf_check_mtu allows mtu + this many bytes. */
export const HARD_HEADER_LEN = 14;

/** An interface index no case runs on: its catch-all rules must never mark anything. */
export const DECOY_IFINDEX = 4242;

const staticPolicy = (id: number, kind: number, exid: number, token: string, previous?: string): PolicyDef => ({
  id,
  mode: TokenModeCode.Static,
  kind,
  exid,
  current: Buffer.from(token, 'hex'),
  ...(previous ? { previous: Buffer.from(previous, 'hex') } : {}),
  epochSeconds: 0,
  skewSeconds: 0,
  bind: 0,
});

const keyedPolicy = (
  id: number,
  kind: number,
  exid: number,
  key: string,
  bind: number,
  epochSeconds: number,
  skewSeconds: number,
  previous?: string,
): PolicyDef => ({
  id,
  mode: TokenModeCode.Keyed,
  kind,
  exid,
  current: Buffer.from(key, 'hex'),
  ...(previous ? { previous: Buffer.from(previous, 'hex') } : {}),
  epochSeconds,
  skewSeconds,
  bind,
});

/**
 * Keyed epochs must not depend on when a case runs. The programs compute unix time as
 * TAI ns - nt_clock.tai_offset_ns; the world sets the offset so that their clock reads
 * WORLD_UNIX_SECONDS when it is installed (to within the host's TAI-UTC offset, at most
 * 37 s), and every epoch boundary a policy has is at least 1200 s from that instant
 * and from its skew window's edges: runs of up to 20 minutes see one fixed answer.
 *
 * With epochSeconds 2^32-1 the world is 1800 s before the end of epoch 1 (1 rather than 0,
 * so that the epoch bytes of the SipHash message are not all zero); with
 * ODD_EPOCH_SECONDS it is 1800 s into epoch 2. A skew of 3600 s reaches into the next
 * epoch in the first case and back into the previous one in the second; 600 s reaches
 * neither.
 */
export const KEYED_EPOCH_SECONDS = 0xffffffff;
export const WORLD_UNIX_SECONDS = 2n * BigInt(KEYED_EPOCH_SECONDS) - 1800n;
const ODD_EPOCH_SECONDS = Number((WORLD_UNIX_SECONDS - 1800n) / 2n);

/** The epoch a policy's tokens carry at the world's clock (what the marker signs with). */
export function epochOf(p: Pick<PolicyDef, 'epochSeconds'>): bigint {
  return WORLD_UNIX_SECONDS / BigInt(p.epochSeconds);
}

/** The epochs a verifier accepts for `p` at the world's clock: its own, and those its skew reaches. */
export function acceptedEpochs(p: Pick<PolicyDef, 'epochSeconds' | 'skewSeconds'>): bigint[] {
  const period = BigInt(p.epochSeconds);
  const skew = BigInt(Math.min(p.skewSeconds, p.epochSeconds));
  return [...new Set([WORLD_UNIX_SECONDS / period, (WORLD_UNIX_SECONDS - skew) / period, (WORLD_UNIX_SECONDS + skew) / period])];
}

/**
 * Token bytes that look like options (EOL, NOP, our kind and length, our ExID) catch a
 * parser that reads into the value; previous tokens and keys catch a marker that uses them.
 */
export const POLICIES: readonly PolicyDef[] = [
  staticPolicy(1, 253, 0x4e54, 'a1b2c3d4e5f60718', '5555555555555555'),
  staticPolicy(2, 254, 0x4e54, '0001fd0c4e540000'),
  staticPolicy(4, 253, 0xbeef, 'fe0c4e54fd0c0101'),
  staticPolicy(5, 254, 0x0000, '0000000000000000'),
  keyedPolicy(
    6,
    253,
    0x6b79,
    '000102030405060708090a0b0c0d0e0f',
    BIND_ALL,
    KEYED_EPOCH_SECONDS,
    600,
    'ffeeddccbbaa99887766554433221100',
  ),
  // The same kind and ExID as policy 1, bound to fewer fields, no skew.
  keyedPolicy(
    7,
    253,
    0x4e54,
    '7f00000000000000000000000000ff01',
    BindBit.SourceAddress | BindBit.DestinationPort,
    KEYED_EPOCH_SECONDS,
    0,
  ),
  // No epoch length: the marker cannot compute an epoch and must count skipped_no_clock.
  keyedPolicy(8, 254, 0x6b79, '11111111111111111111111111111111', BIND_ALL, 0, 5),
  // Near the end of its epoch with a skew that reaches the next one.
  keyedPolicy(9, 253, 0x9999, '9999999999999999aaaaaaaaaaaaaaaa', BIND_ALL, KEYED_EPOCH_SECONDS, 3600),
  // Near the start of its epoch with a skew that reaches back, and a previous key.
  keyedPolicy(
    10,
    254,
    0x4e54,
    '0a0a0a0a0b0b0b0b0c0c0c0c0d0d0d0d',
    BIND_ALL,
    ODD_EPOCH_SECONDS,
    3600,
    'a0a0a0a0b0b0b0b0c0c0c0c0d0d0d0d0',
  ),
];

/** Referenced by rules, never written: the slot stays NT_MODE_NONE. */
export const EMPTY_POLICY_ID = 3;

/** Sixteen ports: the most a rule can hold. */
const MANY_PORTS = [80, 443, 1, 65535, 22, 25, 53, 110, 143, 993, 995, 8080, 8443, 3306, 5432, 6379];

const rule = (cidr: string, policyId: number, ports: number[] = []): RuleDef => ({ cidr: parseCidr(cidr), policyId, ports });

/** Rules installed for every device the cases run on. */
export const RULES: readonly RuleDef[] = [
  rule('10.0.0.0/8', 1),
  rule('10.1.0.0/16', 2, [443, 8443]),
  rule('10.1.2.0/24', EMPTY_POLICY_ID),
  rule('192.0.2.0/24', 4, MANY_PORTS),
  rule('198.51.100.7/32', 5),
  rule('172.16.0.0/12', 1, [443]),
  rule('10.2.0.0/16', 6),
  rule('10.3.0.0/16', 7, [443, 80]),
  rule('10.4.0.0/16', 8),
  rule('10.5.0.0/16', 9),
  rule('10.6.0.0/16', 10, [443, 8443]),
  rule('2001:db8::/32', 1),
  rule('2001:db8:1::/48', 2, [443]),
  rule('2001:db8:1:2::/64', EMPTY_POLICY_ID),
  rule('fd00::/8', 4, [80, 443]),
  rule('2001:db8:5::1/128', 5),
  rule('2001:db8:6::/48', 6),
  rule('2001:db8:7::/48', 7, [443, 80]),
  rule('2001:db8:8::/48', 8),
  rule('2001:db8:a::/48', 9),
  rule('2001:db8:b::/48', 10, [443]),
];

const DECOY_RULES: readonly RuleDef[] = [rule('0.0.0.0/0', 1), rule('::/0', 1)];

/**
 * Destination address prefixes drawn by the generator, weighted: mostly inside rules that
 * mark, some at their edges and outside every rule. An entry ending in '.' or ':' is
 * completed with random groups; '' is a random address.
 */
export const V4_POOLS: ReadonlyArray<readonly [number, string]> = [
  [8, '10.'],
  [3, '10.1.'],
  [3, '10.2.'],
  [2, '10.3.'],
  [1, '10.4.'],
  [1, '10.5.'],
  [1, '10.6.'],
  [1, '10.1.2.'],
  [3, '192.0.2.'],
  [2, '198.51.100.7'],
  [1, '198.51.100.'],
  [2, '172.16.'],
  [1, '203.0.113.'],
  [1, ''],
];
export const V6_POOLS: ReadonlyArray<readonly [number, string]> = [
  [8, '2001:db8:'],
  [3, '2001:db8:1:'],
  [3, '2001:db8:6:'],
  [2, '2001:db8:7:'],
  [1, '2001:db8:8:'],
  [1, '2001:db8:a:'],
  [1, '2001:db8:b:'],
  [1, '2001:db8:1:2:'],
  [3, 'fd00:'],
  [2, '2001:db8:5::1'],
  [1, '2001:db8:5::'],
  [1, 'fe80::'],
  [1, '2001:db9:'],
  [1, ''],
];

/** Destination ports drawn by the generator, weighted. */
export const PORTS: ReadonlyArray<readonly [number, number]> = [
  [6, 443],
  [2, 8443],
  [2, 80],
  [1, 22],
  [1, 65535],
  [1, 0],
  [1, 6379],
  [1, 8080],
];

export function policyById(id: number): PolicyDef | undefined {
  return POLICIES.find((p) => p.id === id);
}

/** Write POLICIES and the clock into a loaded marker or verifier (they share nt_policies and nt_clock). */
export function installPolicies(obj: NativeObject): void {
  const policies = obj.map('nt_policies');
  const clock = obj.map('nt_clock');
  try {
    for (const p of POLICIES) {
      const key = Buffer.alloc(4);
      key.writeUInt32LE(p.id);
      policies.update(
        key,
        encodePolicy({
          mode: p.mode,
          kind: p.kind,
          exid: p.exid,
          epochSeconds: p.epochSeconds,
          skewSeconds: p.skewSeconds,
          bind: p.bind,
          current: p.current,
          ...(p.previous ? { previous: p.previous } : {}),
        }),
      );
    }
    // CLOCK_TAI now, taken as CLOCK_REALTIME: the two differ by the TAI-UTC offset, 37 s at most.
    clock.update(Buffer.alloc(4), encodeClock(BigInt(Date.now()) * 1_000_000n - WORLD_UNIX_SECONDS * 1_000_000_000n));
  } finally {
    policies.close();
    clock.close();
  }
}

/**
 * Write the policies, the clock and the rules for `devices` (plus the decoy interface) into
 * a loaded marker, each rule with the counter slot of its device and policy, and turn the
 * marker's destination cache on, as the agent does.
 */
export function installWorld(obj: NativeObject, devices: readonly Device[]): void {
  installPolicies(obj);
  const egress4 = obj.map('nt_egress4');
  const egress6 = obj.map('nt_egress6');
  const config = obj.map('nt_config');
  const slots = CounterSlots.of(obj);
  try {
    const put = (ifindex: number, r: RuleDef): void => {
      (r.cidr.family === 4 ? egress4 : egress6).update(
        encodeLpmKey(ifindex, r.cidr),
        encodeEgressRule(r.policyId, r.ports, slots.slot(ifindex, r.policyId)),
      );
    };
    for (const d of devices) {
      slots.slot(d.ifindex, 0);
      for (const r of RULES) put(d.ifindex, r);
    }
    for (const r of DECOY_RULES) put(DECOY_IFINDEX, r);
    raiseEgressGeneration(config);
  } finally {
    for (const m of [egress4, egress6, config]) m.close();
    slots.close();
  }
}

/** The SYN fields a keyed token binds, as the bytes of the frame hold them. */
export interface SynFields {
  saddr: Buffer;
  daddr: Buffer;
  sport: number;
  dport: number;
  seq: number;
}

/**
 * The 8 value bytes `p` puts on this SYN, or null when it cannot (a keyed policy without
 * an epoch length). Keyed values come from src/lib/siphash.ts, not from the BPF code.
 */
export function tokenValue(p: PolicyDef, f: SynFields): Buffer | null {
  if (p.mode === TokenModeCode.Static) return p.current;
  if (p.mode !== TokenModeCode.Keyed || p.epochSeconds === 0) return null;
  return keyedToken(
    p.current,
    { src: formatIp(f.saddr), dst: formatIp(f.daddr), sport: f.sport, dport: f.dport, seq: f.seq },
    p.bind,
    epochOf(p),
  );
}

/**
 * The policy a SYN to (daddr, dport) gets on a device: the longest matching prefix decides,
 * and when its port list does not hold the port, no policy (shorter prefixes are not tried).
 * Returns 0 for none.
 */
export function lookupPolicy(daddr: Buffer, dport: number): number {
  let best: RuleDef | undefined;
  for (const r of RULES) {
    if (r.cidr.addr.length !== daddr.length || !cidrContains(r.cidr, daddr)) continue;
    if (!best || r.cidr.prefixLen > best.cidr.prefixLen) best = r;
  }
  if (!best) return 0;
  if (best.ports.length === 0 || best.ports.includes(dport)) return best.policyId;
  return 0;
}
