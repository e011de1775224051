/**
 * The operator, built the way controller-runtime builds a controller: informer caches of
 * TokenPolicies, TokenNodeStates, Nodes and the key Secrets in the operator's namespace, each
 * keeping only what a reconcile reads; every cache event goes through the pure mapping function
 * of its kind (mapping.ts), which drops changes that cannot matter and names the keys that a
 * change affects; one coalescing work queue with a batching delay and a retry rate limiter
 * runs the reconciles, only while this process holds the leader Lease and only once every
 * cache has listed (a half-filled cache would make a deleted policy look released or a present
 * Secret look missing). Every ten minutes every policy is reconciled again from the cache (no
 * re-list): a quiet cluster costs no write.
 *
 * Reconcile of a policy key: finalizer, validation of what the CRD schema cannot check, the
 * key Secret (generate, rotate, check), then the status rolled up from the nodes, written only
 * when it changed (and, while nodes are still applying a generation, at most every few
 * seconds), with Events for what the operator did and found. Reconcile of a nodestate key:
 * delete the report of a Node that is gone.
 *
 * Every write goes through the write fence: it is refused once this process may no longer
 * count on holding the Lease, and aborted in flight when leadership ends (leader.ts).
 */
import {
  ApiException,
  type CallOptions,
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  PatchStrategy,
  type V1Node,
  type V1Secret,
} from '../lib/kube-client.js';
import { type Cacheable, type InformerEvent, Informer, type ListPage } from '../lib/informer.js';
import { describeError, isConflict, requestOptions } from '../lib/kube.js';
import type { Logger } from '../lib/log.js';
import { noteWork } from '../lib/memory.js';
import { API_GROUP, API_VERSION, type LabelSelector, type TokenPolicy, selectorMatches } from '../lib/types.js';
import { KeyedQueue, type ReconcileResult } from '../lib/workqueue.js';
import { type CachedSecret, type NodeInfo, cacheNode, cacheSecret } from '../lib/cached.js';
import { type CachedPolicy, type NodeReport, type RawNodeState, cacheNodeState, cachePolicy } from './cache.js';
import { SecretSelectors, modeOf, secretNameOf, selectorKey } from './selectors.js';
import { EventRecorder, type EventSink } from './events.js';
import { secretError } from './errors.js';
import { FINALIZER, hasFinalizer, releaseDecision } from './finalizer.js';
import type { Probe } from '../lib/http.js';
import { Heartbeat } from './health.js';
import { type ReconcileKey, keyId, nodeStateKey, policyKey } from './keys.js';
import { LeaderElector } from './leader.js';
import {
  type PolicyLookup,
  nodeStatesForNode,
  nodeStatesForNodeState,
  policiesForNode,
  policiesForNodeState,
  policiesForPolicy,
  policiesForSecret,
} from './mapping.js';
import type { OperatorMetrics, PolicyStatusView } from './metrics.js';
import { collectNodeState, orphanedNodeStates } from './nodes.js';
import { type NodeKeys, type RotationPlan, planRotation } from './rotation.js';
import { type SecretLike, applySecretPlan, isManaged, planSecret } from './secrets.js';
import { PolicyError, decodeKeys, validatePolicy } from '../lib/policy.js';
import {
  DEFAULT_AGENT_GRACE_MS,
  type PolicyProblem,
  type PolicyStatus,
  aggregateStatus,
  currentStatus,
  progressOnly,
  stableJson,
} from './status.js';

export interface OperatorOptions {
  kc: KubeConfig;
  /** where the key Secrets and the Lease live */
  namespace: string;
  log: Logger;
  metrics: OperatorMetrics;
  leaderElect: boolean;
  identity: string;
  leaseName: string;
  finalizerTimeoutMs: number;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  /** every policy is reconciled again (from the cache) this often; it defaults to 10 minutes */
  resyncMs?: number;
  /** how long a node that just joined has to start its agent before it counts as running none */
  agentGraceMs?: number;
  /** how long a changed key waits for more changes before its reconcile; it defaults to 200 ms */
  batchDelayMs?: number;
  /** reconciles of different keys at once; it defaults to 4 */
  concurrency?: number;
  /** how long a retired key stays accepted after every node signs with the new one, besides epoch and skew (rotation.ts) */
  retireMarginMs?: number;
  /** where Events go; it defaults to the API server, through the write fence */
  events?: EventSink;
  /** called once when leadership is lost; the process should exit */
  onLostLeadership: (why: string) => void;
}

/** A reconcile that takes longer than this makes /healthz fail. */
const STUCK_RECONCILE_MS = 5 * 60_000;
/** How long a status write of ours counts as not yet visible in the cache. */
const RECENT_WRITE_MS = 5000;
/** While nodes apply a generation one after the other, a policy's status is written at most this often. */
const PROGRESS_INTERVAL_MS = 2000;
/**
 * How long the first status of a new policy is held back while its nodes apply it: a policy its
 * nodes apply within this time gets one status write (Ready), not two (NodesPending, then Ready).
 */
const FIRST_STATUS_HOLD_MS = 2000;
/** Longest delay asked of the queue; later due times are re-checked then. */
const MAX_REQUEUE_MS = 60 * 60_000;
/** Ready reasons that are a fault of the policy itself: each new one is a Warning Event. */
const PROBLEM_REASONS = new Set(['InvalidPolicy', 'SecretInvalid', 'SecretConflict', 'NoAgentOnSelectedNodes']);

/** This process may not write now: it does not hold the leader Lease (or is stopping). */
export class NotLeaderError extends Error {
  override name = 'NotLeaderError';
}

function nameOf(o: Cacheable | undefined): string {
  return o?.metadata?.name ?? '';
}

/** The conditions and node counts of a policy's status, as the metrics show them. */
function policyStatusView(status: unknown): Omit<PolicyStatusView, 'name'> {
  const s = currentStatus(status);
  const out: Omit<PolicyStatusView, 'name'> = {
    conditions: (s.conditions ?? []).filter((c) => typeof c.type === 'string' && typeof c.status === 'string'),
  };
  if (s.nodes) out.nodes = s.nodes;
  return out;
}

function readyOf(s: Partial<PolicyStatus>): { status?: string; reason?: string; message?: string } | undefined {
  return s.conditions?.find((c) => c.type === 'Ready');
}

export class Operator {
  private readonly custom: CustomObjectsApi;
  private readonly core: CoreV1Api;
  private readonly policies: Informer<KubernetesObject, CachedPolicy>;
  private readonly reports: Informer<RawNodeState, NodeReport>;
  private readonly nodes: Informer<V1Node, NodeInfo>;
  private readonly secrets: Informer<V1Secret, CachedSecret>;
  private readonly queue: KeyedQueue<ReconcileKey>;
  private readonly elector: LeaderElector | undefined;
  private readonly events: EventSink;
  private readonly heartbeat = new Heartbeat();
  /** without leader election: aborted when the operator stops */
  private readonly standalone = new AbortController();
  private leading = false;
  private stopping = false;
  private resyncTimer: NodeJS.Timeout | null = null;
  /** per policy: the status last written, and when */
  private readonly lastWrites = new Map<string, { json: string; at: number }>();
  private readonly secretSelectors = new SecretSelectors();
  /** policies whose finalizer this process added, with the version of the object it patched */
  private readonly finalizerAdded = new Map<string, { uid: string | undefined; resourceVersion: string | undefined }>();
  /** per node and Secret, the policy whose reported keys answered last for the Secret (rotationNodes) */
  private readonly keysHint = new Map<string, string>();
  /** when this process first saw each policy that has no status yet (by name, with its uid) */
  private readonly firstSeen = new Map<string, { uid: string | undefined; at: number }>();
  /** node selector (as stable JSON) -> the nodes it matches; cleared when a node joins, leaves or is relabelled */
  private readonly selected = new Map<string, NodeInfo[]>();

  constructor(private readonly o: OperatorOptions) {
    this.custom = new CustomObjectsApi(o.kc);
    this.core = new CoreV1Api(o.kc);
    const common = { kc: o.kc, log: o.log, onSynced: () => this.maybeResume() };
    const restarted = (what: string) => () => o.metrics.watchRestarts.labels(what).inc();
    const listCustom = (plural: string) => (page: { limit: number; _continue?: string }) =>
      this.custom.listClusterCustomObject({ group: API_GROUP, version: API_VERSION, plural, ...page }) as Promise<
        KubernetesListObject<KubernetesObject>
      >;
    // Each cache event goes through the mapping function of its kind to the keys it affects.
    const mapped =
      <S>(map: (old: S | undefined, cur: S | undefined) => ReconcileKey[]) =>
      (e: InformerEvent<S>): void => {
        if (this.stopping) return;
        const keys =
          e.type === 'add' ? map(undefined, e.object) : e.type === 'update' ? map(e.old, e.object) : map(e.object, undefined);
        for (const k of keys) this.queue.enqueue(k);
      };
    this.policies = new Informer<KubernetesObject, CachedPolicy>({
      ...common,
      what: 'tokenpolicies',
      path: `/apis/${API_GROUP}/${API_VERSION}/tokenpolicies`,
      list: listCustom('tokenpolicies'),
      transform: cachePolicy,
      onRestart: restarted('tokenpolicies'),
      onEvent: (e) => {
        // Other policies naming the same Secret are reconciled only when what they read of it changed.
        const sharing = this.secretSelectors.track(nameOf(e.object), e.type === 'delete' ? undefined : e.object);
        mapped<CachedPolicy>((old, cur) => policiesForPolicy(old, cur, this.lookup, sharing))(e);
      },
    });
    this.policies.addIndex('secret', (p) => {
      const s = secretNameOf(p);
      return s === undefined ? [] : [s];
    });
    this.reports = new Informer<RawNodeState, NodeReport>({
      ...common,
      what: 'tokennodestates',
      path: `/apis/${API_GROUP}/${API_VERSION}/tokennodestates`,
      list: listCustom('tokennodestates') as (p: { limit: number }) => Promise<ListPage<RawNodeState>>,
      transform: cacheNodeState,
      onRestart: restarted('tokennodestates'),
      onEvent: mapped<NodeReport>((old, cur) => [
        ...policiesForNodeState(old, cur, this.lookup),
        ...nodeStatesForNodeState(cur, (n) => this.nodes.get(n) !== undefined),
      ]),
    });
    const mapNode = mapped<NodeInfo>((old, cur) => [...policiesForNode(old, cur, this.lookup), ...nodeStatesForNode(old, cur)]);
    this.nodes = new Informer<V1Node, NodeInfo>({
      ...common,
      what: 'nodes',
      path: '/api/v1/nodes',
      list: (page) => this.core.listNode(page),
      transform: cacheNode,
      onRestart: restarted('nodes'),
      onEvent: (e) => {
        if (e.type !== 'update' || stableJson(e.old.metadata.labels ?? {}) !== stableJson(e.object.metadata.labels ?? {}))
          this.selected.clear();
        mapNode(e);
      },
    });
    this.secrets = new Informer<V1Secret, CachedSecret>({
      ...common,
      what: 'secrets',
      path: `/api/v1/namespaces/${o.namespace}/secrets`,
      list: (page) => this.core.listNamespacedSecret({ namespace: o.namespace, ...page }),
      transform: cacheSecret,
      onRestart: restarted('secrets'),
      onEvent: mapped<CachedSecret>((old, cur) => policiesForSecret(old, cur, this.lookup)),
    });
    this.queue = new KeyedQueue<ReconcileKey>({
      reconcile: (key) => this.reconcile(key),
      keyId,
      log: o.log,
      concurrency: o.concurrency ?? 4,
      batchDelayMs: o.batchDelayMs ?? 200,
      isConflict,
      onDone: (key, seconds, outcome) => {
        o.metrics.observeReconcile(key.kind, seconds, outcome);
        noteWork();
      },
    });
    o.metrics.setSources({
      queueDepth: () => this.queue.depth,
      leader: () => (this.leading ? 1 : 0),
      policies: () =>
        this.synced ? this.policies.list().map((p) => ({ name: nameOf(p), ...policyStatusView(p.status) })) : undefined,
    });
    this.events =
      o.events ??
      new EventRecorder({
        kc: o.kc,
        component: 'netoken-operator',
        instance: o.identity,
        log: o.log,
        fence: () => this.fenceSignal(),
      });
    if (o.leaderElect) {
      this.elector = new LeaderElector({
        kc: o.kc,
        namespace: o.namespace,
        name: o.leaseName,
        identity: o.identity,
        log: o.log,
        leaseDurationMs: o.leaseDurationMs,
        renewDeadlineMs: o.renewDeadlineMs,
        retryPeriodMs: o.retryPeriodMs,
        onStartedLeading: () => this.setLeading(true),
        onStoppedLeading: (why) => {
          this.setLeading(false);
          o.onLostLeadership(why);
        },
      });
    }
  }

  /** What the mapping functions look up in the caches. */
  private readonly lookup: PolicyLookup = {
    policiesUsingSecret: (secret) => this.policies.byIndex('secret', secret).map(nameOf),
    policiesSelecting: (labels) => {
      const out: string[] = [];
      for (const p of this.policies.values()) if (selectorMatches(p.spec?.nodeSelector ?? {}, labels)) out.push(nameOf(p));
      return out;
    },
    nodeLabels: (node) => this.nodes.get(node)?.metadata.labels ?? (this.nodes.get(node) ? {} : undefined),
    isTerminating: (policy) => this.policies.get(policy)?.metadata.deletionTimestamp !== undefined,
    secretOf: (policy) => secretNameOf(this.policies.get(policy)),
  };

  /** Starts the caches and the election (or, without election, reconciling at once). */
  async start(): Promise<void> {
    this.o.log.info('operator starting', {
      namespace: this.o.namespace,
      identity: this.o.identity,
      leaderElect: this.o.leaderElect,
      finalizerTimeoutMs: this.o.finalizerTimeoutMs,
    });
    await Promise.all([this.policies.start(), this.reports.start(), this.nodes.start(), this.secrets.start()]);
    if (this.elector) this.elector.start();
    else this.setLeading(true);
    this.resyncTimer = setInterval(() => this.enqueueAll(), this.o.resyncMs ?? 600_000);
    this.resyncTimer.unref();
  }

  /** Stops reconciling, waits (up to 10 s) for reconciles under way, hands back the Lease. */
  async stop(opts: { releaseLease?: boolean } = {}): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.leading = false;
    this.queue.pause();
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    await Promise.race([this.queue.close(), new Promise((res) => setTimeout(res, 10_000).unref())]);
    this.standalone.abort(new Error('stopping'));
    if (opts.releaseLease ?? true) await this.elector?.stop();
    for (const i of [this.policies, this.reports, this.nodes, this.secrets]) i.stop();
    this.heartbeat.stop();
  }

  /** All four caches have listed at least once. */
  get synced(): boolean {
    return this.unsynced().length === 0;
  }

  private unsynced(): string[] {
    const caches: [string, { synced: boolean }][] = [
      ['tokenpolicies', this.policies],
      ['tokennodestates', this.reports],
      ['nodes', this.nodes],
      ['secrets', this.secrets],
    ];
    return caches.filter(([, c]) => !c.synced).map(([n]) => n);
  }

  /** /readyz: the caches have listed, so this process reconciles (leader) or can take over at once (standby). */
  ready(): Probe {
    if (this.stopping) return { ok: false, detail: 'shutting down' };
    const missing = this.unsynced();
    if (missing.length) return { ok: false, detail: `waiting for the first list of ${missing.join(', ')}` };
    return { ok: true, detail: this.leading ? 'caches synced; leader, reconciling' : 'caches synced; standby' };
  }

  /** /healthz: the event loop turns and no reconcile is stuck. */
  healthy(): Probe {
    const beat = this.heartbeat.check();
    if (!beat.ok) return beat;
    const since = this.queue.oldestRunningSince();
    if (since !== undefined && Date.now() - since > STUCK_RECONCILE_MS) {
      return { ok: false, detail: `a reconcile has been running for ${Math.round((Date.now() - since) / 1000)} s` };
    }
    return { ok: true, detail: 'event loop alive; no reconcile stuck' };
  }

  private setLeading(on: boolean): void {
    this.leading = on;
    if (!on) {
      this.queue.pause();
      return;
    }
    this.maybeResume();
  }

  /** Reconciling starts when both hold: leadership and synced caches. */
  private maybeResume(): void {
    if (!this.leading || this.stopping || !this.queue.paused || !this.synced) return;
    this.o.log.info('caches synced and leading; reconciling every policy', { identity: this.o.identity });
    this.enqueueAll();
    this.queue.resume();
  }

  /** A resync: every policy, and every report whose Node is gone, from the cache. */
  private enqueueAll(): void {
    for (const p of this.policies.values()) this.queue.enqueue(policyKey(nameOf(p)));
    for (const n of orphanedNodeStates(this.reports.values(), { has: (name) => this.nodes.get(name) !== undefined }))
      this.queue.enqueue(nodeStateKey(n));
  }

  /** The write fence's signal while this process may write (it holds the Lease within its renew deadline), else undefined. */
  private fenceSignal(): AbortSignal | undefined {
    const signal = this.elector ? (this.elector.mayWrite() ? this.elector.writeSignal : undefined) : this.standalone.signal;
    return signal && !signal.aborted ? signal : undefined;
  }

  /**
   * One write to the API server, through the fence: refused unless this process holds the
   * Lease within its renew deadline; aborted in flight when leadership ends or the operator stops.
   */
  private async write<T>(call: (opts: CallOptions) => Promise<T>, contentType?: string): Promise<T> {
    const signal = this.fenceSignal();
    if (!signal)
      throw new NotLeaderError('not the leader (or the Lease could not be renewed in time), or stopping: the write is not made');
    return call(requestOptions({ contentType, signal }));
  }

  /**
   * Sets a policy's finalizers, through the fence. The resourceVersion makes the patch a conflict
   * (a quiet retry) when the cache was behind.
   */
  private async patchFinalizers(name: string, finalizers: string[], resourceVersion: string | undefined): Promise<void> {
    await this.write(
      (opts) =>
        this.custom.patchClusterCustomObject(
          {
            group: API_GROUP,
            version: API_VERSION,
            plural: 'tokenpolicies',
            name,
            body: { metadata: { finalizers, resourceVersion } },
          },
          opts,
        ),
      PatchStrategy.MergePatch,
    );
  }

  /** The nodes a selector matches, from a memo that node changes clear. */
  private matchedNodes(selector: LabelSelector): NodeInfo[] {
    const key = selectorKey(selector);
    let nodes = this.selected.get(key);
    if (!nodes) {
      nodes = [];
      for (const n of this.nodes.values()) if (selectorMatches(selector, n.metadata.labels ?? {})) nodes.push(n);
      if (this.selected.size > 1000) this.selected.clear();
      this.selected.set(key, nodes);
    }
    return nodes;
  }

  private event(p: CachedPolicy, type: 'Normal' | 'Warning', reason: string, message: string): void {
    this.events.record(
      { kind: 'TokenPolicy', name: nameOf(p), ...(p.metadata.uid ? { uid: p.metadata.uid } : {}) },
      type,
      reason,
      message,
    );
  }

  private async reconcile(key: ReconcileKey): Promise<ReconcileResult | void> {
    try {
      switch (key.kind) {
        case 'policy':
          return await this.reconcilePolicy(key.name);
        case 'nodestate':
          return await this.reconcileNodeState(key.name);
      }
    } catch (err) {
      // A conflict goes back to the queue as it is (a quiet retry); other API errors lose their bodies.
      if (isConflict(err)) throw err;
      throw err instanceof ApiException ? new Error(describeError(err)) : err;
    }
  }

  private async reconcileNodeState(name: string): Promise<void> {
    const state = this.reports.get(name);
    if (!state) return;
    if (this.nodes.get(name)) return;
    const log = this.o.log.child({ node: name });
    const signal = this.fenceSignal();
    if (!signal) throw new NotLeaderError('not the leader: the report of a gone Node is left');
    const r = await collectNodeState(this.core, this.custom, name, state.metadata.uid, requestOptions({ signal }));
    if (r === 'deleted') log.info('TokenNodeState of a deleted Node removed');
    else log.debug('TokenNodeState kept', { result: r });
  }

  private async reconcilePolicy(name: string): Promise<ReconcileResult | void> {
    const raw = this.policies.get(name);
    if (!raw) {
      this.lastWrites.delete(name);
      this.firstSeen.delete(name);
      this.finalizerAdded.delete(name);
      return; // gone: nothing left to do
    }
    const log = this.o.log.child({ policy: name });
    const meta = raw.metadata;
    const generation = meta.generation ?? 0;
    if (meta.deletionTimestamp) return this.finalize(raw, log);

    if (hasFinalizer(meta)) {
      this.finalizerAdded.delete(name);
    } else {
      // Added already, and the cache still shows the version the patch was made on: the patch
      // again would only be refused (a conflict) until the cache catches up.
      const added = this.finalizerAdded.get(name);
      if (!added || added.uid !== meta.uid || added.resourceVersion !== meta.resourceVersion) {
        await this.patchFinalizers(name, [...(meta.finalizers ?? []), FINALIZER], meta.resourceVersion);
        this.finalizerAdded.set(name, { uid: meta.uid, resourceVersion: meta.resourceVersion });
        log.debug('finalizer added', { finalizer: FINALIZER });
      }
    }

    let policy: TokenPolicy | undefined;
    let problem: PolicyProblem | undefined;
    try {
      policy = validatePolicy(raw, `TokenPolicy "${name}"`);
    } catch (err) {
      const message = err instanceof PolicyError ? err.detail : describeError(err);
      problem = { reason: 'InvalidPolicy', message, degraded: true };
    }

    let requeueAt: number | undefined;
    let note: string | undefined;
    let rotation: RotationPlan | undefined;
    if (policy) {
      const r = await this.ensureSecret(raw, policy, log);
      problem = r.problem;
      note = r.note;
      requeueAt = r.recheckAt;
      if (r.secret) {
        rotation = await this.rotateKeys(policy, r.secret, raw, log);
        requeueAt = rotation.requeueAt;
      }
    }

    const agg = aggregateStatus({
      name,
      generation,
      matched: this.matchedNodes(policy?.spec.nodeSelector ?? raw.spec?.nodeSelector ?? {}),
      reportOf: (n) => this.reports.get(n),
      problem,
      ...(note ? { note } : {}),
      ...(rotation ? { keyRotation: rotation.condition, rotationStalled: rotation.stalled } : {}),
      previous: currentStatus(raw.status).conditions,
      agentGraceMs: this.o.agentGraceMs ?? DEFAULT_AGENT_GRACE_MS,
    });
    const deferredUntil = await this.writeStatus(raw, agg.status, log);
    const due = [requeueAt, agg.recheckAt, deferredUntil].filter((t): t is number => t !== undefined);
    if (due.length === 0) return;
    return { requeueAfterMs: Math.min(Math.max(0, Math.min(...due) - Date.now()) + 100, MAX_REQUEUE_MS) };
  }

  /**
   * Generates or checks the key Secret; returns it when it holds valid keys (for the rotation),
   * else what is wrong with it; and a note for the Ready message when the key is one the
   * operator generated.
   */
  private async ensureSecret(
    raw: CachedPolicy,
    policy: TokenPolicy,
    log: Logger,
  ): Promise<{ problem?: PolicyProblem; secret?: SecretLike; note?: string; recheckAt?: number }> {
    const secretName = policy.spec.token.secretRef.name;
    const where = `${this.o.namespace}/${secretName}`;
    const slog = log.child({ secret: where });
    // One Secret holds keys of one length: policies of both modes cannot share it. The modes
    // of the policies naming it tell whether any has another mode, without a look at each of
    // them (a thousand policies can share one Secret).
    const mode = policy.spec.token.mode;
    const mixed = this.secretSelectors.modes(secretName).some((m) => m !== mode);
    const other = mixed
      ? this.policies
          .byIndex('secret', secretName)
          .find((p) => nameOf(p) !== policy.metadata.name && !p.metadata.deletionTimestamp && modeOf(p) !== mode)
      : undefined;
    if (other) {
      return {
        problem: {
          reason: 'SecretConflict',
          message: `Secret "${secretName}" is also the key of TokenPolicy "${nameOf(other)}", whose token mode is ${modeOf(other)}, not ${policy.spec.token.mode}; give each mode its own Secret`,
          degraded: true,
        },
      };
    }
    const secret = this.secrets.get(where) as SecretLike | undefined;
    const plan = planSecret({ policy, namespace: this.o.namespace, secret, now: Date.now() });
    const bytes = policy.spec.token.mode === 'Static' ? 8 : 16;
    const generated = `the key is one the operator generated (Secret ${where} did not exist when the policy first named it)`;
    let signal: AbortSignal | undefined;
    if (plan.action === 'create' || plan.action === 'regenerate') {
      signal = this.fenceSignal();
      if (!signal) throw new NotLeaderError('not the leader: the key Secret is left as it is');
    }
    const r = await applySecretPlan(this.core, this.o.namespace, secretName, plan, signal);
    switch (r.done) {
      case 'none':
        return { secret, ...(secret && isManaged(secret) ? { note: generated } : {}) };
      case 'invalid':
        // Logged with the status change it causes (once, not on every reconcile).
        return { problem: { reason: 'SecretInvalid', message: r.message, degraded: true } };
      case 'raced':
        return { note: generated, recheckAt: r.recheckAt };
      case 'created':
        this.o.metrics.secretsCreated.inc();
        slog.info('key Secret generated', { mode: policy.spec.token.mode, bytes, keyGeneration: 1 });
        this.event(
          raw,
          'Normal',
          'KeyGenerated',
          `Secret ${where} named by spec.token.secretRef did not exist: generated a random ${bytes}-byte ${policy.spec.token.mode} key in it (key generation 1; to bring your own key, write it there)`,
        );
        return { note: generated };
      case 'regenerated':
        slog.info('key regenerated: the old key did not fit the token mode', { mode: policy.spec.token.mode });
        this.event(
          raw,
          'Normal',
          'KeyGenerated',
          `the key in Secret ${where} did not fit token mode ${policy.spec.token.mode}: generated a new ${bytes}-byte key`,
        );
        return { note: generated };
    }
  }

  /**
   * The nodes that take part in the rotation of a Secret's keys: those selected by any policy
   * using it where an agent runs, each with the key generations it reports for one of those
   * policies (the agent reads the Secret once for all of them), or undefined before it reports any.
   */
  private rotationNodes(secretName: string): Map<string, NodeKeys | undefined> {
    // Every policy naming the Secret shares the reconcile of each: look at them without copies.
    const uses = (p: CachedPolicy | undefined): boolean =>
      p !== undefined && !p.metadata.deletionTimestamp && secretNameOf(p) === secretName;
    const { selectors, policies: users } = this.secretSelectors.of(secretName);
    const nodes = new Map<string, NodeKeys | undefined>();
    for (const sel of selectors) {
      for (const n of this.matchedNodes(sel)) {
        const node = n.metadata.name;
        if (nodes.has(node)) continue;
        const report = this.reports.get(node);
        if (!report?.agent) continue; // no agent runs there (yet): it holds no key
        // Any policy of the Secret that the node reports will do: the one that answered last
        // time first, then whichever of the two lists is shorter.
        const hintKey = `${node}\0${secretName}`;
        const hint = this.keysHint.get(hintKey);
        let keys = hint !== undefined && uses(this.policies.get(hint)) ? report.keys.get(hint) : undefined;
        let from = hint;
        if (!keys && report.keys.size < users) {
          for (const [p, k] of report.keys)
            if (uses(this.policies.get(p))) {
              [keys, from] = [k, p];
              break;
            }
        } else if (!keys) {
          for (const u of this.policies.indexed('secret', secretName)) {
            if (u.metadata.deletionTimestamp || !(keys = report.keys.get(nameOf(u)))) continue;
            from = nameOf(u);
            break;
          }
        }
        if (keys && from !== undefined && from !== hint) {
          if (this.keysHint.size > 100_000) this.keysHint.clear();
          this.keysHint.set(hintKey, from);
        }
        nodes.set(node, keys);
      }
    }
    return nodes;
  }

  /** The next step of the key rotation of a policy's Secret (rotation.ts). */
  private async rotateKeys(policy: TokenPolicy, secret: SecretLike, raw: CachedPolicy, log: Logger): Promise<RotationPlan> {
    const secretName = policy.spec.token.secretRef.name;
    const keys = decodeKeys(secret, policy.spec.token.mode, `namespace ${this.o.namespace}`);
    const nodes = this.rotationNodes(secretName);
    const plan = planRotation({
      policy,
      annotations: raw.metadata.annotations ?? {},
      secret,
      keys,
      nodes,
      drive: isManaged(secret) || policy.spec.token.rotation !== undefined,
      now: Date.now(),
      ...(this.o.retireMarginMs !== undefined ? { retireMarginMs: this.o.retireMarginMs } : {}),
    });
    if (plan.patch) {
      const body = plan.patch;
      try {
        await this.write(
          (opts) => this.core.patchNamespacedSecret({ namespace: this.o.namespace, name: secretName, body }, opts),
          PatchStrategy.MergePatch,
        );
      } catch (err) {
        // Someone else wrote the Secret meanwhile (another policy sharing it): a quiet retry with what they wrote.
        if (isConflict(err)) throw err;
        throw secretError('rotating the key in', secretName, err);
      }
      const step = plan.action as string;
      if (step !== 'number' && step !== 'mark-switched') this.o.metrics.keyRotationSteps.labels(step).inc();
      if (step === 'switch' || step === 'revoke') this.o.metrics.keyRotations.inc();
      const level = step === 'revoke' || plan.stalled.length ? 'warn' : 'info';
      log[level](`key rotation: ${step}`, {
        secret: `${this.o.namespace}/${secretName}`,
        keyGeneration: plan.patch.metadata.annotations['netoken.io/key-generation'] ?? keys.generation,
        nodes: nodes.size,
        ...(plan.stalled.length ? { stalled: plan.stalled.slice(0, 10) } : {}),
      });
    }
    for (const e of plan.events) this.event(raw, e.type, e.reason, e.message);
    return plan;
  }

  private async finalize(raw: CachedPolicy, log: Logger): Promise<ReconcileResult | void> {
    const meta = raw.metadata;
    if (!hasFinalizer(meta)) return;
    const name = nameOf(raw);
    const d = releaseDecision({
      policy: name,
      deletionTimestamp: meta.deletionTimestamp ?? new Date(),
      nodeStates: this.reports.values(),
      nodeNames: { has: (n: string) => this.nodes.get(n) !== undefined } as ReadonlySet<string>,
      timeoutMs: this.o.finalizerTimeoutMs,
      now: Date.now(),
    });
    if (d.release) {
      try {
        await this.patchFinalizers(
          name,
          (meta.finalizers ?? []).filter((f) => f !== FINALIZER),
          meta.resourceVersion,
        );
      } catch (err) {
        if (err instanceof ApiException && err.code === 404) return;
        throw err;
      }
      if (d.givenUp.length) {
        this.event(
          raw,
          'Warning',
          'NodesGivenUp',
          `released without ${d.givenUp.length} node(s) that did not answer within the finalizer timeout: ${d.givenUp
            .slice(0, 10)
            .map((g) => `${g.node} (${g.why})`)
            .join('; ')}`,
        );
      }
      log.info('finalizer removed: no node holds the policy any more', { givenUp: d.givenUp.map((g) => `${g.node}: ${g.why}`) });
      return;
    }
    const agg = aggregateStatus({
      name,
      generation: meta.generation ?? 0,
      matched: this.matchedNodes(raw.spec?.nodeSelector ?? {}),
      reportOf: (n) => this.reports.get(n),
      problem: {
        reason: 'Terminating',
        message: `waiting for ${d.waitingOn.length} node(s) to remove the policy: ${d.waitingOn.slice(0, 10).join(', ')}`,
        degraded: false,
      },
      previous: currentStatus(raw.status).conditions,
      agentGraceMs: this.o.agentGraceMs ?? DEFAULT_AGENT_GRACE_MS,
    });
    await this.writeStatus(raw, agg.status, log, true);
    log.debug('deletion waits for nodes', { waitingOn: d.waitingOn });
    return d.recheckAfterMs === undefined ? undefined : { requeueAfterMs: Math.min(d.recheckAfterMs, MAX_REQUEUE_MS) };
  }

  /**
   * Writes the status when it differs from the current one. Returns when to look again if the
   * write was held back: progress of nodes applying a generation is written at most every
   * PROGRESS_INTERVAL_MS, and the first status of a new policy waits FIRST_STATUS_HOLD_MS for its
   * nodes as long as they are only pending.
   */
  private async writeStatus(raw: CachedPolicy, status: PolicyStatus, log: Logger, now = false): Promise<number | undefined> {
    const name = nameOf(raw);
    const before = currentStatus(raw.status);
    const json = stableJson(status);
    if (stableJson(before) === json) return undefined;
    // The cache may not show our last write yet: do not repeat the same write while it catches up.
    // After a few seconds a difference is real (someone else wrote the status) and is corrected.
    const last = this.lastWrites.get(name);
    const t = Date.now();
    if (last && last.json === json && t - last.at < RECENT_WRITE_MS) return undefined;
    if (!now && last && t - last.at < PROGRESS_INTERVAL_MS && progressOnly(before, status)) return last.at + PROGRESS_INTERVAL_MS;
    // Only a policy without any status: after an edit, the previous generation's status gives
    // way at once (kubectl wait must not see it as the new one's). A problem is never held.
    if (!now && !last && (before.conditions ?? []).length === 0 && readyOf(status)?.reason === 'NodesPending') {
      const uid = raw.metadata.uid;
      let seen = this.firstSeen.get(name);
      if (!seen || seen.uid !== uid) this.firstSeen.set(name, (seen = { uid, at: t }));
      if (t - seen.at < FIRST_STATUS_HOLD_MS) return seen.at + FIRST_STATUS_HOLD_MS;
    }
    try {
      await this.write(
        (opts) =>
          this.custom.patchClusterCustomObjectStatus(
            { group: API_GROUP, version: API_VERSION, plural: 'tokenpolicies', name, body: { status } },
            opts,
          ),
        PatchStrategy.MergePatch,
      );
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) return undefined; // deleted meanwhile
      throw err;
    }
    this.lastWrites.set(name, { json, at: Date.now() });
    this.firstSeen.delete(name);
    this.afterStatusChange(raw, before, status, log);
    return undefined;
  }

  /** Logs a status change, and records an Event when the policy entered a state a person should hear of. */
  private afterStatusChange(raw: CachedPolicy, before: Partial<PolicyStatus>, status: PolicyStatus, log: Logger): void {
    const ready = readyOf(status);
    const wasReady = readyOf(before);
    const degraded = status.conditions.find((c) => c.type === 'Degraded');
    const fields = {
      ready: ready?.status,
      reason: ready?.reason,
      selected: status.nodes.selected,
      nodesReady: status.nodes.ready,
      failed: status.nodes.failed,
      withoutAgent: status.nodes.withoutAgent,
      ...(ready?.status === 'True' ? {} : { detail: ready?.message }),
    };
    if (ready?.status === wasReady?.status && ready?.reason === wasReady?.reason) {
      log.debug('status updated', fields);
      return;
    }
    if (degraded?.status === 'True') log.warn('status changed: degraded', fields);
    else log.info('status changed', fields);
    const reason = ready?.reason ?? '';
    if (PROBLEM_REASONS.has(reason)) this.event(raw, 'Warning', reason, ready?.message ?? '');
    else if (reason === 'NodesFailing') this.event(raw, 'Warning', 'NodesFailing', ready?.message ?? '');
    else if (reason === 'Terminating') this.event(raw, 'Normal', 'WaitingForNodes', `deletion ${ready?.message ?? ''}`);
  }
}
