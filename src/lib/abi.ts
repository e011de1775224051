/**
 * Byte encodings of the map keys and values declared in bpf/abi.h. Keep the two in
 * step: abi.test.ts checks these sizes against the BTF of the built object.
 * BPF maps use the host's byte order for integers (x86-64 and arm64: little-endian),
 * except fields the header marks as big-endian or as wire bytes.
 */
import type { Cidr } from './cidr.js';

export const NT_OPT_LEN = 12;
/** NT_OPT_KIND_DEFAULT and NT_OPT_EXID_DEFAULT: the token option's kind and ExID ("NT") unless a policy names others. */
export const NT_OPT_KIND_DEFAULT = 253;
export const NT_OPT_EXID_DEFAULT = 0x4e54;
export const NT_MAX_PORTS = 16;
export const NT_MAX_POLICIES = 1024;
/** NT_LAYOUT_VERSION: the layout of the pinned maps as a whole (see src/agent/layout.ts). */
export const LAYOUT_VERSION = 2;
/** Counter slots in nt_counters; slot 0 is never given out. */
export const NT_MAX_COUNTER_SLOTS = 1024;
/** u64 cells per counter slot (struct nt_counters), one per counter. */
export const NT_COUNTER_CELLS = 32;
/**
 * Policies that can apply to one node: one per slot of nt_policies but slot 0 ("no policy").
 * The same number bounds TokenNodeState's status.policies (crds/) and is the README's limit.
 */
export const MAX_POLICIES_PER_NODE = NT_MAX_POLICIES - 1;

export enum TokenModeCode {
  None = 0,
  Static = 1,
  Keyed = 2,
}

export enum BindBit {
  SourceAddress = 1 << 0,
  DestinationAddress = 1 << 1,
  SourcePort = 1 << 2,
  DestinationPort = 1 << 3,
  Sequence = 1 << 4,
}

/** The BindBit mask of spec.token.bind field names. */
export function bindMask(fields: readonly string[]): number {
  let m = 0;
  for (const f of fields) m |= BindBit[f as keyof typeof BindBit];
  return m;
}

export const PF_HAS_PREVIOUS = 1;

/** enum nt_counter, in order. The names are what `netoken status` and metrics show. */
export const COUNTERS = [
  'marked',
  'skipped_no_policy',
  'skipped_payload',
  'skipped_no_room',
  'skipped_eol',
  'skipped_malformed',
  'skipped_present',
  'skipped_gso',
  'skipped_encapsulated',
  'skipped_mtu',
  'skipped_ipv6_ext_header',
  'skipped_fragment',
  'error_grow',
  'error_write_dropped',
  'verify_valid',
  'verify_missing',
  'verify_invalid',
  'verify_malformed',
  'verify_dropped',
  'verify_exempt',
  'verify_replay',
  'skipped_no_clock',
  'error_tail_call',
  'unreadable',
  'skipped_tcp_ao',
] as const;
export type CounterName = (typeof COUNTERS)[number];

export const LPM4_KEY_SIZE = 12;
export const LPM6_KEY_SIZE = 24;
export const EGRESS_RULE_SIZE = 40;
export const POLICY_SIZE = 64;
export const COUNTERS_SIZE = 8 * NT_COUNTER_CELLS;
export const COUNTER_OWNER_SIZE = 12;
export const IFACE_SIZE = 8;
export const CONFIG_SIZE = 8;
export const CLOCK_SIZE = 24;
export const PORT_KEY_SIZE = 8;
export const INGRESS_RULE_SIZE = 16;
export const PORT_INDEX_SIZE = 24;
export const NT_MAX_PORT_INDEX = 65536;
export const SRC4_KEY_SIZE = 12;
export const SRC6_KEY_SIZE = 24;
export const REPLAY_KEY_SIZE = 48;
export const REPLAY_VAL_SIZE = 16;

export const CLOCK_VALID = 1;

/** enum nt_ingress_action */
export enum IngressActionCode {
  Monitor = 0,
  Enforce = 1,
}

/**
 * The key layout every netoken trie shares: prefixlen, a big-endian u32 that the trie
 * matches first (an ifindex or a policy id), then the address prefix.
 */
function encodePrefixKey(id: number, cidr: Pick<Cidr, 'addr' | 'prefixLen'>): Buffer {
  const key = Buffer.alloc(8 + cidr.addr.length);
  key.writeUInt32LE(32 + cidr.prefixLen, 0);
  key.writeUInt32BE(id, 4);
  cidr.addr.copy(key, 8);
  return key;
}

function decodePrefixKey(key: Buffer): { id: number; addr: Buffer; prefixLen: number } {
  return { prefixLen: key.readUInt32LE(0) - 32, id: key.readUInt32BE(4), addr: key.subarray(8) };
}

/** struct nt_lpm4_key / nt_lpm6_key: the interface, then the destination prefix. */
export function encodeLpmKey(ifindex: number, cidr: Pick<Cidr, 'addr' | 'prefixLen'>): Buffer {
  return encodePrefixKey(ifindex, cidr);
}

export function decodeLpmKey(key: Buffer): { ifindex: number; addr: Buffer; prefixLen: number } {
  const { id, addr, prefixLen } = decodePrefixKey(key);
  return { prefixLen, ifindex: id, addr };
}

/** Where struct nt_egress_rule and struct nt_ingress_rule keep their counter slot. */
const EGRESS_RULE_SLOT_OFF = 6;
const INGRESS_RULE_SLOT_OFF = 12;

/** struct nt_egress_rule: empty ports = every port; `slot` counts for (its interface, the policy). */
export function encodeEgressRule(policyId: number, ports: readonly number[], slot = 0): Buffer {
  if (ports.length > NT_MAX_PORTS) throw new RangeError(`at most ${NT_MAX_PORTS} ports per destination, got ${ports.length}`);
  const v = Buffer.alloc(EGRESS_RULE_SIZE);
  v.writeUInt32LE(policyId, 0);
  v.writeUInt16LE(ports.length, 4);
  v.writeUInt16LE(slot, EGRESS_RULE_SLOT_OFF);
  ports.forEach((p, i) => v.writeUInt16LE(p, 8 + 2 * i));
  return v;
}

export function decodeEgressRule(v: Buffer): { policyId: number; ports: number[]; slot: number } {
  const n = v.readUInt16LE(4);
  const ports: number[] = [];
  for (let i = 0; i < n && i < NT_MAX_PORTS; i++) ports.push(v.readUInt16LE(8 + 2 * i));
  return { policyId: v.readUInt32LE(0), ports, slot: v.readUInt16LE(EGRESS_RULE_SLOT_OFF) };
}

/** An encoded rule of either kind (egress: EGRESS_RULE_SIZE bytes, ingress: INGRESS_RULE_SIZE) with its counter slot set. */
export function withCounterSlot(rule: Buffer, slot: number): Buffer {
  const off =
    rule.length === EGRESS_RULE_SIZE ? EGRESS_RULE_SLOT_OFF : rule.length === INGRESS_RULE_SIZE ? INGRESS_RULE_SLOT_OFF : -1;
  if (off < 0) throw new RangeError(`not an encoded rule: ${rule.length} bytes`);
  const v = Buffer.from(rule);
  v.writeUInt16LE(slot, off);
  return v;
}

/** The policy an encoded rule of either kind names. */
export function rulePolicyId(rule: Buffer): number {
  return rule.readUInt32LE(0);
}

export interface PolicySlot {
  mode: TokenModeCode;
  kind: number;
  exid: number;
  epochSeconds: number;
  /** Keyed: seconds of clock difference the verifier tolerates (see struct nt_policy); default 0 */
  skewSeconds?: number;
  bind: number;
  /** Static: 8-byte tokens; Keyed: 16-byte SipHash keys */
  current: Buffer;
  previous?: Buffer;
}

/** struct nt_policy */
export function encodePolicy(p: PolicySlot): Buffer {
  const v = Buffer.alloc(POLICY_SIZE);
  v.writeUInt8(p.mode, 0);
  v.writeUInt8(p.kind, 1);
  v.writeUInt16LE(p.exid, 2);
  v.writeUInt16LE(p.previous ? PF_HAS_PREVIOUS : 0, 4);
  v.writeUInt16LE(p.skewSeconds ?? 0, 6);
  v.writeUInt32LE(p.epochSeconds, 8);
  v.writeUInt32LE(p.bind, 12);
  if (p.mode === TokenModeCode.Static) {
    p.current.copy(v, 16, 0, 8);
    p.previous?.copy(v, 24, 0, 8);
  } else if (p.mode === TokenModeCode.Keyed) {
    p.current.copy(v, 32, 0, 16);
    p.previous?.copy(v, 48, 0, 16);
  }
  return v;
}

/**
 * struct nt_clock: unix ns = bpf_ktime_get_tai_ns() - taiOffsetNs on kernels with CLOCK_TAI
 * (6.1+), else bpf_ktime_get_boot_ns() + bootOffsetNs.
 */
export function encodeClock(taiOffsetNs: bigint, bootOffsetNs = 0n): Buffer {
  const v = Buffer.alloc(CLOCK_SIZE);
  v.writeBigInt64LE(taiOffsetNs, 0);
  v.writeBigInt64LE(bootOffsetNs, 8);
  v.writeUInt32LE(CLOCK_VALID, 16);
  return v;
}

export function decodeClock(v: Buffer): { taiOffsetNs: bigint; bootOffsetNs: bigint; valid: boolean } {
  return { taiOffsetNs: v.readBigInt64LE(0), bootOffsetNs: v.readBigInt64LE(8), valid: (v.readUInt32LE(16) & CLOCK_VALID) !== 0 };
}

/** struct nt_port_key: port 0 = every port. */
export function encodePortKey(ifindex: number, port: number): Buffer {
  const k = Buffer.alloc(PORT_KEY_SIZE);
  k.writeUInt32LE(ifindex, 0);
  k.writeUInt16LE(port, 4);
  return k;
}

/**
 * struct nt_port_key of scope NT_SCOPE_ENFORCING: "some policy enforces on this interface",
 * for the packets whose port the verifier cannot see.
 */
export function encodeEnforcingKey(ifindex: number): Buffer {
  const k = encodePortKey(ifindex, 0);
  k.writeUInt16LE(1, 6);
  return k;
}

/** `enforcing`: the key is encodeEnforcingKey()'s, not a port's. */
export function decodePortKey(k: Buffer): { ifindex: number; port: number; enforcing: boolean } {
  return { ifindex: k.readUInt32LE(0), port: k.readUInt16LE(4), enforcing: k.readUInt16LE(6) === 1 };
}

/** enum nt_ingress_flags: which exempt tries the verifier asks for the policy */
export enum IngressFlag {
  Exempt4 = 1 << 0,
  Exempt6 = 1 << 1,
}

export interface IngressRuleOptions {
  /** valid SYNs accepted per (flow, seq) per second; 0 (default) = no limit */
  replayLimit?: number;
  /** counter slot of (the interface, the policy) */
  slot?: number;
  /** IngressFlag bits: the policy has IPv4 / IPv6 exempt sources */
  flags?: number;
}

/** struct nt_ingress_rule */
export function encodeIngressRule(policyId: number, action: IngressActionCode, o: IngressRuleOptions = {}): Buffer {
  const v = Buffer.alloc(INGRESS_RULE_SIZE);
  v.writeUInt32LE(policyId, 0);
  v.writeUInt32LE(action, 4);
  v.writeUInt32LE(o.replayLimit ?? 0, 8);
  v.writeUInt16LE(o.slot ?? 0, INGRESS_RULE_SLOT_OFF);
  v.writeUInt16LE(o.flags ?? 0, 14);
  return v;
}

export function decodeIngressRule(v: Buffer): {
  policyId: number;
  action: IngressActionCode;
  replayLimit: number;
  slot: number;
  flags: number;
} {
  return {
    policyId: v.readUInt32LE(0),
    action: v.readUInt32LE(4) as IngressActionCode,
    replayLimit: v.readUInt32LE(8),
    slot: v.readUInt16LE(INGRESS_RULE_SLOT_OFF),
    flags: v.readUInt16LE(14),
  };
}

/** enum nt_port_index_state */
export enum PortIndexState {
  /** ask nt_ingress_ports (an entry never written is all zero) */
  Hash = 0,
  /** no interface has a rule for the port */
  None = 1,
  /** only one interface has: the rule in the entry */
  One = 2,
}

const PORT_INDEX_IFINDEX_OFF = INGRESS_RULE_SIZE;
const PORT_INDEX_STATE_OFF = INGRESS_RULE_SIZE + 4;

/** struct nt_port_index: `rule` is an encodeIngressRule() value (with its counter slot). */
export function encodePortIndex(state: PortIndexState, ifindex = 0, rule: Buffer = Buffer.alloc(INGRESS_RULE_SIZE)): Buffer {
  const v = Buffer.alloc(PORT_INDEX_SIZE);
  rule.copy(v, 0, 0, INGRESS_RULE_SIZE);
  v.writeUInt32LE(ifindex, PORT_INDEX_IFINDEX_OFF);
  v.writeUInt32LE(state, PORT_INDEX_STATE_OFF);
  return v;
}

export function decodePortIndex(v: Buffer): { state: PortIndexState; ifindex: number; rule: Buffer } {
  return {
    state: v.readUInt32LE(PORT_INDEX_STATE_OFF) as PortIndexState,
    ifindex: v.readUInt32LE(PORT_INDEX_IFINDEX_OFF),
    rule: v.subarray(0, INGRESS_RULE_SIZE),
  };
}

/** The same nt_port_index value in state `state` (a copy). */
export function withPortIndexState(v: Buffer, state: PortIndexState): Buffer {
  const out = Buffer.from(v);
  out.writeUInt32LE(state, PORT_INDEX_STATE_OFF);
  return out;
}

/**
 * The nt_port_index entries (hex(key) -> [key, value]) that answer as the nt_ingress_ports
 * entries `ports` do: a port whose rules one interface alone has gets that rule; port 0
 * (every port) also says when no interface has such a rule (where there are rules at all:
 * without any, the verifier is on no interface). Ports several interfaces
 * protect get no entry: the verifier asks nt_ingress_ports for them. The rules for what has
 * no visible port (encodeEnforcingKey) are not indexed.
 */
export function portIndexEntries(ports: Iterable<[Buffer, Buffer]>): Map<string, [Buffer, Buffer]> {
  const byPort = new Map<number, { ifindex: number; rule: Buffer }[]>();
  for (const [key, rule] of ports) {
    const k = decodePortKey(key);
    if (k.enforcing) continue;
    const list = byPort.get(k.port) ?? [];
    list.push({ ifindex: k.ifindex, rule });
    byPort.set(k.port, list);
  }
  const out = new Map<string, [Buffer, Buffer]>();
  const put = (port: number, value: Buffer): void => {
    const key = Buffer.alloc(4);
    key.writeUInt32LE(port);
    out.set(key.toString('hex'), [key, value]);
  };
  for (const [port, list] of byPort) {
    const only = list.length === 1 ? list[0] : undefined;
    if (only) put(port, encodePortIndex(PortIndexState.One, only.ifindex, only.rule));
  }
  if (byPort.size > 0 && !byPort.has(0)) put(0, encodePortIndex(PortIndexState.None));
  return out;
}

/** struct nt_src4_key / nt_src6_key: the policy, then the source prefix. */
export function encodeSrcKey(policyId: number, cidr: Pick<Cidr, 'addr' | 'prefixLen'>): Buffer {
  return encodePrefixKey(policyId, cidr);
}

export function decodeSrcKey(key: Buffer): { policyId: number; addr: Buffer; prefixLen: number } {
  const { id, addr, prefixLen } = decodePrefixKey(key);
  return { prefixLen, policyId: id, addr };
}

/** Value of the exempt tries (unused by the program, but an LPM trie needs one). */
export function encodeExemptValue(): Buffer {
  const v = Buffer.alloc(4);
  v.writeUInt32LE(1);
  return v;
}

/** enum nt_owner_flags */
export const OWNER_CARRIED = 1;

export interface CounterOwner {
  ifindex: number;
  policyId: number;
  /** counts carried over from an older layout's maps: never counted into by the programs */
  carried: boolean;
}

/** struct nt_counter_owner: what a counter slot counts for; ifindex 0 = a free slot. */
export function encodeCounterOwner(ifindex: number, policyId: number, carried = false): Buffer {
  const v = Buffer.alloc(COUNTER_OWNER_SIZE);
  v.writeUInt32LE(ifindex, 0);
  v.writeUInt32LE(policyId, 4);
  v.writeUInt32LE(carried ? OWNER_CARRIED : 0, 8);
  return v;
}

export function decodeCounterOwner(v: Buffer): CounterOwner {
  return { ifindex: v.readUInt32LE(0), policyId: v.readUInt32LE(4), carried: (v.readUInt32LE(8) & OWNER_CARRIED) !== 0 };
}

/** struct nt_iface: the counter slot of an interface's own counters. */
export function encodeIface(slot: number): Buffer {
  const v = Buffer.alloc(IFACE_SIZE);
  v.writeUInt16LE(slot, 0);
  return v;
}

export function decodeIface(v: Buffer): { slot: number } {
  return { slot: v.readUInt16LE(0) };
}

export interface Config {
  /** destination cache entries of another generation are stale; 0 = no cache */
  egressGeneration: number;
  /** the older layout whose counters were carried into these maps; 0 = none */
  carriedLayout: number;
}

/** struct nt_config */
export function encodeConfig(c: Config): Buffer {
  const v = Buffer.alloc(CONFIG_SIZE);
  v.writeUInt32LE(c.egressGeneration >>> 0, 0);
  v.writeUInt32LE(c.carriedLayout, 4);
  return v;
}

export function decodeConfig(v: Buffer): Config {
  return { egressGeneration: v.readUInt32LE(0), carriedLayout: v.readUInt32LE(4) };
}

/**
 * A per-CPU struct nt_counters value (numPossibleCpus() slots of NT_COUNTER_CELLS u64),
 * summed over CPUs: one total per counter index.
 */
export function sumCounterCells(value: Buffer): bigint[] {
  const totals = new Array<bigint>(NT_COUNTER_CELLS).fill(0n);
  for (let cpu = 0; cpu + COUNTERS_SIZE <= value.length; cpu += COUNTERS_SIZE) {
    for (let c = 0; c < NT_COUNTER_CELLS; c++) totals[c] = (totals[c] as bigint) + value.readBigUInt64LE(cpu + 8 * c);
  }
  return totals;
}

/** Sum a per-CPU u64 value (ncpus slots of 8 bytes). */
export function sumPerCpu(value: Buffer): bigint {
  let total = 0n;
  for (let off = 0; off + 8 <= value.length; off += 8) total += value.readBigUInt64LE(off);
  return total;
}
