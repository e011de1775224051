/**
 * The BPF state of this node: the loaded marker object, its pinned maps, and the
 * hooks on interfaces. apply() moves the kernel to a DesiredState idempotently;
 * everything that must outlive the agent (maps, TCX links) is pinned under the
 * state directory, so a restart reuses it instead of re-creating it.
 *
 * Layout under the state directory (default /sys/fs/bpf/netoken):
 *   maps/<map name>            pinned by libbpf (LIBBPF_PIN_BY_NAME)
 *   links/<direction>-<ifindex> pinned TCX links
 * Legacy tc filters (fallback when the kernel has no TCX) live in the interface's
 * clsact qdisc; which qdiscs we created is recorded in the run directory.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, rmdirSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { COUNTERS, type CounterName, decodeStatKey, sumPerCpu } from '../lib/abi.js';
import type { Logger } from '../lib/log.js';
import { type NativeLink, type NativeMap, type NativeObject, type NativeProgram, binding } from '../native/binding.js';
import type { DesiredHook, DesiredState, Direction } from './desired.js';

export type AttachMode = 'tcx' | 'tc';
export type AttachPreference = 'auto' | AttachMode;

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
  /** `${ifindex}` -> legacy tc filter we attached, and whether we created its clsact qdisc */
  tc: Record<string, { name: string; createdQdisc: boolean }>;
  /** slot ids written to nt_policies */
  slots: number[];
}

const EMPTY_RUN_STATE: RunState = { ids: {}, tc: {}, slots: [] };

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
  writeFileSync(`${file}.tmp`, JSON.stringify(s, null, 2), { mode: 0o600 });
  // rename is atomic: a crash never leaves half a file
  renameSync(`${file}.tmp`, file);
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
  objectPath: string;
  attach: AttachPreference;
  tcPriority: number;
  log: Logger;
}

export class Datapath {
  private readonly obj: NativeObject;
  private readonly prog: NativeProgram;
  private readonly maps: { egress4: NativeMap; egress6: NativeMap; policies: NativeMap; stats: NativeMap };
  private readonly links = new Map<string, NativeLink>();
  private run: RunState;
  private tcxUsable: boolean | undefined;

  private constructor(private readonly opts: DatapathOptions) {
    const b = binding();
    ensureBpffs(opts.stateDir, opts.log);
    const mapsDir = path.join(opts.stateDir, 'maps');
    mkdirSync(mapsDir, { recursive: true, mode: 0o700 });
    mkdirSync(path.join(opts.stateDir, 'links'), { recursive: true, mode: 0o700 });
    this.obj = b.openObject(opts.objectPath, { pinRoot: mapsDir });
    this.prog = this.obj.program('nt_mark_egress');
    this.maps = {
      egress4: this.obj.map('nt_egress4'),
      egress6: this.obj.map('nt_egress6'),
      policies: this.obj.map('nt_policies'),
      stats: this.obj.map('nt_stats'),
    };
    this.run = readRunState(opts.runDir);
  }

  static open(opts: DatapathOptions): Datapath {
    return new Datapath(opts);
  }

  get programId(): number {
    return this.prog.info.id;
  }

  /** Slot ids assigned in an earlier run (kept stable across restarts). */
  previousIds(): Map<string, number> {
    return new Map(Object.entries(this.run.ids));
  }

  apply(desired: DesiredState): ApplyResult {
    const result: ApplyResult = { hooks: [], errors: [], mapWrites: 0, mapDeletes: 0 };
    const zero = Buffer.alloc(this.maps.policies.info.valueSize);
    // 1. policy slots first, so a rule never points at an empty or stale slot
    for (const [id, value] of desired.policySlots) {
      if (writeIfChanged(this.maps.policies, u32(id), value)) result.mapWrites++;
    }
    // 2. destination rules
    for (const [map, want] of [[this.maps.egress4, desired.egress4], [this.maps.egress6, desired.egress6]] as const) {
      for (const [key, value] of want.values()) if (writeIfChanged(map, key, value)) result.mapWrites++;
      for (const key of map.keys()) {
        if (!want.has(key.toString('hex')) && map.delete(key)) result.mapDeletes++;
      }
    }
    // 3. slots no longer used
    for (const id of this.run.slots) {
      if (!desired.policySlots.has(id)) {
        this.maps.policies.update(u32(id), zero);
        result.mapWrites++;
      }
    }
    // 4. hooks
    for (const hook of desired.hooks.values()) {
      try {
        result.hooks.push(this.ensureHook(hook));
      } catch (err) {
        const e = err as Error;
        this.opts.log.error('attach failed', { interface: hook.name, direction: hook.direction, error: e.message });
        result.errors.push({ ifindex: hook.ifindex, name: hook.name, direction: hook.direction, reason: 'AttachFailed', message: e.message });
      }
    }
    this.removeStaleHooks(new Set(desired.hooks.keys()));
    // 5. counters of policies and interfaces that are gone
    const ids = new Set(desired.ids.values());
    const hooked = new Set([...desired.hooks.values()].map((h) => h.ifindex));
    for (const key of this.maps.stats.keys()) {
      const k = decodeStatKey(key);
      if ((k.policyId !== 0 && !ids.has(k.policyId)) || !hooked.has(k.ifindex)) this.maps.stats.delete(key);
    }
    this.run.ids = Object.fromEntries(desired.ids);
    this.run.slots = [...desired.policySlots.keys()];
    writeRunState(this.opts.runDir, this.run);
    return result;
  }

  private linkPin(hook: { ifindex: number; direction: Direction }): string {
    return path.join(this.opts.stateDir, 'links', `${hook.direction}-${hook.ifindex}`);
  }

  private ensureHook(hook: DesiredHook): HookStatus {
    const key = `${hook.ifindex}/${hook.direction}`;
    const pin = this.linkPin(hook);
    const b = binding();
    // A pinned TCX link from an earlier run: reuse it, swapping in this program atomically.
    if (existsSync(pin)) {
      const link = this.links.get(key) ?? b.linkFromPin(pin);
      const info = link.info();
      if (info.ifindex === hook.ifindex) {
        if (info.progId !== this.prog.info.id) {
          link.update(this.prog);
          this.opts.log.info('hook reused, program replaced', { interface: hook.name, direction: hook.direction, linkId: info.id });
        }
        this.links.set(key, link);
        return { ...hookBase(hook), mode: 'tcx', progId: this.prog.info.id, linkId: info.id };
      }
      // The interface it was made for is gone (the link is defunct): forget it.
      link.close();
      this.links.delete(key);
      unlinkSync(pin);
    }
    if (this.opts.attach !== 'tc' && this.tcxUsable !== false) {
      try {
        const link = b.createTcxLink(this.prog, hook.ifindex, hook.direction);
        link.pin(pin);
        this.links.set(key, link);
        this.tcxUsable = true;
        const info = link.info();
        this.opts.log.info('hook attached', { interface: hook.name, direction: hook.direction, mode: 'tcx', linkId: info.id });
        return { ...hookBase(hook), mode: 'tcx', progId: this.prog.info.id, linkId: info.id };
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (this.opts.attach === 'tcx' || (code !== 'EINVAL' && code !== 'ENOTSUPP' && code !== 'EOPNOTSUPP')) throw err;
        this.tcxUsable = false;
        this.opts.log.warn('kernel has no TCX, falling back to a clsact filter', { interface: hook.name });
      }
    }
    const spec = { ifindex: hook.ifindex, direction: hook.direction, handle: TC_HANDLE, priority: this.opts.tcPriority };
    const existing = b.tcQuery(spec);
    let created = this.run.tc[String(hook.ifindex)]?.createdQdisc ?? false;
    if (existing === null) created = b.tcHookCreate(hook.ifindex).created || created;
    if (existing !== this.prog.info.id) {
      b.tcAttach({ ...spec, progFd: this.prog.fd, replace: true });
      this.opts.log.info('hook attached', { interface: hook.name, direction: hook.direction, mode: 'tc', createdQdisc: created });
    }
    this.run.tc[String(hook.ifindex)] = { name: hook.name, createdQdisc: created };
    return { ...hookBase(hook), mode: 'tc', progId: this.prog.info.id };
  }

  private removeStaleHooks(keep: Set<string>): void {
    const b = binding();
    for (const file of safeReaddir(path.join(this.opts.stateDir, 'links'))) {
      const m = /^(egress|ingress)-(\d+)$/.exec(file);
      if (!m || keep.has(`${m[2]}/${m[1]}`)) continue;
      const key = `${m[2]}/${m[1]}`;
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
    for (const [ifx, t] of Object.entries(this.run.tc)) {
      if (keep.has(`${ifx}/egress`)) continue;
      removeTcFilter(Number(ifx), t, this.opts.tcPriority, this.opts.log);
      delete this.run.tc[ifx];
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

  /** Release our fds; pinned maps and links (the hooks) stay in the kernel. */
  close(): void {
    for (const l of this.links.values()) l.close();
    this.links.clear();
    for (const m of Object.values(this.maps)) m.close();
    this.prog.close();
    this.obj.close();
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

function writeIfChanged(map: NativeMap, key: Buffer, value: Buffer): boolean {
  const cur = map.lookup(key);
  if (cur && cur.equals(value)) return false;
  map.update(key, value);
  return true;
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function removeTcFilter(ifindex: number, t: { name: string; createdQdisc: boolean }, priority: number, log: Logger): void {
  const b = binding();
  const spec = { ifindex, direction: 'egress' as const, handle: TC_HANDLE, priority };
  try {
    if (b.tcQuery(spec) !== null) b.tcDetach(spec);
    // Only a qdisc we created goes, and only when no other filter is left on it.
    if (t.createdQdisc && b.tcQuery({ ...spec, direction: 'ingress' }) === null) b.tcHookDestroy(ifindex);
    log.info('hook removed', { interface: t.name, mode: 'tc' });
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code !== 'ENODEV' && code !== 'ENOENT' && code !== 'EINVAL') {
      log.warn('removing a tc filter failed', { interface: t.name, error: (err as Error).message });
    }
  }
}

export interface DetachReport {
  links: number;
  tcFilters: number;
  pins: number;
}

/**
 * Remove every hook and pin of ours (`netoken detach`), and nothing else: TCX links
 * pinned under stateDir, tc filters recorded in runDir (their qdisc only if we made
 * it), the pinned maps, and the directories.
 */
export function detachAll(stateDir: string, runDir: string, tcPriority: number, log: Logger): DetachReport {
  const report: DetachReport = { links: 0, tcFilters: 0, pins: 0 };
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
  for (const [ifx, t] of Object.entries(run.tc)) {
    removeTcFilter(Number(ifx), t, tcPriority, log);
    report.tcFilters++;
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
