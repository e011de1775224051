/**
 * Which reconcile keys a change of a watched object affects, one small pure function per
 * watched kind (the way cert-manager maps its watches): the operator hands each cache event
 * to the function for its kind and enqueues what comes back. Each takes the object before and
 * after the change (undefined when it was added or deleted) and what it must look up in the
 * caches, so each can be tested alone.
 *
 * Each also filters out changes that cannot matter, like controller-runtime's predicates: a
 * policy's own status write, a Node heartbeat, a Secret rewritten with the same keys, a node
 * report whose counters moved. A quiet cluster therefore reconciles nothing.
 */
import type { Cacheable } from '../lib/informer.js';
import type { CachedSecret, NodeInfo } from '../lib/cached.js';
import { type CachedPolicy, type NodeReport, changedEntries } from './cache.js';
import { FINALIZER, hasFinalizer } from './finalizer.js';
import { type ReconcileKey, nodeStateKey, policyKey } from './keys.js';
import { REVOKE_ANNOTATION, ROTATE_ANNOTATION } from './rotation.js';
import { secretNameOf } from './selectors.js';
import { stableJson } from './status.js';

/** What the mapping needs to look up in the caches. */
export interface PolicyLookup {
  /** names of the policies whose spec.token.secretRef names this Secret */
  policiesUsingSecret(secret: string): string[];
  /** names of the policies whose spec.nodeSelector matches a node with these labels */
  policiesSelecting(labels: Readonly<Record<string, string>>): string[];
  /** the labels of a Node, when it exists */
  nodeLabels(node: string): Readonly<Record<string, string>> | undefined;
  /** the policy is being deleted (its finalizer waits for nodes) */
  isTerminating(policy: string): boolean;
  /** the Secret a policy names, when it is in the cache */
  secretOf(policy: string): string | undefined;
}

function nameOf(o: Cacheable | undefined): string {
  return o?.metadata?.name ?? '';
}

function changed(old: Cacheable | undefined, cur: Cacheable | undefined): boolean {
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
 * What of a policy its reconcile acts on: the spec (generation), its life cycle, its Secret, and
 * a rotation or revocation asked for. The operator's own finalizer is not in it: see
 * policiesForPolicy().
 */
function policyShape(p: CachedPolicy): string {
  const m = p.metadata;
  const asks = [m.annotations?.[ROTATE_ANNOTATION] ?? null, m.annotations?.[REVOKE_ANNOTATION] ?? null];
  return stableJson([
    m.uid,
    m.generation,
    m.deletionTimestamp ?? null,
    (m.finalizers ?? []).filter((f) => f !== FINALIZER),
    secretNameOf(p) ?? null,
    p.spec?.token?.mode ?? null,
    asks,
  ]);
}

/**
 * A TokenPolicy changed: the policy itself, and every policy that names its Secret (before or
 * after the change), since policies sharing a Secret check each other for a token-mode conflict
 * and take part in one key rotation. `sharing`, when given, narrows the Secrets to those whose
 * other policies see a change (SecretSelectors.track: a new selector or mode, or one gone). A
 * change of status, labels or other annotations only (the operator's own status write among
 * them) affects nothing, and neither does the operator's finalizer being added; netoken.io/rotate
 * and netoken.io/revoke do.
 */
export function policiesForPolicy(
  old: CachedPolicy | undefined,
  cur: CachedPolicy | undefined,
  lookup: PolicyLookup,
  sharing?: readonly string[],
): ReconcileKey[] {
  if (!changed(old, cur)) return [];
  // The operator's finalizer appearing is its own patch landing, which needs no reconcile; its
  // disappearing from a policy that is not being deleted needs one, to put it back.
  const finalizerLost = hasFinalizer(old?.metadata) && !hasFinalizer(cur?.metadata);
  if (old && cur && !finalizerLost && policyShape(old) === policyShape(cur)) return [];
  const name = nameOf(cur ?? old);
  const keys: ReconcileKey[] = cur ? [policyKey(name)] : [];
  const secrets = new Set(sharing ?? [secretNameOf(old), secretNameOf(cur)].filter((s): s is string => s !== undefined));
  for (const s of secrets) for (const p of lookup.policiesUsingSecret(s)) keys.push(policyKey(p));
  return unique(keys);
}

function secretShape(s: CachedSecret): string {
  return stableJson([s.type ?? null, s.data ?? {}, s.metadata.labels ?? {}, s.metadata.annotations ?? {}]);
}

/** A key Secret was made, deleted, or changed in its keys, type, labels or annotations: the policies that name it. */
export function policiesForSecret(
  old: CachedSecret | undefined,
  cur: CachedSecret | undefined,
  lookup: PolicyLookup,
): ReconcileKey[] {
  if (!changed(old, cur)) return [];
  if (old && cur && secretShape(old) === secretShape(cur)) return [];
  return lookup.policiesUsingSecret(nameOf(cur ?? old)).map(policyKey);
}

function labelsEqual(a: Readonly<Record<string, string>> | undefined, b: Readonly<Record<string, string>> | undefined): boolean {
  const ka = Object.keys(a ?? {});
  if (ka.length !== Object.keys(b ?? {}).length) return false;
  return ka.every((k) => b?.[k] === a?.[k]);
}

/**
 * A Node joined, left or changed its labels: the policies whose selection of it changes. A
 * change of its operating-system label also touches the policies that keep selecting it (it
 * names why no agent runs there). A Node that changed elsewhere (a heartbeat) affects none.
 */
export function policiesForNode(old: NodeInfo | undefined, cur: NodeInfo | undefined, lookup: PolicyLookup): ReconcileKey[] {
  if (!changed(old, cur)) return [];
  if (!old || !cur) return lookup.policiesSelecting((cur ?? old)?.metadata.labels ?? {}).map(policyKey);
  const before = old.metadata.labels ?? {};
  const after = cur.metadata.labels ?? {};
  if (labelsEqual(before, after)) return [];
  const a = new Set(lookup.policiesSelecting(before));
  const b = new Set(lookup.policiesSelecting(after));
  const osChanged = before['kubernetes.io/os'] !== after['kubernetes.io/os'];
  const out: string[] = [];
  for (const p of a) if (!b.has(p) || osChanged) out.push(p);
  for (const p of b) if (!a.has(p)) out.push(p);
  return out.map(policyKey);
}

/** A Node left: its TokenNodeState, which is removed with it. */
export function nodeStatesForNode(old: NodeInfo | undefined, cur: NodeInfo | undefined): ReconcileKey[] {
  return old && !cur ? [nodeStateKey(nameOf(old))] : [];
}

/**
 * A node's report changed: the policies whose entry in it changed (listed or not, the
 * generation applied, a failure); where the key generations it reports changed, every policy
 * sharing those keys' Secret (one rotation waits for all their nodes); every policy selecting
 * the node when its agent appeared or went (the node starts or stops counting) or its
 * over-limit count moved; and, when it was written at all, the policies it lists that are being
 * deleted (their finalizer waits for it). Counters moving affect nothing else.
 */
export function policiesForNodeState(
  old: NodeReport | undefined,
  cur: NodeReport | undefined,
  lookup: PolicyLookup,
): ReconcileKey[] {
  if (!changed(old, cur)) return [];
  const diff = changedEntries(old, cur);
  const names = new Set(diff.entries);
  const secrets = new Set<string>();
  for (const p of diff.keys) {
    const s = lookup.secretOf(p);
    if (s === undefined) names.add(p);
    else secrets.add(s);
  }
  for (const s of secrets) for (const p of lookup.policiesUsingSecret(s)) names.add(p);
  const node = nameOf(cur ?? old);
  if (old?.agent !== cur?.agent || (old?.overLimit ?? 0) !== (cur?.overLimit ?? 0)) {
    const labels = lookup.nodeLabels(node);
    if (labels) for (const p of lookup.policiesSelecting(labels)) names.add(p);
  }
  if (old && cur && old.lastWrittenMs !== cur.lastWrittenMs) {
    for (const p of cur.applied.keys()) if (lookup.isTerminating(p)) names.add(p);
  }
  return [...names].map(policyKey);
}

/** A node's report was written while its Node does not exist: the report itself, to be removed. */
export function nodeStatesForNodeState(cur: NodeReport | undefined, nodeExists: (name: string) => boolean): ReconcileKey[] {
  const name = cur?.metadata.name;
  return name && !nodeExists(name) ? [nodeStateKey(name)] : [];
}
