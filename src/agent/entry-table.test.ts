import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../fuzz/rng.js';
import { type Entry, EntryTable } from './entry-table.js';

const entry = (k: number, v: number): Entry => [Buffer.from([k >> 8, k & 255]), Buffer.from([v])];
const hex = (k: number): string => Buffer.from([k >> 8, k & 255]).toString('hex');

/** A table's content as sorted text, read the ways a caller reads it. */
function content(t: ReadonlyMap<string, Entry>): string[] {
  const out = [...t].map(([h, [k, v]]) => `${h}=${k.toString('hex')}:${v.toString('hex')}`).sort();
  assert.equal(t.size, out.length, 'size counts what iteration gives');
  assert.deepEqual([...t.keys()].sort(), out.map((l) => l.split('=')[0]).sort(), 'keys() agrees');
  assert.equal([...t.values()].length, out.length, 'values() agrees');
  for (const [h, e] of t) assert.equal(t.get(h), e, `get(${h}) gives what iteration gives`);
  return out;
}

test('every version made by with() keeps its own content, and changedKeys() covers every difference', () => {
  const rng = Rng.seeded(0x4e54);
  const rnd = (n: number): number => rng.int(n);
  const first = new Map<string, Entry>();
  for (let k = 0; k < 2000; k++) first.set(hex(k), entry(k, 1));
  const versions: { table: EntryTable; want: Map<string, Entry> }[] = [
    { table: EntryTable.of(new Map(first)), want: new Map(first) },
  ];
  for (let round = 0; round < 200; round++) {
    const { table, want: before } = versions[versions.length - 1]!;
    const want = new Map(before);
    const changes = new Map<string, Entry | null>();
    // Mostly small edits, sometimes a large one (a new base), sometimes a change back to what the base holds.
    const n = rnd(10) === 0 ? 400 + rnd(400) : 1 + rnd(5);
    for (let i = 0; i < n; i++) {
      const k = rnd(3000);
      const what = rnd(3);
      const e = what === 0 ? null : what === 1 ? entry(k, 2 + rnd(5)) : (first.get(hex(k)) ?? null);
      changes.set(hex(k), e);
      if (e) want.set(hex(k), e);
      else want.delete(hex(k));
    }
    const next = table.with(changes);
    assert.deepEqual(content(next), content(want), `round ${round}: the new version holds the changes`);
    const keys = EntryTable.changedKeys(table, next);
    assert.ok(keys, `round ${round}: the new version can be compared with the one it was made from`);
    for (const h of new Set([...before.keys(), ...want.keys()]))
      if (before.get(h) !== want.get(h)) assert.ok(keys.has(h), `round ${round}: ${h} differs and is named`);
    versions.push({ table: next, want });
  }
  for (const [i, v] of versions.entries()) assert.deepEqual(content(v.table), content(v.want), `version ${i} is intact`);
  // Versions far apart (more than one base between them) are not compared by their overlays.
  const far = versions.map((v) => EntryTable.changedKeys(versions[0]!.table, v.table));
  assert.ok(
    far.some((k) => k === null),
    'a version several bases away asks for a full comparison',
  );
  assert.deepEqual(
    EntryTable.changedKeys(versions[5]!.table, versions[5]!.table),
    new Set(),
    'a version against itself: nothing',
  );
});

test('with() of nothing is the same table; a change back to the base entry leaves no overlay', () => {
  const base = new Map([[hex(1), entry(1, 1)]]);
  const original = base.get(hex(1))!;
  const t = EntryTable.of(base);
  assert.equal(t.with(new Map()), t);
  const changed = t.with(new Map([[hex(1), entry(1, 9)]]));
  const back = changed.with(new Map([[hex(1), original]]));
  assert.deepEqual(EntryTable.changedKeys(t, changed), new Set([hex(1)]), 'the key changed is named');
  assert.deepEqual(EntryTable.changedKeys(t, back), new Set(), 'changed back: nothing differs');
  assert.deepEqual(content(back), content(t));
  const removed = t.with(new Map([[hex(1), null]]));
  assert.equal(removed.size, 0);
  assert.equal(removed.get(hex(1)), undefined);
  assert.equal(removed.has(hex(1)), false);
  assert.equal(t.get(hex(1)), original, 'the version it was made from still has it');
  assert.equal(EntryTable.changedKeys(EntryTable.empty(), t), null, 'tables of different lineages are compared in full');
});
