/**
 * A per-key serial work queue (the shape of Pepr's queue and client-go's workqueue): one
 * reconcile at a time per key, keys served first-in first-out, a key enqueued while it is
 * waiting is coalesced into the waiting entry, and a key enqueued while it runs is run once
 * more after it finishes (so the last change is always seen). Failures retry with a per-key
 * exponential backoff; a reconcile can ask to run again after a delay (rotation, timeouts).
 * Nothing runs while the queue is paused: a standby operator collects keys but acts on none.
 *
 * Keys are typed values (for the operator, which kind of object and its name); `keyId` turns
 * one into the string that tells two keys apart.
 */
import type { Logger } from '../lib/log.js';
import { describeError } from '../lib/kube.js';

export interface ReconcileResult {
  /** Run this key again after so many milliseconds (the earliest request wins). */
  requeueAfterMs?: number;
}

export type ReconcileFn<K = string> = (key: K) => Promise<ReconcileResult | void>;

export interface QueueOptions<K = string> {
  reconcile: ReconcileFn<K>;
  /** What tells two keys apart; it defaults to String(key). */
  keyId?: (key: K) => string;
  log: Logger;
  /** How many different keys may reconcile at once; it defaults to 2. */
  concurrency?: number;
  /** First retry delay after a failure; it defaults to 1000 ms and doubles per failure. */
  baseBackoffMs?: number;
  /** Longest retry delay; it defaults to 60000 ms. */
  maxBackoffMs?: number;
  /** Called after every reconcile with its duration (and the error, if it threw). */
  onDone?: (key: K, seconds: number, error?: unknown) => void;
}

/** Timers longer than this are re-armed in steps (setTimeout overflows past 2^31-1 ms). */
const MAX_TIMER_MS = 3_600_000;

export class KeyedQueue<K = string> {
  /** waiting keys in arrival order, by id; never holds a key that is running */
  private readonly waiting = new Map<string, K>();
  /** running keys by id, with when they started */
  private readonly running = new Map<string, number>();
  /** keys enqueued while running: they go back to `waiting` when their run ends */
  private readonly again = new Map<string, K>();
  private readonly timers = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly failures = new Map<string, number>();
  private readonly idleWaiters: (() => void)[] = [];
  private readonly id: (key: K) => string;
  private active = false;
  private closed = false;

  constructor(private readonly o: QueueOptions<K>) {
    this.id = o.keyId ?? String;
  }

  /** Start (or resume) running reconciles. */
  resume(): void {
    if (this.closed) return;
    this.active = true;
    this.pump();
  }

  /** Stop starting reconciles; those already running finish. Keys keep waiting. */
  pause(): void {
    this.active = false;
  }

  get paused(): boolean {
    return !this.active;
  }

  /** Reconcile `key` as soon as possible (a key enqueued again while running keeps its newest value). */
  enqueue(key: K): void {
    if (this.closed) return;
    const id = this.id(key);
    if (this.running.has(id)) this.again.set(id, key);
    else this.waiting.set(id, key);
    this.pump();
  }

  /** Reconcile `key` after `ms` milliseconds, unless an earlier run of it is already due. */
  enqueueAfter(key: K, ms: number, now = Date.now()): void {
    if (this.closed) return;
    const id = this.id(key);
    const at = now + Math.max(0, ms);
    const prev = this.timers.get(id);
    if (prev && prev.at <= at) return;
    if (prev) clearTimeout(prev.timer);
    const timer = setTimeout(() => {
      this.timers.delete(id);
      if (at - Date.now() > 0) this.enqueueAfter(key, at - Date.now());
      else this.enqueue(key);
    }, Math.min(Math.max(0, ms), MAX_TIMER_MS));
    timer.unref();
    this.timers.set(id, { at, timer });
  }

  /** Keys waiting to run (not counting delayed ones). */
  get depth(): number {
    return this.waiting.size + this.again.size;
  }

  /** When the longest-running reconcile started (ms since the epoch), or undefined. */
  oldestRunningSince(): number | undefined {
    let oldest: number | undefined;
    for (const t of this.running.values()) if (oldest === undefined || t < oldest) oldest = t;
    return oldest;
  }

  /** Resolves when nothing is waiting or running (delayed keys do not count). */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((res) => this.idleWaiters.push(res));
  }

  /** Stops everything: no new runs, timers cleared; resolves when running reconciles end. */
  async close(): Promise<void> {
    this.closed = true;
    this.active = false;
    for (const t of this.timers.values()) clearTimeout(t.timer);
    this.timers.clear();
    this.waiting.clear();
    this.again.clear();
    while (this.running.size > 0) await new Promise<void>((res) => this.idleWaiters.push(res));
  }

  private isIdle(): boolean {
    return this.running.size === 0 && (this.waiting.size === 0 || !this.active) && this.again.size === 0;
  }

  private pump(): void {
    const limit = this.o.concurrency ?? 2;
    while (this.active && this.running.size < limit) {
      const next = this.waiting.entries().next();
      if (next.done) break;
      const [id, key] = next.value;
      this.waiting.delete(id);
      void this.runOne(id, key);
    }
    if (this.isIdle()) {
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  private async runOne(id: string, key: K): Promise<void> {
    const started = Date.now();
    this.running.set(id, started);
    let result: ReconcileResult | void = undefined;
    let error: unknown;
    let failed = false;
    try {
      result = await this.o.reconcile(key);
    } catch (err) {
      failed = true;
      error = err;
    }
    this.running.delete(id);
    const seconds = (Date.now() - started) / 1000;
    this.o.onDone?.(key, seconds, failed ? error : undefined);
    if (!this.closed) {
      if (failed) {
        const n = (this.failures.get(id) ?? 0) + 1;
        this.failures.set(id, n);
        const wait = Math.min((this.o.baseBackoffMs ?? 1000) * 2 ** (n - 1), this.o.maxBackoffMs ?? 60_000);
        this.o.log.warn('reconcile failed; retrying', { key: id, error: describeError(error), retryMs: wait, failures: n });
        this.enqueueAfter(key, wait);
      } else {
        this.failures.delete(id);
        if (result?.requeueAfterMs !== undefined) this.enqueueAfter(key, result.requeueAfterMs);
      }
      const rerun = this.again.get(id);
      if (rerun !== undefined) {
        this.again.delete(id);
        this.waiting.set(id, rerun);
      }
    }
    this.pump();
  }
}
