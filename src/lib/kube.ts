/**
 * Kubernetes plumbing shared by the agent (cluster mode) and the operator: client
 * configuration, request options, and error descriptions that never carry a response body.
 * The list+watch caches are informer.ts.
 */
import { ApiException, type CallOptions, KubeConfig, PatchStrategy, identify } from './kube-client.js';
import { VERSION } from './package.js';

/**
 * Options for one API call: the request's Content-Type (a PATCH is a JSON patch unless told
 * otherwise; custom resources take no strategic merge patch) and a signal that aborts it
 * while it is in flight.
 */
export function requestOptions(o: { contentType?: string; signal?: AbortSignal }): CallOptions {
  return { ...(o.contentType ? { contentType: o.contentType } : {}), ...(o.signal ? { signal: o.signal } : {}) };
}

/** Request options for a JSON merge patch. */
export const mergePatch = requestOptions({ contentType: PatchStrategy.MergePatch });

/** Is this the API server saying the object changed since it was read (HTTP 409 Conflict)? */
export function isConflict(err: unknown): boolean {
  return err instanceof ApiException && err.code === 409;
}

/**
 * The kubeconfig of a netoken component: the file given, else the pod's service account, else
 * the user's default. Its calls name `component` (netoken-agent, netoken-operator, ...) as their
 * User-Agent, and so as the field manager of what they write.
 */
export function loadKubeConfig(kubeconfig: string | undefined, component: string): KubeConfig {
  const kc = new KubeConfig();
  if (kubeconfig) kc.loadFromFile(kubeconfig);
  else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else kc.loadFromDefault();
  identify(kc, `${component}/${VERSION} (${process.platform}/${process.arch})`);
  return kc;
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
