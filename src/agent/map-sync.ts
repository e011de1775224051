/**
 * Where map entries are written. The maps are this agent's alone: what they hold is read
 * once when the data path opens (so a restart picks up what it pinned) and kept in memory
 * from then on, and only the entries that differ are written. A map is never asked what it
 * holds for a key: on an LPM trie a lookup is a longest-prefix match, which answers for a
 * nested prefix with the value of the prefix that covers it.
 */
import {
  PORT_INDEX_SIZE,
  PortIndexState,
  decodeConfig,
  decodePortIndex,
  decodePortKey,
  encodeConfig,
  withPortIndexState,
} from '../lib/abi.js';
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

/** Writes `entry` unless `have` records its value already; true when it was written. */
function writeEntry(map: NativeMap, have: Entries, hex: string, entry: [Buffer, Buffer]): boolean {
  const cur = have.get(hex);
  // Entries the agent built before are the same objects (EncodingMemo): identity first.
  if (cur === entry || (cur && (cur[1] === entry[1] || cur[1].equals(entry[1])))) return false;
  map.update(entry[0], entry[1]);
  have.set(hex, entry);
  return true;
}

/** Deletes what `have` records under `hex`; true when the map still had it. */
function deleteEntry(map: NativeMap, have: Entries, hex: string): boolean {
  const cur = have.get(hex);
  if (!cur) return false;
  have.delete(hex);
  return map.delete(cur[0]);
}

/** Writes the entries of `want` whose value differs from what `have` records; returns how many. */
export function writeChanged(map: NativeMap, have: Entries, want: ReadonlyMap<string, [Buffer, Buffer]>): number {
  let n = 0;
  for (const [hex, entry] of want) if (writeEntry(map, have, hex, entry)) n++;
  return n;
}

/** Deletes the entries `have` records and `want` does not; returns how many the map still had. */
export function deleteUnwanted(map: NativeMap, have: Entries, want: ReadonlyMap<string, [Buffer, Buffer]>): number {
  let n = 0;
  // Deleting the entry being visited is safe while a Map is iterated.
  for (const hex of have.keys()) if (!want.has(hex) && deleteEntry(map, have, hex)) n++;
  return n;
}

/**
 * The entries of nt_port_index that are not all zero, among the ports `ports` (the pinned
 * nt_ingress_ports entries) names and port 0: the only ones this agent writes other than zero,
 * and only after the port rules hold what they say (syncPortIndex), so that the index read
 * back is what the agent left. Every other entry that is not zero is set to zero ("ask the
 * hash", which is never wrong), in two writes as syncPortIndex makes them: an agent that
 * predates the index, run in between over the same pins (a rollback), changes the port rules
 * without it and may have left one stale. The whole index is read once per start for that;
 * what it allocates is garbage the memory settler collects once the start is over.
 */
export function readPortIndex(map: NativeMap, ports: Entries): Entries {
  const out: Entries = new Map();
  const named = new Set<number>([0]);
  for (const [key] of ports.values()) named.add(decodePortKey(key).port);
  const zero = Buffer.alloc(PORT_INDEX_SIZE);
  const key = Buffer.alloc(4);
  for (let port = 0; port < 65536; port++) {
    key.writeUInt32LE(port);
    const value = map.lookup(key);
    if (!value || !value.some((b) => b !== 0)) continue;
    if (named.has(port)) {
      out.set(key.toString('hex'), [Buffer.from(key), value]);
      continue;
    }
    // As syncPortIndex does: the state alone first, so that no program reads half of a write.
    map.update(key, withPortIndexState(value, PortIndexState.Hash));
    map.update(key, zero);
  }
  return out;
}

const differs = (a: [Buffer, Buffer] | undefined, b: [Buffer, Buffer] | undefined): boolean =>
  a === undefined || b === undefined ? a !== b : !a[1].equals(b[1]);

/**
 * Moves nt_port_index from `have` to `want` around the writes of nt_ingress_ports, so that a
 * program never reads an entry that answers other than the hash would at that moment:
 *  - 'before' (ahead of the nt_ingress_ports writes): every entry about to change is set to
 *    NT_PI_HASH, a write that changes nothing but the state, and the programs ask the hash;
 *  - 'after' (once the hash holds the new rules): the same first (nothing, after 'before'),
 *    then each changed entry gets its new contents still in NT_PI_HASH, then its new state,
 *    again a write of the state alone; an entry `want` lacks is zeroed.
 * No write changes the state together with anything else (abi.h, struct nt_port_index).
 * Returns how many writes it made.
 */
export function syncPortIndex(map: NativeMap, have: Entries, want: Entries, phase: 'before' | 'after'): number {
  let n = 0;
  const put = (hex: string, key: Buffer, value: Buffer): void => {
    map.update(key, value);
    have.set(hex, [key, value]);
    n++;
  };
  for (const [hex, cur] of [...have]) {
    if (!differs(cur, want.get(hex)) || decodePortIndex(cur[1]).state === PortIndexState.Hash) continue;
    put(hex, cur[0], withPortIndexState(cur[1], PortIndexState.Hash));
  }
  if (phase === 'before') return n;
  for (const [hex, entry] of want) {
    const cur = have.get(hex);
    if (!differs(cur, entry)) continue;
    const parked = withPortIndexState(entry[1], PortIndexState.Hash);
    if (!cur || !cur[1].equals(parked)) put(hex, entry[0], parked);
    if (!parked.equals(entry[1])) put(hex, entry[0], entry[1]);
  }
  for (const [hex, [key, value]] of [...have]) {
    if (want.has(hex)) continue;
    // 'before' left it in NT_PI_HASH: zeroing changes nothing the programs read.
    map.update(key, Buffer.alloc(value.length));
    have.delete(hex);
    n++;
  }
  return n;
}

/** What changed in a map's wanted entries: hex(key) -> its entry now, or null where it is gone. */
export type Changes = Map<string, [Buffer, Buffer] | null>;

/** writeChanged() for the entries `changes` sets: the others are as `have` records. */
export function writeChanges(map: NativeMap, have: Entries, changes: Changes): number {
  let n = 0;
  for (const [hex, entry] of changes) if (entry && writeEntry(map, have, hex, entry)) n++;
  return n;
}

/** deleteUnwanted() for the entries `changes` removes; returns how many the map still had. */
export function deleteRemoved(map: NativeMap, have: Entries, changes: Changes): number {
  let n = 0;
  for (const [hex, entry] of changes) if (!entry && deleteEntry(map, have, hex)) n++;
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
