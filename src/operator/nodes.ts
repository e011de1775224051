/**
 * TokenNodeStates of Nodes that are gone. Each one has an owner reference to its Node, so the
 * garbage collector removes it in a full cluster; the operator does the same itself so that a
 * cluster without it (or one where the reference was never set) does not keep reports of
 * nodes that no longer exist, and so that a deleted policy is not held for them.
 */
import { ApiException, type CallOptions, type CoreV1Api, type CustomObjectsApi } from '../lib/kube-client.js';
import { API_GROUP, API_VERSION } from '../lib/types.js';

/** Names of the TokenNodeStates whose Node is not in `nodeNames`. */
export function orphanedNodeStates(
  nodeStates: Iterable<{ metadata?: { name?: string } }>,
  nodeNames: { has(name: string): boolean },
): string[] {
  const out: string[] = [];
  for (const s of nodeStates) {
    const name = s.metadata?.name;
    if (name && !nodeNames.has(name)) out.push(name);
  }
  return out.sort();
}

export type CollectResult = 'deleted' | 'node-exists' | 'already-gone';

/**
 * Deletes TokenNodeState `name` (with uid `uid`) if its Node really is gone. The Node is
 * read from the API server first: a cache can lag behind a node that just joined. `deleteOptions`
 * go with the delete (the write fence's abort signal).
 */
export async function collectNodeState(
  core: CoreV1Api,
  custom: CustomObjectsApi,
  name: string,
  uid: string | undefined,
  deleteOptions?: CallOptions,
): Promise<CollectResult> {
  try {
    await core.readNode({ name });
    return 'node-exists';
  } catch (err) {
    if (!(err instanceof ApiException && err.code === 404)) throw err;
  }
  try {
    await custom.deleteClusterCustomObject(
      {
        group: API_GROUP,
        version: API_VERSION,
        plural: 'tokennodestates',
        name,
        // Only the object we judged: a TokenNodeState re-created meanwhile has another uid.
        body: uid ? { preconditions: { uid } } : {},
      },
      deleteOptions,
    );
    return 'deleted';
  } catch (err) {
    if (err instanceof ApiException && (err.code === 404 || err.code === 409)) return 'already-gone';
    throw err;
  }
}
