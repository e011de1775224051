/**
 * Which reconcile keys a change of a watched object affects, one small pure function per
 * watched kind (the way cert-manager maps its watches): the operator hands each cache event
 * to the function for its kind and enqueues what comes back. Each takes the object before and
 * after the change (undefined when it was added or deleted) and what it must look up in the
 * caches, so each can be tested alone.
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import { type ReconcileKey, nodeStateKey, policyKey } from './keys.js';
import type { NodeStateLike } from './status.js';

/** What the mapping needs to know about the TokenPolicies in the cache. */
export interface PolicyLookup {
  /** names of the policies whose spec.token.secretRef names this Secret */
  policiesUsingSecret(secret: string): string[];
  /** names of every policy */
  allPolicies(): string[];
}

export interface PolicyRef extends KubernetesObject {
  spec?: { token?: { secretRef?: { name?: string } } };
}

function nameOf(o: KubernetesObject | undefined): string {
  return o?.metadata?.name ?? '';
}

function secretOf(p: PolicyRef | undefined): string | undefined {
  return p?.spec?.token?.secretRef?.name;
}

function changed(old: KubernetesObject | undefined, cur: KubernetesObject | undefined): boolean {
  return !old || !cur || old.metadata?.resourceVersion !== cur.metadata?.resourceVersion;
}

function unique(keys: ReconcileKey[]): ReconcileKey[] {
  const seen = new Set<string>();
  return keys.filter((k) => {
    const id = `${k.kind}/${k.name}`;
    if (seen.has(id)) return false;
    seen.add(id);
    return true;
  });
}

/**
 * A TokenPolicy changed: the policy itself, and every policy that names its Secret (before or
 * after the change), since policies sharing a Secret check each other for a token-mode conflict.
 */
export function policiesForPolicy(old: PolicyRef | undefined, cur: PolicyRef | undefined, lookup: PolicyLookup): ReconcileKey[] {
  if (!changed(old, cur)) return [];
  const name = nameOf(cur ?? old);
  const keys: ReconcileKey[] = cur ? [policyKey(name)] : [];
  const secrets = new Set([secretOf(old), secretOf(cur)].filter((s): s is string => s !== undefined));
  for (const s of secrets) for (const p of lookup.policiesUsingSecret(s)) keys.push(policyKey(p));
  return unique(keys);
}

/** A key Secret was made, changed or deleted: the policies that name it. */
export function policiesForSecret(old: KubernetesObject | undefined, cur: KubernetesObject | undefined, lookup: PolicyLookup): ReconcileKey[] {
  if (!changed(old, cur)) return [];
  return lookup.policiesUsingSecret(nameOf(cur ?? old)).map(policyKey);
}

function labelsEqual(a: Record<string, string> | undefined, b: Record<string, string> | undefined): boolean {
  const ka = Object.keys(a ?? {});
  if (ka.length !== Object.keys(b ?? {}).length) return false;
  return ka.every((k) => b?.[k] === a?.[k]);
}

/**
 * A Node joined, left or changed its labels: every policy, since node labels decide which
 * policies select it. A Node that only changed elsewhere (a heartbeat, a condition) affects none.
 */
export function policiesForNode(old: KubernetesObject | undefined, cur: KubernetesObject | undefined, lookup: PolicyLookup): ReconcileKey[] {
  if (old && cur && labelsEqual(old.metadata?.labels, cur.metadata?.labels)) return [];
  return lookup.allPolicies().map(policyKey);
}

/** A Node left: its TokenNodeState, which is removed with it. */
export function nodeStatesForNode(old: KubernetesObject | undefined, cur: KubernetesObject | undefined): ReconcileKey[] {
  return old && !cur ? [nodeStateKey(nameOf(old))] : [];
}

function listed(s: NodeStateLike | undefined): string[] {
  return (s?.status?.policies ?? []).map((p) => p.name);
}

/** A node's report changed: every policy it lists now or listed before. */
export function policiesForNodeState(old: NodeStateLike | undefined, cur: NodeStateLike | undefined): ReconcileKey[] {
  if (!changed(old as KubernetesObject | undefined, cur as KubernetesObject | undefined)) return [];
  return unique([...listed(cur), ...listed(old)].map(policyKey));
}

/** A node's report was written while its Node does not exist: the report itself, to be removed. */
export function nodeStatesForNodeState(cur: NodeStateLike | undefined, nodeExists: (name: string) => boolean): ReconcileKey[] {
  const name = cur?.metadata?.name;
  return name && !nodeExists(name) ? [nodeStateKey(name)] : [];
}
