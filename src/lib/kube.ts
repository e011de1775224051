/**
 * Kubernetes plumbing shared by the agent (cluster mode) and the operator: client
 * configuration, and a list+watch cache that restarts itself. client-node's ListWatch
 * re-lists on 410 Gone but stops on any other error; this wrapper restarts it with
 * backoff and re-lists periodically so a silently lost watch cannot go unnoticed.
 *
 * The cache hands each change to its owner as an event with the object before and after
 * (an informer's add/update/delete): a re-list after a restart is compared with what was
 * cached, so objects that changed or went while the watch was down are reported too.
 */
import { ApiException, KubeConfig, type KubernetesListObject, type KubernetesObject, ListWatch, PatchStrategy, Watch, setHeaderOptions } from '@kubernetes/client-node';
import type { Logger } from './log.js';

/** Request options for a JSON merge patch (client-node defaults to a JSON patch; custom resources take no strategic merge). */
export const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

export function loadKubeConfig(kubeconfig: string | undefined): KubeConfig {
  const kc = new KubeConfig();
  if (kubeconfig) kc.loadFromFile(kubeconfig);
  else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else kc.loadFromDefault();
  return kc;
}

export interface WatchedOptions<T extends KubernetesObject> {
  kc: KubeConfig;
  /** watch path, e.g. /apis/netoken.io/v1alpha1/tokenpolicies */
  path: string;
  list: () => Promise<KubernetesListObject<T>>;
  fieldSelector?: string;
  labelSelector?: string;
  log: Logger;
  /** what is watched, for logs and metrics (e.g. "tokenpolicies") */
  what: string;
  /** full re-list period (default 10 minutes) */
  resyncMs?: number;
  /** each change, with the object before it (an update) */
  onEvent?: (e: WatchEvent<T>) => void;
  /** after each change or batch of changes (a list) */
  onChange?: () => void;
  onRestart?: () => void;
}

/** One change of a cached object: added, updated (with the object before) or deleted (the last object seen). */
export type WatchEvent<T> =
  | { type: 'add'; object: T }
  | { type: 'update'; object: T; old: T }
  | { type: 'delete'; object: T };

/** An object's cache key: namespace/name, or the name of a cluster-scoped object. */
export function objectKey(o: KubernetesObject): string {
  const name = o.metadata?.name ?? '';
  return o.metadata?.namespace ? `${o.metadata.namespace}/${name}` : name;
}

export class Watched<T extends KubernetesObject> {
  private lw: ListWatch<T> | null = null;
  private stopped = false;
  private backoff = 1000;
  private resync: NodeJS.Timeout | null = null;
  private retry: NodeJS.Timeout | null = null;
  /** true once a first list has arrived */
  synced = false;
  /** the current ListWatch has listed: its cache is authoritative */
  private instanceSynced = false;
  restarts = 0;
  /** the objects as last delivered, by objectKey (kept while the API server is unreachable) */
  private readonly store = new Map<string, T>();

  constructor(private readonly o: WatchedOptions<T>) {}

  async start(): Promise<void> {
    this.stopped = false;
    await this.connect();
    this.resync = setInterval(() => {
      this.o.log.debug('periodic re-list', { watch: this.o.what });
      void this.restart('periodic re-list');
    }, this.o.resyncMs ?? 600_000);
    this.resync.unref();
  }

  private async connect(): Promise<void> {
    this.instanceSynced = false;
    const lw = new ListWatch<T>(this.o.path, new Watch(this.o.kc), () => this.o.list(), false, this.o.labelSelector, this.o.fieldSelector);
    const changed = (obj: T, deleted: boolean): void => {
      if (!this.instanceSynced || this.lw !== lw) return;
      this.deliver(obj, deleted);
      this.o.onChange?.();
    };
    lw.on('add', (obj) => changed(obj, false));
    lw.on('update', (obj) => changed(obj, false));
    lw.on('delete', (obj) => changed(obj, true));
    lw.on('error', (err: unknown) => {
      if (this.stopped) return;
      this.o.log.warn('watch failed; keeping the last known objects and retrying', {
        watch: this.o.what, error: describeError(err), retryMs: this.backoff,
      });
      this.scheduleRestart();
    });
    this.lw = lw;
    try {
      // resolves once the list is in the cache and the watch is open
      await lw.start();
    } catch (err) {
      this.o.log.warn('list failed; keeping the last known objects and retrying', { watch: this.o.what, error: describeError(err), retryMs: this.backoff });
      this.scheduleRestart();
      return;
    }
    if (this.lw !== lw || this.retry) return;
    this.instanceSynced = true;
    this.synced = true;
    this.backoff = 1000;
    this.replace(lw.list());
    this.o.onChange?.();
  }

  /** Records one object from the watch and reports how it changed. */
  private deliver(obj: T, deleted: boolean): void {
    const key = objectKey(obj);
    const old = this.store.get(key);
    if (deleted) {
      if (!old) return;
      this.store.delete(key);
      this.o.onEvent?.({ type: 'delete', object: old });
      return;
    }
    this.store.set(key, obj);
    if (!old) this.o.onEvent?.({ type: 'add', object: obj });
    else if (old.metadata?.resourceVersion !== obj.metadata?.resourceVersion) this.o.onEvent?.({ type: 'update', object: obj, old });
  }

  /** A fresh list: what is new or changed since the cache last saw it, and what went meanwhile. */
  private replace(items: readonly T[]): void {
    const listed = new Set<string>();
    for (const obj of items) {
      listed.add(objectKey(obj));
      this.deliver(obj, false);
    }
    for (const [key, old] of [...this.store]) if (!listed.has(key)) this.deliver(old, true);
  }

  private scheduleRestart(): void {
    if (this.retry || this.stopped) return;
    const wait = this.backoff;
    this.backoff = Math.min(this.backoff * 2, 30_000);
    this.retry = setTimeout(() => {
      this.retry = null;
      void this.restart('error');
    }, wait);
  }

  private async restart(why: string): Promise<void> {
    if (this.stopped) return;
    this.restarts++;
    this.o.onRestart?.();
    this.o.log.debug('restarting watch', { watch: this.o.what, why });
    const old = this.lw;
    this.lw = null;
    try {
      await old?.stop();
    } catch {
      // already stopped
    }
    await this.connect();
  }

  /** The objects as last seen (kept while the API server is unreachable). */
  list(): T[] {
    return [...this.store.values()];
  }

  /** One object by namespace/name (or name), as last seen. */
  get(key: string): T | undefined {
    return this.store.get(key);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.resync) clearInterval(this.resync);
    if (this.retry) clearTimeout(this.retry);
    await this.lw?.stop();
  }
}

/** The Status an API error carries: its reason and message, when the body is one. */
export function apiStatus(err: ApiException<unknown>): { reason?: string; message?: string } {
  try {
    const s = (typeof err.body === 'string' ? JSON.parse(err.body) : err.body) as { reason?: unknown; message?: unknown } | null;
    return {
      reason: typeof s?.reason === 'string' ? s.reason : undefined,
      message: typeof s?.message === 'string' ? s.message.slice(0, 500) : undefined,
    };
  } catch {
    return {};
  }
}

/**
 * A short, secret-free description of a client or HTTP error. client-node's ApiException
 * carries the whole response in its message; for one, only the HTTP status and the Status
 * reason and message are kept.
 */
export function describeError(err: unknown): string {
  if (err instanceof ApiException) {
    const s = apiStatus(err);
    return `HTTP ${err.code}${s.reason ? ` ${s.reason}` : ''}${s.message ? `: ${s.message}` : ''}`;
  }
  if (err && typeof err === 'object') {
    const e = err as { code?: unknown; message?: unknown };
    const code = typeof e.code === 'number' || typeof e.code === 'string' ? ` (${String(e.code)})` : '';
    const msg = typeof e.message === 'string' ? e.message : String(err);
    return `${msg.split('\n')[0]?.slice(0, 300)}${code}`;
  }
  return String(err);
}
