/**
 * The operator: list+watch caches of TokenPolicies, TokenNodeStates, Nodes and the key Secrets
 * in the operator's namespace; a change in any of them enqueues the policy keys it can affect;
 * a per-key queue reconciles them, only while this process holds the leader Lease and only
 * once every cache has listed (a half-filled cache would make a deleted policy look released
 * or a present Secret look missing).
 *
 * Reconcile of a policy key: finalizer, validation of what the CRD schema cannot check,
 * the key Secret (generate or check it, then the next step of a key rotation, rotation.ts),
 * then the status rolled up from the nodes, written only when it changed. Reconcile of a
 * nodestate key: delete the report of a Node that is gone.
 */
import {
  ApiException, CoreV1Api, CustomObjectsApi, type KubeConfig, type KubernetesListObject, type KubernetesObject,
  type V1Node, type V1Secret,
} from '@kubernetes/client-node';
import { type WatchEvent, Watched, describeError, mergePatch } from '../lib/kube.js';
import type { Logger } from '../lib/log.js';
import { PolicyError, decodeKeys, validatePolicy } from '../lib/policy.js';
import { API_GROUP, API_VERSION, type LabelSelector, type TokenPolicy, selectorMatches } from '../lib/types.js';
import { secretError } from './errors.js';
import { EventRecorder, type EventSink } from './events.js';
import { FINALIZER, hasFinalizer, releaseDecision } from './finalizer.js';
import type { Probe } from '../lib/http.js';
import { Heartbeat } from './health.js';
import { LeaderElector } from './leader.js';
import type { OperatorMetrics, PolicyStatusView } from './metrics.js';
import { collectNodeState, orphanedNodeStates } from './nodes.js';
import { KeyedQueue, type ReconcileResult } from './queue.js';
import { type ReconcileKey, keyId, nodeStateKey, policyKey } from './keys.js';
import {
  type PolicyLookup, nodeStatesForNode, nodeStatesForNodeState, policiesForNode, policiesForNodeState, policiesForPolicy, policiesForSecret,
} from './mapping.js';
import { type NodeKeys, type RotationPlan, planRotation } from './rotation.js';
import { type SecretLike, applySecretPlan, isManaged, planSecret } from './secrets.js';
import { type NodeStateLike, type PolicyProblem, aggregateStatus, currentStatus, policyEntry, stableJson } from './status.js';

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
  /** every policy is reconciled again this often even without changes; it defaults to 10 minutes */
  resyncMs?: number;
  /** how long a retired key stays accepted after every node signs with the new one, besides epoch and skew (rotation.ts) */
  retireMarginMs?: number;
  /** where Events go; it defaults to the API server */
  events?: EventSink;
  /** called once when leadership is lost; the process should exit */
  onLostLeadership: (why: string) => void;
}

/** A reconcile that takes longer than this makes /healthz fail. */
const STUCK_RECONCILE_MS = 5 * 60_000;
/** How long a status write of ours counts as not yet visible in the cache. */
const RECENT_WRITE_MS = 5000;
/** Longest delay asked of the queue; later due times are re-checked then. */
const MAX_REQUEUE_MS = 60 * 60_000;

interface RawPolicy extends KubernetesObject {
  metadata?: KubernetesObject['metadata'] & { generation?: number; deletionTimestamp?: Date | string };
  spec?: { nodeSelector?: LabelSelector; token?: { mode?: string; secretRef?: { name?: string } } };
  status?: unknown;
}

type RawNodeState = KubernetesObject & NodeStateLike;

function nameOf(o: KubernetesObject): string {
  return o.metadata?.name ?? '';
}

function secretNameOf(p: RawPolicy): string | undefined {
  return p.spec?.token?.secretRef?.name;
}

/** The conditions and node counts of a policy's status, as the metrics show them. */
function policyStatusView(status: unknown): Omit<PolicyStatusView, 'name'> {
  const s = currentStatus(status);
  const out: Omit<PolicyStatusView, 'name'> = { conditions: (s.conditions ?? []).filter((c) => typeof c.type === 'string' && typeof c.status === 'string') };
  if (s.nodes) out.nodes = s.nodes;
  return out;
}

function modeOf(p: RawPolicy): string {
  return p.spec?.token?.mode ?? 'Static';
}

export class Operator {
  private readonly custom: CustomObjectsApi;
  private readonly core: CoreV1Api;
  private readonly policies: Watched<RawPolicy>;
  private readonly nodeStates: Watched<RawNodeState>;
  private readonly nodes: Watched<V1Node>;
  private readonly secrets: Watched<V1Secret>;
  private readonly queue: KeyedQueue<ReconcileKey>;
  private readonly elector: LeaderElector | undefined;
  private readonly heartbeat = new Heartbeat();
  private readonly events: EventSink;
  private leading = false;
  private stopping = false;
  private resyncTimer: NodeJS.Timeout | null = null;
  /** per policy: the status last written, and when */
  private readonly lastWrites = new Map<string, { json: string; at: number }>();

  constructor(private readonly o: OperatorOptions) {
    this.custom = o.kc.makeApiClient(CustomObjectsApi);
    this.core = o.kc.makeApiClient(CoreV1Api);
    this.events = o.events ?? new EventRecorder({ kc: o.kc, component: 'netoken-operator', instance: o.identity, log: o.log });
    // Each cache event goes through the mapping function of its kind to the keys it affects.
    const common = { kc: o.kc, log: o.log, onChange: () => this.maybeResume() };
    const mapped = <T>(map: (old: T | undefined, cur: T | undefined) => ReconcileKey[]) => (e: WatchEvent<T>): void =>
      this.enqueue(e.type === 'add' ? map(undefined, e.object) : e.type === 'update' ? map(e.old, e.object) : map(e.object, undefined));
    const restarted = (what: string) => () => o.metrics.watchRestarts.labels(what).inc();
    const listCustom = (plural: string) => () =>
      this.custom.listClusterCustomObject({ group: API_GROUP, version: API_VERSION, plural }) as Promise<KubernetesListObject<KubernetesObject>>;
    this.policies = new Watched<RawPolicy>({
      ...common, what: 'tokenpolicies', path: `/apis/${API_GROUP}/${API_VERSION}/tokenpolicies`,
      list: listCustom('tokenpolicies') as () => Promise<KubernetesListObject<RawPolicy>>, onRestart: restarted('tokenpolicies'),
      onEvent: mapped<RawPolicy>((old, cur) => policiesForPolicy(old, cur, this.lookup)),
    });
    this.nodeStates = new Watched<RawNodeState>({
      ...common, what: 'tokennodestates', path: `/apis/${API_GROUP}/${API_VERSION}/tokennodestates`,
      list: listCustom('tokennodestates') as () => Promise<KubernetesListObject<RawNodeState>>, onRestart: restarted('tokennodestates'),
      onEvent: mapped<RawNodeState>((old, cur) => [
        ...policiesForNodeState(old, cur),
        ...nodeStatesForNodeState(cur, (n) => this.nodes.get(n) !== undefined),
      ]),
    });
    this.nodes = new Watched<V1Node>({
      ...common, what: 'nodes', path: '/api/v1/nodes', list: () => this.core.listNode(), onRestart: restarted('nodes'),
      onEvent: mapped<V1Node>((old, cur) => [...policiesForNode(old, cur, this.lookup), ...nodeStatesForNode(old, cur)]),
    });
    this.secrets = new Watched<V1Secret>({
      ...common, what: 'secrets', path: `/api/v1/namespaces/${o.namespace}/secrets`,
      list: () => this.core.listNamespacedSecret({ namespace: o.namespace }), onRestart: restarted('secrets'),
      onEvent: mapped<V1Secret>((old, cur) => policiesForSecret(old, cur, this.lookup)),
    });
    this.queue = new KeyedQueue<ReconcileKey>({
      reconcile: (key) => this.reconcile(key),
      keyId,
      log: o.log,
      onDone: (key, seconds, error) => o.metrics.observeReconcile(key.kind, seconds, error !== undefined),
    });
    o.metrics.setSources({
      queueDepth: () => this.queue.depth,
      leader: () => (this.leading ? 1 : 0),
      policies: () => (this.synced ? this.policies.list().map((p) => ({ name: nameOf(p), ...policyStatusView(p.status) })) : undefined),
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

  /** Starts the caches and the election (or, without election, reconciling at once). */
  async start(): Promise<void> {
    this.o.log.info('operator starting', {
      namespace: this.o.namespace, identity: this.o.identity, leaderElect: this.o.leaderElect, finalizerTimeoutMs: this.o.finalizerTimeoutMs,
    });
    await Promise.all([this.policies.start(), this.nodeStates.start(), this.nodes.start(), this.secrets.start()]);
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
    if (opts.releaseLease ?? true) await this.elector?.stop();
    await Promise.all([this.policies.stop(), this.nodeStates.stop(), this.nodes.stop(), this.secrets.stop()]);
    this.heartbeat.stop();
  }

  /** All four caches have listed at least once. */
  get synced(): boolean {
    return this.unsynced().length === 0;
  }

  private unsynced(): string[] {
    const caches: [string, { synced: boolean }][] = [
      ['tokenpolicies', this.policies], ['tokennodestates', this.nodeStates], ['nodes', this.nodes], ['secrets', this.secrets],
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

  private enqueueAll(): void {
    for (const p of this.policies.list()) this.queue.enqueue(policyKey(nameOf(p)));
    const nodeNames = new Set(this.nodes.list().map(nameOf));
    for (const n of orphanedNodeStates(this.nodeStates.list(), nodeNames)) this.queue.enqueue(nodeStateKey(n));
  }

  private enqueue(keys: readonly ReconcileKey[]): void {
    if (this.stopping) return;
    for (const k of keys) this.queue.enqueue(k);
  }

  /** What the mapping functions look up among the policies. */
  private readonly lookup: PolicyLookup = {
    policiesUsingSecret: (secret) => this.policies.list().filter((p) => secretNameOf(p) === secret).map(nameOf),
    allPolicies: () => this.policies.list().map(nameOf),
  };

  private async reconcile(key: ReconcileKey): Promise<ReconcileResult | void> {
    try {
      switch (key.kind) {
        case 'policy':
          return await this.reconcilePolicy(key.name);
        case 'nodestate':
          return await this.reconcileNodeState(key.name);
      }
    } catch (err) {
      throw err instanceof ApiException ? new Error(describeError(err)) : err;
    }
  }

  private async reconcileNodeState(name: string): Promise<void> {
    const state = this.nodeStates.get(name);
    if (!state) return;
    if (this.nodes.get(name)) return;
    const log = this.o.log.child({ node: name });
    const r = await collectNodeState(this.core, this.custom, name, state.metadata?.uid);
    if (r === 'deleted') log.info('TokenNodeState of a deleted Node removed');
    else log.debug('TokenNodeState kept', { result: r });
  }

  private async reconcilePolicy(name: string): Promise<ReconcileResult | void> {
    const raw = this.policies.get(name);
    if (!raw) {
      this.lastWrites.delete(name);
      return; // gone: nothing left to do
    }
    const log = this.o.log.child({ policy: name });
    const meta = raw.metadata ?? {};
    const generation = meta.generation ?? 0;
    if (meta.deletionTimestamp) return this.finalize(raw, log);

    if (!hasFinalizer(meta)) {
      await this.patchPolicy(name, { metadata: { finalizers: [...(meta.finalizers ?? []), FINALIZER], resourceVersion: meta.resourceVersion } });
      log.info('finalizer added', { finalizer: FINALIZER });
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
    let rotation: RotationPlan | undefined;
    if (policy) {
      const r = await this.ensureSecret(policy, log);
      problem = r.problem;
      requeueAt = r.recheckAt;
      if (r.secret) {
        rotation = await this.rotateKeys(policy, r.secret, raw, log);
        requeueAt = rotation.requeueAt;
      }
    }

    const status = aggregateStatus({
      name,
      generation,
      selector: policy?.spec.nodeSelector ?? raw.spec?.nodeSelector ?? {},
      nodes: this.nodes.list(),
      nodeStates: this.nodeStates.list(),
      problem,
      ...(rotation ? { keyRotation: rotation.condition, rotationStalled: rotation.stalled } : {}),
      previous: currentStatus(raw.status).conditions,
    });
    await this.writeStatus(name, raw, status, log);
    if (requeueAt === undefined) return;
    return { requeueAfterMs: Math.min(Math.max(0, requeueAt - Date.now()) + 100, MAX_REQUEUE_MS) };
  }

  /** Generates or checks the key Secret; returns it when it holds valid keys, else what is wrong with it. */
  private async ensureSecret(policy: TokenPolicy, log: Logger): Promise<{ problem?: PolicyProblem; secret?: SecretLike; recheckAt?: number }> {
    const secretName = policy.spec.token.secretRef.name;
    const slog = log.child({ secret: `${this.o.namespace}/${secretName}` });
    // One Secret holds keys of one length: policies of both modes cannot share it.
    const other = this.policies.list().find((p) =>
      nameOf(p) !== policy.metadata.name && !p.metadata?.deletionTimestamp && secretNameOf(p) === secretName && modeOf(p) !== policy.spec.token.mode);
    if (other) {
      return {
        problem: {
          reason: 'SecretConflict',
          message: `Secret "${secretName}" is also the key of TokenPolicy "${nameOf(other)}", whose token mode is ${modeOf(other)}, not ${policy.spec.token.mode}; give each mode its own Secret`,
          degraded: true,
        },
      };
    }
    const secret = this.secrets.get(`${this.o.namespace}/${secretName}`) as SecretLike | undefined;
    const plan = planSecret({ policy, namespace: this.o.namespace, secret, now: Date.now() });
    const r = await applySecretPlan(this.core, this.o.namespace, secretName, plan);
    switch (r.done) {
      case 'none':
        return { secret };
      case 'invalid':
        // Logged with the status change it causes (once, not on every reconcile).
        return { problem: { reason: 'SecretInvalid', message: r.message, degraded: true } };
      case 'raced':
        return { recheckAt: r.recheckAt };
      case 'created':
        this.o.metrics.secretsCreated.inc();
        slog.info('key Secret generated', { mode: policy.spec.token.mode, bytes: policy.spec.token.mode === 'Static' ? 8 : 16, keyGeneration: 1 });
        this.event(policy, 'Normal', 'KeyGenerated', `key Secret ${this.o.namespace}/${secretName} generated (key generation 1)`);
        return {};
      case 'regenerated':
        slog.info('key regenerated: the old key did not fit the token mode', { mode: policy.spec.token.mode });
        this.event(policy, 'Normal', 'KeyGenerated', `key Secret ${this.o.namespace}/${secretName} regenerated: its key did not fit token mode ${policy.spec.token.mode}`);
        return {};
    }
  }

  /**
   * The next step of the key rotation of a policy's Secret (rotation.ts). The nodes that take
   * part are those selected by any policy using the Secret and that run an agent (have a
   * TokenNodeState); each reports the key generations it signs with and accepts.
   */
  private async rotateKeys(policy: TokenPolicy, secret: SecretLike, raw: RawPolicy, log: Logger): Promise<RotationPlan> {
    const secretName = policy.spec.token.secretRef.name;
    const keys = decodeKeys(secret, policy.spec.token.mode, `namespace ${this.o.namespace}`);
    const users = this.policies.list().filter((p) => secretNameOf(p) === secretName && !p.metadata?.deletionTimestamp);
    const states = new Map(this.nodeStates.list().map((s) => [nameOf(s), s]));
    const nodes = new Map<string, NodeKeys | undefined>();
    for (const n of this.nodes.list()) {
      const node = nameOf(n);
      const state = states.get(node);
      if (!state) continue; // no agent runs there (yet): it holds no key
      for (const p of users) {
        if (!selectorMatches(p.spec?.nodeSelector ?? {}, n.metadata?.labels ?? {})) continue;
        const got = policyEntry(state, nameOf(p))?.keys;
        const had = nodes.get(node);
        if (!nodes.has(node)) nodes.set(node, got && { signs: got.signs, accepts: [...got.accepts] });
        else if (had && got) nodes.set(node, { signs: had.signs === got.signs ? had.signs : -1, accepts: had.accepts.filter((g) => got.accepts.includes(g)) });
        else nodes.set(node, undefined);
      }
    }
    const plan = planRotation({
      policy,
      annotations: (raw.metadata?.annotations ?? {}) as Record<string, string>,
      secret,
      keys,
      nodes,
      drive: isManaged(secret) || policy.spec.token.rotation !== undefined,
      now: Date.now(),
      ...(this.o.retireMarginMs !== undefined ? { retireMarginMs: this.o.retireMarginMs } : {}),
    });
    if (plan.patch) {
      try {
        await this.core.patchNamespacedSecret({ namespace: this.o.namespace, name: secretName, body: plan.patch }, mergePatch);
      } catch (err) {
        // Someone else wrote the Secret meanwhile (another policy sharing it): look again with what they wrote.
        if (err instanceof ApiException && err.code === 409) return { ...plan, requeueAt: Date.now() + 500 };
        throw secretError('rotating the key in', secretName, err);
      }
      const step = plan.action as string;
      if (step !== 'number' && step !== 'mark-switched') this.o.metrics.keyRotationSteps.labels(step).inc();
      if (step === 'switch' || step === 'revoke') this.o.metrics.keyRotations.inc();
      const level = step === 'revoke' || plan.stalled.length ? 'warn' : 'info';
      log[level](`key rotation: ${step}`, {
        secret: `${this.o.namespace}/${secretName}`, keyGeneration: plan.patch.metadata.annotations['netoken.io/key-generation'] ?? keys.generation, nodes: nodes.size,
        ...(plan.stalled.length ? { stalled: plan.stalled.slice(0, 10) } : {}),
      });
    }
    for (const e of plan.events) this.event(policy, e.type, e.reason, e.message, raw.metadata?.uid);
    return plan;
  }

  private event(policy: TokenPolicy, type: 'Normal' | 'Warning', reason: string, message: string, uid?: string): void {
    this.events.record({ kind: 'TokenPolicy', name: policy.metadata.name, ...(uid ?? policy.metadata.uid ? { uid: uid ?? policy.metadata.uid } : {}) }, type, reason, message);
  }

  private async finalize(raw: RawPolicy, log: Logger): Promise<ReconcileResult | void> {
    const meta = raw.metadata ?? {};
    if (!hasFinalizer(meta)) return;
    const name = nameOf(raw);
    const d = releaseDecision({
      policy: name,
      deletionTimestamp: meta.deletionTimestamp ?? new Date(),
      nodeStates: this.nodeStates.list(),
      nodeNames: new Set(this.nodes.list().map(nameOf)),
      timeoutMs: this.o.finalizerTimeoutMs,
      now: Date.now(),
    });
    if (d.release) {
      try {
        await this.patchPolicy(name, { metadata: { finalizers: (meta.finalizers ?? []).filter((f) => f !== FINALIZER), resourceVersion: meta.resourceVersion } });
      } catch (err) {
        if (err instanceof ApiException && err.code === 404) return;
        throw err;
      }
      log.info('finalizer removed: no node holds the policy any more', { givenUp: d.givenUp.map((g) => `${g.node}: ${g.why}`) });
      return;
    }
    const status = aggregateStatus({
      name,
      generation: meta.generation ?? 0,
      selector: raw.spec?.nodeSelector ?? {},
      nodes: this.nodes.list(),
      nodeStates: this.nodeStates.list(),
      problem: {
        reason: 'Terminating',
        message: `waiting for ${d.waitingOn.length} node(s) to remove the policy: ${d.waitingOn.slice(0, 10).join(', ')}`,
        degraded: false,
      },
      previous: currentStatus(raw.status).conditions,
    });
    await this.writeStatus(name, raw, status, log);
    log.debug('deletion waits for nodes', { waitingOn: d.waitingOn });
    return d.recheckAfterMs === undefined ? undefined : { requeueAfterMs: Math.min(d.recheckAfterMs, MAX_REQUEUE_MS) };
  }

  private async patchPolicy(name: string, body: object): Promise<void> {
    await this.custom.patchClusterCustomObject({ group: API_GROUP, version: API_VERSION, plural: 'tokenpolicies', name, body }, mergePatch);
  }

  private async writeStatus(name: string, raw: RawPolicy, status: ReturnType<typeof aggregateStatus>, log: Logger): Promise<void> {
    const before = currentStatus(raw.status);
    const json = stableJson(status);
    if (stableJson(before) === json) return;
    // The cache may not show our last write yet: do not repeat the same write while it catches up.
    // After a few seconds a difference is real (someone else wrote the status) and is corrected.
    const last = this.lastWrites.get(name);
    if (last && last.json === json && Date.now() - last.at < RECENT_WRITE_MS) return;
    try {
      await this.custom.patchClusterCustomObjectStatus(
        { group: API_GROUP, version: API_VERSION, plural: 'tokenpolicies', name, body: { status } },
        mergePatch,
      );
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) return; // deleted meanwhile
      throw err;
    }
    this.lastWrites.set(name, { json, at: Date.now() });
    const ready = status.conditions.find((c) => c.type === 'Ready');
    const wasReady = before.conditions?.find((c) => c.type === 'Ready');
    const fields = {
      ready: ready?.status, reason: ready?.reason, selected: status.nodes.selected, nodesReady: status.nodes.ready, failed: status.nodes.failed,
      ...(ready?.status === 'True' ? {} : { detail: ready?.message }),
    };
    if (ready?.status !== wasReady?.status || ready?.reason !== wasReady?.reason) {
      if (status.conditions.some((c) => c.type === 'Degraded' && c.status === 'True')) log.warn('status changed: degraded', fields);
      else log.info('status changed', fields);
    }
    else log.debug('status updated', fields);
  }
}
