import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeEgressRule, decodeLpmKey } from '../lib/abi.js';
import { validatePolicy } from '../lib/policy.js';
import type { TokenKeys } from '../lib/types.js';
import { computeDesired } from './desired.js';
import type { HostInterface } from './interfaces.js';

const ifs: HostInterface[] = [
  { name: 'lo', ifindex: 1, up: true, loopback: true, mtu: 65536, defaultRoute: false },
  { name: 'eth0', ifindex: 2, up: true, loopback: false, mtu: 1500, defaultRoute: true },
  { name: 'eth1', ifindex: 3, up: true, loopback: false, mtu: 1500, defaultRoute: false },
];

function policy(name: string, spec: Record<string, unknown>) {
  return validatePolicy({
    apiVersion: 'netoken.io/v1alpha1', kind: 'TokenPolicy', metadata: { name },
    spec: { token: { mode: 'Static', secretRef: { name: `${name}-token` } }, ...spec },
  });
}

const key = (b: number): TokenKeys => ({ current: Buffer.alloc(8, b) });

test('default interfaces are the default-route ones; empty destinations mean everything', () => {
  const p = policy('a', { egress: {} });
  const d = computeDesired({ policies: [p], keys: new Map([['a', key(1)]]), nodeLabels: {}, interfaces: ifs, previousIds: new Map() });
  assert.deepEqual([...d.hooks.keys()], ['2/egress']);
  const [k4] = [...d.egress4.values()][0]!;
  assert.deepEqual(decodeLpmKey(k4), { prefixLen: 0, ifindex: 2, addr: Buffer.from([0, 0, 0, 0]) });
  assert.equal(d.egress6.size, 1);
  assert.equal(d.outcomes[0]!.id, 1);
  assert.deepEqual(d.outcomes[0]!.errors, []);
});

test('names, globs and missing interfaces', () => {
  const p = policy('a', { interfaces: { names: ['eth9'], patterns: ['eth*', 'wl*'] }, egress: { destinations: [{ cidr: '10.0.0.0/8', ports: [443] }] } });
  const d = computeDesired({ policies: [p], keys: new Map([['a', key(1)]]), nodeLabels: {}, interfaces: ifs, previousIds: new Map() });
  assert.deepEqual([...d.hooks.keys()].sort(), ['2/egress', '3/egress']);
  assert.deepEqual(d.outcomes[0]!.errors.map((e) => e.reason).sort(), ['InterfaceNotFound', 'NoInterfaceMatched']);
  for (const [, v] of d.egress4.values()) assert.deepEqual(decodeEgressRule(v), { policyId: 1, ports: [443] });
});

test('same prefix in two policies: the name that sorts first wins, the other is warned', () => {
  const a = policy('alpha', { egress: { destinations: [{ cidr: '10.0.0.0/8' }] } });
  const b = policy('beta', { egress: { destinations: [{ cidr: '10.0.0.0/8' }, { cidr: '10.1.0.0/16' }] } });
  const d = computeDesired({ policies: [b, a], keys: new Map([['alpha', key(1)], ['beta', key(2)]]), nodeLabels: {}, interfaces: ifs, previousIds: new Map() });
  const rules = [...d.egress4.values()].map(([k, v]) => [decodeLpmKey(k).prefixLen, decodeEgressRule(v).policyId]);
  const alphaId = d.ids.get('alpha');
  const betaId = d.ids.get('beta');
  assert.deepEqual(rules.sort(), [[16, betaId], [8, alphaId]].sort());
  assert.equal(d.outcomes.find((o) => o.name === 'beta')!.warnings[0]!.reason, 'DestinationConflict');
});

test('slot ids stay stable across reconciles and node selectors are honoured', () => {
  const a = policy('a', { egress: {} });
  const b = policy('b', { egress: {}, nodeSelector: { matchLabels: { role: 'edge' } } });
  const keys = new Map([['a', key(1)], ['b', key(2)]]);
  const d1 = computeDesired({ policies: [a, b], keys, nodeLabels: { role: 'edge' }, interfaces: ifs, previousIds: new Map([['b', 7]]) });
  assert.equal(d1.ids.get('b'), 7);
  assert.equal(d1.ids.get('a'), 1);
  const d2 = computeDesired({ policies: [a, b], keys, nodeLabels: {}, interfaces: ifs, previousIds: d1.ids });
  assert.equal(d2.outcomes.find((o) => o.name === 'b')!.selected, false);
  assert.equal(d2.ids.has('b'), false);
  assert.equal(d2.ids.get('a'), 1);
});

test('a policy whose Secret is missing applies nothing and says why', () => {
  const a = policy('a', { egress: {} });
  const d = computeDesired({ policies: [a], keys: new Map([['a', new Error('Secret "a-token" not found')]]), nodeLabels: {}, interfaces: ifs, previousIds: new Map() });
  assert.equal(d.hooks.size, 0);
  assert.equal(d.egress4.size, 0);
  assert.equal(d.outcomes[0]!.errors[0]!.reason, 'SecretUnavailable');
});
