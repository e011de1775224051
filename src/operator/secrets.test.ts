import { test } from 'node:test';
import assert from 'node:assert/strict';
import { validatePolicy } from '../lib/policy.js';
import { KEY_GENERATION_ANNOTATION, type TokenPolicy } from '../lib/types.js';
import {
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  ROTATED_AT_ANNOTATION,
  type SecretLike,
  planSecret,
  rotationDueAt,
} from './secrets.js';

function policy(token: Record<string, unknown>): TokenPolicy {
  return validatePolicy({
    apiVersion: 'netoken.io/v1alpha1',
    kind: 'TokenPolicy',
    metadata: { name: 'p' },
    spec: { token: { secretRef: { name: 'k' }, ...token }, egress: {} },
  });
}

const now = Date.parse('2026-03-01T12:00:00Z');
const fixed = (n: number): Buffer => Buffer.alloc(n, 0xab);
const b64 = (n: number, fill: number): string => Buffer.alloc(n, fill).toString('base64');

function secret(
  data: Record<string, string>,
  extra: { managed?: boolean; rotatedAt?: string; created?: string; generation?: string } = {},
): SecretLike {
  return {
    metadata: {
      name: 'k',
      resourceVersion: '42',
      labels: extra.managed ? { [MANAGED_BY_LABEL]: MANAGED_BY_VALUE } : {},
      annotations: {
        ...(extra.rotatedAt ? { [ROTATED_AT_ANNOTATION]: extra.rotatedAt } : {}),
        ...(extra.generation ? { [KEY_GENERATION_ANNOTATION]: extra.generation } : {}),
      },
      creationTimestamp: extra.created ?? '2026-03-01T00:00:00Z',
    },
    type: 'Opaque',
    data,
  };
}

test('a missing Secret is generated: 8 random bytes for Static, 16 for Keyed, labelled and stamped', () => {
  for (const [mode, len] of [
    ['Static', 8],
    ['Keyed', 16],
  ] as const) {
    const p = policy(mode === 'Keyed' ? { mode, epochSeconds: 60 } : { mode });
    const plan = planSecret({ policy: p, namespace: 'ns', secret: undefined, now });
    assert.equal(plan.action, 'create');
    if (plan.action !== 'create') return;
    assert.equal(Buffer.from(plan.secret.data.current, 'base64').length, len, `${mode} key length`);
    assert.equal(plan.secret.type, 'Opaque');
    assert.equal(plan.secret.metadata.namespace, 'ns');
    assert.equal(plan.secret.metadata.labels[MANAGED_BY_LABEL], MANAGED_BY_VALUE);
    assert.equal(plan.secret.metadata.annotations[ROTATED_AT_ANNOTATION], '2026-03-01T12:00:00Z');
    assert.equal(plan.secret.metadata.annotations[KEY_GENERATION_ANNOTATION], '1', 'keys are numbered from generation 1');
  }
  const a = planSecret({ policy: policy({}), namespace: 'ns', secret: undefined, now });
  const b = planSecret({ policy: policy({}), namespace: 'ns', secret: undefined, now });
  assert.ok(a.action === 'create' && b.action === 'create' && a.secret.data.current !== b.secret.data.current, 'keys are random');
});

test('rotation is due rotation.period after the rotated-at annotation, else after creation', () => {
  const hour = 3_600_000;
  assert.equal(rotationDueAt(secret({}, { rotatedAt: '2026-03-01T11:00:00Z' }), hour), Date.parse('2026-03-01T12:00:00Z'));
  assert.equal(rotationDueAt(secret({}, { created: '2026-03-01T09:30:00Z' }), hour), Date.parse('2026-03-01T10:30:00Z'));
  assert.equal(
    rotationDueAt(secret({}, { rotatedAt: 'yesterday', created: '2026-03-01T09:30:00Z' }), hour),
    Date.parse('2026-03-01T10:30:00Z'),
    'a bad annotation falls back to creation',
  );
});

test("a user's Secret is left alone without rotation, and reported (without its content) when its key is the wrong length", () => {
  const ok = planSecret({
    policy: policy({}),
    namespace: 'ns',
    secret: secret({ current: b64(8, 7) }, { created: '2020-01-01T00:00:00Z' }),
    now,
  });
  assert.deepEqual(ok, { action: 'none' });
  const short = Buffer.from('abcde').toString('base64');
  const bad = planSecret({
    policy: policy({ rotation: { period: '1h' } }),
    namespace: 'ns',
    secret: secret({ current: short }),
    now,
  });
  assert.equal(bad.action, 'invalid');
  if (bad.action !== 'invalid') return;
  assert.match(bad.message, /current holds 5 bytes; a Static token needs exactly 8/);
  assert.ok(!bad.message.includes(short) && !bad.message.includes('abcde'), 'the message does not show the key');
  const missing = planSecret({ policy: policy({}), namespace: 'ns', secret: secret({}), now });
  assert.equal(missing.action, 'invalid');
});

test('an operator-made Secret that no longer fits the mode is regenerated as the next generation, without old keys', () => {
  const p = policy({ mode: 'Keyed', epochSeconds: 30 });
  const s = secret({ current: b64(8, 1), previous: b64(8, 2) }, { managed: true, generation: '7' });
  const plan = planSecret({ policy: p, namespace: 'ns', secret: s, now, random: fixed });
  assert.equal(plan.action, 'regenerate');
  if (plan.action !== 'regenerate') return;
  assert.equal(Buffer.from(plan.patch.data.current, 'base64').length, 16);
  assert.equal(plan.patch.data.previous, null, 'the 8-byte previous key is dropped');
  assert.equal(plan.patch.data.next, null);
  assert.equal(plan.patch.metadata.annotations[KEY_GENERATION_ANNOTATION], '8');
  assert.equal(plan.patch.metadata.resourceVersion, '42', 'the write is conditional on what was read');
  const unnumbered = planSecret({
    policy: p,
    namespace: 'ns',
    secret: secret({ current: b64(8, 1) }, { managed: true }),
    now,
    random: fixed,
  });
  assert.ok(unnumbered.action === 'regenerate' && unnumbered.patch.metadata.annotations[KEY_GENERATION_ANNOTATION] === '1');
});

test('a valid Secret is left as it is here: rotation is planned elsewhere', () => {
  const p = policy({ rotation: { period: '1h' } });
  const s = secret({ current: b64(8, 1) }, { managed: true, rotatedAt: '2020-01-01T00:00:00Z', generation: '3' });
  assert.deepEqual(planSecret({ policy: p, namespace: 'ns', secret: s, now }), { action: 'none' });
});
