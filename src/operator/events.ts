/**
 * Kubernetes Events about TokenPolicies, for `kubectl describe` and `kubectl get events`.
 * Events are best effort: a failed write is logged, never thrown, and never fails a reconcile.
 * The same event (object, reason, message) is written once per window: a reconcile that
 * finds the same thing again does not flood the API server.
 *
 * TokenPolicies are cluster-scoped, so their Events live in the "default" namespace, as a
 * Node's do; `kubectl describe tokenpolicy NAME` finds them there.
 *
 * Only the leader writes them: `fence` gives the signal of the write fence (leader.ts), or
 * undefined while this process may not write; such an Event is dropped.
 */
import { CoreV1Api, type CoreV1Event, type KubeConfig } from '../lib/kube-client.js';
import { randomBytes } from 'node:crypto';
import { describeError, requestOptions } from '../lib/kube.js';
import type { Logger } from '../lib/log.js';
import { API } from '../lib/types.js';

export interface EventTarget {
  kind: string;
  name: string;
  uid?: string;
  apiVersion?: string;
}

export interface EventSink {
  record(target: EventTarget, type: 'Normal' | 'Warning', reason: string, message: string): void;
}

const EVENTS_NAMESPACE = 'default';
const SAME_EVENT_WINDOW_MS = 5 * 60_000;
const MAX_REMEMBERED = 4096;
const MAX_MESSAGE = 1024;

export class EventRecorder implements EventSink {
  private readonly core: CoreV1Api;
  private readonly recent = new Map<string, number>();
  /** writes in flight, for tests and shutdown */
  private pending = new Set<Promise<void>>();

  constructor(
    private readonly o: {
      kc: KubeConfig;
      component: string;
      instance: string;
      log: Logger;
      now?: () => number;
      fence?: () => AbortSignal | undefined;
    },
  ) {
    this.core = new CoreV1Api(o.kc);
  }

  record(target: EventTarget, type: 'Normal' | 'Warning', reason: string, message: string): void {
    const signal = this.o.fence?.();
    if (this.o.fence && (!signal || signal.aborted)) return;
    const now = (this.o.now ?? Date.now)();
    const key = JSON.stringify([target.kind, target.name, target.uid ?? '', reason, message]);
    const last = this.recent.get(key);
    if (last !== undefined && now - last < SAME_EVENT_WINDOW_MS) return;
    this.recent.delete(key);
    this.recent.set(key, now);
    if (this.recent.size > MAX_REMEMBERED) this.recent.delete(this.recent.keys().next().value as string);
    const at = new Date(now);
    const body: CoreV1Event = {
      metadata: { name: `${target.name}.${now.toString(16)}${randomBytes(2).toString('hex')}`, namespace: EVENTS_NAMESPACE },
      involvedObject: {
        apiVersion: target.apiVersion ?? API,
        kind: target.kind,
        name: target.name,
        ...(target.uid ? { uid: target.uid } : {}),
      },
      type,
      reason,
      message: message.length <= MAX_MESSAGE ? message : `${message.slice(0, MAX_MESSAGE - 3)}...`,
      source: { component: this.o.component },
      reportingComponent: `netoken.io/${this.o.component}`,
      reportingInstance: this.o.instance,
      firstTimestamp: at,
      lastTimestamp: at,
      count: 1,
    };
    const p = this.core.createNamespacedEvent({ namespace: EVENTS_NAMESPACE, body }, requestOptions({ signal })).then(
      () => undefined,
      (err: unknown) => {
        this.recent.delete(key);
        this.o.log.warn('writing an Event failed', {
          reason,
          object: `${target.kind}/${target.name}`,
          error: describeError(err),
        });
      },
    );
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
  }

  /** Waits for the Events written so far. */
  async flush(): Promise<void> {
    await Promise.all([...this.pending]);
  }
}
