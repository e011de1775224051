/**
 * The node agent's reconcile core, shared by standalone and cluster mode:
 * Snapshot (policies, keys, labels) + host interfaces -> DesiredState -> Datapath.
 * Reconciles are serialized (one at a time; a change during one queues exactly one more),
 * triggered by source changes and by interfaces appearing, disappearing or changing.
 *
 * When the kernel refuses the desired state (a map full, an update it rejects), the policies
 * are applied one at a time on top of the versions that applied last, to find the ones it
 * refuses: those keep their last applied version (or none) and report KernelRefused, and
 * every other policy applies. A refused version is not tried again until something changes.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../lib/files.js';
import type { Logger } from '../lib/log.js';
import type { TokenPolicy } from '../lib/types.js';
import type { ApplyResult, CounterRow, Datapath } from './datapath.js';
import { detachAll } from './hooks/detach.js';
import type { HookError, HookStatus } from './hooks/hook.js';
import { type DesiredState, type PolicyOutcome, computeDesired } from './desired.js';
import { type HostInterface, listInterfaces } from './interfaces.js';
import { type DocumentError, type PolicySource, type Snapshot, keptKeysProblem } from './source.js';

/** What this node did with one policy: the outcome of applying it and its counters. */
export interface NodePolicyStatus extends PolicyOutcome {
  /** counters summed over this node's interfaces */
  counters: Record<string, string>;
}

/** Counters of an interface that belong to no policy (unreadable frames, SYNs no policy covers, ...). */
export interface InterfaceCounters {
  name: string;
  ifindex: number;
  counters: Record<string, string>;
}

/** What `netoken status` shows and cluster mode turns into TokenNodeState. Never holds key material. */
export interface AgentStatus {
  updatedAt: string;
  programId: number;
  ready: boolean;
  policies: NodePolicyStatus[];
  hooks: HookStatus[];
  /** per hooked interface, its counters under no policy (those that are not zero) */
  interfaces: InterfaceCounters[];
  hookErrors: HookError[];
  documentErrors: DocumentError[];
  reconciles: number;
  lastReconcileMs: number;
}

export interface AgentOptions {
  source: PolicySource;
  datapath: Datapath;
  log: Logger;
  runDir: string;
  /** how often to look for interface changes */
  interfacePollMs: number;
  /** injectable for tests */
  listInterfaces?: () => Promise<HostInterface[]>;
  /** called after every reconcile and counter refresh (cluster mode writes TokenNodeState) */
  onStatus?: (s: AgentStatus) => void | Promise<void>;
  /** how often counters are re-read into the status without a reconcile (default 10 s) */
  counterRefreshMs?: number;
  /** reconcile durations and outcomes, for metrics */
  onReconcile?: (seconds: number, ok: boolean) => void;
  /**
   * The BPF state directory: when given, a graceful stop with no policy applied removes our
   * pins and run files (`netoken detach`), so that uninstalling leaves nothing behind.
   */
  stateDir?: string;
  /** priority of our clsact filter, for that clean-up (default 1) */
  tcPriority?: number;
}

/** A policy version the kernel refused, and the state of the world it was refused in. */
interface Refusal {
  version: string;
  world: string;
  message: string;
}

export class Agent {
  private running: Promise<void> | null = null;
  private dirty = false;
  private timer: NodeJS.Timeout | null = null;
  private counterTimer: NodeJS.Timeout | null = null;
  private lastOk = false;
  private ifSignature = '';
  private reconciles = 0;
  private status: AgentStatus | null = null;
  private stopped = false;
  private readonly list: () => Promise<HostInterface[]>;
  private lastOutcomes: PolicyOutcome[] = [];
  /** policy name -> the version last applied without the kernel refusing it */
  private applied = new Map<string, TokenPolicy>();
  private refused = new Map<string, Refusal>();

  constructor(private readonly opts: AgentOptions) {
    this.list = opts.listInterfaces ?? listInterfaces;
  }

  async start(): Promise<void> {
    await this.opts.source.start(() => this.trigger('policy source changed'));
    await this.reconcile('start');
    this.timer = setInterval(() => void this.pollInterfaces(), this.opts.interfacePollMs);
    this.counterTimer = setInterval(() => this.refreshCounters(), this.opts.counterRefreshMs ?? 10_000);
  }

  /** Applied since the last change: the source has synced, nothing is pending, the last reconcile worked. */
  isReady(): boolean {
    const synced = this.opts.source.isSynced?.() ?? true;
    return synced && this.lastOk && !this.running && !this.dirty;
  }

  /** Re-read the counters into the status (no reconcile). */
  refreshCounters(): void {
    if (!this.status || this.stopped) return;
    try {
      const counters = this.opts.datapath.counters();
      this.status = {
        ...this.status,
        policies: this.status.policies.map((p) => ({ ...p, counters: countersFor(p.id, counters) })),
        interfaces: interfaceCounters(this.status.hooks, counters),
      };
      this.writeStatus();
      void this.opts.onStatus?.(this.status);
    } catch (err) {
      this.opts.log.warn('reading counters failed', { error: (err as Error).message });
    }
  }

  /**
   * Stop watching; hooks and maps stay pinned and keep marking. With nothing applied (every
   * policy deleted, none selecting this node) and a state directory given, remove our pins
   * and run files too: nothing of ours is left on the host.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.counterTimer) clearInterval(this.counterTimer);
    this.opts.source.stop();
    await this.running;
    if (this.opts.stateDir && this.isIdle()) {
      const r = detachAll(this.opts.stateDir, this.opts.runDir, this.opts.tcPriority ?? 1, this.opts.log);
      this.opts.log.info('no policy applied: removed our pins and run files', { stateDir: this.opts.stateDir, pins: r.pins });
    }
  }

  /**
   * Nothing of ours is in use: the source has been read, the last reconcile worked, and it
   * left no hook, no failed hook and no policy slot. (Never true before the first reconcile,
   * so a stop before then leaves pinned hooks of an earlier run alone.)
   */
  isIdle(): boolean {
    const s = this.status;
    const synced = this.opts.source.isSynced?.() ?? true;
    return synced && this.lastOk && s !== null && s.hooks.length === 0 && s.hookErrors.length === 0 && s.policies.every((p) => p.id === 0);
  }

  lastStatus(): AgentStatus | null {
    return this.status;
  }

  /** The policy versions the data path holds (the last applied without the kernel refusing them), by name. */
  appliedPolicies(): ReadonlyMap<string, TokenPolicy> {
    return this.applied;
  }

  private async pollInterfaces(): Promise<void> {
    try {
      const sig = signature(await this.list());
      if (sig !== this.ifSignature) this.trigger('interfaces changed');
    } catch (err) {
      this.opts.log.warn('listing interfaces failed', { error: (err as Error).message });
    }
  }

  trigger(why: string): void {
    if (this.stopped) return;
    this.opts.log.debug('reconcile requested', { why });
    void this.reconcile(why);
  }

  /** Run one reconcile, or queue one if a reconcile is already running. */
  reconcile(why: string): Promise<void> {
    if (this.running) {
      this.dirty = true;
      return this.running;
    }
    this.running = (async () => {
      try {
        do {
          this.dirty = false;
          await this.reconcileOnce(why);
        } while (this.dirty && !this.stopped);
      } finally {
        this.running = null;
      }
    })();
    return this.running;
  }

  private async reconcileOnce(why: string): Promise<void> {
    const t0 = performance.now();
    const { log, datapath, source } = this.opts;
    if (source.isSynced && !source.isSynced()) {
      // Never act on an empty view: pinned hooks keep the last good state until the source has listed.
      log.info('waiting for the policy source before touching the data path', { why });
      return;
    }
    try {
      const interfaces = await this.list();
      this.ifSignature = signature(interfaces);
      const snap = source.snapshot();
      const desiredFor = (policies: readonly TokenPolicy[]): DesiredState => computeDesired({
        policies,
        keys: snap.keys,
        nodeLabels: snap.nodeLabels,
        interfaces,
        previousIds: datapath.previousIds(),
      });
      const world = worldSignature(snap, this.ifSignature);
      // A version the kernel refused in this same world is not tried again: its last applied version stands in.
      const known = new Map<string, string>();
      const wanted: TokenPolicy[] = [];
      for (const p of snap.policies) {
        const r = this.refused.get(p.metadata.name);
        if (r && r.version === versionOf(p) && r.world === world) {
          known.set(p.metadata.name, r.message);
          const last = this.applied.get(p.metadata.name);
          if (last) wanted.push(last);
        } else {
          wanted.push(p);
        }
      }
      let desired = desiredFor(wanted);
      let result: ApplyResult;
      let refusedNow = new Map<string, string>();
      try {
        result = datapath.apply(desired);
      } catch (err) {
        ({ desired, result, refused: refusedNow } = this.isolate(wanted, desiredFor, err as Error));
      }
      for (const [name, message] of refusedNow) this.refused.set(name, { version: versionOf(snap.policies.find((p) => p.metadata.name === name)!), world, message });
      for (const [name, message] of known) refusedNow.set(name, message);
      for (const name of [...this.refused.keys()]) if (!refusedNow.has(name)) this.refused.delete(name);
      const appliedVersions = new Map<string, TokenPolicy>();
      for (const p of wanted) if (!refusedNow.has(p.metadata.name) || this.applied.get(p.metadata.name) === p) appliedVersions.set(p.metadata.name, p);
      for (const [name, p] of this.applied) if (refusedNow.has(name) && snap.policies.some((x) => x.metadata.name === name)) appliedVersions.set(name, p);
      this.applied = appliedVersions;

      const outcomes = this.outcomes(snap, desired, refusedNow, desiredFor);
      for (const o of outcomes) {
        for (const e of o.errors) log.warn(e.message, { policy: o.name, reason: e.reason });
        for (const w of o.warnings) log.warn(w.message, { policy: o.name, reason: w.reason });
        const before = this.lastOutcomes.find((x) => x.name === o.name);
        if (!before || before.generation !== o.generation || before.interfaces.join() !== o.interfaces.join()) {
          log.info('policy applied', { policy: o.name, generation: o.generation, selected: o.selected, interfaces: o.interfaces });
        }
      }
      for (const gone of this.lastOutcomes.filter((x) => !outcomes.some((o) => o.name === x.name))) {
        log.info('policy removed', { policy: gone.name });
      }
      this.lastOutcomes = outcomes;
      this.reconciles++;
      const ms = performance.now() - t0;
      const counters = datapath.counters();
      this.status = {
        updatedAt: new Date().toISOString(),
        programId: datapath.programId,
        ready: result.errors.length === 0 && outcomes.every((o) => o.errors.length === 0),
        policies: outcomes.map((o) => ({ ...o, counters: countersFor(o.id, counters) })),
        hooks: result.hooks,
        interfaces: interfaceCounters(result.hooks, counters),
        hookErrors: result.errors,
        documentErrors: snap.documentErrors,
        reconciles: this.reconciles,
        lastReconcileMs: Math.round(ms * 10) / 10,
      };
      this.writeStatus();
      this.lastOk = true;
      this.opts.onReconcile?.(ms / 1000, true);
      void this.opts.onStatus?.(this.status);
      log.debug('reconciled', { why, ms: this.status.lastReconcileMs, writes: result.mapWrites, deletes: result.mapDeletes });
    } catch (err) {
      this.lastOk = false;
      this.opts.onReconcile?.((performance.now() - t0) / 1000, false);
      log.error('reconcile failed', { why, error: (err as Error).message });
    }
  }

  /**
   * The kernel refused `wanted` as a whole. Re-apply the versions that applied last (they fit
   * before; this also removes what the refused attempt wrote), then add the other policies
   * one at a time in name order, each followed by a clean-up when it is refused. Throws when
   * even the last applied versions no longer apply.
   */
  private isolate(
    wanted: readonly TokenPolicy[],
    desiredFor: (p: readonly TokenPolicy[]) => DesiredState,
    first: Error,
  ): { desired: DesiredState; result: ApplyResult; refused: Map<string, string> } {
    const { log, datapath } = this.opts;
    log.error('the kernel refused the desired state; applying the policies one at a time to find which it refuses', { error: first.message });
    const base = new Map<string, TokenPolicy>();
    for (const p of wanted) {
      const last = this.applied.get(p.metadata.name);
      if (last) base.set(p.metadata.name, last);
    }
    let desired = desiredFor([...base.values()]);
    let result: ApplyResult;
    try {
      result = datapath.apply(desired);
    } catch (err) {
      throw new Error(`even the policies as they were last applied do not apply any more: ${(err as Error).message}`);
    }
    const refused = new Map<string, string>();
    for (const p of [...wanted].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name))) {
      const last = base.get(p.metadata.name);
      if (last && versionOf(last) === versionOf(p)) continue;
      const trial = new Map(base).set(p.metadata.name, p);
      const d = desiredFor([...trial.values()]);
      try {
        result = datapath.apply(d);
        desired = d;
        base.set(p.metadata.name, p);
      } catch (err) {
        const message = refusalMessage(err as Error);
        refused.set(p.metadata.name, message);
        log.error('the kernel refused a policy; it keeps its last applied version, if any', { policy: p.metadata.name, generation: p.metadata.generation ?? 0, error: message });
        result = datapath.apply(desired);
      }
    }
    return { desired, result, refused };
  }

  /**
   * What status says of each policy of the snapshot: what was applied, plus KernelRefused for
   * refused versions and SecretUnavailable where a source kept keys it can no longer read.
   */
  private outcomes(snap: Snapshot, desired: DesiredState, refused: ReadonlyMap<string, string>, desiredFor: (p: readonly TokenPolicy[]) => DesiredState): PolicyOutcome[] {
    let all: DesiredState | undefined;
    const out: PolicyOutcome[] = [];
    for (const p of [...snap.policies].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name))) {
      const name = p.metadata.name;
      const applied = desired.outcomes.find((o) => o.name === name);
      let o: PolicyOutcome;
      const message = refused.get(name);
      if (message !== undefined) {
        if (applied) {
          o = { ...applied, errors: [...applied.errors, { reason: 'KernelRefused', message: `the kernel refused generation ${p.metadata.generation ?? 0} (${message}); generation ${applied.generation} stays applied` }] };
        } else {
          all ??= desiredFor(snap.policies);
          const full = all.outcomes.find((x) => x.name === name);
          o = { name, generation: p.metadata.generation ?? 0, selected: full?.selected ?? true, id: 0, interfaces: [], warnings: full?.warnings ?? [], errors: [...(full?.errors ?? []), { reason: 'KernelRefused', message: `the kernel refused this policy's BPF state: ${message}` }] };
        }
      } else if (applied) {
        o = applied;
      } else {
        continue;
      }
      const kept = keptKeysProblem(snap.keys.get(name));
      if (kept && o.selected) o = { ...o, errors: [...o.errors, { reason: 'SecretUnavailable', message: `${kept}; the keys read before stay in use` }] };
      out.push(o);
    }
    return out;
  }

  private writeStatus(): void {
    if (!this.status) return;
    mkdirSync(this.opts.runDir, { recursive: true, mode: 0o700 });
    const file = path.join(this.opts.runDir, 'status.json');
    writeFileAtomic(file, JSON.stringify(this.status, null, 2), 0o644);
  }
}

/** The kernel's answer, with what to do about the common one: a map that is full. */
function refusalMessage(err: Error & { code?: string }): string {
  const full = err.code === 'ENOSPC' || err.code === 'E2BIG' || /No space left/.test(err.message);
  return full ? `${err.message}: the map is full; give this node fewer destinations × interfaces (or ports, exempt sources)` : err.message;
}

/** One policy version: what a refusal is remembered for. */
function versionOf(p: TokenPolicy): string {
  return JSON.stringify([p.metadata.generation ?? 0, p.spec]);
}

/** Everything a refusal may depend on besides the policy itself: the other policies, the interfaces, the labels. */
function worldSignature(snap: Snapshot, interfaces: string): string {
  return JSON.stringify([snap.policies.map((p) => [p.metadata.name, versionOf(p)]).sort(), interfaces, snap.nodeLabels]);
}

function signature(ifs: readonly HostInterface[]): string {
  return ifs.map((i) => `${i.ifindex}:${i.name}:${i.defaultRoute ? 1 : 0}:${i.linkType}:${i.master ?? ''}`).join(',');
}

function interfaceCounters(hooks: readonly HookStatus[], rows: readonly CounterRow[]): InterfaceCounters[] {
  const names = new Map(hooks.map((h) => [h.ifindex, h.name]));
  const out = new Map<number, InterfaceCounters>();
  for (const r of rows) {
    const name = names.get(r.ifindex);
    if (r.policyId !== 0 || name === undefined || r.value === 0n) continue;
    const i = out.get(r.ifindex) ?? { name, ifindex: r.ifindex, counters: {} };
    i.counters[r.counter] = (BigInt(i.counters[r.counter] ?? '0') + r.value).toString();
    out.set(r.ifindex, i);
  }
  return [...out.values()].sort((a, b) => a.ifindex - b.ifindex);
}

function countersFor(policyId: number, rows: readonly CounterRow[]): Record<string, string> {
  const out: Record<string, bigint> = {};
  for (const r of rows) if (policyId !== 0 && r.policyId === policyId) out[r.counter] = (out[r.counter] ?? 0n) + r.value;
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.toString()]));
}
