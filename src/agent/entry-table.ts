/**
 * An immutable table of map entries (hex(key) -> [key, value]) that a new version can be made
 * of by naming what changed, without copying the rest: the trie entries of a policy of 100 000
 * prefixes, of which an edit changes one. A version is a base (a Map no one writes again) and
 * an overlay of what differs from it; once the overlay grows past a sixteenth of the base, the
 * next version gets a base of its own (a copy, whose cost the edits before it share).
 *
 * Two versions of one lineage say where they may differ (changedKeys) in time proportional to
 * their overlays: the data path writes only those keys of a table derived from the one it
 * applied last.
 */

export type Entry = [Buffer, Buffer];

/** Each base gets a number: versions on the same base (or one base apart) can be compared by their overlays. */
let nextBaseId = 1;

const NO_OVERLAY: ReadonlyMap<string, Entry | null> = new Map();

export class EntryTable implements ReadonlyMap<string, Entry> {
  private constructor(
    private readonly base: ReadonlyMap<string, Entry>,
    private readonly baseId: number,
    /** hex -> the entry here, or null where the base has one this version does not */
    private readonly overlay: ReadonlyMap<string, Entry | null>,
    readonly size: number,
    /** the base this one was made from, and the keys where the two differ */
    private readonly prior: { baseId: number; keys: readonly string[] } | null,
  ) {}

  /** A table of the entries of `map`, which is the table's from now on: nobody may change it any more. */
  static of(map: Map<string, Entry>): EntryTable {
    return new EntryTable(map, nextBaseId++, NO_OVERLAY, map.size, null);
  }

  static empty(): EntryTable {
    return EntryTable.of(new Map());
  }

  get(hex: string): Entry | undefined {
    const o = this.overlay.get(hex);
    if (o !== undefined) return o ?? undefined;
    return this.base.get(hex);
  }

  has(hex: string): boolean {
    return this.get(hex) !== undefined;
  }

  /** This table with the entries of `changes` set (null: removed). `changes` is not kept. */
  with(changes: ReadonlyMap<string, Entry | null>): EntryTable {
    if (changes.size === 0) return this;
    const overlay = new Map(this.overlay);
    let size = this.size;
    for (const [hex, entry] of changes) {
      const before = this.get(hex) !== undefined;
      if (entry) {
        if (this.base.get(hex) === entry) overlay.delete(hex);
        else overlay.set(hex, entry);
      } else if (this.base.has(hex)) {
        overlay.set(hex, null);
      } else {
        overlay.delete(hex);
      }
      size += (entry ? 1 : 0) - (before ? 1 : 0);
    }
    if (overlay.size <= 256 + (this.base.size >> 4)) return new EntryTable(this.base, this.baseId, overlay, size, null);
    // The overlay has grown: a base of its own, which remembers where it differs from this one's.
    const base = new Map(this.base);
    for (const [hex, entry] of overlay) {
      if (entry) base.set(hex, entry);
      else base.delete(hex);
    }
    return new EntryTable(base, nextBaseId++, NO_OVERLAY, base.size, { baseId: this.baseId, keys: [...overlay.keys()] });
  }

  /**
   * The keys where `a` and `b` may differ (a few more at most, never fewer), when `b` was made
   * from `a` by with() (through any number of versions on the same base, or one new base); else
   * null: compare every entry.
   */
  static changedKeys(a: EntryTable, b: EntryTable): Set<string> | null {
    if (a === b) return new Set();
    let keys: Set<string>;
    if (a.baseId === b.baseId) keys = new Set(b.overlay.keys());
    else if (b.prior?.baseId === a.baseId) keys = new Set(b.prior.keys);
    else return null;
    for (const k of a.overlay.keys()) keys.add(k);
    for (const k of b.overlay.keys()) keys.add(k);
    return keys;
  }

  *entries(): MapIterator<[string, Entry]> {
    if (this.overlay.size === 0) {
      yield* this.base.entries();
      return;
    }
    for (const e of this.base) if (!this.overlay.has(e[0])) yield e;
    for (const [hex, entry] of this.overlay) if (entry) yield [hex, entry];
  }

  *keys(): MapIterator<string> {
    for (const [hex] of this.entries()) yield hex;
  }

  *values(): MapIterator<Entry> {
    for (const [, entry] of this.entries()) yield entry;
  }

  [Symbol.iterator](): MapIterator<[string, Entry]> {
    return this.entries();
  }

  forEach(fn: (value: Entry, key: string, map: ReadonlyMap<string, Entry>) => void, thisArg?: unknown): void {
    for (const [hex, entry] of this.entries()) fn.call(thisArg, entry, hex, this);
  }
}
