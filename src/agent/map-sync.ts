/**
 * Where map entries are written. The maps are this agent's alone: what they hold is read
 * once when the data path opens (so a restart picks up what it pinned) and kept in memory
 * from then on, and only the entries that differ are written. A map is never asked what it
 * holds for a key: on an LPM trie a lookup is a longest-prefix match, which answers for a
 * nested prefix with the value of the prefix that covers it.
 */
import { decodeConfig, encodeConfig } from '../lib/abi.js';
import type { NativeMap } from '../native/binding.js';

/** hex(key) -> [key, value]: what one map holds (its desired-state form, see DesiredState). */
export type Entries = Map<string, [Buffer, Buffer]>;

/**
 * Every entry of a map, read once. The lookup of a key the map has returns that key's own value,
 * also on an LPM trie (the longest prefix matching a key is the key itself).
 */
export function readEntries(map: NativeMap): Entries {
  const out: Entries = new Map();
  for (const key of map.keys()) {
    const value = map.lookup(key);
    if (value) out.set(key.toString('hex'), [key, value]);
  }
  return out;
}

/** Writes the entries of `want` whose value differs from what `have` records; returns how many. */
export function writeChanged(map: NativeMap, have: Entries, want: ReadonlyMap<string, [Buffer, Buffer]>): number {
  let n = 0;
  for (const [hex, entry] of want) {
    const cur = have.get(hex);
    // Entries the agent built before are the same objects (EncodingMemo): identity first.
    if (cur === entry || (cur && (cur[1] === entry[1] || cur[1].equals(entry[1])))) continue;
    map.update(entry[0], entry[1]);
    have.set(hex, entry);
    n++;
  }
  return n;
}

/** Deletes the entries `have` records and `want` does not; returns how many the map still had. */
export function deleteUnwanted(map: NativeMap, have: Entries, want: ReadonlyMap<string, [Buffer, Buffer]>): number {
  let n = 0;
  for (const [hex, [key]] of have) {
    if (want.has(hex)) continue;
    if (map.delete(key)) n++;
    have.delete(hex);
  }
  return n;
}

/** What changed in a map's wanted entries: hex(key) -> its entry now, or null where it is gone. */
export type Changes = Map<string, [Buffer, Buffer] | null>;

/** writeChanged() for the entries `changes` sets: the others are as `have` records. */
export function writeChanges(map: NativeMap, have: Entries, changes: Changes): number {
  let n = 0;
  for (const [hex, entry] of changes) {
    if (!entry) continue;
    const cur = have.get(hex);
    if (cur && (cur[1] === entry[1] || cur[1].equals(entry[1]))) continue;
    map.update(entry[0], entry[1]);
    have.set(hex, entry);
    n++;
  }
  return n;
}

/** deleteUnwanted() for the entries `changes` removes; returns how many the map still had. */
export function deleteRemoved(map: NativeMap, have: Entries, changes: Changes): number {
  let n = 0;
  for (const [hex, entry] of changes) {
    if (entry) continue;
    const cur = have.get(hex);
    if (!cur) continue;
    if (map.delete(cur[0])) n++;
    have.delete(hex);
  }
  return n;
}

const ZERO_KEY = Buffer.alloc(4);

/**
 * Raise nt_config.egress_gen after the egress tries or nt_ifaces changed: the marker's
 * per-CPU destination caches (bpf/lib/dest.h) then ask the tries again. Never 0, which
 * would turn the caches off. Returns the new generation.
 */
export function raiseEgressGeneration(config: NativeMap): number {
  const cur = config.lookup(ZERO_KEY);
  const c = cur ? decodeConfig(cur) : { egressGeneration: 0, carriedLayout: 0 };
  const next = (c.egressGeneration + 1) >>> 0 || 1;
  config.update(ZERO_KEY, encodeConfig({ ...c, egressGeneration: next }));
  return next;
}
