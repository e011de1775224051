/**
 * Counter slots: the programs count in a per-CPU array (nt_counters), one slot of
 * NT_COUNTER_CELLS counters per (interface, policy) pair and one per interface for what
 * no policy covers (policy 0). The data path gives out the slots and puts them in the rules
 * it writes (and an interface's own in nt_ifaces); which pair a slot counts for is kept in
 * the pinned nt_counter_slots, so that anyone reading the pins (`netoken status`, a
 * restarted agent) knows what each slot counts. A slot is zeroed when it is given out: a
 * pair that comes back starts from zero, as its counters did when they were hash entries.
 *
 * Counts carried over from an older layout's maps go into a second slot of the pair, marked
 * carried, that no rule names: the programs never write it, so adding to it from here cannot
 * lose a count the programs make at the same moment. A pair's totals are both slots summed.
 */
import {
  COUNTERS,
  type CounterName,
  type CounterOwner,
  NT_COUNTER_CELLS,
  NT_MAX_COUNTER_SLOTS,
  decodeCounterOwner,
  encodeCounterOwner,
  encodeIface,
  sumCounterCells,
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

const pairKey = (ifindex: number, policyId: number, carried = false): string =>
  `${ifindex}/${policyId}${carried ? '/carried' : ''}`;

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

/** Every slot in use, from the pinned (or loaded) nt_counter_slots. */
function readOwners(owners: NativeMap): Map<number, CounterOwner> {
  const out = new Map<number, CounterOwner>();
  for (let slot = 1; slot < NT_MAX_COUNTER_SLOTS; slot++) {
    const v = owners.lookup(slotKey(slot));
    if (!v) continue;
    const o = decodeCounterOwner(v);
    if (o.ifindex !== 0) out.set(slot, o);
  }
  return out;
}

/** The counters of the slots in `owners`, summed by pair, as rows (those not zero: a counter appears once it has counted). */
function rowsOf(counters: NativeMap, owners: ReadonlyMap<number, CounterOwner>): CounterRow[] {
  const totals = new Map<string, { ifindex: number; policyId: number; cells: bigint[] }>();
  for (const [slot, o] of owners) {
    const v = counters.lookup(slotKey(slot));
    if (!v) continue;
    const k = pairKey(o.ifindex, o.policyId);
    const t = totals.get(k) ?? { ifindex: o.ifindex, policyId: o.policyId, cells: new Array<bigint>(NT_COUNTER_CELLS).fill(0n) };
    sumCounterCells(v).forEach((x, i) => (t.cells[i] = (t.cells[i] as bigint) + x));
    totals.set(k, t);
  }
  const rows: CounterRow[] = [];
  for (const t of totals.values()) {
    t.cells.forEach((value, i) => {
      if (value !== 0n) rows.push({ ifindex: t.ifindex, policyId: t.policyId, counter: counterName(i), value });
    });
  }
  return rows;
}

/** Every counter that has counted, read from counter maps alone (`netoken status` on the pins). */
export function readCounterRows(counters: NativeMap, owners: NativeMap): CounterRow[] {
  return rowsOf(counters, readOwners(owners));
}

/** The slots of one set of counter maps: given out, looked up, freed, read. */
export class CounterSlots {
  private readonly byPair = new Map<string, number>();
  private readonly owner = new Map<number, CounterOwner>();
  private readonly zero: Buffer;

  constructor(private readonly maps: CounterMaps) {
    for (const [slot, o] of readOwners(maps.owners)) {
      this.owner.set(slot, o);
      this.byPair.set(pairKey(o.ifindex, o.policyId, o.carried), slot);
    }
    this.zero = Buffer.alloc(binding().numPossibleCpus() * 8 * NT_COUNTER_CELLS);
  }

  /** The counter maps of a loaded marker or verifier object (new handles, closed by close()). */
  static of(obj: NativeObject): CounterSlots {
    return new CounterSlots({
      counters: obj.map('nt_counters'),
      owners: obj.map('nt_counter_slots'),
      ifaces: obj.map('nt_ifaces'),
    });
  }

  /** Slots in use. */
  get size(): number {
    return this.owner.size;
  }

  /** The slot (ifindex, policyId) counts in, if it has one, else 0. */
  find(ifindex: number, policyId: number): number {
    return this.byPair.get(pairKey(ifindex, policyId)) ?? 0;
  }

  /** A free slot, zeroed and owned by the pair from now on; 0 when every slot is taken. */
  private take(o: CounterOwner): number {
    let slot = 1;
    while (slot < NT_MAX_COUNTER_SLOTS && this.owner.has(slot)) slot++;
    if (slot >= NT_MAX_COUNTER_SLOTS) return 0;
    this.maps.counters.update(slotKey(slot), this.zero);
    this.maps.owners.update(slotKey(slot), encodeCounterOwner(o.ifindex, o.policyId, o.carried));
    this.owner.set(slot, o);
    this.byPair.set(pairKey(o.ifindex, o.policyId, o.carried), slot);
    return slot;
  }

  /**
   * The slot (ifindex, policyId) counts in, given out now (counters zeroed, owner written)
   * if it has none; an interface's own slot (policy 0) also goes into nt_ifaces, and a pair
   * with a policy gets its interface's slot too. 0 when every slot is taken: the programs
   * then count under slot 0, which nobody reads.
   */
  slot(ifindex: number, policyId: number): number {
    if (policyId !== 0) this.slot(ifindex, 0);
    const have = this.find(ifindex, policyId);
    if (have !== 0) return have;
    const slot = this.take({ ifindex, policyId, carried: false });
    if (slot !== 0 && policyId === 0) this.maps.ifaces.update(ifindexKey(ifindex), encodeIface(slot));
    return slot;
  }

  /**
   * Free every slot whose pair `keep` does not keep (its carried slot too): its owner
   * cleared, and an interface's nt_ifaces entry removed; its counters are zeroed when it is
   * given out again. Returns how many were freed. Rules that named them must be gone first.
   */
  retain(keep: (ifindex: number, policyId: number) => boolean): number {
    let freed = 0;
    for (const [slot, o] of [...this.owner]) {
      if (keep(o.ifindex, o.policyId)) continue;
      if (o.policyId === 0 && !o.carried) this.maps.ifaces.delete(ifindexKey(o.ifindex));
      this.maps.owners.update(slotKey(slot), encodeCounterOwner(0, 0));
      this.owner.delete(slot);
      this.byPair.delete(pairKey(o.ifindex, o.policyId, o.carried));
      freed++;
    }
    return freed;
  }

  /**
   * Add `values` (per-CPU u64s, as a per-CPU u64 map holds one counter) to counter
   * `counter` of the pair, CPU by CPU, in its carried slot: how counts of an older layout are
   * carried over. False when the pair has no counting slot (it is not in the rules any more)
   * or no slot is free.
   */
  carry(ifindex: number, policyId: number, counter: number, values: Buffer): boolean {
    if (this.find(ifindex, policyId) === 0 || counter < 0 || counter >= NT_COUNTER_CELLS) return false;
    const slot = this.byPair.get(pairKey(ifindex, policyId, true)) ?? this.take({ ifindex, policyId, carried: true });
    if (slot === 0) return false;
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

  /** Every counter that has counted, of every pair with a slot (its carried counts included). */
  rows(): CounterRow[] {
    return rowsOf(this.maps.counters, this.owner);
  }

  close(): void {
    for (const m of Object.values(this.maps)) m.close();
  }
}
