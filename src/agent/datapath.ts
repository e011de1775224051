/**
 * The BPF state of this node: the loaded marker and verifier objects, their pinned maps,
 * and the hooks on interfaces. apply() moves the kernel to a DesiredState idempotently;
 * everything that must outlive the agent (maps, TCX links) is pinned under the state
 * directory, so a restart reuses it instead of re-creating it.
 *
 * Layout under the state directory (default /sys/fs/bpf/netoken):
 *   maps/v<N>/<map name>       pinned by libbpf (LIBBPF_PIN_BY_NAME), shared by both objects;
 *                              N is the maps' layout version (layout.ts: moving off an older one)
 *   links/<direction>-<ifindex> pinned TCX links
 *
 * Where things happen, by file: map entries are written in map-sync.ts, counter slots given
 * out in counters.ts, hooks attached in hooks/tc.ts (TCX links, clsact filters) and
 * hooks/xdp.ts, removed in hooks/detach.ts; the wall clock for keyed tokens is kept in
 * clock.ts, what the kernel cannot remember for us in run-state.ts.
 *
 * Each program comes in two builds, for frames that start with an Ethernet header and for
 * devices without a link-layer header; a hook runs the one its interface needs. The verifier
 * goes at native XDP only on devices a hardware driver made (where XDP sees the frame without
 * a copy), when the driver takes it; everywhere else (veth, bonds, VLANs, tunnels, a device
 * whose XDP slot another program holds) at tc. Generic XDP, which makes every received skb
 * linear, is used only when asked for (--ingress-attach xdp-generic).
 */
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { LAYOUT_VERSION, decodeConfig, encodeConfig, portIndexEntries, rulePolicyId, withCounterSlot } from '../lib/abi.js';
import type { Logger } from '../lib/log.js';
import { bpfObjectPath } from '../lib/package.js';
import { type NativeMap, type NativeObject, type NativeProgram, binding } from '../native/binding.js';
import { ensureBpffs } from './bpffs.js';
import { WallClock } from './clock.js';
import { CounterSlots, type CounterRow } from './counters.js';
import type { DesiredHook, DesiredState } from './desired.js';
import { removeStaleHooks } from './hooks/detach.js';
import type { AttachMode, HookContext, HookError, HookStatus } from './hooks/hook.js';
import { isHookLive } from './hooks/live.js';
import { type AttachPreference, TcAttacher } from './hooks/tc.js';
import { XDP_PROGRAM_NAME, ensureXdp } from './hooks/xdp.js';
import { layoutDir, olderLayouts, type OldLayout } from './layout.js';
import { EntryTable } from './entry-table.js';
import {
  type Changes,
  type Entries,
  deleteRemoved,
  deleteUnwanted,
  raiseEgressGeneration,
  readEntries,
  readPortIndex,
  syncPortIndex,
  writeChanged,
  writeChanges,
} from './map-sync.js';
import { type XdpMode, readRunState, writeRunState } from './run-state.js';

export type { CounterRow } from './counters.js';

/**
 * How long after raising the egress generation it is raised once more: longer than any
 * program run, so that no CPU that read the new generation before the tries changed can
 * keep a stale cache entry under it (bpf/lib/dest.h).
 */
const EGRESS_GENERATION_SETTLE_MS = 20;

/** How long after the hooks were swapped the counters of an older layout are read: longer than any program run. */
const LAYOUT_SWAP_SETTLE_MS = 50;

/** Block for `ms` (a moment, once per move off an older layout). */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** ingress hooks: auto = XDP native where the device suits it (see nativeXdpCandidate), else tc (as AttachPreference 'auto') */
export type IngressAttachPreference = 'auto' | XdpMode | 'tc';

/**
 * The egress tables an apply wrote, to diff the next ones against: what the tries hold is then
 * these with their counter slots, and the next apply writes only the keys that differ.
 */
interface AppliedEgress {
  egress4: EntryTable;
  egress6: EntryTable;
  /** `${ifindex}/${policyId}` -> how many of the rules count in that pair's slot */
  pairs: Map<string, number>;
  /** a rule got no counter slot (every one was taken): the next apply looks at every rule again */
  uncounted: boolean;
}

/** How a trie is brought to the desired rules: compared entry by entry, or by the keys that changed. */
type EgressSync = { all: Entries } | { changes: Changes };

export interface ApplyResult {
  hooks: HookStatus[];
  errors: HookError[];
  mapWrites: number;
  mapDeletes: number;
}

export interface DatapathOptions {
  stateDir: string;
  runDir: string;
  /** the marker object */
  objectPath: string;
  /** the verifier object; default build/bpf/verifier.bpf.o */
  verifierObjectPath?: string;
  attach: AttachPreference;
  /** default 'auto' */
  ingressAttach?: IngressAttachPreference;
  tcPriority: number;
  log: Logger;
}

export class Datapath {
  private readonly obj: NativeObject;
  private readonly prog: NativeProgram;
  /** the marker built for devices without a link-layer header */
  private readonly progL3: NativeProgram;
  private readonly clockProbe: NativeProgram;
  private readonly maps: { egress4: NativeMap; egress6: NativeMap; policies: NativeMap; clock: NativeMap; config: NativeMap };
  private readonly slots: CounterSlots;
  /** maps of older layouts still pinned: left once every hook runs this agent's programs */
  private older: OldLayout[];
  private settleTimer: NodeJS.Timeout | null = null;
  /** the verifier object, or why it did not load (then ingress hooks fail; marking is unaffected) */
  private readonly verifier:
    | {
        obj: NativeObject;
        xdp: NativeProgram;
        tc: NativeProgram;
        tcL3: NativeProgram;
        ports: NativeMap;
        portIndex: NativeMap;
        exempt4: NativeMap;
        exempt6: NativeMap;
      }
    | { error: string };
  private readonly hooks: HookContext;
  private readonly tc: TcAttacher;
  /** what each map holds: read from the pins at open, then kept up to date by apply() */
  private readonly held: {
    policies: Entries;
    egress4: Entries;
    egress6: Entries;
    ports: Entries;
    portIndex: Entries;
    exempt4: Entries;
    exempt6: Entries;
  };
  private readonly clock: WallClock;
  /** null until an apply wrote the tries (and after one failed): the next compares every rule */
  private appliedEgress: AppliedEgress | null = null;

  private constructor(private readonly opts: DatapathOptions) {
    const b = binding();
    ensureBpffs(opts.stateDir, opts.log);
    const mapsDir = layoutDir(opts.stateDir);
    mkdirSync(path.join(opts.stateDir, 'maps'), { recursive: true, mode: 0o700 });
    mkdirSync(mapsDir, { recursive: true, mode: 0o700 });
    mkdirSync(path.join(opts.stateDir, 'links'), { recursive: true, mode: 0o700 });
    this.older = olderLayouts(opts.stateDir);
    if (this.older.length > 0) {
      opts.log.info('maps of an older layout are pinned: moving to the current one once its hooks run our programs', {
        layouts: this.older.map((l) => l.version),
        layout: LAYOUT_VERSION,
      });
    }
    this.obj = openMarker(opts.objectPath, mapsDir, opts.log);
    this.prog = this.obj.program('nt_mark_egress');
    this.progL3 = this.obj.program('nt_mark_egress_l3');
    this.clockProbe = this.obj.program('nt_clock_probe');
    this.maps = {
      egress4: this.obj.map('nt_egress4'),
      egress6: this.obj.map('nt_egress6'),
      policies: this.obj.map('nt_policies'),
      clock: this.obj.map('nt_clock'),
      config: this.obj.map('nt_config'),
    };
    this.slots = CounterSlots.of(this.obj);
    // Same pin root: the verifier shares nt_policies, the counter maps and nt_clock with the marker.
    const verifierPath = opts.verifierObjectPath ?? bpfObjectPath('verifier');
    try {
      const obj = b.openObject(verifierPath, { pinRoot: mapsDir });
      this.verifier = {
        obj,
        xdp: obj.program(XDP_PROGRAM_NAME),
        tc: obj.program('nt_verify_tc'),
        tcL3: obj.program('nt_verify_tc_l3'),
        ports: obj.map('nt_ingress_ports'),
        portIndex: obj.map('nt_port_index'),
        exempt4: obj.map('nt_exempt4'),
        exempt6: obj.map('nt_exempt6'),
      };
    } catch (err) {
      // An older kernel may refuse the verifier (it needs 5.18+): marking still works.
      const e = err as Error;
      this.verifier = { error: e.message };
      opts.log.error('the ingress verifier did not load; ingress policies cannot be applied on this node', {
        object: verifierPath,
        error: e.message,
      });
    }
    const v = 'error' in this.verifier ? null : this.verifier;
    this.held = {
      policies: readEntries(this.maps.policies),
      egress4: readEntries(this.maps.egress4),
      egress6: readEntries(this.maps.egress6),
      ports: v ? readEntries(v.ports) : new Map(),
      portIndex: new Map(),
      exempt4: v ? readEntries(v.exempt4) : new Map(),
      exempt6: v ? readEntries(v.exempt6) : new Map(),
    };
    if (v) this.held.portIndex = readPortIndex(v.portIndex, this.held.ports);
    this.hooks = {
      stateDir: opts.stateDir,
      run: readRunState(opts.runDir),
      links: new Map(),
      tcPriority: opts.tcPriority,
      log: opts.log,
    };
    this.tc = new TcAttacher(this.hooks, opts.attach);
    this.clock = new WallClock(this.clockProbe, this.maps.clock, opts.log);
    this.clock.start();
  }

  static open(opts: DatapathOptions): Datapath {
    return new Datapath(opts);
  }

  /** The marker's program id. */
  get programId(): number {
    return this.prog.info.id;
  }

  /** The verifier's program ids (XDP and tc), or null when it did not load. */
  get verifierProgramIds(): { xdp: number; tc: number } | null {
    return 'error' in this.verifier ? null : { xdp: this.verifier.xdp.info.id, tc: this.verifier.tc.info.id };
  }

  /** Slot ids assigned in an earlier run (kept stable across restarts). */
  previousIds(): Map<string, number> {
    return new Map(Object.entries(this.hooks.run.ids));
  }

  /** Measure the kernel's clocks against the wall clock and write nt_clock when it moved. */
  syncClock(): void {
    this.clock.sync();
  }

  apply(desired: DesiredState): ApplyResult {
    const result: ApplyResult = { hooks: [], errors: [], mapWrites: 0, mapDeletes: 0 };
    const zero = Buffer.alloc(this.maps.policies.info.valueSize);
    // 0. the clock before any keyed slot, so a keyed SYN is never counted as having no clock
    this.syncClock();
    const held = this.held;
    const sync = (map: NativeMap, have: Entries, want: Entries, phase: 'write' | 'delete'): void => {
      if (phase === 'write') result.mapWrites += writeChanged(map, have, want);
      else result.mapDeletes += deleteUnwanted(map, have, want);
    };
    // 1. policy slots first, so a rule never points at an empty or stale slot
    const slots: Entries = new Map();
    for (const [id, value] of desired.policySlots) {
      const key = u32(id);
      slots.set(key.toString('hex'), [key, value]);
    }
    sync(this.maps.policies, held.policies, slots, 'write');
    // 2. counter slots, before the rules that count in them
    const last = this.appliedEgress;
    this.appliedEgress = null;
    const counted = this.countInSlots(desired, last);
    // 3. destination rules; the marker's destination caches ask the tries again
    for (const [map, have, want] of [
      [this.maps.egress4, held.egress4, counted.egress4],
      [this.maps.egress6, held.egress6, counted.egress6],
    ] as const) {
      if ('all' in want) {
        sync(map, have, want.all, 'write');
        sync(map, have, want.all, 'delete');
      } else {
        result.mapWrites += writeChanges(map, have, want.changes);
        result.mapDeletes += deleteRemoved(map, have, want.changes);
      }
    }
    const applied: AppliedEgress = {
      egress4: desired.egress4,
      egress6: desired.egress6,
      pairs: counted.egressPairs,
      uncounted: counted.egressUncounted,
    };
    this.raiseEgressGeneration();
    // 4. ingress: exemptions are in place before a port is enforced, and go only after it is not;
    // the port index sends the programs to the port rules while these change, and then says
    // what they hold
    if (!('error' in this.verifier)) {
      const v = this.verifier;
      const index = portIndexEntries(counted.ingressPorts.values());
      result.mapWrites += syncPortIndex(v.portIndex, held.portIndex, index, 'before');
      sync(v.exempt4, held.exempt4, desired.exempt4, 'write');
      sync(v.exempt6, held.exempt6, desired.exempt6, 'write');
      sync(v.ports, held.ports, counted.ingressPorts, 'write');
      sync(v.ports, held.ports, counted.ingressPorts, 'delete');
      sync(v.exempt4, held.exempt4, desired.exempt4, 'delete');
      sync(v.exempt6, held.exempt6, desired.exempt6, 'delete');
      result.mapWrites += syncPortIndex(v.portIndex, held.portIndex, index, 'after');
    }
    // 5. slots no longer used (an array cannot delete: they are zeroed), now that no rule points at them
    for (const [hex, [key, value]] of held.policies) {
      if (slots.has(hex) || value.equals(zero)) continue;
      this.maps.policies.update(key, zero);
      held.policies.set(hex, [key, zero]);
      result.mapWrites++;
    }
    // ... and counter slots of pairs no rule and no hook has any more
    if (this.slots.retain((ifindex, policyId) => counted.pairs.has(`${ifindex}/${policyId}`)) > 0) this.raiseEgressGeneration();
    // 6. hooks; what each one ended up as decides which older hooks of ours go
    const realized = new Map<string, AttachMode | 'failed'>();
    for (const [key, hook] of desired.hooks) {
      try {
        const st =
          hook.direction === 'egress'
            ? this.tc.ensure(hook, hook.layer === 'none' ? this.progL3 : this.prog)
            : this.ensureIngressHook(hook);
        result.hooks.push(st);
        realized.set(key, st.mode);
      } catch (err) {
        const e = err as Error;
        this.opts.log.error('attach failed', { interface: hook.name, direction: hook.direction, error: e.message });
        result.errors.push({
          ifindex: hook.ifindex,
          name: hook.name,
          direction: hook.direction,
          reason: 'AttachFailed',
          message: e.message,
        });
        // Keep whatever of ours is there: an old hook is better than none.
        realized.set(key, 'failed');
      }
    }
    // Interfaces the programs cannot read get no hook (an older one of ours goes too): reported.
    for (const r of desired.refused.values()) result.errors.push({ ...r });
    removeStaleHooks(this.hooks, realized);
    // 7. every hook runs this agent's programs now: the maps of an older layout can go
    this.leaveOlderLayouts(realized);
    this.hooks.run.ids = Object.fromEntries(desired.ids);
    writeRunState(this.opts.runDir, this.hooks.run);
    this.appliedEgress = applied;
    return result;
  }

  /**
   * Give every (interface, policy) pair of the desired rules, and every hooked interface, a
   * counter slot, and return the rules with their slots in them, and the pairs. Where the
   * egress tables were made from the ones applied last, only the rules that changed are
   * looked at: the others hold the slots they were written with, which their pairs keep.
   */
  private countInSlots(
    desired: DesiredState,
    last: AppliedEgress | null,
  ): {
    egress4: EgressSync;
    egress6: EgressSync;
    ingressPorts: Entries;
    pairs: Set<string>;
    egressPairs: Map<string, number>;
    egressUncounted: boolean;
  } {
    let uncounted = 0;
    const slotted = (key: Buffer, value: Buffer, ifindex: number, pairs: Map<string, number>): [Buffer, Buffer] => {
      const policyId = rulePolicyId(value);
      const slot = this.slots.slot(ifindex, policyId);
      if (slot === 0) uncounted++;
      const pair = `${ifindex}/${policyId}`;
      pairs.set(pair, (pairs.get(pair) ?? 0) + 1);
      return [key, withCounterSlot(value, slot)];
    };
    const all = (
      entries: ReadonlyMap<string, [Buffer, Buffer]>,
      ifindexOf: (key: Buffer) => number,
      pairs: Map<string, number>,
    ): Entries => {
      const out: Entries = new Map();
      for (const [hex, [key, value]] of entries) out.set(hex, slotted(key, value, ifindexOf(key), pairs));
      return out;
    };
    // The tries' keys hold the ifindex big-endian after the prefix length; port keys little-endian first.
    const trieIfindex = (k: Buffer): number => k.readUInt32BE(4);
    const changed = (family: 'egress4' | 'egress6'): Set<string> | null =>
      last && !last.uncounted ? EntryTable.changedKeys(last[family], desired[family]) : null;
    const keys4 = changed('egress4');
    const keys6 = changed('egress6');
    const since = keys4 && keys6 ? last : null;
    const egressPairs = since ? new Map(since.pairs) : new Map<string, number>();
    const egress = (family: 'egress4' | 'egress6', keys: Set<string> | null): EgressSync => {
      const want = desired[family];
      if (!since || !keys) return { all: all(want, trieIfindex, egressPairs) };
      const changes: Changes = new Map();
      for (const hex of keys) {
        const before = since[family].get(hex);
        const now = want.get(hex);
        if (before === now) continue;
        if (before) {
          const pair = `${trieIfindex(before[0])}/${rulePolicyId(before[1])}`;
          egressPairs.set(pair, (egressPairs.get(pair) ?? 0) - 1);
        }
        changes.set(hex, now ? slotted(now[0], now[1], trieIfindex(now[0]), egressPairs) : null);
      }
      return { changes };
    };
    const egress4 = egress('egress4', keys4);
    const egress6 = egress('egress6', keys6);
    const egressUncounted = uncounted > 0;
    const pairs = new Set<string>();
    for (const [pair, n] of egressPairs) {
      if (n <= 0) {
        egressPairs.delete(pair);
        continue;
      }
      pairs.add(pair).add(`${pair.slice(0, pair.indexOf('/'))}/0`);
    }
    const portPairs = new Map<string, number>();
    const ingressPorts = all(desired.ingressPorts, (k) => k.readUInt32LE(0), portPairs);
    for (const pair of portPairs.keys()) pairs.add(pair).add(`${pair.slice(0, pair.indexOf('/'))}/0`);
    for (const hook of desired.hooks.values()) {
      if (this.slots.slot(hook.ifindex, 0) === 0) uncounted++;
      pairs.add(`${hook.ifindex}/0`);
    }
    if (uncounted > 0) {
      this.opts.log.warn('every counter slot is taken: some interface and policy pairs are not counted', {
        uncounted,
        slots: this.slots.size,
      });
    }
    return { egress4, egress6, ingressPorts, pairs, egressPairs, egressUncounted };
  }

  /** Raise the egress generation now, and once more when every CPU has surely seen it (see EGRESS_GENERATION_SETTLE_MS). */
  private raiseEgressGeneration(): void {
    raiseEgressGeneration(this.maps.config);
    if (this.settleTimer) return;
    this.settleTimer = setTimeout(() => {
      this.settleTimer = null;
      raiseEgressGeneration(this.maps.config);
    }, EGRESS_GENERATION_SETTLE_MS);
    this.settleTimer.unref();
  }

  /**
   * Once every hook runs this agent's programs, carry the counters of the older layouts
   * over (once: nt_config records it) and remove their pins. While a hook could not be
   * swapped, its old program still uses them: they stay, and the next apply tries again.
   */
  private leaveOlderLayouts(realized: ReadonlyMap<string, AttachMode | 'failed'>): void {
    if (this.older.length === 0) return;
    if ([...realized.values()].includes('failed')) {
      this.opts.log.warn('a hook still runs the programs of an older map layout: its maps stay until it can be swapped', {
        layouts: this.older.map((l) => l.version),
      });
      return;
    }
    // A packet that met an old program just before its hook was swapped may still be counting.
    sleepSync(LAYOUT_SWAP_SETTLE_MS);
    const key = u32(0);
    for (const old of this.older) {
      const config = decodeConfig(this.maps.config.lookup(key) ?? Buffer.alloc(this.maps.config.info.valueSize));
      let carried = 0;
      let dropped = 0;
      if (config.carriedLayout !== old.version) {
        for (const c of old.counters()) {
          if (this.slots.carry(c.ifindex, c.policyId, c.counter, c.values)) carried++;
          else dropped++;
        }
        const now = decodeConfig(this.maps.config.lookup(key) ?? Buffer.alloc(this.maps.config.info.valueSize));
        this.maps.config.update(key, encodeConfig({ ...now, carriedLayout: old.version }));
      }
      old.remove();
      this.opts.log.info('moved off an older map layout', {
        from: old.version,
        to: LAYOUT_VERSION,
        countersCarried: carried,
        countersDropped: dropped,
      });
    }
    this.older = [];
  }

  /** The verifier on an interface: native XDP where the device suits it (auto) or where asked for, else tc. */
  private ensureIngressHook(hook: DesiredHook): HookStatus {
    if ('error' in this.verifier) throw new Error(`the ingress verifier did not load on this node: ${this.verifier.error}`);
    const v = this.verifier;
    const pref = this.opts.ingressAttach ?? 'auto';
    if (pref === 'xdp-native' || pref === 'xdp-generic') {
      if (hook.layer !== 'ethernet')
        throw new Error(`${hook.name} has no Ethernet header, which the verifier at XDP reads; use --ingress-attach auto or tc`);
      return ensureXdp(this.hooks, hook, v.xdp, [pref]);
    }
    if (pref === 'auto' && hook.xdpNative) {
      try {
        return ensureXdp(this.hooks, hook, v.xdp, ['xdp-native']);
      } catch (err) {
        this.opts.log.info('native XDP not possible here, verifying at tc ingress', {
          interface: hook.name,
          error: (err as Error).message,
        });
      }
    }
    return this.tc.ensure(hook, hook.layer === 'none' ? v.tcL3 : v.tc);
  }

  counters(): CounterRow[] {
    return this.slots.rows();
  }

  /** The layout of the maps this data path uses, and the older ones still pinned. */
  get layout(): { version: number; older: number[] } {
    return { version: LAYOUT_VERSION, older: this.older.map((l) => l.version) };
  }

  /** Is a hook that apply() reported still in the kernel, running its program? (For metrics.) */
  isLive(h: HookStatus): boolean {
    return isHookLive(h, this.opts.stateDir, this.opts.tcPriority);
  }

  /** Release our fds; pinned maps and links, and XDP programs (the hooks), stay in the kernel. */
  close(): void {
    this.clock.stop();
    if (this.settleTimer) {
      clearTimeout(this.settleTimer);
      this.settleTimer = null;
      raiseEgressGeneration(this.maps.config);
    }
    this.slots.close();
    for (const l of this.hooks.links.values()) l.close();
    this.hooks.links.clear();
    for (const m of Object.values(this.maps)) m.close();
    this.prog.close();
    this.progL3.close();
    this.clockProbe.close();
    this.obj.close();
    if (!('error' in this.verifier)) {
      const v = this.verifier;
      for (const h of [v.ports, v.portIndex, v.exempt4, v.exempt6, v.xdp, v.tc, v.tcL3]) h.close();
      v.obj.close();
    }
  }
}

/**
 * The marker object, or, where the kernel refuses it, its build for kernels before 6.2
 * (`<name>_compat.bpf.o` beside it, without bpf_cast_to_kern_ctx(): bpf/lib/kskb.h).
 */
function openMarker(objectPath: string, pinRoot: string, log: Logger): NativeObject {
  const b = binding();
  try {
    return b.openObject(objectPath, { pinRoot });
  } catch (err) {
    const compat = objectPath.replace(/\.bpf\.o$/, '_compat.bpf.o');
    if (compat === objectPath || !existsSync(compat)) throw err;
    const obj = b.openObject(compat, { pinRoot });
    log.info('the kernel refused the marker; loaded its build for kernels before 6.2 (checksum state and MTU through helpers)', {
      object: compat,
      error: (err as Error).message,
    });
    return obj;
  }
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}
