/**
 * An informer: a list+watch cache of one kind of object, built the way client-go's reflector
 * keeps one, on client-node's Watch.
 *
 * - The first list is paginated (`limit`/`continue`), so a large collection never arrives as one
 *   response. Later lists happen only when the API server says the cache is too old to resume
 *   from (410 Gone/Expired) — never on a timer.
 * - Each watch asks for bookmarks and a server-side timeout (a random 5-10 minutes, so a fleet of
 *   agents does not reconnect in step); when it ends, the next one resumes from the last
 *   resourceVersion seen, bookmarks included, without listing again. A watch that goes silent past
 *   its timeout is cut from this side.
 * - Errors retry with a backoff (1 s doubling to 30 s); the cache keeps its objects meanwhile.
 * - What is cached is `transform(object)`: each owner keeps only the fields it reads, which bounds
 *   memory (no managedFields, no Node images).
 * - Each change reaches the owner as an event with the object before and after it; a re-list is
 *   compared with the cache, so changes made while the watch was down are reported too.
 * - Indexes (name -> index values) answer "which objects have this value" without a scan.
 */
import { type KubeConfig, type KubernetesObject, Watch } from './kube-client.js';
import type { Logger } from './log.js';
import { noteWork } from './memory.js';
import { describeError } from './kube.js';

/** One page of a list response, as the generated list calls return it. */
export interface ListPage<T> {
  items: T[];
  metadata?: { resourceVersion?: string; _continue?: string; continue?: string };
}

/** What a cached object must keep: the identity and version the cache tracks it by. */
export interface Cacheable {
  metadata?: { name?: string; namespace?: string; resourceVersion?: string };
}

/** One change of a cached object: added, updated (with the object before) or deleted (its last state). */
export type InformerEvent<S> = { type: 'add'; object: S } | { type: 'update'; object: S; old: S } | { type: 'delete'; object: S };

export interface InformerOptions<T extends KubernetesObject, S extends Cacheable> {
  kc: KubeConfig;
  /** what is watched, for logs and metrics (e.g. "tokenpolicies") */
  what: string;
  /** the collection's path, e.g. /apis/netoken.io/v1alpha1/tokenpolicies */
  path: string;
  /** one page of the list: the generated list call with `limit` and `_continue` passed through */
  list: (page: { limit: number; _continue?: string }) => Promise<ListPage<T>>;
  labelSelector?: string;
  fieldSelector?: string;
  /** what is kept of each object (it must keep metadata.name, namespace and resourceVersion) */
  transform: (o: T) => S;
  log: Logger;
  onEvent?: (e: InformerEvent<S>) => void;
  /** after each complete list: the first, and any re-list */
  onSynced?: () => void;
  /** a watch or list failed, or the cache had to be listed again; for metrics */
  onRestart?: () => void;
  /** objects per list page; it defaults to 500 */
  pageSize?: number;
  /** each watch lasts a random time in [min, 2 × min) seconds; it defaults to 300 */
  minWatchTimeoutSeconds?: number;
}

interface Index<S> {
  fn: (o: S) => readonly string[];
  /** index value -> object keys */
  byValue: Map<string, Set<string>>;
  /** object key -> its index values */
  ofKey: Map<string, readonly string[]>;
}

/** The cache key of an object: namespace/name, or the name of a cluster-scoped object. */
export function objectKey(o: KubernetesObject): string {
  const name = o.metadata?.name ?? '';
  return o.metadata?.namespace ? `${o.metadata.namespace}/${name}` : name;
}

function resourceVersionOf(o: unknown): string {
  return (o as KubernetesObject | undefined)?.metadata?.resourceVersion ?? '';
}

/** How long past its server-side timeout a silent watch is given before it is cut here. */
const WATCH_GRACE_SECONDS = 30;
const MAX_BACKOFF_MS = 30_000;

export class Informer<T extends KubernetesObject, S extends Cacheable> {
  private readonly store = new Map<string, S>();
  private readonly indexes = new Map<string, Index<S>>();
  private readonly watcher: Watch;
  private resourceVersion = '';
  private stopped = false;
  private request: AbortController | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** counts watch requests, so that the end of an old one is told from the end of the current one */
  private generation = 0;
  private backoffMs = 1000;
  /** true once a first list has arrived (the cache is then authoritative, even while disconnected) */
  synced = false;
  /** failed watches and lists, and re-lists: what the watch-restart metric counts */
  restarts = 0;
  /** complete lists so far (1 after the first; each 410 adds one) */
  lists = 0;
  /** watch requests so far */
  watches = 0;
  /** bookmarks received so far (each moves the resourceVersion on without an object) */
  bookmarks = 0;

  constructor(private readonly o: InformerOptions<T, S>) {
    this.watcher = new Watch(o.kc);
  }

  /** Adds an index; call before start(). */
  addIndex(name: string, fn: (o: S) => readonly string[]): void {
    this.indexes.set(name, { fn, byValue: new Map(), ofKey: new Map() });
  }

  /** Lists once (resolving then, whether it worked or not: a failure retries in the background) and watches from there. */
  async start(): Promise<void> {
    this.stopped = false;
    await this.relist();
  }

  stop(): void {
    this.stopped = true;
    this.generation++;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.request?.abort();
    this.request = null;
  }

  get(key: string): S | undefined {
    return this.store.get(key);
  }

  /** The cached objects (live view: do not keep it across awaits). */
  values(): IterableIterator<S> {
    return this.store.values();
  }

  list(): S[] {
    return [...this.store.values()];
  }

  get size(): number {
    return this.store.size;
  }

  /** The resourceVersion the next watch resumes from. */
  get version(): string {
    return this.resourceVersion;
  }

  /** The objects whose index `name` holds `value`. */
  byIndex(name: string, value: string): S[] {
    const keys = this.index(name).byValue.get(value);
    if (!keys) return [];
    const out: S[] = [];
    for (const k of keys) {
      const o = this.store.get(k);
      if (o) out.push(o);
    }
    return out;
  }

  /** The objects whose index `name` holds `value`, one by one (live view: do not keep it across awaits). */
  *indexed(name: string, value: string): IterableIterator<S> {
    for (const k of this.index(name).byValue.get(value) ?? []) {
      const o = this.store.get(k);
      if (o) yield o;
    }
  }

  /** Every value index `name` holds. */
  indexValues(name: string): IterableIterator<string> {
    return this.index(name).byValue.keys();
  }

  private index(name: string): Index<S> {
    const ix = this.indexes.get(name);
    if (!ix) throw new Error(`${this.o.what}: no index named ${name}`);
    return ix;
  }

  private put(key: string, obj: S | undefined): void {
    if (obj) this.store.set(key, obj);
    else this.store.delete(key);
    for (const ix of this.indexes.values()) {
      for (const v of ix.ofKey.get(key) ?? []) {
        const set = ix.byValue.get(v);
        set?.delete(key);
        if (set?.size === 0) ix.byValue.delete(v);
      }
      if (!obj) {
        ix.ofKey.delete(key);
        continue;
      }
      const values = ix.fn(obj);
      ix.ofKey.set(key, values);
      for (const v of values) {
        let set = ix.byValue.get(v);
        if (!set) ix.byValue.set(v, (set = new Set()));
        set.add(key);
      }
    }
  }

  private emit(e: InformerEvent<S>): void {
    try {
      this.o.onEvent?.(e);
    } catch (err) {
      this.o.log.error('an event handler failed', { watch: this.o.what, error: describeError(err) });
    }
  }

  /** Records one object from a watch or a list and reports how it changed. */
  private apply(raw: T): void {
    const key = objectKey(raw);
    const old = this.store.get(key);
    if (old && resourceVersionOf(old) === resourceVersionOf(raw)) return;
    const obj = this.o.transform(raw);
    this.put(key, obj);
    this.emit(old ? { type: 'update', object: obj, old } : { type: 'add', object: obj });
  }

  private remove(key: string, last?: T): void {
    const old = this.store.get(key);
    if (!old) return;
    this.put(key, undefined);
    this.emit({ type: 'delete', object: last ? this.o.transform(last) : old });
  }

  /** A full, paginated list; then a watch from its resourceVersion. On failure, a retry after the backoff. */
  private async relist(): Promise<void> {
    const gen = ++this.generation;
    const items: T[] = [];
    let rv = '';
    try {
      let cont: string | undefined;
      do {
        const page = await this.o.list({ limit: this.o.pageSize ?? 500, ...(cont ? { _continue: cont } : {}) });
        if (gen !== this.generation) return;
        items.push(...page.items);
        rv = page.metadata?.resourceVersion ?? rv;
        cont = page.metadata?._continue ?? page.metadata?.continue;
      } while (cont);
    } catch (err) {
      if (gen !== this.generation || this.stopped) return;
      this.restarts++;
      this.o.onRestart?.();
      this.o.log.warn('list failed; keeping the last known objects and retrying', {
        watch: this.o.what,
        error: describeError(err),
        retryMs: this.backoffMs,
      });
      this.retry(() => this.relist());
      return;
    }
    if (this.stopped) return;
    const listed = new Set<string>();
    for (const raw of items) {
      listed.add(objectKey(raw));
      this.apply(raw);
    }
    for (const key of [...this.store.keys()]) if (!listed.has(key)) this.remove(key);
    this.resourceVersion = rv;
    this.lists++;
    this.synced = true;
    this.backoffMs = 1000;
    try {
      this.o.onSynced?.();
    } catch (err) {
      this.o.log.error('a sync handler failed', { watch: this.o.what, error: describeError(err) });
    }
    void this.watch();
  }

  private retry(fn: () => Promise<void>): void {
    if (this.stopped) return;
    const wait = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, MAX_BACKOFF_MS);
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void fn();
    }, wait);
    this.timer.unref();
  }

  /** One watch request from the last resourceVersion seen. */
  private async watch(): Promise<void> {
    if (this.stopped) return;
    const gen = ++this.generation;
    const min = this.o.minWatchTimeoutSeconds ?? 300;
    const timeoutSeconds = min + Math.floor(Math.random() * min);
    let expired = false;
    let cut = false;
    let sawEvent = false;
    /** the watch must end as soon as its request is known (an ERROR event came first) */
    let endNow = false;
    this.watches++;
    const done = (err: unknown): void => {
      if (gen !== this.generation) return;
      this.generation++;
      if (this.timer) clearTimeout(this.timer);
      this.timer = null;
      this.request = null;
      if (this.stopped) return;
      const gone = expired || (err as { statusCode?: number } | null)?.statusCode === 410;
      if (gone) {
        this.restarts++;
        this.o.onRestart?.();
        this.o.log.info('the cache is too old to resume from; listing again', { watch: this.o.what });
        void this.relist();
      } else if (err && !cut) {
        this.restarts++;
        this.o.onRestart?.();
        this.o.log.warn('watch failed; keeping the last known objects and retrying', {
          watch: this.o.what,
          error: describeError(err),
          retryMs: this.backoffMs,
        });
        this.retry(() => this.watch());
      } else {
        // The server-side timeout ended it (or it went silent and was cut): resume where it stopped.
        if (sawEvent) this.backoffMs = 1000;
        void this.watch();
      }
    };
    const onEvent = (type: string, obj: unknown): void => {
      if (gen !== this.generation) return;
      sawEvent = true;
      noteWork();
      switch (type) {
        case 'ADDED':
        case 'MODIFIED':
          this.apply(obj as T);
          break;
        case 'DELETED':
          this.remove(objectKey(obj as T), obj as T);
          break;
        case 'BOOKMARK':
          this.bookmarks++;
          break;
        case 'ERROR': {
          const status = obj as { code?: number; reason?: string; message?: string };
          if (status.code === 410) expired = true;
          else
            this.o.log.warn('the watch reported an error', {
              watch: this.o.what,
              code: status.code,
              reason: status.reason,
              message: status.message,
            });
          if (this.request) this.request.abort();
          else endNow = true;
          return;
        }
      }
      const rv = resourceVersionOf(obj);
      if (rv) this.resourceVersion = rv;
    };
    const params: Record<string, string | number | boolean> = {
      resourceVersion: this.resourceVersion,
      allowWatchBookmarks: true,
      timeoutSeconds,
    };
    if (this.o.labelSelector) params.labelSelector = this.o.labelSelector;
    if (this.o.fieldSelector) params.fieldSelector = this.o.fieldSelector;
    const request = await this.watcher.watch(this.o.path, params, onEvent, done);
    if (gen !== this.generation) {
      // Ended (or stopped) before the request was even set up.
      if (this.stopped) request.abort();
      return;
    }
    this.request = request;
    if (endNow) {
      request.abort();
      return;
    }
    // A watch that outlives its server-side timeout has lost its connection without noticing.
    this.timer = setTimeout(
      () => {
        cut = true;
        this.o.log.debug('watch silent past its timeout; reconnecting', { watch: this.o.what });
        request.abort();
      },
      (timeoutSeconds + WATCH_GRACE_SECONDS) * 1000,
    );
    this.timer.unref();
  }
}
