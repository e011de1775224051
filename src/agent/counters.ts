/**
 * Counter slots: the programs count in a per-CPU array (nt_counters), one slot of
 * NT_COUNTER_CELLS counters per (interface, policy) pair and one per interface for what
 * no policy covers (policy 0). The data path gives out the slots and puts them in the rules
 * it writes (and an interface's own in nt_ifaces); which pair a slot counts for is kept in
 * the pinned nt_counter_slots, so that anyone reading the pins (`netoken status`, a
 * restarted agent) knows what each slot counts. A slot is zeroed when it is given out: a
 * pair that comes back starts from zero, as its counters did when they were hash entries.
 */
import {
  COUNTERS, type CounterName, NT_COUNTER_CELLS, NT_MAX_COUNTER_SLOTS, decodeCounterOwner, encodeCounterOwner, encodeIface, sumCounterCells,
} from '../lib/abi.js';
import { binding, type NativeMap, type NativeObject } from '../native/binding.js';

export interface CounterRow {
  ifindex: number;
  /** 0: the interface's own counters (no policy) */
  policyId: number;
  counter: CounterName | `counter_${number}`;
  value: bigint;
}

export interface CounterMaps {
  counters: NativeMap;
  owners: NativeMap;
  ifaces: NativeMap;
}

const pairKey = (ifindex: number, policyId: number): string => `${ifindex}/${policyId}`;

function slotKey(slot: number): Buffer {
  const k = Buffer.alloc(4);
  k.writeUInt32LE(slot);
  return k;
}

function ifindexKey(ifindex: number): Buffer {
  const k = Buffer.alloc(4);
  k.writeUInt32LE(ifindex);
  return k;
}

function counterName(index: number): CounterRow['counter'] {
  return COUNTERS[index] ?? `counter_${index}`;
}

/** The counters of one slot as rows (those not zero: a counter appears once it has counted). */
function slotRows(counters: NativeMap, slot: number, ifindex: number, policyId: number, out: CounterRow[]): void {
  const v = counters.lookup(slotKey(slot));
  if (!v) return;
  sumCounterCells(v).forEach((value, i) => {
    if (value !== 0n) out.push({ ifindex, policyId, counter: counterName(i), value });
  });
}

/** Every slot in use, from the pinned (or loaded) nt_counter_slots. */
function readOwners(owners: NativeMap): Map<number, { ifindex: number; policyId: number }> {
  const out = new Map<number, { ifindex: number; policyId: number }>();
  for (let slot = 1; slot < NT_MAX_COUNTER_SLOTS; slot++) {
    const v = owners.lookup(slotKey(slot));
    if (!v) continue;
    const o = decodeCounterOwner(v);
    if (o.ifindex !== 0) out.set(slot, o);
  }
  return out;
}

/** Every counter that has counted, read from counter maps alone (`netoken status` on the pins). */
export function readCounterRows(counters: NativeMap, owners: NativeMap): CounterRow[] {
  const rows: CounterRow[] = [];
  for (const [slot, o] of readOwners(owners)) slotRows(counters, slot, o.ifindex, o.policyId, rows);
  return rows;
}

/** The slots of one set of counter maps: given out, looked up, freed, read. */
export class CounterSlots {
  private readonly byPair = new Map<string, number>();
  private readonly owner = new Map<number, { ifindex: number; policyId: number }>();
  private readonly zero: Buffer;

  constructor(private readonly maps: CounterMaps) {
    for (const [slot, o] of readOwners(maps.owners)) {
      this.owner.set(slot, o);
      this.byPair.set(pairKey(o.ifindex, o.policyId), slot);
    }
    this.zero = Buffer.alloc(binding().numPossibleCpus() * 8 * NT_COUNTER_CELLS);
  }

  /** The counter maps of a loaded marker or verifier object (new handles, closed by close()). */
  static of(obj: NativeObject): CounterSlots {
    return new CounterSlots({ counters: obj.map('nt_counters'), owners: obj.map('nt_counter_slots'), ifaces: obj.map('nt_ifaces') });
  }

  /** Slots in use. */
  get size(): number {
    return this.owner.size;
  }

  /** The slot of (ifindex, policyId) if it has one, else 0. */
  find(ifindex: number, policyId: number): number {
    return this.byPair.get(pairKey(ifindex, policyId)) ?? 0;
  }

  /**
   * The slot of (ifindex, policyId), given out now (counters zeroed, owner written) if it
   * has none; an interface's own slot (policy 0) also goes into nt_ifaces, and a pair with a
   * policy gets its interface's slot too. 0 when every slot is taken: the programs then
   * count under slot 0, which nobody reads.
   */
  slot(ifindex: number, policyId: number): number {
    if (policyId !== 0) this.slot(ifindex, 0);
    const have = this.find(ifindex, policyId);
    if (have !== 0) return have;
    let slot = 1;
    while (slot < NT_MAX_COUNTER_SLOTS && this.owner.has(slot)) slot++;
    if (slot >= NT_MAX_COUNTER_SLOTS) return 0;
    this.maps.counters.update(slotKey(slot), this.zero);
    this.maps.owners.update(slotKey(slot), encodeCounterOwner(ifindex, policyId));
    if (policyId === 0) this.maps.ifaces.update(ifindexKey(ifindex), encodeIface(slot));
    this.owner.set(slot, { ifindex, policyId });
    this.byPair.set(pairKey(ifindex, policyId), slot);
    return slot;
  }

  /**
   * Free every slot whose pair `keep` does not keep: its owner cleared (and an interface's
   * nt_ifaces entry removed); its counters are zeroed when it is given out again. Returns
   * how many were freed. Rules that named them must be gone first.
   */
  retain(keep: (ifindex: number, policyId: number) => boolean): number {
    let freed = 0;
    for (const [slot, o] of [...this.owner]) {
      if (keep(o.ifindex, o.policyId)) continue;
      if (o.policyId === 0) this.maps.ifaces.delete(ifindexKey(o.ifindex));
      this.maps.owners.update(slotKey(slot), encodeCounterOwner(0, 0));
      this.owner.delete(slot);
      this.byPair.delete(pairKey(o.ifindex, o.policyId));
      freed++;
    }
    return freed;
  }

  /**
   * Add `values` (per-CPU u64s, as a per-CPU u64 map holds one counter) to counter
   * `counter` of the pair's slot, CPU by CPU: how counts of an older layout are carried over.
   * False when the pair has no slot.
   */
  add(ifindex: number, policyId: number, counter: number, values: Buffer): boolean {
    const slot = this.find(ifindex, policyId);
    if (slot === 0 || counter < 0 || counter >= NT_COUNTER_CELLS) return false;
    const key = slotKey(slot);
    const cur = this.maps.counters.lookup(key) ?? Buffer.from(this.zero);
    const stride = 8 * NT_COUNTER_CELLS;
    for (let cpu = 0; cpu * 8 + 8 <= values.length && cpu * stride < cur.length; cpu++) {
      const at = cpu * stride + 8 * counter;
      cur.writeBigUInt64LE(cur.readBigUInt64LE(at) + values.readBigUInt64LE(cpu * 8), at);
    }
    this.maps.counters.update(key, cur);
    return true;
  }

  /** Every counter that has counted, of every slot in use. */
  rows(): CounterRow[] {
    const rows: CounterRow[] = [];
    for (const [slot, o] of this.owner) slotRows(this.maps.counters, slot, o.ifindex, o.policyId, rows);
    return rows;
  }

  close(): void {
    for (const m of Object.values(this.maps)) m.close();
  }
}
