import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { LabelSelector } from '../lib/types.js';
import type { CachedPolicy } from './cache.js';
import { SecretSelectors, selectorKey } from './selectors.js';

function policy(name: string, secret: string | undefined, selector?: LabelSelector, deleting = false): CachedPolicy {
  return {
    metadata: { name, ...(deleting ? { deletionTimestamp: '2026-12-04T00:00:00Z' } : {}) },
    spec: {
      ...(selector ? { nodeSelector: selector } : {}),
      token: { mode: 'Static', ...(secret ? { secretRef: { name: secret } } : {}) },
    },
  };
}

/** What SecretSelectors must answer: computed from scratch over every policy. */
function fromScratch(all: Map<string, CachedPolicy>, secret: string): { selectors: string[]; policies: number } {
  const users = [...all.values()].filter((p) => !p.metadata.deletionTimestamp && p.spec?.token?.secretRef?.name === secret);
  return {
    selectors: [...new Set(users.map((p) => selectorKey(p.spec?.nodeSelector ?? {})))].sort(),
    policies: users.length,
  };
}

function view(s: SecretSelectors, secret: string): { selectors: string[]; policies: number } {
  const r = s.of(secret);
  return { selectors: r.selectors.map(selectorKey).sort(), policies: r.policies };
}

test('SecretSelectors: the selectors and count of the policies naming a Secret, through adds, edits, deletion and removal', () => {
  const s = new SecretSelectors();
  const edge = { matchLabels: { role: 'edge' } };
  s.track('a', policy('a', 'k1', edge));
  s.track('b', policy('b', 'k1', { matchLabels: { role: 'edge' } })); // an equal selector, another object
  s.track('c', policy('c', 'k1'));
  s.track('d', policy('d', 'k2', edge));
  assert.deepEqual(view(s, 'k1'), { selectors: ['{"matchLabels":{"role":"edge"}}', '{}'].sort(), policies: 3 });
  assert.deepEqual(view(s, 'k2'), { selectors: ['{"matchLabels":{"role":"edge"}}'], policies: 1 });

  s.track('a', policy('a', 'k1', edge)); // an update that changes neither: no double count
  assert.equal(s.of('k1').policies, 3);
  s.track('c', policy('c', 'k2')); // moved to another Secret
  assert.deepEqual(view(s, 'k1'), { selectors: ['{"matchLabels":{"role":"edge"}}'], policies: 2 });
  assert.deepEqual(view(s, 'k2').policies, 2);
  s.track('a', policy('a', 'k1', edge, true)); // being deleted: no longer a user
  s.track('b', undefined); // gone
  assert.deepEqual(view(s, 'k1'), { selectors: [], policies: 0 });
  s.track('d', policy('d', undefined)); // names no Secret any more
  assert.deepEqual(view(s, 'k2'), { selectors: ['{}'], policies: 1 });
  assert.deepEqual(view(s, 'nope'), { selectors: [], policies: 0 });
});

test('SecretSelectors: random changes always match a computation from scratch', () => {
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
    if (rnd(8) === 0) {
      all.delete(name);
      s.track(name, undefined);
    } else {
      const p = policy(name, rnd(6) === 0 ? undefined : `k${rnd(3)}`, selectors[rnd(selectors.length)], rnd(10) === 0);
      all.set(name, p);
      s.track(name, p);
    }
    for (const k of ['k0', 'k1', 'k2']) assert.deepEqual(view(s, k), fromScratch(all, k), `after change ${i}, Secret ${k}`);
  }
});
