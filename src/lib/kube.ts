/**
 * Kubernetes plumbing shared by the agent (cluster mode) and the operator: client
 * configuration, and a list+watch cache that restarts itself. client-node's ListWatch
 * re-lists on 410 Gone but stops on any other error; this wrapper restarts it with
 * backoff and re-lists periodically so a silently lost watch cannot go unnoticed.
 */
import { ApiException, KubeConfig, type KubernetesListObject, type KubernetesObject, ListWatch, Watch } from './kube-client.js';
import type { Logger } from './log.js';

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
  onChange: () => void;
  onRestart?: () => void;
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
  private lastItems: T[] = [];

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
    const changed = (): void => {
      if (!this.instanceSynced) return;
      this.lastItems = [...lw.list()];
      this.o.onChange();
    };
    lw.on('add', changed);
    lw.on('update', changed);
    lw.on('delete', changed);
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
    this.lastItems = [...lw.list()];
    this.o.onChange();
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
    if (this.lw && this.instanceSynced) this.lastItems = [...this.lw.list()];
    return this.lastItems;
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
