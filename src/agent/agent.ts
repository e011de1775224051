/**
 * The node agent's reconcile core, shared by standalone and cluster mode:
 * Snapshot (policies, keys, labels) + host interfaces -> DesiredState -> Datapath.
 * Reconciles run from the same work queue as the operator's, with one key (this node): one at
 * a time, a change during one queues exactly one more, a burst of changes within the batching
 * delay costs one reconcile (and while a burst goes on, one per 300 ms: each reconcile computes
 * the whole node), and a reconcile that fails is retried with a backoff. They are
 * triggered by source changes and by interfaces appearing, disappearing or changing; the
 * interfaces are the ones the last poll listed (listing them forks `ip`, so it is not done on
 * every reconcile).
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
import { noteWork } from '../lib/memory.js';
import { KeyedQueue } from '../lib/workqueue.js';
import type { TokenPolicy } from '../lib/types.js';
import type { ApplyResult, CounterRow, Datapath } from './datapath.js';
import { detachAll } from './hooks/detach.js';
import type { HookError, HookStatus } from './hooks/hook.js';
import { type DesiredState, EncodingMemo, type PolicyOutcome, computeDesired } from './desired.js';
import { type HostInterface, listInterfaces } from './interfaces.js';
import { type DocumentError, type PolicySource, type Snapshot, keptKeysProblem } from './source.js';
import { by } from '../lib/order.js';
import { isoTime } from '../lib/time.js';

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
  /**
   * called after every reconcile and counter refresh (cluster mode writes TokenNodeState);
   * `settled`: nothing more to apply: a reconcile after which no change waits, outside a burst,
   * or (called again with the same status) a burst that has been quiet for a burst delay
   */
  onStatus?: (s: AgentStatus, settled: boolean) => void;
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
  /** how long a change waits for more before the reconcile (default 100 ms) */
  batchDelayMs?: number;
  /** ... and during a burst of changes (4 or more in one reconcile), this long (default 300 ms) */
  burstDelayMs?: number;
}

/** A policy version the kernel refused, and the state of the world it was refused in. */
interface Refusal {
  version: string;
  world: string;
  message: string;
}

/** The counters of a status: each policy's (by name and id) and each hooked interface's. */
interface StatusCounters {
  policy: (name: string, id: number) => Record<string, string>;
  interfaces: InterfaceCounters[];
}

/** How old the counters a reconcile puts in the status may be (see countersForStatus). */
const COUNTERS_MAX_AGE_MS = 1000;

/** The agent's one work-queue key: this node. */
const NODE_KEY = 'node';

export class Agent {
  private readonly queue: KeyedQueue<string>;
  /** why the queued reconcile was asked for (for its log line) */
  private why = 'start';
  private timer: NodeJS.Timeout | null = null;
  private counterTimer: NodeJS.Timeout | null = null;
  private lastOk = false;
  private ifSignature = '';
  /** the interfaces as last listed (by the poll, or the first reconcile) */
  private interfaces: HostInterface[] | null = null;
  private reconciles = 0;
  private status: AgentStatus | null = null;
  /** when the counters were last read (performance.now()) */
  private countersReadAt = -Infinity;
  private stopped = false;
  private readonly list: () => Promise<HostInterface[]>;
  private lastOutcomes = new Map<string, PolicyOutcome>();
  /** policy name -> the version last applied without the kernel refusing it */
  private applied = new Map<string, TokenPolicy>();
  private refused = new Map<string, Refusal>();
  /** encodings kept across reconciles: an edit of a large policy costs what changed */
  private readonly memo = new EncodingMemo();

  constructor(private readonly opts: AgentOptions) {
    this.list = opts.listInterfaces ?? listInterfaces;
    this.queue = new KeyedQueue<string>({
      reconcile: () => this.reconcileOnce(),
      log: opts.log,
      concurrency: 1,
      batchDelayMs: opts.batchDelayMs ?? 100,
      // Every reconcile computes the whole node: during a burst of changes, one per 300 ms.
      burstDelayMs: opts.burstDelayMs ?? 300,
      baseBackoffMs: 1000,
      maxBackoffMs: 30_000,
      onDone: (_k, seconds, outcome) => {
        opts.onReconcile?.(seconds, outcome === 'success');
        noteWork();
      },
      onBurstEnd: () => {
        if (this.status && this.lastOk) this.opts.onStatus?.(this.status, true);
      },
    });
  }

  async start(): Promise<void> {
    await this.opts.source.start(() => this.trigger('policy source changed'));
    this.queue.resume();
    await this.reconcile('start');
    this.timer = setInterval(() => void this.pollInterfaces(), this.opts.interfacePollMs);
    this.counterTimer = setInterval(() => this.refreshCounters(), this.opts.counterRefreshMs ?? 10_000);
  }

  /** Applied since the last change: the source has synced, nothing is pending, the last reconcile worked. */
  isReady(): boolean {
    const synced = this.opts.source.isSynced?.() ?? true;
    return synced && this.lastOk && this.queue.depth === 0 && this.queue.oldestRunningSince() === undefined;
  }

  /** Re-read the counters into the status (no reconcile). */
  refreshCounters(): void {
    if (!this.status || this.stopped) return;
    try {
      const counters = this.readCounters(this.status.hooks);
      this.status = {
        ...this.status,
        policies: this.status.policies.map((p) => ({ ...p, counters: counters.policy(p.name, p.id) })),
        interfaces: counters.interfaces,
      };
      this.writeStatus();
      this.opts.onStatus?.(this.status, false);
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
    await this.queue.close();
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
    return (
      synced &&
      this.lastOk &&
      s !== null &&
      s.hooks.length === 0 &&
      s.hookErrors.length === 0 &&
      s.policies.every((p) => p.id === 0)
    );
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
      const ifs = await this.list();
      const sig = signature(ifs);
      if (sig !== this.ifSignature) {
        this.interfaces = ifs;
        this.trigger('interfaces changed');
      }
    } catch (err) {
      this.opts.log.warn('listing interfaces failed', { error: (err as Error).message });
    }
  }

  trigger(why: string): void {
    if (this.stopped) return;
    this.opts.log.debug('reconcile requested', { why });
    this.why = why;
    this.queue.enqueue(NODE_KEY);
  }

  /** Runs a reconcile now (or right after the one running) and resolves once the queue is idle again. */
  reconcile(why: string): Promise<void> {
    this.why = why;
    this.queue.enqueueNow(NODE_KEY);
    return this.queue.idle();
  }

  private async reconcileOnce(): Promise<void> {
    const t0 = performance.now();
    const why = this.why;
    const { log, datapath, source } = this.opts;
    if (source.isSynced && !source.isSynced()) {
      // Never act on an empty view: pinned hooks keep the last good state until the source has listed.
      log.info('waiting for the policy source before touching the data path', { why });
      return;
    }
    try {
      const interfaces = this.interfaces ?? (this.interfaces = await this.list());
      this.ifSignature = signature(interfaces);
      const snap = source.snapshot();
      const desiredFor = (policies: readonly TokenPolicy[]): DesiredState =>
        computeDesired({
          policies,
          keys: snap.keys,
          nodeLabels: snap.nodeLabels,
          interfaces,
          previousIds: datapath.previousIds(),
          memo: this.memo,
        });
      // Only a refusal needs the world's signature (all policies' specs): computed when there is one.
      let worldText: string | undefined;
      const world = (): string => (worldText ??= worldSignature(snap, this.ifSignature));
      // A version the kernel refused in this same world is not tried again: its last applied version stands in.
      const known = new Map<string, string>();
      const wanted: TokenPolicy[] = [];
      const byName = new Map(snap.policies.map((p) => [p.metadata.name, p]));
      for (const p of snap.policies) {
        const r = this.refused.get(p.metadata.name);
        if (r && r.version === versionOf(p) && r.world === world()) {
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
      for (const [name, message] of refusedNow)
        this.refused.set(name, { version: versionOf(byName.get(name)!), world: world(), message });
      for (const [name, message] of known) refusedNow.set(name, message);
      for (const name of [...this.refused.keys()]) if (!refusedNow.has(name)) this.refused.delete(name);
      const appliedVersions = new Map<string, TokenPolicy>();
      for (const p of wanted)
        if (!refusedNow.has(p.metadata.name) || this.applied.get(p.metadata.name) === p) appliedVersions.set(p.metadata.name, p);
      for (const [name, p] of this.applied) if (refusedNow.has(name) && byName.has(name)) appliedVersions.set(name, p);
      this.applied = appliedVersions;

      const outcomes = this.outcomes(snap, desired, refusedNow, desiredFor);
      const now = new Map(outcomes.map((o) => [o.name, o]));
      for (const o of outcomes) {
        const before = this.lastOutcomes.get(o.name);
        // Each error and warning is logged when it appears, not on every reconcile.
        const said = new Set([...(before?.errors ?? []), ...(before?.warnings ?? [])].map((f) => `${f.reason}\n${f.message}`));
        for (const e of o.errors)
          if (!said.has(`${e.reason}\n${e.message}`)) log.warn(e.message, { policy: o.name, reason: e.reason });
        for (const w of o.warnings)
          if (!said.has(`${w.reason}\n${w.message}`)) log.warn(w.message, { policy: o.name, reason: w.reason });
        if (!before || before.generation !== o.generation || before.interfaces.join() !== o.interfaces.join()) {
          log.info('policy applied', {
            policy: o.name,
            generation: o.generation,
            selected: o.selected,
            interfaces: o.interfaces,
          });
        }
      }
      for (const gone of this.lastOutcomes.keys()) if (!now.has(gone)) log.info('policy removed', { policy: gone });
      this.lastOutcomes = now;
      this.reconciles++;
      const ms = performance.now() - t0;
      const counters = this.countersForStatus(result.hooks);
      this.status = {
        updatedAt: isoTime(),
        programId: datapath.programId,
        ready: result.errors.length === 0 && outcomes.every((o) => o.errors.length === 0),
        policies: outcomes.map((o) => ({ ...o, counters: counters.policy(o.name, o.id) })),
        hooks: result.hooks,
        interfaces: counters.interfaces,
        hookErrors: result.errors,
        documentErrors: snap.documentErrors,
        reconciles: this.reconciles,
        lastReconcileMs: Math.round(ms * 10) / 10,
      };
      this.writeStatus();
      this.lastOk = true;
      // Settled: nothing waits, and this was not one reconcile of a burst (the end of a burst is
      // known only once it has been quiet for a burst delay: onBurstEnd below).
      this.opts.onStatus?.(this.status, this.queue.depth === 0 && !this.queue.bursting(NODE_KEY));
      log.debug('reconciled', { why, ms: this.status.lastReconcileMs, writes: result.mapWrites, deletes: result.mapDeletes });
    } catch (err) {
      this.lastOk = false;
      // A stale interface list is the likeliest cause: list them afresh for the retry.
      this.interfaces = null;
      log.error('reconcile failed', { why, error: (err as Error).message });
      throw err;
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
    log.error('the kernel refused the desired state; applying the policies one at a time to find which it refuses', {
      error: first.message,
    });
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
    for (const p of [...wanted].sort(by((x) => x.metadata.name))) {
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
        log.error('the kernel refused a policy; it keeps its last applied version, if any', {
          policy: p.metadata.name,
          generation: p.metadata.generation ?? 0,
          error: message,
        });
        result = datapath.apply(desired);
      }
    }
    return { desired, result, refused };
  }

  /**
   * What status says of each policy of the snapshot: what was applied, plus KernelRefused for
   * refused versions and SecretUnavailable where a source kept keys it can no longer read.
   */
  private outcomes(
    snap: Snapshot,
    desired: DesiredState,
    refused: ReadonlyMap<string, string>,
    desiredFor: (p: readonly TokenPolicy[]) => DesiredState,
  ): PolicyOutcome[] {
    let all: Map<string, PolicyOutcome> | undefined;
    const out: PolicyOutcome[] = [];
    const appliedOutcomes = new Map(desired.outcomes.map((o) => [o.name, o]));
    for (const p of [...snap.policies].sort(by((x) => x.metadata.name))) {
      const name = p.metadata.name;
      const applied = appliedOutcomes.get(name);
      let o: PolicyOutcome;
      const message = refused.get(name);
      if (message !== undefined) {
        if (applied) {
          o = {
            ...applied,
            errors: [
              ...applied.errors,
              {
                reason: 'KernelRefused',
                message: `the kernel refused generation ${p.metadata.generation ?? 0} (${message}); generation ${applied.generation} stays applied`,
              },
            ],
          };
        } else {
          all ??= new Map(desiredFor(snap.policies).outcomes.map((x) => [x.name, x]));
          const full = all.get(name);
          o = {
            name,
            generation: p.metadata.generation ?? 0,
            selected: full?.selected ?? true,
            id: 0,
            interfaces: [],
            warnings: full?.warnings ?? [],
            errors: [
              ...(full?.errors ?? []),
              { reason: 'KernelRefused', message: `the kernel refused this policy's BPF state: ${message}` },
            ],
          };
        }
      } else if (applied) {
        o = applied;
      } else {
        continue;
      }
      const kept = keptKeysProblem(snap.keys.get(name));
      if (kept && o.selected)
        o = {
          ...o,
          errors: [...o.errors, { reason: 'SecretUnavailable', message: `${kept}; the keys read before stay in use` }],
        };
      out.push(o);
    }
    return out;
  }

  /**
   * The counters a reconcile puts in the status. Reading them visits every counter slot (one
   * lookup per policy and interface), so a burst of reconciles reads them at most once per
   * COUNTERS_MAX_AGE_MS: in between, each policy keeps the counters last read for it (same name,
   * same id; a new policy has none yet) and each interface its own, and the refresh timer reads
   * them all again as before.
   */
  private countersForStatus(hooks: readonly HookStatus[]): StatusCounters {
    const prev = this.status;
    if (prev && performance.now() - this.countersReadAt < COUNTERS_MAX_AGE_MS) {
      const kept = new Map(prev.policies.map((p) => [p.name, p]));
      const hooked = new Set(hooks.map((h) => h.ifindex));
      return {
        policy: (name, id) => {
          const p = kept.get(name);
          return p && p.id === id ? p.counters : {};
        },
        interfaces: prev.interfaces.filter((i) => hooked.has(i.ifindex)),
      };
    }
    return this.readCounters(hooks);
  }

  /** The counters as the kernel has them now, for the status (and when they were read). */
  private readCounters(hooks: readonly HookStatus[]): StatusCounters {
    const rows = this.opts.datapath.counters();
    this.countersReadAt = performance.now();
    const byPolicy = rowsByPolicy(rows);
    return { policy: (_name, id) => countersFor(id, byPolicy), interfaces: interfaceCounters(hooks, rows) };
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
  return full
    ? `${err.message}: the map is full; give this node fewer destinations × interfaces (or ports, exempt sources)`
    : err.message;
}

const versions = new WeakMap<TokenPolicy, string>();

/** One policy version: what a refusal is remembered for (sources hand out the same object per version). */
function versionOf(p: TokenPolicy): string {
  let v = versions.get(p);
  if (v === undefined) versions.set(p, (v = JSON.stringify([p.metadata.generation ?? 0, p.spec])));
  return v;
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

function rowsByPolicy(rows: readonly CounterRow[]): Map<number, CounterRow[]> {
  const out = new Map<number, CounterRow[]>();
  for (const r of rows) {
    if (r.policyId === 0) continue;
    const list = out.get(r.policyId);
    if (list) list.push(r);
    else out.set(r.policyId, [r]);
  }
  return out;
}

function countersFor(policyId: number, byPolicy: ReadonlyMap<number, readonly CounterRow[]>): Record<string, string> {
  const out: Record<string, bigint> = {};
  for (const r of byPolicy.get(policyId) ?? []) out[r.counter] = (out[r.counter] ?? 0n) + r.value;
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.toString()]));
}
