/**
 * Cluster policy source: TokenPolicies (cluster-scoped), this node's Node object (its
 * labels feed spec.nodeSelector) and the key Secrets in the agent's namespace, each a
 * self-restarting list+watch cache. When the API server is unreachable the caches keep
 * their last contents, so the node keeps enforcing its last good state. A Secret that is
 * deleted or stops holding a key does not take the policy's keys away: the keys read last
 * stay in use (a verifier keeps enforcing) and the policy reports SecretUnavailable.
 */
import { CoreV1Api, CustomObjectsApi, type KubeConfig, type KubernetesListObject, type KubernetesObject, type V1Node, type V1Secret } from '@kubernetes/client-node';
import { Watched } from '../lib/kube.js';
import type { Logger } from '../lib/log.js';
import { PolicyError, decodeKeys, validatePolicy } from '../lib/policy.js';
import { API_GROUP, API_VERSION, type TokenKeys, type TokenPolicy } from '../lib/types.js';
import { type DocumentError, type PolicySource, type Snapshot, keptOrFresh } from './source.js';

export interface KubeSourceOptions {
  kc: KubeConfig;
  nodeName: string;
  namespace: string;
  log: Logger;
  onWatchRestart?: (what: string) => void;
}

export class KubeSource implements PolicySource {
  /** The watches whose restarts onWatchRestart reports, by name. */
  static readonly WATCHES = ['tokenpolicies', 'node', 'secrets'] as const;

  private readonly policies: Watched<KubernetesObject>;
  private readonly node: Watched<V1Node>;
  private readonly secrets: Watched<V1Secret>;
  private onChange: (() => void) | undefined;
  /** last valid version of each policy, kept when an update cannot be read */
  private lastGood = new Map<string, TokenPolicy>();
  /** policy name -> the keys last read for it, with the Secret and mode they were read for */
  private lastKeys = new Map<string, { secret: string; mode: string; keys: TokenKeys }>();

  constructor(private readonly o: KubeSourceOptions) {
    const custom = o.kc.makeApiClient(CustomObjectsApi);
    const core = o.kc.makeApiClient(CoreV1Api);
    const changed = (): void => this.onChange?.();
    const common = { kc: o.kc, log: o.log, onChange: changed };
    this.policies = new Watched<KubernetesObject>({
      ...common,
      what: 'tokenpolicies',
      path: `/apis/${API_GROUP}/${API_VERSION}/tokenpolicies`,
      list: () => custom.listClusterCustomObject({ group: API_GROUP, version: API_VERSION, plural: 'tokenpolicies' }) as Promise<KubernetesListObject<KubernetesObject>>,
      onRestart: () => o.onWatchRestart?.('tokenpolicies'),
    });
    this.node = new Watched<V1Node>({
      ...common,
      what: 'node',
      path: '/api/v1/nodes',
      fieldSelector: `metadata.name=${o.nodeName}`,
      list: () => core.listNode({ fieldSelector: `metadata.name=${o.nodeName}` }),
      onRestart: () => o.onWatchRestart?.('node'),
    });
    this.secrets = new Watched<V1Secret>({
      ...common,
      what: 'secrets',
      path: `/api/v1/namespaces/${o.namespace}/secrets`,
      list: () => core.listNamespacedSecret({ namespace: o.namespace }),
      onRestart: () => o.onWatchRestart?.('secrets'),
    });
  }

  async start(onChange: () => void): Promise<void> {
    this.onChange = onChange;
    await Promise.all([this.policies.start(), this.node.start(), this.secrets.start()]);
  }

  stop(): void {
    this.onChange = undefined;
    void this.policies.stop();
    void this.node.stop();
    void this.secrets.stop();
  }

  /** All three caches have listed at least once. */
  isSynced(): boolean {
    return this.policies.synced && this.node.synced && this.secrets.synced;
  }

  /** The Node object (for the TokenNodeState owner reference), once seen. */
  nodeObject(): V1Node | undefined {
    return this.node.list()[0];
  }

  watchRestarts(): number {
    return this.policies.restarts + this.node.restarts + this.secrets.restarts;
  }

  snapshot(): Snapshot {
    const documentErrors: DocumentError[] = [];
    const policies: TokenPolicy[] = [];
    const seen = new Set<string>();
    for (const raw of this.policies.list()) {
      const name = raw.metadata?.name ?? '?';
      seen.add(name);
      // A policy being deleted is removed from this node now; the operator's finalizer
      // waits for every node to report it gone.
      if (raw.metadata?.deletionTimestamp) continue;
      try {
        const p = validatePolicy(raw, `TokenPolicy "${name}"`);
        this.lastGood.set(name, p);
        policies.push(p);
      } catch (err) {
        const msg = err instanceof PolicyError ? err.detail : (err as Error).message;
        documentErrors.push({ where: `TokenPolicy "${name}"`, message: msg });
        const last = this.lastGood.get(name);
        if (last) policies.push(last);
      }
    }
    for (const n of [...this.lastGood.keys()]) if (!seen.has(n)) this.lastGood.delete(n);

    const secrets = new Map(this.secrets.list().map((s) => [s.metadata?.name ?? '', s]));
    const keys = new Map<string, TokenKeys | Error>();
    for (const p of policies) {
      const ref = p.spec.token.secretRef.name;
      const s = secrets.get(ref);
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
      keys.set(p.metadata.name, keptOrFresh(this.lastKeys, p, got));
    }
    for (const n of [...this.lastKeys.keys()]) if (!keys.has(n)) this.lastKeys.delete(n);
    const node = this.nodeObject();
    return { policies, keys, nodeLabels: { ...(node?.metadata?.labels ?? {}) }, documentErrors };
  }
}

