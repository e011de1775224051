/**
 * Leader election on a coordination.k8s.io/v1 Lease, with client-go's rules: a candidate
 * takes the Lease when it is free or when its holder has not renewed it for a whole lease
 * duration, measured on this process's own clock from the moment the record was last seen to
 * change (so clock skew between nodes does not matter). The leader renews every retry period;
 * when it cannot renew within the renew deadline, or sees someone else holding the Lease, it
 * has lost leadership and must stop acting at once. Every write carries the resourceVersion it
 * read, so two candidates can never both succeed.
 *
 * Fencing: a standby takes over no sooner than a whole lease duration after it last saw the
 * Lease renewed, so the leader's claim is good until its last successful renewal began plus the
 * lease duration. The leader stops writing well before that: `mayWrite()` holds only while the
 * last renewal began less than the renew deadline ago, and when the deadline passes without a
 * renewal a timer ends leadership at that moment, aborting every write still in flight (each
 * carries `writeSignal`). What is left between the renew deadline and the lease duration is the
 * margin for a request already on its way to the API server. Times are measured on the
 * monotonic clock, so a wall-clock step cannot stretch the claim.
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
    // A V1MicroTime writes itself to the microsecond, as the API server does.
    // eslint-disable-next-line no-restricted-properties
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
  /** monotonic ms when the last successful acquire or renew began */
  private lastRenew = 0;
  private timer: NodeJS.Timeout | null = null;
  /** ends leadership when the renew deadline passes without a renewal */
  private deadline: NodeJS.Timeout | null = null;
  /** aborted when leadership ends: every write of the term carries its signal */
  private term = new AbortController();
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

  /** This process holds the Lease and may write: the last renewal began within the renew deadline. */
  mayWrite(now = performance.now()): boolean {
    return this.leading && now - this.lastRenew < this.renewDeadlineMs;
  }

  /** Aborted the moment leadership ends; pass it with every write. */
  get writeSignal(): AbortSignal {
    return this.term.signal;
  }

  /** Leadership ends now, for good: writes in flight are aborted, then the owner is told. */
  private lose(why: string): void {
    if (!this.leading) return;
    this.leading = false;
    // Like controller-runtime: a process that lost the Lease does not try again; it restarts.
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.deadline) clearTimeout(this.deadline);
    this.deadline = null;
    this.term.abort(new Error(`leadership lost: ${why}`));
    this.log.error('lost the leader Lease; stopping', { why });
    this.o.onStoppedLeading(why);
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
    const started = performance.now();
    // A request the API server never answers must not stall the loop past the renew deadline.
    const limit = Math.min(this.renewDeadlineMs / 2, 5000);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(new Error(`no answer from the API server within ${limit} ms`)), limit);
    });
    try {
      ok = await Promise.race([this.tryAcquireOrRenew(), timeout]);
    } catch (err) {
      this.log.warn(this.leading ? 'renewing the leader Lease failed' : 'reading the leader Lease failed', {
        error: describeError(err),
      });
    } finally {
      clearTimeout(timer);
    }
    if (this.stopped) return;
    const now = performance.now();
    if (ok && (!this.leading || now - this.lastRenew < this.renewDeadlineMs)) {
      this.lastRenew = started;
      this.armDeadline();
      if (!this.leading) {
        this.leading = true;
        this.term = new AbortController();
        this.log.info('acquired the leader Lease; reconciling');
        this.o.onStartedLeading();
      }
    } else if (this.leading) {
      const heldByOther = this.observedHolder !== '' && this.observedHolder !== this.o.identity;
      if (heldByOther || now - this.lastRenew >= this.renewDeadlineMs) {
        this.lose(
          heldByOther
            ? `the Lease is now held by ${this.observedHolder}`
            : `could not renew the Lease for ${Math.round(now - this.lastRenew)} ms`,
        );
        return;
      }
    }
    this.schedule(this.retryMs);
  }

  /** Ends leadership when the renew deadline passes without another renewal. */
  private armDeadline(): void {
    if (this.deadline) clearTimeout(this.deadline);
    const left = this.lastRenew + this.renewDeadlineMs - performance.now();
    this.deadline = setTimeout(
      () => {
        this.deadline = null;
        if (this.leading && !this.mayWrite())
          this.lose(`could not renew the Lease within the renew deadline (${this.renewDeadlineMs} ms)`);
        else if (this.leading) this.armDeadline();
      },
      Math.max(0, left),
    );
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
          metadata: {
            name: this.o.name,
            namespace: this.o.namespace,
            labels: { 'app.kubernetes.io/managed-by': 'netoken-operator' },
          },
          spec: {
            holderIdentity: this.o.identity,
            leaseDurationSeconds: Math.ceil(this.leaseMs / 1000),
            acquireTime: stamp,
            renewTime: stamp,
            leaseTransitions: 0,
          },
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
    if (this.deadline) clearTimeout(this.deadline);
    this.deadline = null;
    if (!this.leading) return;
    // No write of this term may land after the Lease is handed back.
    this.leading = false;
    this.term.abort(new Error('stopping'));
    try {
      const lease = await this.api.readNamespacedLease({ name: this.o.name, namespace: this.o.namespace });
      if (lease.spec?.holderIdentity !== this.o.identity) return;
      const stamp = new V1MicroTime(Date.now());
      await this.api.replaceNamespacedLease({
        name: this.o.name,
        namespace: this.o.namespace,
        body: {
          ...lease,
          spec: { ...lease.spec, holderIdentity: undefined, leaseDurationSeconds: 1, renewTime: stamp, acquireTime: stamp },
        },
      });
      this.log.info('released the leader Lease');
    } catch (err) {
      this.log.warn('releasing the leader Lease failed; a standby takes over when it runs out', { error: describeError(err) });
    }
  }
}
