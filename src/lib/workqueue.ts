/**
 * The work queue of a controller (the shape of client-go's workqueue as controller-runtime uses
 * it), shared by the operator (one key per object) and the agent (one key: its node):
 *
 * - One reconcile at a time per key; a key enqueued while it waits is coalesced into the waiting
 *   entry, and a key enqueued while it runs runs once more after it finishes (the last change is
 *   always seen).
 * - A batching delay: a key that was not waiting becomes runnable only after `batchDelayMs`, so a
 *   burst of changes (a `kubectl create` of many objects, a node report listing many policies)
 *   costs one reconcile per key, not one per change. Keys become runnable in arrival order.
 * - A rate limiter on retries: a failed key runs again after a per-key exponential backoff, and
 *   retries of all keys together stay under a token bucket, so an API server that fails
 *   everything is not hammered. A conflict (HTTP 409: the cache was behind) is no failure: the
 *   key runs again at once, quietly, with a short growing pause if conflicts repeat.
 * - A reconcile can ask to run again after a delay (rotation, timeouts); the last successful run
 *   of a key decides whether and when.
 * - Nothing runs while the queue is paused: a standby operator collects keys but acts on none.
 *
 * Keys are typed values; `keyId` turns one into the string that tells two keys apart.
 */
import type { Logger } from './log.js';
import { describeError } from './kube.js';

export interface ReconcileResult {
  /**
   * Run this key again after so many milliseconds. The last successful run of a key decides:
   * a requeue an earlier run asked for, or a retry still pending, is replaced by this one, or
   * dropped when this run asks for none (it saw everything the earlier one did, and more).
   */
  requeueAfterMs?: number;
}

export type ReconcileFn<K = string> = (key: K) => Promise<ReconcileResult | void>;

export type ReconcileOutcome = 'success' | 'error' | 'conflict';

export interface QueueOptions<K = string> {
  reconcile: ReconcileFn<K>;
  /** What tells two keys apart; it defaults to String(key). */
  keyId?: (key: K) => string;
  log: Logger;
  /** How many different keys may reconcile at once; it defaults to 2. */
  concurrency?: number;
  /** How long a newly enqueued key waits for more changes before it may run; it defaults to 0. */
  batchDelayMs?: number;
  /**
   * For a key whose every reconcile costs what all its objects cost (the agent's one key): once a
   * run covered `burstChanges` changes or more, the key is in a burst, and a change during that
   * run or within `burstDelayMs` after it waits `burstDelayMs` (instead of the batching delay, or
   * running again at once). A burst then costs one reconcile per `burstDelayMs`, while a change
   * on its own still waits only the batching delay. enqueueNow and conflicts run it at once.
   */
  burstDelayMs?: number;
  /** How many changes one run must cover to start a burst; it defaults to 4. */
  burstChanges?: number;
  /**
   * With burstDelayMs: called when a burst is over, `burstDelayMs` after a run in a burst (one
   * that covered a burst of changes, or waited the burst delay) when no change came since.
   */
  onBurstEnd?: (key: K) => void;
  /** First retry delay after a failure; it defaults to 1000 ms and doubles per failure. */
  baseBackoffMs?: number;
  /** Longest retry delay; it defaults to 60000 ms. */
  maxBackoffMs?: number;
  /** Retries of all keys together: so many per second on average ... (default 10) */
  retryQps?: number;
  /** ... and at most so many at once (default 100). */
  retryBurst?: number;
  /** Tells a conflict (the object changed since it was read) from a failure; it defaults to none. */
  isConflict?: (err: unknown) => boolean;
  /** Called after every reconcile with its duration and outcome (and the error, if it threw). */
  onDone?: (key: K, seconds: number, outcome: ReconcileOutcome, error?: unknown) => void;
}

/** Timers longer than this are re-armed in steps (setTimeout overflows past 2^31-1 ms). */
const MAX_TIMER_MS = 3_600_000;
/** Pause before re-running a key after its n-th conflict in a row: 10 ms doubling, at most 1 s. */
const conflictPause = (n: number): number => (n <= 1 ? 0 : Math.min(10 * 2 ** (n - 2), 1000));

export class KeyedQueue<K = string> {
  /** runnable keys in order, by id; never holds a key that is running */
  private readonly ready = new Map<string, K>();
  /** keys in their batching delay, in arrival order (so in order of when they become runnable) */
  private readonly batching = new Map<string, { key: K; at: number }>();
  private batchTimer: NodeJS.Timeout | null = null;
  /** running keys by id, with when they started */
  private readonly running = new Map<string, number>();
  /** keys enqueued while running: they are enqueued again when their run ends */
  private readonly again = new Map<string, K>();
  /** keys in `again` that were asked to run again at once (enqueueNow, a conflict) */
  private readonly againNow = new Set<string>();
  /** with burstDelayMs: the changes to each key since its last run started ... */
  private readonly changes = new Map<string, number>();
  /** ... and when its last run ended and how many changes it covered */
  private readonly lastRun = new Map<string, { end: number; covered: number; bursting: boolean }>();
  /** keys whose next run waits the burst delay, and keys running in a burst */
  private readonly burstDelayed = new Set<string>();
  private readonly runningInBurst = new Set<string>();
  /** the check, a burst delay after a run in a burst, that the burst is over */
  private readonly burstEnds = new Map<string, NodeJS.Timeout>();
  private readonly timers = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly failures = new Map<string, number>();
  private readonly conflicts = new Map<string, number>();
  private readonly idleWaiters: (() => void)[] = [];
  private readonly id: (key: K) => string;
  /** the retry token bucket: tokens left, and when it was last filled */
  private tokens: number;
  private filledAt = Date.now();
  private active = false;
  private closed = false;

  constructor(private readonly o: QueueOptions<K>) {
    this.id = o.keyId ?? String;
    this.tokens = o.retryBurst ?? 100;
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

  /** Reconcile `key` once its batching delay has passed (a key enqueued again keeps its newest value). */
  enqueue(key: K): void {
    this.add(key, this.o.batchDelayMs ?? 0);
  }

  /** Reconcile `key` as soon as possible, without a batching delay. */
  enqueueNow(key: K): void {
    this.add(key, 0);
  }

  private add(key: K, delay: number, change = true): void {
    if (this.closed) return;
    const id = this.id(key);
    if (this.o.burstDelayMs !== undefined) {
      if (change) this.changes.set(id, (this.changes.get(id) ?? 0) + 1);
      if (delay > 0 && this.inBurst(id)) {
        delay = this.o.burstDelayMs;
        this.burstDelayed.add(id);
      }
    }
    if (this.running.has(id)) {
      this.again.set(id, key);
      if (delay === 0) this.againNow.add(id);
    } else if (this.ready.has(id)) {
      this.ready.set(id, key);
    } else if (this.batching.has(id) && delay > 0) {
      (this.batching.get(id) as { key: K }).key = key;
    } else if (delay > 0) {
      this.batching.set(id, { key, at: Date.now() + delay });
      this.armBatchTimer();
    } else {
      this.batching.delete(id);
      this.ready.set(id, key);
    }
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
    const timer = setTimeout(
      () => {
        this.timers.delete(id);
        if (at - Date.now() > 0) this.enqueueAfter(key, at - Date.now());
        else this.enqueueNow(key);
      },
      Math.min(Math.max(0, ms), MAX_TIMER_MS),
    );
    timer.unref();
    this.timers.set(id, { at, timer });
  }

  private cancelTimer(id: string): void {
    const t = this.timers.get(id);
    if (!t) return;
    clearTimeout(t.timer);
    this.timers.delete(id);
  }

  /** Keys waiting to run (in their batching delay or runnable; not counting delayed retries and requeues). */
  get depth(): number {
    return this.ready.size + this.batching.size + this.again.size;
  }

  /** When the longest-running reconcile started (ms since the epoch), or undefined. */
  oldestRunningSince(): number | undefined {
    let oldest: number | undefined;
    for (const t of this.running.values()) if (oldest === undefined || t < oldest) oldest = t;
    return oldest;
  }

  /** Resolves when nothing is waiting or running (delayed retries and requeues do not count). */
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
    for (const t of this.burstEnds.values()) clearTimeout(t);
    this.burstEnds.clear();
    if (this.batchTimer) clearTimeout(this.batchTimer);
    this.batchTimer = null;
    this.ready.clear();
    this.batching.clear();
    this.again.clear();
    this.againNow.clear();
    this.changes.clear();
    while (this.running.size > 0) await new Promise<void>((res) => this.idleWaiters.push(res));
  }

  private isIdle(): boolean {
    const waiting = this.ready.size + this.batching.size;
    return this.running.size === 0 && (waiting === 0 || !this.active) && this.again.size === 0;
  }

  /** Moves keys whose batching delay has passed to `ready`, and arms the timer for the next. */
  private armBatchTimer(): void {
    if (this.batchTimer || this.closed) return;
    const first = this.batching.values().next();
    if (first.done) return;
    this.batchTimer = setTimeout(
      () => {
        this.batchTimer = null;
        const now = Date.now();
        for (const [id, b] of this.batching) {
          if (b.at > now) break;
          this.batching.delete(id);
          this.ready.set(id, b.key);
        }
        this.armBatchTimer();
        this.pump();
      },
      Math.max(0, first.value.at - Date.now()),
    );
  }

  private pump(): void {
    const limit = this.o.concurrency ?? 2;
    while (this.active && this.running.size < limit) {
      const next = this.ready.entries().next();
      if (next.done) break;
      const [id, key] = next.value;
      this.ready.delete(id);
      void this.runOne(id, key);
    }
    if (this.isIdle()) {
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  /** How long until a retry may run under the retry token bucket (and takes its token). */
  private retryDelay(): number {
    const qps = this.o.retryQps ?? 10;
    const burst = this.o.retryBurst ?? 100;
    const now = Date.now();
    this.tokens = Math.min(burst, this.tokens + ((now - this.filledAt) / 1000) * qps);
    this.filledAt = now;
    this.tokens -= 1;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens / qps) * 1000);
  }

  /** Whether `key` is running in a burst (see runOne). */
  bursting(key: K): boolean {
    return this.runningInBurst.has(this.id(key));
  }

  /** Whether `id`'s last run covered a burst of changes and ended less than burstDelayMs ago. */
  private inBurst(id: string): boolean {
    const last = this.lastRun.get(id);
    const burst = this.o.burstDelayMs;
    return (
      burst !== undefined && last !== undefined && last.covered >= (this.o.burstChanges ?? 4) && Date.now() - last.end < burst
    );
  }

  /** After a run in a burst: the burst is over if no change comes within `ms` (onBurstEnd). */
  private watchBurstEnd(id: string, key: K, ms: number): void {
    if (!this.o.onBurstEnd || this.closed) return;
    this.cancelBurstEnd(id);
    const timer = setTimeout(() => {
      this.burstEnds.delete(id);
      const pending = this.running.has(id) || this.ready.has(id) || this.batching.has(id) || this.again.has(id);
      if (this.closed || pending || (this.changes.get(id) ?? 0) > 0) return;
      try {
        this.o.onBurstEnd?.(key);
      } catch (err) {
        this.o.log.warn('burst-end callback failed', { key: id, error: describeError(err) });
      }
    }, ms);
    timer.unref();
    this.burstEnds.set(id, timer);
  }

  private cancelBurstEnd(id: string): void {
    const t = this.burstEnds.get(id);
    if (t) clearTimeout(t);
    this.burstEnds.delete(id);
  }

  private async runOne(id: string, key: K): Promise<void> {
    const started = Date.now();
    this.running.set(id, started);
    const covered = this.changes.get(id) ?? 0;
    this.changes.delete(id);
    // In a burst: it covered a burst of changes, waited the burst delay, or follows a run in a
    // burst within the burst delay (a last few changes that run at once).
    const prev = this.lastRun.get(id);
    const bursting =
      this.burstDelayed.delete(id) ||
      covered >= (this.o.burstChanges ?? 4) ||
      (prev !== undefined && prev.bursting && started - prev.end < (this.o.burstDelayMs ?? 0));
    if (this.o.burstDelayMs !== undefined && bursting) this.runningInBurst.add(id);
    this.cancelBurstEnd(id);
    let result: ReconcileResult | void = undefined;
    let error: unknown;
    let outcome: ReconcileOutcome = 'success';
    try {
      result = await this.o.reconcile(key);
    } catch (err) {
      error = err;
      outcome = this.o.isConflict?.(err) ? 'conflict' : 'error';
    }
    this.running.delete(id);
    this.runningInBurst.delete(id);
    if (this.o.burstDelayMs !== undefined) {
      this.lastRun.set(id, { end: Date.now(), covered, bursting });
      if (bursting) this.watchBurstEnd(id, key, this.o.burstDelayMs);
    }
    const seconds = (Date.now() - started) / 1000;
    this.o.onDone?.(key, seconds, outcome, error);
    if (!this.closed) {
      if (outcome === 'error') {
        this.conflicts.delete(id);
        const n = (this.failures.get(id) ?? 0) + 1;
        this.failures.set(id, n);
        const wait = Math.max(
          Math.min((this.o.baseBackoffMs ?? 1000) * 2 ** (n - 1), this.o.maxBackoffMs ?? 60_000),
          this.retryDelay(),
        );
        this.o.log.warn('reconcile failed; retrying', { key: id, error: describeError(error), retryMs: wait, failures: n });
        this.enqueueAfter(key, wait);
      } else if (outcome === 'conflict') {
        const n = (this.conflicts.get(id) ?? 0) + 1;
        this.conflicts.set(id, n);
        this.o.log.debug('conflict: the object changed since it was read; reconciling again', { key: id, conflicts: n });
        const pause = conflictPause(n);
        if (pause === 0) {
          this.again.set(id, key);
          this.againNow.add(id);
        } else this.enqueueAfter(key, pause);
      } else {
        this.failures.delete(id);
        this.conflicts.delete(id);
        this.cancelTimer(id);
        if (result?.requeueAfterMs !== undefined) this.enqueueAfter(key, result.requeueAfterMs);
      }
      const rerun = this.again.get(id);
      if (rerun !== undefined) {
        this.again.delete(id);
        const atOnce = this.againNow.delete(id) || !this.inBurst(id);
        this.add(rerun, atOnce ? 0 : this.o.burstDelayMs!, false);
      }
    }
    this.pump();
  }
}
