/**
 * What a cache keeps of an object, for the kinds both the agent and the operator watch: the
 * metadata fields they read (times as strings, whether the object came from a list, where
 * client-node makes them Dates, or from a watch), a Node's name, uid, labels and creation time
 * (its status, with images and conditions, is most of its size, and a heartbeat changes
 * nothing here), and a Secret's key fields (any other data in the namespace's Secrets, such as
 * a Helm release, is dropped).
 */
import type { KubernetesObject } from '../lib/kube-client.js';
import type { Cacheable } from './informer.js';
import { isoSeconds } from './time.js';

export interface CachedMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  finalizers?: string[];
}

/** A Node as cached: name, labels and when it joined. */
export interface NodeInfo extends Cacheable {
  metadata: CachedMeta;
}

/** A key Secret as cached: its metadata, type and the key fields of its data (other data is dropped). */
export interface CachedSecret extends Cacheable {
  metadata: CachedMeta;
  type?: string;
  data?: Record<string, string>;
}

/** Data fields of a key Secret; anything else in a Secret of the namespace is not kept. */
export const KEY_FIELDS: readonly string[] = ['current', 'previous', 'next'];

function time(v: unknown): string | undefined {
  if (v instanceof Date) return isoSeconds(v);
  return typeof v === 'string' ? v : undefined;
}

export function toMs(v: unknown): number {
  const t = v instanceof Date ? v.getTime() : typeof v === 'string' ? Date.parse(v) : NaN;
  return Number.isFinite(t) ? t : 0;
}

/** The metadata fields the operator reads (list results carry Dates where watch events carry strings). */
export function cachedMeta(m: KubernetesObject['metadata']): CachedMeta {
  const out: CachedMeta = { name: m?.name ?? '' };
  if (m?.namespace) out.namespace = m.namespace;
  if (m?.uid) out.uid = m.uid;
  if (m?.resourceVersion) out.resourceVersion = m.resourceVersion;
  if (m?.generation !== undefined) out.generation = m.generation;
  if (m?.labels) out.labels = m.labels;
  if (m?.annotations) out.annotations = m.annotations;
  const created = time(m?.creationTimestamp);
  if (created) out.creationTimestamp = created;
  const deleted = time(m?.deletionTimestamp);
  if (deleted) out.deletionTimestamp = deleted;
  if (m?.finalizers) out.finalizers = m.finalizers;
  return out;
}

export function cacheNode(o: KubernetesObject): NodeInfo {
  const m = o.metadata;
  const meta: CachedMeta = { name: m?.name ?? '' };
  if (m?.uid) meta.uid = m.uid;
  if (m?.resourceVersion) meta.resourceVersion = m.resourceVersion;
  if (m?.labels) meta.labels = m.labels;
  const created = time(m?.creationTimestamp);
  if (created) meta.creationTimestamp = created;
  return { metadata: meta };
}

export function cacheSecret(o: KubernetesObject & { type?: string; data?: Record<string, string> }): CachedSecret {
  const out: CachedSecret = { metadata: cachedMeta(o.metadata) };
  if (o.type) out.type = o.type;
  if (o.data) {
    const data: Record<string, string> = {};
    for (const k of KEY_FIELDS) if (typeof o.data[k] === 'string') data[k] = o.data[k];
    out.data = data;
  }
  return out;
}
