/**
 * Node selectors of cached TokenPolicies, by the Secret they name: what the operator looks up on
 * every reconcile of a policy whose Secret a thousand others share.
 */
import type { LabelSelector } from '../lib/types.js';
import type { CachedPolicy } from './cache.js';
import { stableJson } from './status.js';

/** The Secret a cached policy names (spec.token.secretRef.name), if any. */
export function secretNameOf(p: CachedPolicy): string | undefined {
  return p.spec?.token?.secretRef?.name;
}

/** The selector of a policy that sets none: every node. */
export const EVERY_NODE: LabelSelector = {};
const selectorKeys = new WeakMap<LabelSelector, string>();

/**
 * A node selector as a key. The selectors of cached policies are never changed (an update
 * replaces the cached object), so each is turned into its key once, not on every reconcile of
 * every policy that shares its Secret.
 */
export function selectorKey(selector: LabelSelector): string {
  let key = selectorKeys.get(selector);
  if (key === undefined) {
    key = stableJson(selector);
    selectorKeys.set(selector, key);
  }
  return key;
}

/**
 * Per Secret, the node selectors of the policies naming it (those not being deleted), kept up
 * to date from the policy cache's events: the reconcile of a policy asks which nodes hold its
 * Secret's keys without a look at every other policy that shares the Secret.
 */
export class SecretSelectors {
  private readonly bySecret = new Map<string, Map<string, { selector: LabelSelector; policies: number }>>();
  /** what each policy adds, to take back exactly that when it changes or goes */
  private readonly ofPolicy = new Map<string, { secret: string; key: string }>();

  /** The policy `name` is now `p` (undefined: gone). */
  track(name: string, p: CachedPolicy | undefined): void {
    const was = this.ofPolicy.get(name);
    const secret = p && !p.metadata.deletionTimestamp ? secretNameOf(p) : undefined;
    const selector = p?.spec?.nodeSelector ?? EVERY_NODE;
    const key = secret === undefined ? '' : selectorKey(selector);
    if (was && was.secret === secret && was.key === key) return;
    if (was) {
      this.ofPolicy.delete(name);
      const m = this.bySecret.get(was.secret);
      const e = m?.get(was.key);
      if (m && e && --e.policies === 0) {
        m.delete(was.key);
        if (m.size === 0) this.bySecret.delete(was.secret);
      }
    }
    if (secret === undefined) return;
    this.ofPolicy.set(name, { secret, key });
    let m = this.bySecret.get(secret);
    if (!m) this.bySecret.set(secret, (m = new Map()));
    const e = m.get(key);
    if (e) e.policies++;
    else m.set(key, { selector, policies: 1 });
  }

  /** The distinct selectors of the policies naming `secret`, and how many policies those are. */
  of(secret: string): { selectors: LabelSelector[]; policies: number } {
    const m = this.bySecret.get(secret);
    let policies = 0;
    const selectors: LabelSelector[] = [];
    for (const e of m?.values() ?? []) {
      selectors.push(e.selector);
      policies += e.policies;
    }
    return { selectors, policies };
  }
}
