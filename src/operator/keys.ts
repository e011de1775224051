/**
 * What the operator reconciles, as typed work-queue keys: a TokenPolicy, or the
 * TokenNodeState of a node that may be gone. The queue tells keys apart by keyId.
 */

export type ReconcileKey = { kind: 'policy'; name: string } | { kind: 'nodestate'; name: string };

export type ReconcileKind = ReconcileKey['kind'];

export function policyKey(name: string): ReconcileKey {
  return { kind: 'policy', name };
}

export function nodeStateKey(name: string): ReconcileKey {
  return { kind: 'nodestate', name };
}

/** "policy/<name>" or "nodestate/<name>": a key's identity in the queue and in logs. */
export function keyId(k: ReconcileKey): string {
  return `${k.kind}/${k.name}`;
}
