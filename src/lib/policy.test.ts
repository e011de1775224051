import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NT_MAX_PORTS } from './abi.js';
import { PolicyError, decodeKeys, parseDuration, validatePolicy } from './policy.js';

const base = () => ({
  apiVersion: 'netoken.io/v1alpha1',
  kind: 'TokenPolicy',
  metadata: { name: 'edge-web' },
  spec: {
    token: { mode: 'Static', secretRef: { name: 'edge-web-token' } },
    egress: { destinations: [{ cidr: '203.0.113.0/24', ports: [443, 80, 443] }] },
  },
});

function fields(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof PolicyError, `want PolicyError, got ${String(err)}`);
    return err.fields.map((f) => `${f.path}: ${f.message}`);
  }
  assert.fail('want an error, got none');
}

test('a minimal policy gets the documented defaults', () => {
  const p = validatePolicy(base());
  assert.deepEqual(p.spec.option, { kind: 253, experimentId: 0x4e54 });
  assert.deepEqual(p.spec.interfaces, { names: [], patterns: [] });
  assert.deepEqual(p.spec.nodeSelector, {});
  assert.deepEqual(p.spec.egress?.destinations, [{ cidr: '203.0.113.0/24', ports: [80, 443] }]);
  assert.equal(p.spec.ingress, undefined);
});

test('every bad field is named with its path', () => {
  const bad = base() as Record<string, unknown> & { spec: Record<string, unknown> };
  bad.spec.option = { kind: 252 };
  bad.spec.egress = { destinations: [{ cidr: '10.0.0.0/33' }, { cidr: '10.0.0.0/8', ports: [0] }], extra: 1 };
  bad.spec.colour = 'blue';
  const got = fields(() => validatePolicy(bad, 'p.yaml document 1'));
  assert.ok(
    got.some((f) => f.startsWith('spec.option.kind: must be between 253 and 254')),
    got.join('\n'),
  );
  assert.ok(
    got.some((f) => f.startsWith('spec.egress.destinations[0].cidr: "10.0.0.0/33"')),
    got.join('\n'),
  );
  assert.ok(
    got.some((f) => f.startsWith('spec.egress.destinations[1].ports[0]: must be between 1 and 65535')),
    got.join('\n'),
  );
  assert.ok(
    got.some((f) => f.startsWith('spec.egress.extra: unknown field')),
    got.join('\n'),
  );
  assert.ok(
    got.some((f) => f.startsWith('spec.colour: unknown field')),
    got.join('\n'),
  );
});

test('the cross-field rules of the CRD hold here too', () => {
  const keyed = base();
  (keyed.spec.token as Record<string, unknown>).mode = 'Keyed';
  assert.ok(
    fields(() => validatePolicy(keyed)).some((f) => f.startsWith('spec.token.epochSeconds: is required when mode is Keyed')),
  );
  const neither = base() as { spec: Record<string, unknown> };
  delete neither.spec.egress;
  assert.ok(fields(() => validatePolicy(neither)).some((f) => f.includes('needs egress')));
  const staticEpoch = base();
  (staticEpoch.spec.token as Record<string, unknown>).epochSeconds = 60;
  assert.ok(
    fields(() => validatePolicy(staticEpoch)).some((f) =>
      f.startsWith('spec.token.epochSeconds: is only valid when mode is Keyed'),
    ),
  );
  const rot = base();
  (rot.spec.token as Record<string, unknown>).rotation = { period: '10s' };
  assert.ok(
    fields(() => validatePolicy(rot)).some((f) =>
      f.includes('spec.token.rotation.period: "10s" is shorter than a rotation takes: at least 2m'),
    ),
  );
});

test('decodeKeys checks lengths and never shows the key', () => {
  const secret = (data: Record<string, string>) => ({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 's' }, data });
  const k = decodeKeys(secret({ current: Buffer.from('0123456789abcdef', 'hex').toString('base64') }), 'Static', 'f');
  assert.equal(k.current.toString('hex'), '0123456789abcdef');
  assert.equal(k.previous, undefined);
  const sixteen = Buffer.alloc(16, 7).toString('base64');
  const bad = () => decodeKeys(secret({ current: sixteen }), 'Static', 'f');
  assert.throws(bad, /current holds 16 bytes; a Static token needs exactly 8/);
  try {
    bad();
  } catch (err) {
    assert.ok(!(err as Error).message.includes(sixteen), 'the message must not contain the key');
  }
  assert.throws(() => decodeKeys(secret({}), 'Keyed', 'f'), /has no "current" key/);
  assert.throws(() => decodeKeys(secret({ current: '!!!' }), 'Static', 'f'), /not valid base64/);
});

test('parseDuration reads Go durations', () => {
  assert.equal(parseDuration('24h'), 86400);
  assert.equal(parseDuration('1h30m'), 5400);
  assert.equal(parseDuration('500ms'), 0.5);
  assert.equal(parseDuration('1 day'), null);
});

test('rotation: the period covers a whole rotation (epoch + skew + 2m), stallTimeout at least 10s, onStall Proceed or Wait', () => {
  const withRotation = (token: Record<string, unknown>) => {
    const p = base();
    Object.assign(p.spec.token as Record<string, unknown>, token);
    return p;
  };
  const keyed = { mode: 'Keyed', epochSeconds: 300 };
  assert.deepEqual(validatePolicy(withRotation({ ...keyed, rotation: { period: '7m5s' } })).spec.token.rotation, {
    period: '7m5s',
  });
  assert.ok(
    fields(() => validatePolicy(withRotation({ ...keyed, rotation: { period: '7m4s' } }))).some((f) =>
      f.startsWith('spec.token.rotation.period: "7m4s" is shorter than a rotation takes: at least 7m5s'),
    ),
  );
  // An explicit skew counts as given.
  assert.ok(
    fields(() => validatePolicy(withRotation({ ...keyed, clockSkewSeconds: 60, rotation: { period: '7m5s' } }))).some((f) =>
      f.includes('at least 8m'),
    ),
  );
  const full = validatePolicy(withRotation({ rotation: { period: '24h', stallTimeout: '2m', onStall: 'Wait' } }));
  assert.deepEqual(full.spec.token.rotation, { period: '24h', stallTimeout: '2m', onStall: 'Wait' });
  assert.ok(
    fields(() => validatePolicy(withRotation({ rotation: { period: '24h', stallTimeout: '5s' } }))).some((f) =>
      f.startsWith('spec.token.rotation.stallTimeout: "5s" must be a duration of at least 10s'),
    ),
  );
  assert.ok(
    fields(() => validatePolicy(withRotation({ rotation: { period: '24h', onStall: 'Never' } }))).some((f) =>
      f.startsWith('spec.token.rotation.onStall'),
    ),
  );
});

test('a destination holds as many ports as a map entry has room for (NT_MAX_PORTS), no more', () => {
  const ports = (n: number): number[] => Array.from({ length: n }, (_, i) => 1000 + i);
  const full = base();
  full.spec.egress.destinations[0]!.ports = ports(NT_MAX_PORTS);
  assert.equal(validatePolicy(full).spec.egress?.destinations[0]?.ports.length, NT_MAX_PORTS);
  const over = base();
  over.spec.egress.destinations[0]!.ports = ports(NT_MAX_PORTS + 1);
  assert.deepEqual(
    fields(() => validatePolicy(over)),
    [`spec.egress.destinations[0].ports: at most ${NT_MAX_PORTS} items, got ${NT_MAX_PORTS + 1}`],
  );
});
