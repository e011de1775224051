/**
 * The layout of the pinned maps, and moving off an older one.
 *
 * The maps change shape now and then (abi.h, NT_LAYOUT_VERSION): a counter map becomes
 * an array, a value gains a field. Programs of one layout cannot run on maps of another,
 * so each layout pins its maps in a directory of its own under the state directory:
 *
 *   maps/            layout 1 (its pins directly in maps/)
 *   maps/v<N>/       layout N >= 2
 *
 * An agent that finds the maps of an older layout pinned (the previous version ran here,
 * and its hooks still mark with its programs and maps) loads the current objects with
 * their maps in the current directory, fills them from the desired state, swaps the
 * programs on the hooks it finds (a pinned TCX link, an XDP program, a clsact filter: each
 * swap is atomic), and only then carries the old counters over and removes the old pins.
 * Marking never stops: until its hook is swapped, a SYN meets the old program and its
 * fully populated old maps. Datapath drives the steps; this module knows where each layout
 * lives and how to read the counters of each older one.
 */
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { LAYOUT_VERSION } from '../lib/abi.js';
import { binding } from '../native/binding.js';

/** Where the maps of layout `version` are pinned. */
export function layoutDir(stateDir: string, version = LAYOUT_VERSION): string {
  return version === 1 ? path.join(stateDir, 'maps') : path.join(stateDir, 'maps', `v${version}`);
}

/** One counter of an older layout: its pair, its index (enum nt_counter) and its per-CPU u64 values. */
export interface OldCounter {
  ifindex: number;
  policyId: number;
  counter: number;
  values: Buffer;
}

/** The pinned maps of a layout older than this agent's. */
export interface OldLayout {
  version: number;
  dir: string;
  /** every counter its maps hold */
  counters(): OldCounter[];
  /** remove its pins (not the directories of newer layouts) */
  remove(): void;
}

function files(dir: string): string[] {
  try {
    return readdirSync(dir).filter((f) => !statSync(path.join(dir, f)).isDirectory());
  } catch {
    return [];
  }
}

/**
 * Layout 1: counters in a per-CPU hash nt_stats keyed by (ifindex u32, policy u32,
 * counter u32), every pin straight in maps/.
 */
function layout1(stateDir: string): OldLayout | null {
  const dir = layoutDir(stateDir, 1);
  if (!existsSync(path.join(dir, 'nt_stats'))) return null;
  return {
    version: 1,
    dir,
    counters(): OldCounter[] {
      const out: OldCounter[] = [];
      const m = binding().mapFromPin(path.join(dir, 'nt_stats'));
      try {
        for (const key of m.keys()) {
          const values = m.lookup(key);
          if (values)
            out.push({ ifindex: key.readUInt32LE(0), policyId: key.readUInt32LE(4), counter: key.readUInt32LE(8), values });
        }
      } finally {
        m.close();
      }
      return out;
    },
    remove(): void {
      for (const f of files(dir)) rmSync(path.join(dir, f), { force: true });
    },
  };
}

/** The older layouts pinned under `stateDir`, oldest first (empty on a fresh node or after a move). */
export function olderLayouts(stateDir: string): OldLayout[] {
  return [layout1(stateDir)].filter((l): l is OldLayout => l !== null);
}
