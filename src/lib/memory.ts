/**
 * Gives memory back once a burst of work is over. V8 sizes its heap for the peak of a burst (a
 * `kubectl create` of a thousand policies: dozens of reconciles over all of them, and a thousand
 * watch events per status round that only replace cached objects) and then keeps it: the garbage
 * of the burst and the pages it filled stay resident until the heap next fills, which in a quiet
 * process can be never, and C heap freed by native code stays in the allocator's arenas.
 *
 * So a long-running command (the agent, the operator) starts one settler for the process, and
 * work (a reconcile, a watch event) calls `noteWork()`. Once no work has come for `quietMs`, the
 * settler runs a full collection that shrinks the heap and hands freed pages back, then
 * `release` (the agent's malloc_trim), and both once more a second later: what Go's
 * debug.FreeOSMemory does, once per burst, never while idle. During a burst that does not end, a
 * check every `checkMs` collects (once) when the live heap has grown by `growthMiB` since the last
 * settle.
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import type { Logger } from './log.js';

type GcFn = () => void;

let collector: GcFn | null | undefined;

/** A full collection on demand, without `--expose-gc` on the command line (null if V8 refuses). */
function fullGc(): GcFn | null {
  if (collector !== undefined) return collector;
  try {
    v8.setFlagsFromString('--expose-gc');
    const fn = vm.runInNewContext('gc') as unknown;
    collector = typeof fn === 'function' ? (fn as GcFn) : null;
  } catch {
    collector = null;
  }
  return collector;
}

/**
 * The Node options the agent and the operator run with: the image sets them (Dockerfile,
 * `ENV NODE_OPTIONS`), and the tests and benchmarks that start either pass the same. V8's young
 * generation otherwise grows to 16 MiB per semi-space during a burst (3 of them resident: 48 MiB)
 * and shrinks back only when V8 next finds the process idle; at 1 MiB the young generation of a
 * busy agent stays under 3 MiB and scavenges stay short. The flag must be given at start (V8 sizes
 * the heap once), so this is not set from inside.
 */
export const DAEMON_NODE_OPTIONS = '--max-semi-space-size=1';

/**
 * One glibc malloc arena for the whole process, set the same way (image `ENV`, tests, benchmarks).
 * glibc gives each thread that contends for the heap an arena of its own, up to eight per core;
 * Node's worker threads (V8's platform, libuv's pool) each end up with one, and what a burst left
 * in them stays resident in pieces malloc_trim cannot return: 10–15 MiB more for an agent that
 * applied a thousand policies. A daemon whose work runs on one thread loses nothing by sharing one.
 */
export const DAEMON_MALLOC_ARENA_MAX = '1';

/**
 * `env` with DAEMON_NODE_OPTIONS added to its NODE_OPTIONS and MALLOC_ARENA_MAX set (unless it is),
 * for a child that runs the agent or the operator.
 */
export function daemonEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return {
    ...env,
    NODE_OPTIONS: [env.NODE_OPTIONS, DAEMON_NODE_OPTIONS].filter(Boolean).join(' '),
    MALLOC_ARENA_MAX: env.MALLOC_ARENA_MAX ?? DAEMON_MALLOC_ARENA_MAX,
  };
}

const rssMiB = (): number => Math.round((process.memoryUsage.rss() / 1048576) * 10) / 10;
const liveHeap = (): number => v8.getHeapStatistics().used_heap_size;

export interface SettlerOptions {
  /** how long after the last work to settle (default 2 s) */
  quietMs?: number;
  /** how often to compare the live heap with its size after the last settle (default 5 s) */
  checkMs?: number;
  /** growth of the live heap since the last settle that makes a check settle (default 16 MiB) */
  growthMiB?: number;
  /** returns freed C heap to the system after the collection (the native addon's trimMemory) */
  release?: () => void;
  log?: Logger;
}

export class MemorySettler {
  private timer: NodeJS.Timeout | null = null;
  private readonly check: NodeJS.Timeout;
  private closed = false;
  /** the live heap after the last settle (bytes) */
  private baseline = liveHeap();
  /** settles done */
  settles = 0;

  constructor(private readonly opts: SettlerOptions = {}) {
    const growth = (opts.growthMiB ?? 16) * 1048576;
    this.check = setInterval(() => {
      // Mid-burst: the settle once the burst is over (touch()) stays due.
      if (liveHeap() > this.baseline + growth) this.collect('the heap grew', false);
    }, opts.checkMs ?? 5000);
    this.check.unref();
  }

  /** Work happened: settle once `quietMs` pass without more. */
  touch(): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.settle('work is over'), this.opts.quietMs ?? 2000);
    this.timer.unref();
  }

  /** One full collection and release, now (and none pending). */
  settle(why = 'asked'): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.collect(why, true);
  }

  /** A full collection and release; `again`: a second one a second later (see there). */
  private collect(why: string, again: boolean): void {
    const gc = fullGc();
    if (!gc || this.closed) return;
    const before = rssMiB();
    const t0 = performance.now();
    // gc() with no options: a full, synchronous collection that frees emptied pages (Node 20's V8
    // does not run one synchronously when given an options object); it also starts V8's memory
    // reducer, which shrinks the young generation over the next seconds.
    gc();
    this.release();
    this.settles++;
    this.baseline = liveHeap();
    const ms = Math.round((performance.now() - t0) * 10) / 10;
    // V8 hands emptied pages back from a background thread after the collection returns, so the
    // resident size is read a second later. Once a burst is over, a second collection then
    // frees what only the first one let go of (measured: an agent with 1000 policies settles at
    // 91 MiB after two, at 96-100 MiB after one, for 20 ms more).
    const later = setTimeout(() => {
      if (again && !this.closed) {
        gc();
        this.release();
      }
      this.opts.log?.debug('memory settled', { why, rssMiB: { before, after: rssMiB() }, ms });
    }, 1000);
    later.unref();
  }

  private release(): void {
    try {
      this.opts.release?.();
    } catch (err) {
      this.opts.log?.debug('memory release failed', { error: (err as Error).message });
    }
  }

  close(): void {
    this.closed = true;
    clearInterval(this.check);
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}

let processSettler: MemorySettler | null = null;

/** Starts the process's settler (the agent's and the operator's main); stop it with the result's close(). */
export function startMemorySettler(opts: SettlerOptions): MemorySettler {
  processSettler?.close();
  processSettler = new MemorySettler(opts);
  return processSettler;
}

/** Work happened (a reconcile, a watch event): the process's settler, if one runs, settles after it. */
export function noteWork(): void {
  processSettler?.touch();
}
