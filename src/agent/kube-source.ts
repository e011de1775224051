/**
 * Cluster policy source: informer caches of the TokenPolicies (cluster-scoped), this node's
 * Node object (its labels feed spec.nodeSelector) and the Secrets in the agent's namespace.
 * When the API server is unreachable the caches keep their last contents, so the node keeps
 * enforcing its last good state. A Secret that is deleted or stops holding a key does not take
 * the policy's keys away: the keys read last stay in use (a verifier keeps enforcing) and the
 * policy reports SecretUnavailable.
 *
 * Only changes that can change what this node does reach the agent: a policy's spec (its
 * generation), its deletion or re-creation; this Node's labels; the keys of a Secret some policy
 * names (its key data, and the generation they are numbered with). The operator's status writes and finalizer patches, a Node heartbeat and every other
 * Secret of the namespace cost a comparison, not a reconcile. Each policy is validated and
 * each key decoded once per version, not on every reconcile.
 */
import {
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  type V1Node,
  type V1Secret,
} from '../lib/kube-client.js';
import { type CachedMeta, type CachedSecret, type NodeInfo, cacheNode, cacheSecret, cachedMeta } from '../lib/cached.js';
import { type Cacheable, type InformerEvent, Informer } from '../lib/informer.js';
import type { Logger } from '../lib/log.js';
import { PolicyError, decodeKeys, validatePolicy } from '../lib/policy.js';
import { API_GROUP, API_VERSION, KEY_GENERATION_ANNOTATION, type TokenKeys, type TokenPolicy } from '../lib/types.js';
import { type DocumentError, type PolicySource, type Snapshot, keptOrFresh } from './source.js';

export interface KubeSourceOptions {
  kc: KubeConfig;
  nodeName: string;
  namespace: string;
  log: Logger;
  onWatchRestart?: (what: string) => void;
}

/** A TokenPolicy as the agent caches it: no status, no managedFields. */
interface AgentPolicy extends Cacheable {
  apiVersion?: string;
  kind?: string;
  metadata: CachedMeta;
  spec?: { token?: { secretRef?: { name?: string } } } & Record<string, unknown>;
}

function cachePolicy(o: KubernetesObject & { spec?: unknown }): AgentPolicy {
  return { apiVersion: o.apiVersion, kind: o.kind, metadata: cachedMeta(o.metadata), spec: o.spec as AgentPolicy['spec'] };
}

/** The version of a policy that decides what the node does (a status or finalizer change is none). */
function versionOf(p: AgentPolicy): string {
  return `${p.metadata.uid ?? ''}/${p.metadata.generation ?? 0}/${p.metadata.deletionTimestamp ? 'deleting' : ''}`;
}

function secretOf(p: AgentPolicy | undefined): string | undefined {
  return p?.spec?.token?.secretRef?.name;
}

/** The same keys: the key data and the generation they are numbered with. */
function sameKeys(a: CachedSecret, b: CachedSecret): boolean {
  const gen = (s: CachedSecret): string | undefined => s.metadata.annotations?.[KEY_GENERATION_ANNOTATION];
  return JSON.stringify(a.data ?? {}) === JSON.stringify(b.data ?? {}) && gen(a) === gen(b);
}

function sameLabels(a: Record<string, string> | undefined, b: Record<string, string> | undefined): boolean {
  const ka = Object.keys(a ?? {});
  return ka.length === Object.keys(b ?? {}).length && ka.every((k) => a?.[k] === b?.[k]);
}

export class KubeSource implements PolicySource {
  /** The watches whose restarts onWatchRestart reports, by name. */
  static readonly WATCHES = ['tokenpolicies', 'node', 'secrets'] as const;

  private readonly policies: Informer<KubernetesObject, AgentPolicy>;
  private readonly node: Informer<V1Node, NodeInfo>;
  private readonly secrets: Informer<V1Secret, CachedSecret>;
  private onChange: (() => void) | undefined;
  /** each policy validated once per version: the result, or why it is invalid */
  private readonly validated = new Map<string, { version: string; result: TokenPolicy | string }>();
  /** last valid version of each policy, kept when an update cannot be read */
  private readonly lastGood = new Map<string, TokenPolicy>();
  /** each policy's keys decoded once per Secret version and mode */
  private readonly decoded = new Map<string, { version: string; keys: TokenKeys | Error }>();
  /** policy name -> the keys last read for it, with the Secret and mode they were read for */
  private readonly lastKeys = new Map<string, { secret: string; mode: string; keys: TokenKeys }>();

  constructor(private readonly o: KubeSourceOptions) {
    const custom = new CustomObjectsApi(o.kc);
    const core = new CoreV1Api(o.kc);
    // A cache that lists again (the first time, or after it was too old to resume) may bring anything.
    const common = { kc: o.kc, log: o.log, onSynced: () => this.changed() };
    this.policies = new Informer<KubernetesObject, AgentPolicy>({
      ...common,
      what: 'tokenpolicies',
      path: `/apis/${API_GROUP}/${API_VERSION}/tokenpolicies`,
      list: (page) =>
        custom.listClusterCustomObject({ group: API_GROUP, version: API_VERSION, plural: 'tokenpolicies', ...page }) as Promise<
          KubernetesListObject<KubernetesObject>
        >,
      transform: cachePolicy,
      onEvent: (e) => this.policyChanged(e),
      onRestart: () => o.onWatchRestart?.('tokenpolicies'),
    });
    this.policies.addIndex('secret', (p) => {
      const s = secretOf(p);
      return s === undefined ? [] : [s];
    });
    this.node = new Informer<V1Node, NodeInfo>({
      ...common,
      what: 'node',
      path: '/api/v1/nodes',
      fieldSelector: `metadata.name=${o.nodeName}`,
      list: (page) => core.listNode({ fieldSelector: `metadata.name=${o.nodeName}`, ...page }),
      transform: cacheNode,
      onEvent: (e) => {
        if (e.type !== 'update' || !sameLabels(e.old.metadata.labels, e.object.metadata.labels)) this.changed();
      },
      onRestart: () => o.onWatchRestart?.('node'),
    });
    this.secrets = new Informer<V1Secret, CachedSecret>({
      ...common,
      what: 'secrets',
      path: `/api/v1/namespaces/${o.namespace}/secrets`,
      list: (page) => core.listNamespacedSecret({ namespace: o.namespace, ...page }),
      transform: cacheSecret,
      onEvent: (e) => {
        if (this.policies.byIndex('secret', e.object.metadata.name).length === 0) return;
        if (e.type === 'update' && sameKeys(e.old, e.object)) return;
        this.changed();
      },
      onRestart: () => o.onWatchRestart?.('secrets'),
    });
  }

  private changed(): void {
    if (this.policies.synced && this.node.synced && this.secrets.synced) this.onChange?.();
  }

  private policyChanged(e: InformerEvent<AgentPolicy>): void {
    if (e.type === 'update' && versionOf(e.old) === versionOf(e.object)) return;
    this.changed();
  }

  async start(onChange: () => void): Promise<void> {
    this.onChange = onChange;
    await Promise.all([this.policies.start(), this.node.start(), this.secrets.start()]);
  }

  stop(): void {
    this.onChange = undefined;
    this.policies.stop();
    this.node.stop();
    this.secrets.stop();
  }

  /** All three caches have listed at least once. */
  isSynced(): boolean {
    return this.policies.synced && this.node.synced && this.secrets.synced;
  }

  /** The Node object (for the TokenNodeState owner reference), once seen. */
  nodeObject(): NodeInfo | undefined {
    return this.node.get(this.o.nodeName);
  }

  watchRestarts(): number {
    return this.policies.restarts + this.node.restarts + this.secrets.restarts;
  }

  /** The policy, validated once per version; a version that does not validate leaves the last good one. */
  private validate(raw: AgentPolicy, documentErrors: DocumentError[]): TokenPolicy | undefined {
    const name = raw.metadata.name;
    const version = versionOf(raw);
    let v = this.validated.get(name);
    if (v?.version !== version) {
      try {
        v = { version, result: validatePolicy(raw, `TokenPolicy "${name}"`) };
      } catch (err) {
        v = { version, result: err instanceof PolicyError ? err.detail : (err as Error).message };
      }
      this.validated.set(name, v);
    }
    if (typeof v.result !== 'string') {
      this.lastGood.set(name, v.result);
      return v.result;
    }
    documentErrors.push({ where: `TokenPolicy "${name}"`, message: v.result });
    return this.lastGood.get(name);
  }

  /** The keys of a policy, decoded once per version of its Secret. */
  private keysOf(p: TokenPolicy): TokenKeys | Error {
    const ref = p.spec.token.secretRef.name;
    const s = this.secrets.get(`${this.o.namespace}/${ref}`);
    const version = `${ref}/${p.spec.token.mode}/${s?.metadata.uid ?? ''}/${s?.metadata.resourceVersion ?? 'absent'}`;
    const d = this.decoded.get(p.metadata.name);
    if (d?.version === version) return d.keys;
    let got: TokenKeys | Error;
    if (!s) {
      got = new Error(`Secret "${ref}" not found in namespace ${this.o.namespace}`);
    } else {
      try {
        got = decodeKeys(s, p.spec.token.mode, `namespace ${this.o.namespace}`);
      } catch (err) {
        got = err as Error;
      }
    }
    this.decoded.set(p.metadata.name, { version, keys: got });
    return got;
  }

  snapshot(): Snapshot {
    const documentErrors: DocumentError[] = [];
    const policies: TokenPolicy[] = [];
    const seen = new Set<string>();
    for (const raw of this.policies.values()) {
      const name = raw.metadata.name;
      seen.add(name);
      // A policy being deleted is removed from this node now; the operator's finalizer
      // waits for every node to report it gone.
      if (raw.metadata.deletionTimestamp) continue;
      const p = this.validate(raw, documentErrors);
      if (p) policies.push(p);
    }
    for (const cache of [this.lastGood, this.validated, this.decoded]) {
      for (const n of [...cache.keys()]) if (!seen.has(n)) cache.delete(n);
    }
    const keys = new Map<string, TokenKeys | Error>();
    for (const p of policies) keys.set(p.metadata.name, keptOrFresh(this.lastKeys, p, this.keysOf(p)));
    for (const n of [...this.lastKeys.keys()]) if (!keys.has(n)) this.lastKeys.delete(n);
    const node = this.nodeObject();
    return { policies, keys, nodeLabels: { ...(node?.metadata.labels ?? {}) }, documentErrors };
  }
}
