/**
 * The node agent's reconcile core, shared by standalone and cluster mode:
 * Snapshot (policies, keys, labels) + host interfaces -> DesiredState -> Datapath.
 * Reconciles are serialized (one at a time; a change during one queues exactly one more),
 * triggered by source changes and by interfaces appearing, disappearing or changing.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../lib/files.js';
import type { Logger } from '../lib/log.js';
import { type CounterRow, type Datapath, type HookError, type HookStatus } from './datapath.js';
import { type PolicyOutcome, computeDesired } from './desired.js';
import { type HostInterface, listInterfaces } from './interfaces.js';
import type { DocumentError, PolicySource } from './source.js';

export interface PolicyStatus extends PolicyOutcome {
  /** counters summed over this node's interfaces */
  counters: Record<string, string>;
}

/** What `netoken status` shows and cluster mode turns into TokenNodeState. Never holds key material. */
export interface AgentStatus {
  updatedAt: string;
  programId: number;
  ready: boolean;
  policies: PolicyStatus[];
  hooks: HookStatus[];
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
      this.status = { ...this.status, policies: this.status.policies.map((p) => ({ ...p, counters: countersFor(p.id, counters) })) };
      this.writeStatus();
      void this.opts.onStatus?.(this.status);
    } catch (err) {
      this.opts.log.warn('reading counters failed', { error: (err as Error).message });
    }
  }

  /** Stop watching; hooks and maps stay pinned and keep marking. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.counterTimer) clearInterval(this.counterTimer);
    this.opts.source.stop();
    await this.running;
  }

  lastStatus(): AgentStatus | null {
    return this.status;
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
      const desired = computeDesired({
        policies: snap.policies,
        keys: snap.keys,
        nodeLabels: snap.nodeLabels,
        interfaces,
        previousIds: datapath.previousIds(),
      });
      const result = datapath.apply(desired);
      for (const o of desired.outcomes) {
        for (const e of o.errors) log.warn(e.message, { policy: o.name, reason: e.reason });
        for (const w of o.warnings) log.warn(w.message, { policy: o.name, reason: w.reason });
        const before = this.lastOutcomes.find((x) => x.name === o.name);
        if (!before || before.generation !== o.generation || before.interfaces.join() !== o.interfaces.join()) {
          log.info('policy applied', { policy: o.name, generation: o.generation, selected: o.selected, interfaces: o.interfaces });
        }
      }
      for (const gone of this.lastOutcomes.filter((x) => !desired.outcomes.some((o) => o.name === x.name))) {
        log.info('policy removed', { policy: gone.name });
      }
      this.lastOutcomes = desired.outcomes;
      this.reconciles++;
      const ms = performance.now() - t0;
      const counters = datapath.counters();
      this.status = {
        updatedAt: new Date().toISOString(),
        programId: datapath.programId,
        ready: result.errors.length === 0 && desired.outcomes.every((o) => o.errors.length === 0),
        policies: desired.outcomes.map((o) => ({ ...o, counters: countersFor(o.id, counters) })),
        hooks: result.hooks,
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

  private writeStatus(): void {
    if (!this.status) return;
    mkdirSync(this.opts.runDir, { recursive: true, mode: 0o700 });
    const file = path.join(this.opts.runDir, 'status.json');
    writeFileAtomic(file, JSON.stringify(this.status, null, 2), 0o644);
  }
}

function signature(ifs: readonly HostInterface[]): string {
  return ifs.map((i) => `${i.ifindex}:${i.name}:${i.defaultRoute ? 1 : 0}`).join(',');
}

function countersFor(policyId: number, rows: readonly CounterRow[]): Record<string, string> {
  const out: Record<string, bigint> = {};
  for (const r of rows) if (policyId !== 0 && r.policyId === policyId) out[r.counter] = (out[r.counter] ?? 0n) + r.value;
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.toString()]));
}
