/**
 * Named constants for the numbers the addon speaks (kernel UAPI enums and
 * flags), and helpers for per-CPU map values. The addon itself is in binding.ts.
 */
import type { Direction } from './binding.js';

/** enum bpf_map_type (the ones netoken and its tests use). */
export const MapType = {
  HASH: 1,
  ARRAY: 2,
  PROG_ARRAY: 3,
  PERF_EVENT_ARRAY: 4,
  PERCPU_HASH: 5,
  PERCPU_ARRAY: 6,
  LRU_HASH: 9,
  LRU_PERCPU_HASH: 10,
  LPM_TRIE: 11,
  ARRAY_OF_MAPS: 12,
  HASH_OF_MAPS: 13,
  PERCPU_CGROUP_STORAGE: 21,
  RINGBUF: 27,
} as const;

/** enum bpf_prog_type (subset). */
export const ProgType = {
  SOCKET_FILTER: 1,
  SCHED_CLS: 3,
  SCHED_ACT: 4,
  XDP: 6,
} as const;

/** enum bpf_attach_type (subset). */
export const AttachType = {
  NETFILTER: 45,
  TCX_INGRESS: 46,
  TCX_EGRESS: 47,
} as const;

/** enum bpf_link_type (subset). */
export const LinkType = {
  XDP: 6,
  TCX: 11,
  NETKIT: 13,
} as const;

/** Map update flags. */
export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;

/** Map creation flag required by LPM_TRIE maps. */
export const BPF_F_NO_PREALLOC = 1;

/** XDP_FLAGS_* for xdpAttach / xdpDetach. */
export const XdpFlags = {
  UPDATE_IF_NOEXIST: 1,
  SKB_MODE: 2,
  DRV_MODE: 4,
  HW_MODE: 8,
  REPLACE: 16,
} as const;

/** XDP_ATTACHED_*: XdpQueryResult.attachMode. */
export const XdpAttached = {
  NONE: 0,
  DRV: 1,
  SKB: 2,
  HW: 3,
  MULTI: 4,
} as const;

/** Return codes of tc programs. TCX_NEXT has the value of TC_ACT_UNSPEC: run the next program. */
export const TcAction = {
  UNSPEC: -1,
  OK: 0,
  SHOT: 2,
} as const;
export const TcxAction = {
  NEXT: -1,
  PASS: 0,
  DROP: 2,
} as const;

/** XDP program return codes. */
export const XdpAction = {
  ABORTED: 0,
  DROP: 1,
  PASS: 2,
  TX: 3,
  REDIRECT: 4,
} as const;

export function tcxAttachType(direction: Direction): number {
  return direction === 'ingress' ? AttachType.TCX_INGRESS : AttachType.TCX_EGRESS;
}

/** Per-CPU maps take and return one value slot per possible CPU. */
export function isPerCpuMapType(type: number): boolean {
  return (
    type === MapType.PERCPU_HASH ||
    type === MapType.PERCPU_ARRAY ||
    type === MapType.LRU_PERCPU_HASH ||
    type === MapType.PERCPU_CGROUP_STORAGE
  );
}

/** Bytes of one CPU's slot in a per-CPU value: the value size rounded up to 8. */
export function perCpuSlotSize(valueSize: number): number {
  return Math.ceil(valueSize / 8) * 8;
}

/** Split a per-CPU value as returned by NativeMap.lookup into one valueSize view per CPU. */
export function perCpuSlots(value: Buffer, valueSize: number): Buffer[] {
  const slot = perCpuSlotSize(valueSize);
  if (slot === 0 || value.length % slot !== 0) {
    throw new RangeError(`per-CPU value of ${value.length} bytes is not a whole number of ${slot}-byte slots`);
  }
  const out: Buffer[] = [];
  for (let off = 0; off < value.length; off += slot) out.push(value.subarray(off, off + valueSize));
  return out;
}

/** Build a per-CPU value for NativeMap.update from one valueSize buffer per CPU. */
export function perCpuValue(slots: readonly Buffer[], valueSize: number): Buffer {
  const slot = perCpuSlotSize(valueSize);
  const out = Buffer.alloc(slots.length * slot);
  slots.forEach((s, i) => {
    if (s.length !== valueSize) throw new RangeError(`slot ${i} is ${s.length} bytes, want ${valueSize}`);
    s.copy(out, i * slot);
  });
  return out;
}

/** Sum of a little-endian u64 counter at byteOffset across every CPU's slot. */
export function sumPerCpuU64(value: Buffer, valueSize: number, byteOffset = 0): bigint {
  let sum = 0n;
  for (const s of perCpuSlots(value, valueSize)) sum += s.readBigUInt64LE(byteOffset);
  return sum;
}
