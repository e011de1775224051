/**
 * Leader election on a coordination.k8s.io/v1 Lease, with client-go's rules: a candidate
 * takes the Lease when it is free or when its holder has not renewed it for a whole lease
 * duration, measured on this process's own clock from the moment the record was last seen to
 * change (so clock skew between nodes does not matter). The leader renews every retry period;
 * when it cannot renew within the renew deadline, or sees someone else holding the Lease, it
 * has lost leadership and must stop acting at once. Every write carries the resourceVersion it
 * read, so two candidates can never both succeed.
 */
import { ApiException, CoordinationV1Api, type KubeConfig, type V1Lease, V1MicroTime } from '../lib/kube-client.js';
import type { Logger } from '../lib/log.js';
import { describeError } from '../lib/kube.js';

export interface LeaderOptions {
  kc: KubeConfig;
  namespace: string;
  /** The Lease's name. */
  name: string;
  identity: string;
  log: Logger;
  /** How long a holder's claim lasts without renewal; it defaults to 15000 ms. */
  leaseDurationMs?: number;
  /** How long the leader keeps trying to renew before giving up; it defaults to 10000 ms. */
  renewDeadlineMs?: number;
  /** Time between attempts to acquire or renew; it defaults to 2000 ms. */
  retryPeriodMs?: number;
  onStartedLeading: () => void;
  onStoppedLeading: (why: string) => void;
}

export { defaultIdentity } from './identity.js';

/** The parts of a Lease the election reads. */
export interface LeaseRecord {
  holder: string;
  leaseDurationSeconds: number;
  renewTime: string;
  transitions: number;
}

/**
 * Pure: may `identity` take or renew a Lease whose record is `rec`, which this process last saw
 * change at `observedAt` (ms)? True when nobody holds it, we hold it, or the holder's claim has
 * run out on our clock.
 */
export function mayAcquire(rec: LeaseRecord | undefined, identity: string, observedAt: number, now: number): boolean {
  if (!rec || rec.holder === '' || rec.holder === identity) return true;
  return observedAt + rec.leaseDurationSeconds * 1000 <= now;
}

function readRecord(lease: V1Lease): LeaseRecord {
  const s = lease.spec ?? {};
  return {
    holder: s.holderIdentity ?? '',
    leaseDurationSeconds: s.leaseDurationSeconds ?? 15,
    renewTime: s.renewTime === undefined ? '' : String(s.renewTime instanceof Date ? s.renewTime.toISOString() : s.renewTime),
    transitions: s.leaseTransitions ?? 0,
  };
}

export class LeaderElector {
  private readonly api: CoordinationV1Api;
  private readonly leaseMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryMs: number;
  private observedKey = '';
  private observedAt = 0;
  private lastRenew = 0;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private leading = false;
  private observedHolder = '';
  private readonly log: Logger;

  constructor(private readonly o: LeaderOptions) {
    this.api = new CoordinationV1Api(o.kc);
    this.leaseMs = o.leaseDurationMs ?? 15_000;
    this.renewDeadlineMs = o.renewDeadlineMs ?? 10_000;
    this.retryMs = o.retryPeriodMs ?? 2_000;
    this.log = o.log.child({ lease: `${o.namespace}/${o.name}`, identity: o.identity });
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.stopped = false;
    this.log.info('waiting to acquire the leader Lease');
    void this.tick();
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    // A little jitter keeps standbys from hitting the API server in lock step.
    const wait = this.leading ? ms : ms + Math.floor(Math.random() * ms * 0.2);
    this.timer = setTimeout(() => void this.tick(), wait);
  }

  private async tick(): Promise<void> {
    this.timer = null;
    if (this.stopped) return;
    let ok = false;
    // The renew deadline counts from when a successful attempt began, not when its answer came.
    const started = Date.now();
    // A request the API server never answers must not stall the loop past the renew deadline.
    const limit = Math.min(this.renewDeadlineMs / 2, 5000);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(new Error(`no answer from the API server within ${limit} ms`)), limit);
    });
    try {
      ok = await Promise.race([this.tryAcquireOrRenew(), timeout]);
    } catch (err) {
      this.log.warn(this.leading ? 'renewing the leader Lease failed' : 'reading the leader Lease failed', { error: describeError(err) });
    } finally {
      clearTimeout(timer);
    }
    if (this.stopped) return;
    const now = Date.now();
    if (ok) {
      this.lastRenew = started;
      if (!this.leading) {
        this.leading = true;
        this.log.info('acquired the leader Lease; reconciling');
        this.o.onStartedLeading();
      }
    } else if (this.leading) {
      const heldByOther = this.observedHolder !== '' && this.observedHolder !== this.o.identity;
      if (heldByOther || now - this.lastRenew >= this.renewDeadlineMs) {
        this.leading = false;
        const why = heldByOther ? `the Lease is now held by ${this.observedHolder}` : `could not renew the Lease for ${now - this.lastRenew} ms`;
        this.log.error('lost the leader Lease; stopping', { why });
        this.o.onStoppedLeading(why);
        return;
      }
    }
    this.schedule(this.retryMs);
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = Date.now();
    let lease: V1Lease;
    try {
      lease = await this.api.readNamespacedLease({ name: this.o.name, namespace: this.o.namespace });
    } catch (err) {
      if (!(err instanceof ApiException && err.code === 404)) throw err;
      return this.create(now);
    }
    const rec = readRecord(lease);
    const key = `${rec.holder}|${rec.renewTime}|${rec.transitions}`;
    if (key !== this.observedKey) {
      this.observedKey = key;
      this.observedAt = now;
    }
    this.observedHolder = rec.holder;
    if (!mayAcquire(rec, this.o.identity, this.observedAt, now)) return false;
    const ours = rec.holder === this.o.identity;
    const stamp = new V1MicroTime(now);
    const spec = {
      ...(lease.spec ?? {}),
      holderIdentity: this.o.identity,
      leaseDurationSeconds: Math.ceil(this.leaseMs / 1000),
      renewTime: stamp,
      acquireTime: ours && lease.spec?.acquireTime !== undefined ? lease.spec.acquireTime : stamp,
      leaseTransitions: ours ? rec.transitions : rec.transitions + 1,
    };
    try {
      await this.api.replaceNamespacedLease({ name: this.o.name, namespace: this.o.namespace, body: { ...lease, spec } });
    } catch (err) {
      if (err instanceof ApiException && err.code === 409) return false;
      throw err;
    }
    if (!ours) this.log.info('took over the leader Lease', { previousHolder: rec.holder || '(none)' });
    this.observedHolder = this.o.identity;
    return true;
  }

  private async create(now: number): Promise<boolean> {
    const stamp = new V1MicroTime(now);
    try {
      await this.api.createNamespacedLease({
        namespace: this.o.namespace,
        body: {
          apiVersion: 'coordination.k8s.io/v1',
          kind: 'Lease',
          metadata: { name: this.o.name, namespace: this.o.namespace, labels: { 'app.kubernetes.io/managed-by': 'netoken-operator' } },
          spec: { holderIdentity: this.o.identity, leaseDurationSeconds: Math.ceil(this.leaseMs / 1000), acquireTime: stamp, renewTime: stamp, leaseTransitions: 0 },
        },
      });
    } catch (err) {
      if (err instanceof ApiException && err.code === 409) return false;
      throw err;
    }
    this.observedHolder = this.o.identity;
    return true;
  }

  /**
   * Stops the loop; when leading, hands the Lease back (empty holder, 1 s duration) so a
   * standby takes over at its next try instead of waiting for the claim to run out.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (!this.leading) return;
    this.leading = false;
    try {
      const lease = await this.api.readNamespacedLease({ name: this.o.name, namespace: this.o.namespace });
      if (lease.spec?.holderIdentity !== this.o.identity) return;
      const stamp = new V1MicroTime(Date.now());
      await this.api.replaceNamespacedLease({
        name: this.o.name,
        namespace: this.o.namespace,
        body: { ...lease, spec: { ...lease.spec, holderIdentity: undefined, leaseDurationSeconds: 1, renewTime: stamp, acquireTime: stamp } },
      });
      this.log.info('released the leader Lease');
    } catch (err) {
      this.log.warn('releasing the leader Lease failed; a standby takes over when it runs out', { error: describeError(err) });
    }
  }
}
