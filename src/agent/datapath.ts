/**
 * The BPF state of this node: the loaded marker and verifier objects, their pinned
 * maps, the wall clock for keyed tokens, and the hooks on interfaces. apply() moves the
 * kernel to a DesiredState idempotently; everything that must outlive the agent (maps,
 * TCX links) is pinned under the state directory, so a restart reuses it instead of
 * re-creating it.
 *
 * The maps are this agent's alone: what they hold is read once when the Datapath opens (so a
 * restart picks up what it pinned) and kept in memory from then on, and apply() writes only
 * the entries that differ. A reconcile that changes nothing makes no map syscall for them, and
 * a map is never asked what it holds for a key: on an LPM trie a lookup is a longest-prefix
 * match, which answers for a nested prefix with the value of the prefix that covers it.
 *
 * Layout under the state directory (default /sys/fs/bpf/netoken):
 *   maps/<map name>            pinned by libbpf (LIBBPF_PIN_BY_NAME), shared by both objects
 *   links/<direction>-<ifindex> pinned TCX links
 * Legacy tc filters (fallback when the kernel has no TCX) live in the interface's
 * clsact qdisc; which qdiscs we created is recorded in the run directory.
 *
 * Ingress hooks prefer XDP: native where the driver has it, else generic, else tc
 * (TCX or clsact), e.g. when another XDP program already holds the interface (we never
 * replace one that is not ours). An XDP program attached over netlink stays on its
 * device without a pin; the run directory records where we put one, and its program
 * name tells ours from anyone else's.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, rmdirSync, unlinkSync } from 'node:fs';
import { writeFileAtomic } from '../lib/files.js';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { endianness } from 'node:os';
import { COUNTERS, type CounterName, decodeClock, decodeStatKey, encodeClock, sumPerCpu } from '../lib/abi.js';
import type { Logger } from '../lib/log.js';
import { XdpAttached, XdpFlags } from '../native/bpf.js';
import { type NativeLink, type NativeMap, type NativeObject, type NativeProgram, binding } from '../native/binding.js';
import type { DesiredHook, DesiredState, Direction } from './desired.js';

export type XdpMode = 'xdp-native' | 'xdp-generic';
export type AttachMode = 'tcx' | 'tc' | XdpMode;
/** egress hooks (and ingress hooks that use tc): TCX, else clsact */
export type AttachPreference = 'auto' | 'tcx' | 'tc';
/** ingress hooks: auto = XDP native, else XDP generic, else tc (as AttachPreference 'auto') */
export type IngressAttachPreference = 'auto' | XdpMode | 'tc';

/** The verifier's XDP program as the kernel names it: how we tell ours from anyone else's. */
export const XDP_PROGRAM_NAME = 'nt_verify_xdp';

/** How often the clocks are measured again between reconciles (the TAI offset changes only at leap seconds; the boottime one at clock steps). */
const CLOCK_SYNC_MS = 60_000;

/** tc filter identity of ours in a clsact qdisc ("NT"). */
export const TC_HANDLE = 0x4e54;

export const DEFAULT_STATE_DIR = '/sys/fs/bpf/netoken';
export const DEFAULT_RUN_DIR = '/run/netoken';

export function defaultObjectPath(name = 'marker'): string {
  return fileURLToPath(new URL(`../../../build/bpf/${name}.bpf.o`, import.meta.url));
}

export interface HookStatus {
  ifindex: number;
  name: string;
  direction: Direction;
  mode: AttachMode;
  progId: number;
  linkId?: number;
  policies: string[];
}

export interface HookError {
  ifindex: number;
  name: string;
  direction: Direction;
  reason: 'AttachFailed';
  message: string;
}

type TcRecord = { name: string; createdQdisc: boolean };

/** hex(key) -> [key, value]: what one map holds (its desired-state form, see DesiredState). */
type Entries = Map<string, [Buffer, Buffer]>;

export interface ApplyResult {
  hooks: HookStatus[];
  errors: HookError[];
  mapWrites: number;
  mapDeletes: number;
}

export interface CounterRow {
  ifindex: number;
  policyId: number;
  counter: CounterName | `counter_${number}`;
  value: bigint;
}

/** Persistent facts the kernel cannot hold for us. */
interface RunState {
  /** policy name -> slot id */
  ids: Record<string, number>;
  /** `${ifindex}` -> legacy tc filter we attached at egress, and whether we created its clsact qdisc */
  tc: Record<string, TcRecord>;
  /** the same at ingress (the verifier, when XDP is not used) */
  tcIngress: Record<string, TcRecord>;
  /** `${ifindex}` -> the verifier's XDP program we attached, and in which mode */
  xdp: Record<string, { name: string; mode: XdpMode }>;
}

const EMPTY_RUN_STATE: RunState = { ids: {}, tc: {}, tcIngress: {}, xdp: {} };

export function readRunState(runDir: string): RunState {
  const file = path.join(runDir, 'state.json');
  if (!existsSync(file)) return structuredClone(EMPTY_RUN_STATE);
  try {
    return { ...structuredClone(EMPTY_RUN_STATE), ...(JSON.parse(readFileSync(file, 'utf8')) as Partial<RunState>) };
  } catch {
    return structuredClone(EMPTY_RUN_STATE);
  }
}

function writeRunState(runDir: string, s: RunState): void {
  mkdirSync(runDir, { recursive: true, mode: 0o700 });
  const file = path.join(runDir, 'state.json');
  writeFileAtomic(file, JSON.stringify(s, null, 2), 0o600);
}

/** Mount bpffs at dir's mount point if nothing (or something else) is mounted there, as Cilium does. */
export function ensureBpffs(stateDir: string, log: Logger): void {
  const b = binding();
  // The state directory lives inside a bpffs; mount one at its parent when missing.
  const root = path.dirname(stateDir);
  mkdirSync(root, { recursive: true });
  if (!b.isBpffs(root)) {
    log.info('mounting bpffs', { path: root });
    b.mountBpffs(root);
  }
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
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

export interface ClockReading {
  /** CLOCK_TAI - CLOCK_REALTIME, whole seconds, in ns (0 when the kernel has no CLOCK_TAI helper) */
  taiOffsetNs: bigint;
  /** CLOCK_REALTIME - CLOCK_BOOTTIME in ns, to the millisecond */
  bootOffsetNs: bigint;
  /** the kernel has bpf_ktime_get_tai_ns (6.1+): the BPF side uses taiOffsetNs */
  hasTai: boolean;
}

/**
 * Read the kernel's clocks through the marker's nt_clock_probe and relate them to this
 * process's wall clock: what nt_clock needs (encodeClock). TAI and REALTIME differ by whole
 * seconds, so a millisecond-accurate reading of both gives the TAI offset exactly.
 */
export function measureClock(probe: NativeProgram, now: () => number = Date.now): ClockReading {
  const frame = Buffer.alloc(64);
  const t0 = now();
  const r = probe.testRun({ data: frame });
  const t1 = now();
  if (r.retval !== 2) throw new Error(`the clock probe returned ${r.retval}, want XDP_PASS (2)`);
  const read = (off: number): bigint => (endianness() === 'LE' ? r.data.readBigUInt64LE(off) : r.data.readBigUInt64BE(off));
  const realtimeNs = BigInt(Math.round(((t0 + t1) / 2) * 1000)) * 1000n;
  const hasTai = read(16) !== 0n;
  const taiSeconds = hasTai ? Math.round(Number(read(0) - realtimeNs) / 1e9) : 0;
  return { taiOffsetNs: BigInt(taiSeconds) * 1_000_000_000n, bootOffsetNs: realtimeNs - read(8), hasTai };
}

export class Datapath {
  private readonly obj: NativeObject;
  private readonly prog: NativeProgram;
  private readonly clockProbe: NativeProgram;
  private readonly maps: { egress4: NativeMap; egress6: NativeMap; policies: NativeMap; stats: NativeMap; clock: NativeMap };
  /** the verifier object, or why it did not load (then ingress hooks fail; marking is unaffected) */
  private readonly verifier:
    | { obj: NativeObject; xdp: NativeProgram; tc: NativeProgram; ports: NativeMap; exempt4: NativeMap; exempt6: NativeMap }
    | { error: string };
  private readonly links = new Map<string, NativeLink>();
  /** what each map holds: read from the pins at open, then kept up to date by apply() */
  private readonly held: { policies: Entries; egress4: Entries; egress6: Entries; ports: Entries; exempt4: Entries; exempt6: Entries };
  private run: RunState;
  private tcxUsable: boolean | undefined;
  private clockTimer: NodeJS.Timeout | null = null;
  private clock: ClockReading | undefined;

  private constructor(private readonly opts: DatapathOptions) {
    const b = binding();
    ensureBpffs(opts.stateDir, opts.log);
    const mapsDir = path.join(opts.stateDir, 'maps');
    mkdirSync(mapsDir, { recursive: true, mode: 0o700 });
    mkdirSync(path.join(opts.stateDir, 'links'), { recursive: true, mode: 0o700 });
    this.obj = b.openObject(opts.objectPath, { pinRoot: mapsDir });
    this.prog = this.obj.program('nt_mark_egress');
    this.clockProbe = this.obj.program('nt_clock_probe');
    this.maps = {
      egress4: this.obj.map('nt_egress4'),
      egress6: this.obj.map('nt_egress6'),
      policies: this.obj.map('nt_policies'),
      stats: this.obj.map('nt_stats'),
      clock: this.obj.map('nt_clock'),
    };
    // Same pin root: the verifier shares nt_policies, nt_stats and nt_clock with the marker.
    const verifierPath = opts.verifierObjectPath ?? defaultObjectPath('verifier');
    try {
      const obj = b.openObject(verifierPath, { pinRoot: mapsDir });
      this.verifier = {
        obj, xdp: obj.program(XDP_PROGRAM_NAME), tc: obj.program('nt_verify_tc'),
        ports: obj.map('nt_ingress_ports'), exempt4: obj.map('nt_exempt4'), exempt6: obj.map('nt_exempt6'),
      };
    } catch (err) {
      // An older kernel may refuse the verifier (it needs 5.18+): marking still works.
      const e = err as Error;
      this.verifier = { error: e.message };
      opts.log.error('the ingress verifier did not load; ingress policies cannot be applied on this node', { object: verifierPath, error: e.message });
    }
    const v = 'error' in this.verifier ? null : this.verifier;
    this.held = {
      policies: readEntries(this.maps.policies),
      egress4: readEntries(this.maps.egress4),
      egress6: readEntries(this.maps.egress6),
      ports: v ? readEntries(v.ports) : new Map(),
      exempt4: v ? readEntries(v.exempt4) : new Map(),
      exempt6: v ? readEntries(v.exempt6) : new Map(),
    };
    this.run = readRunState(opts.runDir);
    this.syncClock();
    this.clockTimer = setInterval(() => {
      try {
        this.syncClock();
      } catch (err) {
        this.opts.log.warn('measuring the wall clock failed', { error: (err as Error).message });
      }
    }, CLOCK_SYNC_MS);
    this.clockTimer.unref();
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
    return new Map(Object.entries(this.run.ids));
  }

  /** Measure the kernel's clocks against the wall clock and write nt_clock when it moved. */
  syncClock(): void {
    const r = measureClock(this.clockProbe);
    const cur = this.maps.clock.lookup(u32(0));
    const old = cur ? decodeClock(cur) : undefined;
    // The boot offset is read to the millisecond: rewrite it only when it moved (a clock step).
    const moved = !old?.valid || old.taiOffsetNs !== r.taiOffsetNs || absBig(old.bootOffsetNs - r.bootOffsetNs) > 50_000_000n;
    if (moved) this.maps.clock.update(u32(0), encodeClock(r.taiOffsetNs, r.bootOffsetNs));
    if (!this.clock || this.clock.taiOffsetNs !== r.taiOffsetNs || this.clock.hasTai !== r.hasTai || moved) {
      this.opts.log.info('wall clock for keyed tokens', r.hasTai
        ? { clock: 'tai', taiMinusUtcSeconds: Number(r.taiOffsetNs / 1_000_000_000n) }
        : { clock: 'boottime', note: 'the kernel has no CLOCK_TAI helper (6.1+): a clock step is followed at the next measurement' });
    }
    this.clock = r;
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
    // 2. destination rules
    for (const [map, have, want] of [[this.maps.egress4, held.egress4, desired.egress4], [this.maps.egress6, held.egress6, desired.egress6]] as const) {
      sync(map, have, want, 'write');
      sync(map, have, want, 'delete');
    }
    // 3. ingress: exemptions are in place before a port is enforced, and go only after it is not
    if (!('error' in this.verifier)) {
      const v = this.verifier;
      sync(v.exempt4, held.exempt4, desired.exempt4, 'write');
      sync(v.exempt6, held.exempt6, desired.exempt6, 'write');
      sync(v.ports, held.ports, desired.ingressPorts, 'write');
      sync(v.ports, held.ports, desired.ingressPorts, 'delete');
      sync(v.exempt4, held.exempt4, desired.exempt4, 'delete');
      sync(v.exempt6, held.exempt6, desired.exempt6, 'delete');
    }
    // 4. slots no longer used (an array cannot delete: they are zeroed), now that no rule points at them
    for (const [hex, [key, value]] of held.policies) {
      if (slots.has(hex) || value.equals(zero)) continue;
      this.maps.policies.update(key, zero);
      held.policies.set(hex, [key, zero]);
      result.mapWrites++;
    }
    // 5. hooks; what each one ended up as decides which older hooks of ours go
    const realized = new Map<string, AttachMode | 'failed'>();
    for (const [key, hook] of desired.hooks) {
      try {
        const st = hook.direction === 'egress' ? this.ensureTcHook(hook, this.prog) : this.ensureIngressHook(hook);
        result.hooks.push(st);
        realized.set(key, st.mode);
      } catch (err) {
        const e = err as Error;
        this.opts.log.error('attach failed', { interface: hook.name, direction: hook.direction, error: e.message });
        result.errors.push({ ifindex: hook.ifindex, name: hook.name, direction: hook.direction, reason: 'AttachFailed', message: e.message });
        // Keep whatever of ours is there: an old hook is better than none.
        realized.set(key, 'failed');
      }
    }
    this.removeStaleHooks(realized);
    // 6. counters of policies and interfaces that are gone
    const ids = new Set(desired.ids.values());
    const hooked = new Set([...desired.hooks.values()].map((h) => h.ifindex));
    for (const key of this.maps.stats.keys()) {
      const k = decodeStatKey(key);
      if ((k.policyId !== 0 && !ids.has(k.policyId)) || !hooked.has(k.ifindex)) this.maps.stats.delete(key);
    }
    this.run.ids = Object.fromEntries(desired.ids);
    writeRunState(this.opts.runDir, this.run);
    return result;
  }

  private linkPin(hook: { ifindex: number; direction: Direction }): string {
    return path.join(this.opts.stateDir, 'links', `${hook.direction}-${hook.ifindex}`);
  }

  private tcRecords(direction: Direction): Record<string, TcRecord> {
    return direction === 'egress' ? this.run.tc : this.run.tcIngress;
  }

  /** A TCX link (pinned), or a clsact filter where the kernel has no TCX, running `prog`. */
  private ensureTcHook(hook: DesiredHook, prog: NativeProgram): HookStatus {
    const key = `${hook.ifindex}/${hook.direction}`;
    const pin = this.linkPin(hook);
    const b = binding();
    // A pinned TCX link from an earlier run: reuse it, swapping in this program atomically.
    if (existsSync(pin)) {
      const link = this.links.get(key) ?? b.linkFromPin(pin);
      const info = link.info();
      if (info.ifindex === hook.ifindex) {
        if (info.progId !== prog.info.id) {
          link.update(prog);
          this.opts.log.info('hook reused, program replaced', { interface: hook.name, direction: hook.direction, linkId: info.id });
        }
        this.links.set(key, link);
        return { ...hookBase(hook), mode: 'tcx', progId: prog.info.id, linkId: info.id };
      }
      // The interface it was made for is gone (the link is defunct): forget it.
      link.close();
      this.links.delete(key);
      unlinkSync(pin);
    }
    if (this.opts.attach !== 'tc' && this.tcxUsable !== false) {
      try {
        const link = b.createTcxLink(prog, hook.ifindex, hook.direction);
        link.pin(pin);
        this.links.set(key, link);
        this.tcxUsable = true;
        const info = link.info();
        this.opts.log.info('hook attached', { interface: hook.name, direction: hook.direction, mode: 'tcx', linkId: info.id });
        return { ...hookBase(hook), mode: 'tcx', progId: prog.info.id, linkId: info.id };
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (this.opts.attach === 'tcx' || (code !== 'EINVAL' && code !== 'ENOTSUPP' && code !== 'EOPNOTSUPP')) throw err;
        this.tcxUsable = false;
        this.opts.log.warn('kernel has no TCX, falling back to a clsact filter', { interface: hook.name });
      }
    }
    const spec = { ifindex: hook.ifindex, direction: hook.direction, handle: TC_HANDLE, priority: this.opts.tcPriority };
    const ifx = String(hook.ifindex);
    const records = this.tcRecords(hook.direction);
    const existing = b.tcQuery(spec);
    let created = records[ifx]?.createdQdisc ?? false;
    if (existing === null) created = b.tcHookCreate(hook.ifindex).created || created;
    if (existing !== prog.info.id) {
      b.tcAttach({ ...spec, progFd: prog.fd, replace: true });
      this.opts.log.info('hook attached', { interface: hook.name, direction: hook.direction, mode: 'tc', createdQdisc: created });
    }
    records[ifx] = { name: hook.name, createdQdisc: created };
    return { ...hookBase(hook), mode: 'tc', progId: prog.info.id };
  }

  /** The verifier on an interface: XDP as the preference allows, else tc. */
  private ensureIngressHook(hook: DesiredHook): HookStatus {
    if ('error' in this.verifier) throw new Error(`the ingress verifier did not load on this node: ${this.verifier.error}`);
    const pref = this.opts.ingressAttach ?? 'auto';
    if (pref !== 'tc') {
      const modes: XdpMode[] = pref === 'auto' ? ['xdp-native', 'xdp-generic'] : [pref];
      try {
        return this.ensureXdp(hook, this.verifier.xdp, modes);
      } catch (err) {
        if (pref !== 'auto') throw err;
        this.opts.log.warn('XDP not possible here, verifying at tc ingress', { interface: hook.name, error: (err as Error).message });
      }
    }
    return this.ensureTcHook(hook, this.verifier.tc);
  }

  private ensureXdp(hook: DesiredHook, prog: NativeProgram, modes: XdpMode[]): HookStatus {
    const b = binding();
    const ifx = String(hook.ifindex);
    const q = b.xdpQuery(hook.ifindex);
    if (q.progId !== 0) {
      if (!isOurXdp(q.progId)) {
        throw xdpBusy(hook.name, q.progId);
      }
      const cur = xdpModeOf(q.attachMode);
      if (cur && modes.includes(cur)) {
        if (q.progId !== prog.info.id) {
          // Same mode, no UPDATE_IF_NOEXIST: the kernel swaps the program atomically.
          b.xdpAttach(hook.ifindex, prog.fd, xdpFlags(cur));
          this.opts.log.info('hook reused, program replaced', { interface: hook.name, direction: 'ingress', mode: cur });
        }
        this.run.xdp[ifx] = { name: hook.name, mode: cur };
        return { ...hookBase(hook), mode: cur, progId: prog.info.id };
      }
      // Ours, in a mode the preference no longer allows.
      b.xdpDetach(hook.ifindex, cur ? xdpFlags(cur) : 0);
    }
    let last: unknown;
    for (const mode of modes) {
      try {
        // UPDATE_IF_NOEXIST: if someone attached in the meantime, fail rather than replace theirs.
        b.xdpAttach(hook.ifindex, prog.fd, xdpFlags(mode) | XdpFlags.UPDATE_IF_NOEXIST);
        this.run.xdp[ifx] = { name: hook.name, mode };
        this.opts.log.info('hook attached', { interface: hook.name, direction: 'ingress', mode });
        return { ...hookBase(hook), mode, progId: prog.info.id };
      } catch (err) {
        last = err;
        this.opts.log.debug('XDP attach refused', { interface: hook.name, mode, error: (err as Error).message });
      }
    }
    throw last instanceof Error ? last : new Error(`XDP attach on ${hook.name} failed`);
  }

  private removeStaleHooks(realized: Map<string, AttachMode | 'failed'>): void {
    const b = binding();
    const keeps = (key: string, ...modes: AttachMode[]): boolean => {
      const m = realized.get(key);
      return m === 'failed' || (m !== undefined && modes.includes(m));
    };
    for (const file of safeReaddir(path.join(this.opts.stateDir, 'links'))) {
      const m = /^(egress|ingress)-(\d+)$/.exec(file);
      if (!m) continue;
      const key = `${m[2]}/${m[1]}`;
      if (keeps(key, 'tcx')) continue;
      const pin = path.join(this.opts.stateDir, 'links', file);
      try {
        const link = this.links.get(key) ?? b.linkFromPin(pin);
        link.detach();
        link.close();
      } catch (err) {
        this.opts.log.warn('detaching a stale hook failed', { pin, error: (err as Error).message });
      }
      this.links.delete(key);
      rmSync(pin, { force: true });
      this.opts.log.info('hook removed', { ifindex: Number(m[2]), direction: m[1] });
    }
    for (const direction of ['egress', 'ingress'] as const) {
      const records = this.tcRecords(direction);
      for (const [ifx, t] of Object.entries(records)) {
        if (keeps(`${ifx}/${direction}`, 'tc')) continue;
        removeTcFilter(Number(ifx), direction, t, this.run, this.opts.tcPriority, this.opts.log);
        delete records[ifx];
      }
    }
    for (const [ifx, x] of Object.entries(this.run.xdp)) {
      if (keeps(`${ifx}/ingress`, 'xdp-native', 'xdp-generic')) continue;
      removeXdp(Number(ifx), x, this.opts.log);
      delete this.run.xdp[ifx];
    }
  }

  counters(): CounterRow[] {
    const rows: CounterRow[] = [];
    for (const key of this.maps.stats.keys()) {
      const v = this.maps.stats.lookup(key);
      if (!v) continue;
      const k = decodeStatKey(key);
      rows.push({ ifindex: k.ifindex, policyId: k.policyId, counter: COUNTERS[k.counter] ?? `counter_${k.counter}`, value: sumPerCpu(v) });
    }
    return rows;
  }

  /**
   * Is a hook that apply() reported still in the kernel, running the program it reported?
   * (Someone may have removed it behind our back: a TCX link detached, an XDP program or a
   * clsact qdisc replaced.) For metrics; false when the kernel cannot be asked.
   */
  isLive(h: HookStatus): boolean {
    const b = binding();
    try {
      switch (h.mode) {
        case 'tcx': {
          const l = b.linkFromPin(this.linkPin(h));
          try {
            const i = l.info();
            return i.id === h.linkId && i.progId === h.progId;
          } finally {
            l.close();
          }
        }
        case 'tc':
          return b.tcQuery({ ifindex: h.ifindex, direction: h.direction, handle: TC_HANDLE, priority: this.opts.tcPriority }) === h.progId;
        default:
          return b.xdpQuery(h.ifindex).progId === h.progId;
      }
    } catch {
      return false;
    }
  }

  /** Release our fds; pinned maps and links, and XDP programs (the hooks), stay in the kernel. */
  close(): void {
    if (this.clockTimer) clearInterval(this.clockTimer);
    this.clockTimer = null;
    for (const l of this.links.values()) l.close();
    this.links.clear();
    for (const m of Object.values(this.maps)) m.close();
    this.prog.close();
    this.clockProbe.close();
    this.obj.close();
    if (!('error' in this.verifier)) {
      const v = this.verifier;
      for (const h of [v.ports, v.exempt4, v.exempt6, v.xdp, v.tc]) h.close();
      v.obj.close();
    }
  }
}

function absBig(x: bigint): bigint {
  return x < 0n ? -x : x;
}

function xdpModeOf(attachMode: number): XdpMode | null {
  if (attachMode === XdpAttached.DRV) return 'xdp-native';
  if (attachMode === XdpAttached.SKB) return 'xdp-generic';
  return null;
}

function xdpFlags(mode: XdpMode): number {
  return mode === 'xdp-native' ? XdpFlags.DRV_MODE : XdpFlags.SKB_MODE;
}

/** Is XDP program `id` the verifier (of this or an earlier run)? */
function isOurXdp(id: number): boolean {
  try {
    const p = binding().programFromId(id);
    const name = p.info.name;
    p.close();
    return name === XDP_PROGRAM_NAME;
  } catch {
    return false;
  }
}

function xdpBusy(ifname: string, progId: number): Error {
  const e = new Error(`another XDP program (id ${progId}) is attached to ${ifname}; it is not ours to replace`) as Error & { code: string };
  e.code = 'EBUSY';
  return e;
}

/** Detach the verifier's XDP program from `ifindex` if it is still ours there. */
function removeXdp(ifindex: number, x: { name: string; mode: XdpMode }, log: Logger): boolean {
  const b = binding();
  try {
    const q = b.xdpQuery(ifindex);
    if (q.progId === 0 || !isOurXdp(q.progId)) return false;
    const mode = xdpModeOf(q.attachMode) ?? x.mode;
    b.xdpDetach(ifindex, xdpFlags(mode));
    log.info('hook removed', { interface: x.name, direction: 'ingress', mode });
    return true;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code !== 'ENODEV') log.warn('removing an XDP program failed', { interface: x.name, error: (err as Error).message });
    return false;
  }
}

function hookBase(h: DesiredHook): Pick<HookStatus, 'ifindex' | 'name' | 'direction' | 'policies'> {
  return { ifindex: h.ifindex, name: h.name, direction: h.direction, policies: [...h.policies] };
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

/**
 * Every entry of a map, read once. The lookup of a key the map has returns that key's own value,
 * also on an LPM trie (the longest prefix matching a key is the key itself).
 */
function readEntries(map: NativeMap): Entries {
  const out: Entries = new Map();
  for (const key of map.keys()) {
    const value = map.lookup(key);
    if (value) out.set(key.toString('hex'), [key, value]);
  }
  return out;
}

/** Writes the entries of `want` whose value differs from what `have` records; returns how many. */
function writeChanged(map: NativeMap, have: Entries, want: Entries): number {
  let n = 0;
  for (const [hex, entry] of want) {
    const cur = have.get(hex);
    if (cur && cur[1].equals(entry[1])) continue;
    map.update(entry[0], entry[1]);
    have.set(hex, entry);
    n++;
  }
  return n;
}

/** Deletes the entries `have` records and `want` does not; returns how many the map still had. */
function deleteUnwanted(map: NativeMap, have: Entries, want: Entries): number {
  let n = 0;
  for (const [hex, [key]] of have) {
    if (want.has(hex)) continue;
    if (map.delete(key)) n++;
    have.delete(hex);
  }
  return n;
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/**
 * Remove our clsact filter at one direction of `ifindex`. The qdisc goes only if we
 * created it (as recorded for either direction) and no filter of ours is left on it;
 * if one is, the record of that direction inherits the duty.
 */
function removeTcFilter(ifindex: number, direction: Direction, t: TcRecord, run: Pick<RunState, 'tc' | 'tcIngress'>, priority: number, log: Logger): void {
  const b = binding();
  const spec = { ifindex, direction, handle: TC_HANDLE, priority };
  const other: Direction = direction === 'egress' ? 'ingress' : 'egress';
  const otherRecord = (other === 'egress' ? run.tc : run.tcIngress)[String(ifindex)];
  try {
    if (b.tcQuery(spec) !== null) b.tcDetach(spec);
    const created = t.createdQdisc || (otherRecord?.createdQdisc ?? false);
    if (created && b.tcQuery({ ...spec, direction: other }) === null) b.tcHookDestroy(ifindex);
    else if (created && otherRecord) otherRecord.createdQdisc = true;
    log.info('hook removed', { interface: t.name, direction, mode: 'tc' });
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code !== 'ENODEV' && code !== 'ENOENT' && code !== 'EINVAL') {
      log.warn('removing a tc filter failed', { interface: t.name, direction, error: (err as Error).message });
    }
  }
}

export interface DetachReport {
  links: number;
  tcFilters: number;
  xdp: number;
  pins: number;
}

/**
 * Remove every hook and pin of ours (`netoken detach`), and nothing else: TCX links
 * pinned under stateDir, tc filters and XDP programs recorded in runDir (a qdisc only
 * if we made it, an XDP program only if it is still the verifier), the pinned maps,
 * and the directories.
 */
export function detachAll(stateDir: string, runDir: string, tcPriority: number, log: Logger): DetachReport {
  const report: DetachReport = { links: 0, tcFilters: 0, xdp: 0, pins: 0 };
  const b = binding();
  for (const file of safeReaddir(path.join(stateDir, 'links'))) {
    const pin = path.join(stateDir, 'links', file);
    try {
      const link = b.linkFromPin(pin);
      link.detach();
      link.close();
      report.links++;
    } catch (err) {
      log.warn('detaching a pinned link failed', { pin, error: (err as Error).message });
    }
    rmSync(pin, { force: true });
    report.pins++;
  }
  const run = readRunState(runDir);
  for (const direction of ['egress', 'ingress'] as const) {
    const records = direction === 'egress' ? run.tc : run.tcIngress;
    for (const [ifx, t] of Object.entries(records)) {
      removeTcFilter(Number(ifx), direction, t, run, tcPriority, log);
      delete records[ifx];
      report.tcFilters++;
    }
  }
  for (const [ifx, x] of Object.entries(run.xdp)) {
    if (removeXdp(Number(ifx), x, log)) report.xdp++;
  }
  for (const file of safeReaddir(path.join(stateDir, 'maps'))) {
    rmSync(path.join(stateDir, 'maps', file), { force: true });
    report.pins++;
  }
  for (const dir of [path.join(stateDir, 'links'), path.join(stateDir, 'maps'), stateDir]) {
    try {
      rmdirSync(dir);
    } catch {
      // not ours to force: a directory someone else put files into stays
    }
  }
  rmSync(path.join(runDir, 'state.json'), { force: true });
  rmSync(path.join(runDir, 'status.json'), { force: true });
  return report;
}
