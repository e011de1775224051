/**
 * Node selectors of cached TokenPolicies, by the Secret they name: what the operator looks up on
 * every reconcile of a policy whose Secret a thousand others share.
 */
import type { LabelSelector } from '../lib/types.js';
import type { CachedPolicy } from './cache.js';
import { stableJson } from './status.js';

/** The Secret a cached policy names (spec.token.secretRef.name), if any. */
export function secretNameOf(p: CachedPolicy | undefined): string | undefined {
  return p?.spec?.token?.secretRef?.name;
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

/** The token mode of a cached policy (Static where it names none). */
export function modeOf(p: CachedPolicy): string {
  return p.spec?.token?.mode ?? 'Static';
}

interface SecretUsers {
  selectors: Map<string, { selector: LabelSelector; policies: number }>;
  modes: Map<string, number>;
  policies: number;
}

/**
 * Per Secret, the node selectors and token modes of the policies naming it (those not being
 * deleted), kept up to date from the policy cache's events. What one policy's reconcile reads of
 * the others that share its Secret is exactly this: the selectors (whose nodes take part in the
 * key rotation) and the modes (a Secret holds keys of one length). So the operator asks which
 * nodes hold a Secret's keys without a look at every policy naming it, and learns from track()
 * whether a change of one policy concerns the others at all.
 */
export class SecretSelectors {
  private readonly bySecret = new Map<string, SecretUsers>();
  /** what each policy adds, to take back exactly that when it changes or goes */
  private readonly ofPolicy = new Map<string, { secret: string; key: string; mode: string }>();

  /**
   * The policy `name` is now `p` (undefined: gone). Returns the Secrets whose other policies
   * see a change: one the policy stopped counting for (conservatively, whatever it was), and
   * one it now counts for with a selector or mode no other policy naming it has.
   */
  track(name: string, p: CachedPolicy | undefined): string[] {
    const was = this.ofPolicy.get(name);
    const secret = p && !p.metadata.deletionTimestamp ? secretNameOf(p) : undefined;
    const selector = p?.spec?.nodeSelector ?? EVERY_NODE;
    const key = secret === undefined ? '' : selectorKey(selector);
    const mode = p ? modeOf(p) : '';
    if (was && was.secret === secret && was.key === key && was.mode === mode) return [];
    const affected: string[] = [];
    if (was) {
      affected.push(was.secret);
      this.ofPolicy.delete(name);
      const u = this.bySecret.get(was.secret);
      if (u) {
        const e = u.selectors.get(was.key);
        if (e && --e.policies === 0) u.selectors.delete(was.key);
        const m = (u.modes.get(was.mode) ?? 1) - 1;
        if (m === 0) u.modes.delete(was.mode);
        else u.modes.set(was.mode, m);
        if (--u.policies === 0) this.bySecret.delete(was.secret);
      }
    }
    if (secret === undefined) return affected;
    this.ofPolicy.set(name, { secret, key, mode });
    let u = this.bySecret.get(secret);
    if (!u) this.bySecret.set(secret, (u = { selectors: new Map(), modes: new Map(), policies: 0 }));
    u.policies++;
    const e = u.selectors.get(key);
    if (e) e.policies++;
    else u.selectors.set(key, { selector, policies: 1 });
    const m = (u.modes.get(mode) ?? 0) + 1;
    u.modes.set(mode, m);
    if ((!e || m === 1) && !affected.includes(secret)) affected.push(secret);
    return affected;
  }

  /** The distinct selectors of the policies naming `secret`, and how many policies those are. */
  of(secret: string): { selectors: LabelSelector[]; policies: number } {
    const u = this.bySecret.get(secret);
    return { selectors: [...(u?.selectors.values() ?? [])].map((e) => e.selector), policies: u?.policies ?? 0 };
  }

  /** The token modes of the policies naming `secret`. */
  modes(secret: string): string[] {
    return [...(this.bySecret.get(secret)?.modes.keys() ?? [])];
  }
}
