import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { LabelSelector } from '../lib/types.js';
import type { CachedPolicy } from './cache.js';
import { SecretSelectors, selectorKey } from './selectors.js';

function policy(
  name: string,
  secret: string | undefined,
  selector?: LabelSelector,
  deleting = false,
  mode = 'Static',
): CachedPolicy {
  return {
    metadata: { name, ...(deleting ? { deletionTimestamp: '2026-12-04T00:00:00Z' } : {}) },
    spec: {
      ...(selector ? { nodeSelector: selector } : {}),
      token: { mode, ...(secret ? { secretRef: { name: secret } } : {}) },
    },
  };
}

/** What SecretSelectors must answer: computed from scratch over every policy. */
function fromScratch(all: Map<string, CachedPolicy>, secret: string): { selectors: string[]; modes: string[]; policies: number } {
  const users = [...all.values()].filter((p) => !p.metadata.deletionTimestamp && p.spec?.token?.secretRef?.name === secret);
  return {
    selectors: [...new Set(users.map((p) => selectorKey(p.spec?.nodeSelector ?? {})))].sort(),
    modes: [...new Set(users.map((p) => p.spec?.token?.mode ?? 'Static'))].sort(),
    policies: users.length,
  };
}

function view(s: SecretSelectors, secret: string): { selectors: string[]; modes: string[]; policies: number } {
  const r = s.of(secret);
  return { selectors: r.selectors.map(selectorKey).sort(), modes: s.modes(secret).sort(), policies: r.policies };
}

test('SecretSelectors: the selectors and count of the policies naming a Secret, through adds, edits, deletion and removal', () => {
  const s = new SecretSelectors();
  const edge = { matchLabels: { role: 'edge' } };
  s.track('a', policy('a', 'k1', edge));
  s.track('b', policy('b', 'k1', { matchLabels: { role: 'edge' } })); // an equal selector, another object
  s.track('c', policy('c', 'k1'));
  s.track('d', policy('d', 'k2', edge));
  assert.deepEqual(view(s, 'k1'), {
    selectors: ['{"matchLabels":{"role":"edge"}}', '{}'].sort(),
    modes: ['Static'],
    policies: 3,
  });
  assert.deepEqual(view(s, 'k2'), { selectors: ['{"matchLabels":{"role":"edge"}}'], modes: ['Static'], policies: 1 });

  assert.deepEqual(s.track('a', policy('a', 'k1', edge)), [], 'an update that changes neither: no double count');
  assert.equal(s.of('k1').policies, 3);
  assert.deepEqual(s.track('e', policy('e', 'k1', edge)), [], 'a policy like others of k1 changes nothing they read');
  assert.deepEqual(s.track('f', policy('f', 'k1', edge, false, 'Keyed')), ['k1'], 'a new mode for k1');
  assert.deepEqual(view(s, 'k1').modes, ['Keyed', 'Static']);
  assert.deepEqual(s.track('f', undefined), ['k1'], 'gone: its Secret, whatever it was');
  assert.deepEqual(s.track('e', undefined), ['k1']);
  assert.deepEqual(s.track('c', policy('c', 'k2')), ['k1', 'k2'], 'moved to another Secret, with a selector new there');
  assert.deepEqual(view(s, 'k1'), { selectors: ['{"matchLabels":{"role":"edge"}}'], modes: ['Static'], policies: 2 });
  assert.deepEqual(view(s, 'k2').policies, 2);
  s.track('a', policy('a', 'k1', edge, true)); // being deleted: no longer a user
  s.track('b', undefined); // gone
  assert.deepEqual(view(s, 'k1'), { selectors: [], modes: [], policies: 0 });
  s.track('d', policy('d', undefined)); // names no Secret any more
  assert.deepEqual(view(s, 'k2'), { selectors: ['{}'], modes: ['Static'], policies: 1 });
  assert.deepEqual(view(s, 'nope'), { selectors: [], modes: [], policies: 0 });
});

test('SecretSelectors: random changes match a computation from scratch, and every Secret whose view changed is named', () => {
  let seed = 7;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const selectors: (LabelSelector | undefined)[] = [
    undefined,
    { matchLabels: { role: 'edge' } },
    { matchLabels: { role: 'db' } },
    { matchExpressions: [{ key: 'zone', operator: 'In', values: ['a'] }] },
  ];
  const s = new SecretSelectors();
  const all = new Map<string, CachedPolicy>();
  for (let i = 0; i < 5000; i++) {
    const name = `p${rnd(40)}`;
    const before = new Map(['k0', 'k1', 'k2'].map((k) => [k, fromScratch(all, k)]));
    let named: string[];
    if (rnd(8) === 0) {
      all.delete(name);
      named = s.track(name, undefined);
    } else {
      const p = policy(
        name,
        rnd(6) === 0 ? undefined : `k${rnd(3)}`,
        selectors[rnd(selectors.length)],
        rnd(10) === 0,
        rnd(5) === 0 ? 'Keyed' : 'Static',
      );
      all.set(name, p);
      named = s.track(name, p);
    }
    for (const k of ['k0', 'k1', 'k2']) {
      const now = fromScratch(all, k);
      assert.deepEqual(view(s, k), now, `after change ${i}, Secret ${k}`);
      const was = before.get(k);
      if (was?.selectors.join() !== now.selectors.join() || was?.modes.join() !== now.modes.join())
        assert.ok(named.includes(k), `change ${i} changed what the policies of ${k} read, and named ${named.join()}`);
    }
  }
});
