/**
 * The Kubernetes client of the agent, the operator and `netoken inspect`: @kubernetes/client-node
 * for what it does best, loaded piece by piece (its KubeConfig with every way of
 * authenticating, TLS and proxies; its Watch and ListWatch; its ApiException and V1MicroTime),
 * and the dozen API calls netoken makes, over that KubeConfig, here. client-node's generated
 * API classes (CoreV1Api, ...) go through a serializer that loads every model of the whole
 * Kubernetes API: about 35 MB of heap for a process that reads nodes, secrets and two kinds
 * of its own. These classes have the names, the methods and the arguments of the generated
 * ones that netoken uses, and return the objects as the API server sends them (timestamps
 * stay strings).
 */
import http, { STATUS_CODES } from 'node:http';
import https from 'node:https';
import { createHash } from 'node:crypto';
import { KubeConfig } from '@kubernetes/client-node/dist/config.js';
import { ApiException } from '@kubernetes/client-node/dist/gen/apis/exception.js';
import type {
  CoreV1Event,
  KubernetesListObject,
  KubernetesObject,
  V1Lease,
  V1Node,
  V1NodeList,
  V1Secret,
  V1SecretList,
} from '@kubernetes/client-node';

export { KubeConfig, ApiException };
export { Watch } from '@kubernetes/client-node/dist/watch.js';
export { ListWatch } from '@kubernetes/client-node/dist/cache.js';
export { V1MicroTime } from '@kubernetes/client-node/dist/types.js';
export type { CoreV1Event, KubernetesListObject, KubernetesObject, V1Lease, V1Node, V1Secret } from '@kubernetes/client-node';

/** Content types of a PATCH (client-node's PatchStrategy). */
export const PatchStrategy = {
  JsonPatch: 'application/json-patch+json',
  MergePatch: 'application/merge-patch+json',
  StrategicMergePatch: 'application/strategic-merge-patch+json',
  ServerSideApply: 'application/apply-patch+yaml',
} as const;

/** Per-call options: extra request headers, the body's Content-Type, a signal that aborts the call. */
export interface CallOptions {
  headers?: Record<string, string>;
  contentType?: string;
  signal?: AbortSignal;
}

export function setHeaderOptions(key: string, value: string): CallOptions {
  return { headers: { [key]: value } };
}

type Query = Record<string, string | number | boolean | undefined>;

/** What list calls may narrow with. */
export interface ListOptions {
  labelSelector?: string;
  fieldSelector?: string;
  resourceVersion?: string;
  limit?: number;
  /** the continue token of the page before (the generated calls' name for `continue`) */
  _continue?: string;
}

const enc = encodeURIComponent;

/** Keep-alive agents by the TLS credentials they present (a few at most: credentials rotate rarely). */
const agents = new Map<string, https.Agent>();
const MAX_AGENTS = 8;

/**
 * The agent for a call: client-node's KubeConfig makes a new https.Agent, without keep-alive, on
 * every call, so every request paid a TCP and a TLS handshake on both ends (the API server's CPU
 * is what a busy control plane runs short of). A plain https.Agent is replaced by one kept per set
 * of TLS credentials, with keep-alive; proxies and plain HTTP keep the agent client-node made.
 */
function keepAliveAgent(opts: https.RequestOptions): https.RequestOptions['agent'] {
  const made = opts.agent;
  if (!made || Object.getPrototypeOf(made) !== https.Agent.prototype) return made;
  const tls = {
    ca: opts.ca,
    cert: opts.cert,
    key: opts.key,
    pfx: opts.pfx,
    passphrase: opts.passphrase,
    rejectUnauthorized: opts.rejectUnauthorized,
    servername: opts.servername,
  };
  const id = credentialsId(tls);
  let agent = agents.get(id);
  if (!agent) {
    for (const [k, old] of agents) {
      if (agents.size < MAX_AGENTS) break;
      agents.delete(k);
      old.destroy();
    }
    agent = new https.Agent({ ...tls, keepAlive: true });
    agents.set(id, agent);
  }
  (made as https.Agent).destroy();
  return agent;
}

/**
 * A digest of TLS credentials, over their bytes as they are: client-node hands out fresh Buffers
 * on every call, and JSON would spell each byte of a certificate out as a number first.
 */
function credentialsId(tls: Record<string, unknown>): string {
  const h = createHash('sha256');
  for (const [k, v] of Object.entries(tls)) {
    for (const part of Array.isArray(v) ? v : [v]) {
      h.update(`${k}:${part === undefined ? 'u' : Buffer.isBuffer(part) || typeof part === 'string' ? 'b' : 'j'}:`);
      if (Buffer.isBuffer(part) || typeof part === 'string')
        h.update(String(Buffer.byteLength(part)))
          .update(':')
          .update(part);
      else if (part !== undefined) h.update(JSON.stringify(part));
    }
  }
  return h.digest('hex');
}

/** The User-Agent each KubeConfig's calls send (identify()). */
const userAgents = new WeakMap<KubeConfig, string>();

/**
 * Names the program behind `kc`'s calls, as client-go does ("name/version (os/arch)"): the API
 * server takes the part before the slash as the field manager of every write that names none
 * (managedFields, conflicts), and audit logs show it. Without one, writes are filed as "unknown".
 */
export function identify(kc: KubeConfig, userAgent: string): void {
  userAgents.set(kc, userAgent);
}

/** One API call: the response body parsed, or an ApiException carrying the status and the body. */
async function call<T>(
  kc: KubeConfig,
  method: string,
  path: string,
  o: { query?: Query; body?: unknown; options?: CallOptions } = {},
): Promise<T> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('the kubeconfig names no current cluster');
  const url = new URL(cluster.server.replace(/\/+$/, '') + path);
  for (const [k, v] of Object.entries(o.query ?? {}))
    if (v !== undefined) url.searchParams.set(k === '_continue' ? 'continue' : k, String(v));
  const opts: https.RequestOptions = { method };
  // Credentials (tokens, client certificates, exec and OIDC plugins), the cluster's CA and proxies.
  await kc.applyToHTTPSOptions(opts);
  opts.agent = keepAliveAgent(opts);
  const headers: Record<string, string> = { Accept: 'application/json', ...(opts.headers as Record<string, string> | undefined) };
  const agent = userAgents.get(kc);
  if (agent !== undefined) headers['User-Agent'] = agent;
  let payload: Buffer | undefined;
  if (o.body !== undefined) {
    payload = Buffer.from(JSON.stringify(o.body));
    headers['Content-Type'] = o.options?.contentType ?? (method === 'PATCH' ? PatchStrategy.JsonPatch : 'application/json');
    headers['Content-Length'] = String(payload.length);
  }
  Object.assign(headers, o.options?.headers);
  const transport = url.protocol === 'http:' ? http : https;
  return new Promise<T>((resolve, reject) => {
    const signal = o.options?.signal;
    const req = transport.request(url, { ...opts, method, headers, ...(signal ? { signal } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text === '' ? undefined : text;
        try {
          if (text !== '') body = JSON.parse(text);
        } catch {
          // not JSON: kept as text
        }
        const code = res.statusCode ?? 0;
        if (code >= 200 && code < 300) resolve(body as T);
        else
          reject(
            new ApiException(code, STATUS_CODES[code] ?? 'Unknown API Status Code!', body, res.headers as Record<string, string>),
          );
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}

abstract class Api {
  constructor(protected readonly kc: KubeConfig) {}
}

/** The core group's calls netoken makes (/api/v1). */
export class CoreV1Api extends Api {
  listNode(p: ListOptions = {}, options?: CallOptions): Promise<V1NodeList> {
    return call(this.kc, 'GET', '/api/v1/nodes', { query: { ...p }, ...(options ? { options } : {}) });
  }

  readNode(p: { name: string }, options?: CallOptions): Promise<V1Node> {
    return call(this.kc, 'GET', `/api/v1/nodes/${enc(p.name)}`, options ? { options } : {});
  }

  listNamespacedSecret(p: { namespace: string } & ListOptions, options?: CallOptions): Promise<V1SecretList> {
    const { namespace, ...q } = p;
    return call(this.kc, 'GET', `/api/v1/namespaces/${enc(namespace)}/secrets`, { query: q, ...(options ? { options } : {}) });
  }

  readNamespacedSecret(p: { name: string; namespace: string }, options?: CallOptions): Promise<V1Secret> {
    return call(this.kc, 'GET', `/api/v1/namespaces/${enc(p.namespace)}/secrets/${enc(p.name)}`, options ? { options } : {});
  }

  createNamespacedSecret(p: { namespace: string; body: V1Secret }, options?: CallOptions): Promise<V1Secret> {
    return call(this.kc, 'POST', `/api/v1/namespaces/${enc(p.namespace)}/secrets`, {
      body: p.body,
      ...(options ? { options } : {}),
    });
  }

  patchNamespacedSecret(p: { name: string; namespace: string; body: object }, options?: CallOptions): Promise<V1Secret> {
    return call(this.kc, 'PATCH', `/api/v1/namespaces/${enc(p.namespace)}/secrets/${enc(p.name)}`, {
      body: p.body,
      ...(options ? { options } : {}),
    });
  }

  createNamespacedEvent(p: { namespace: string; body: CoreV1Event }, options?: CallOptions): Promise<CoreV1Event> {
    return call(this.kc, 'POST', `/api/v1/namespaces/${enc(p.namespace)}/events`, {
      body: p.body,
      ...(options ? { options } : {}),
    });
  }
}

interface ClusterObject {
  group: string;
  version: string;
  plural: string;
}

/** Cluster-scoped custom resources (/apis/GROUP/VERSION/PLURAL). */
export class CustomObjectsApi extends Api {
  private path(p: ClusterObject, name?: string): string {
    return `/apis/${enc(p.group)}/${enc(p.version)}/${enc(p.plural)}${name === undefined ? '' : `/${enc(name)}`}`;
  }

  listClusterCustomObject(
    p: ClusterObject & ListOptions,
    options?: CallOptions,
  ): Promise<KubernetesListObject<KubernetesObject>> {
    const { group, version, plural, ...q } = p;
    return call(this.kc, 'GET', this.path({ group, version, plural }), { query: q, ...(options ? { options } : {}) });
  }

  getClusterCustomObject(p: ClusterObject & { name: string }, options?: CallOptions): Promise<object> {
    return call(this.kc, 'GET', this.path(p, p.name), options ? { options } : {});
  }

  createClusterCustomObject(p: ClusterObject & { body: object }, options?: CallOptions): Promise<object> {
    return call(this.kc, 'POST', this.path(p), { body: p.body, ...(options ? { options } : {}) });
  }

  patchClusterCustomObject(p: ClusterObject & { name: string; body: object }, options?: CallOptions): Promise<object> {
    return call(this.kc, 'PATCH', this.path(p, p.name), { body: p.body, ...(options ? { options } : {}) });
  }

  patchClusterCustomObjectStatus(p: ClusterObject & { name: string; body: object }, options?: CallOptions): Promise<object> {
    return call(this.kc, 'PATCH', `${this.path(p, p.name)}/status`, { body: p.body, ...(options ? { options } : {}) });
  }

  /** `body`: DeleteOptions (preconditions, propagationPolicy, ...). */
  deleteClusterCustomObject(p: ClusterObject & { name: string; body?: object }, options?: CallOptions): Promise<object> {
    return call(this.kc, 'DELETE', this.path(p, p.name), {
      ...(p.body === undefined ? {} : { body: p.body }),
      ...(options ? { options } : {}),
    });
  }
}

/** Leases (coordination.k8s.io/v1), for leader election. */
export class CoordinationV1Api extends Api {
  private path(namespace: string, name?: string): string {
    return `/apis/coordination.k8s.io/v1/namespaces/${enc(namespace)}/leases${name === undefined ? '' : `/${enc(name)}`}`;
  }

  readNamespacedLease(p: { name: string; namespace: string }, options?: CallOptions): Promise<V1Lease> {
    return call(this.kc, 'GET', this.path(p.namespace, p.name), options ? { options } : {});
  }

  createNamespacedLease(p: { namespace: string; body: V1Lease }, options?: CallOptions): Promise<V1Lease> {
    return call(this.kc, 'POST', this.path(p.namespace), { body: p.body, ...(options ? { options } : {}) });
  }

  replaceNamespacedLease(p: { name: string; namespace: string; body: V1Lease }, options?: CallOptions): Promise<V1Lease> {
    return call(this.kc, 'PUT', this.path(p.namespace, p.name), { body: p.body, ...(options ? { options } : {}) });
  }
}
