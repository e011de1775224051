import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  IngressActionCode,
  IngressFlag,
  MAX_POLICIES_PER_NODE,
  decodeEgressRule,
  decodeIngressRule,
  decodeLpmKey,
  decodePortKey,
  decodeSrcKey,
} from '../lib/abi.js';
import { validatePolicy } from '../lib/policy.js';
import type { TokenKeys, TokenPolicy } from '../lib/types.js';
import { EncodingMemo, computeDesired } from './desired.js';
import { EntryTable } from './entry-table.js';
import type { HostInterface } from './interfaces.js';

const ifs: HostInterface[] = [
  { name: 'lo', ifindex: 1, up: true, loopback: true, mtu: 65536, defaultRoute: false, linkType: 'loopback', kind: null },
  { name: 'eth0', ifindex: 2, up: true, loopback: false, mtu: 1500, defaultRoute: true, linkType: 'ether', kind: null },
  { name: 'eth1', ifindex: 3, up: true, loopback: false, mtu: 1500, defaultRoute: false, linkType: 'ether', kind: null },
];

function policy(name: string, spec: Record<string, unknown>) {
  return validatePolicy({
    apiVersion: 'netoken.io/v1alpha1',
    kind: 'TokenPolicy',
    metadata: { name },
    spec: { token: { mode: 'Static', secretRef: { name: `${name}-token` } }, ...spec },
  });
}

const key = (b: number): TokenKeys => ({ current: Buffer.alloc(8, b) });

/** The desired state for `policies` on a node without labels and without earlier slot ids. */
const desired = (policies: TokenPolicy[], keys: Record<string, TokenKeys | Error>, interfaces: HostInterface[] = ifs) =>
  computeDesired({ policies, keys: new Map(Object.entries(keys)), nodeLabels: {}, interfaces, previousIds: new Map() });

/** A plain Ethernet interface: up, not loopback, a 1500 MTU, no default route. */
const ETHER = { up: true, loopback: false, mtu: 1500, defaultRoute: false, linkType: 'ether', kind: null } as const;
const ether = (name: string, ifindex: number, more: Partial<HostInterface> = {}): HostInterface => ({
  name,
  ifindex,
  ...ETHER,
  ...more,
});

test('default interfaces are the default-route ones; empty destinations mean everything', () => {
  const p = policy('a', { egress: {} });
  const d = desired([p], { a: key(1) });
  assert.deepEqual([...d.hooks.keys()], ['2/egress']);
  const [k4] = [...d.egress4.values()][0]!;
  assert.deepEqual(decodeLpmKey(k4), { prefixLen: 0, ifindex: 2, addr: Buffer.from([0, 0, 0, 0]) });
  assert.equal(d.egress6.size, 1);
  assert.equal(d.outcomes[0]!.id, 1);
  assert.deepEqual(d.outcomes[0]!.errors, []);
});

test('names, globs and missing interfaces', () => {
  const p = policy('a', {
    interfaces: { names: ['eth9'], patterns: ['eth*', 'wl*'] },
    egress: { destinations: [{ cidr: '10.0.0.0/8', ports: [443] }] },
  });
  const d = desired([p], { a: key(1) });
  assert.deepEqual([...d.hooks.keys()].sort(), ['2/egress', '3/egress']);
  assert.deepEqual(d.outcomes[0]!.errors.map((e) => e.reason).sort(), ['InterfaceNotFound', 'NoInterfaceMatched']);
  // The data path fills in the counter slot when it writes the rule.
  for (const [, v] of d.egress4.values()) assert.deepEqual(decodeEgressRule(v), { policyId: 1, ports: [443], slot: 0 });
});

test('same prefix in two policies: the name that sorts first wins, the other is warned', () => {
  const a = policy('alpha', { egress: { destinations: [{ cidr: '10.0.0.0/8' }] } });
  const b = policy('beta', { egress: { destinations: [{ cidr: '10.0.0.0/8' }, { cidr: '10.1.0.0/16' }] } });
  const d = desired([b, a], { alpha: key(1), beta: key(2) });
  const rules = [...d.egress4.values()].map(([k, v]) => [decodeLpmKey(k).prefixLen, decodeEgressRule(v).policyId]);
  const alphaId = d.ids.get('alpha');
  const betaId = d.ids.get('beta');
  assert.deepEqual(
    rules.sort(),
    [
      [16, betaId],
      [8, alphaId],
    ].sort(),
  );
  assert.equal(d.outcomes.find((o) => o.name === 'beta')!.warnings[0]!.reason, 'DestinationConflict');
});

test('slot ids stay stable across reconciles and node selectors are honoured', () => {
  const a = policy('a', { egress: {} });
  const b = policy('b', { egress: {}, nodeSelector: { matchLabels: { role: 'edge' } } });
  const keys = new Map([
    ['a', key(1)],
    ['b', key(2)],
  ]);
  const d1 = computeDesired({
    policies: [a, b],
    keys,
    nodeLabels: { role: 'edge' },
    interfaces: ifs,
    previousIds: new Map([['b', 7]]),
  });
  assert.equal(d1.ids.get('b'), 7);
  assert.equal(d1.ids.get('a'), 1);
  const d2 = computeDesired({ policies: [a, b], keys, nodeLabels: {}, interfaces: ifs, previousIds: d1.ids });
  assert.equal(d2.outcomes.find((o) => o.name === 'b')!.selected, false);
  assert.equal(d2.ids.has('b'), false);
  assert.equal(d2.ids.get('a'), 1);
});

test('a policy whose Secret is missing applies nothing and says why', () => {
  const a = policy('a', { egress: {} });
  const d = desired([a], { a: new Error('Secret "a-token" not found') });
  assert.equal(d.hooks.size, 0);
  assert.equal(d.egress4.size, 0);
  assert.equal(d.outcomes[0]!.errors[0]!.reason, 'SecretUnavailable');
});

test('ingress: protected ports per interface, exemptions per policy, the verifier hook, and a slot for an ingress-only policy', () => {
  const p = policy('guard', {
    interfaces: { names: ['eth0', 'eth1'] },
    ingress: { action: 'Enforce', ports: [443, 80], exemptSources: ['10.0.0.0/8', '2001:db8::/32'] },
  });
  const d = desired([p], { guard: key(1) });
  const id = d.ids.get('guard');
  assert.equal(id, 1, 'an ingress-only policy gets a slot: the verifier reads its token there');
  assert.equal(d.outcomes[0]!.id, 1);
  assert.ok(d.policySlots.has(1));
  assert.deepEqual([...d.hooks.keys()].sort(), ['2/ingress', '3/ingress']);
  const ports = [...d.ingressPorts.values()].map(([k, v]) => ({ ...decodePortKey(k), ...decodeIngressRule(v) }));
  // Each interface where a policy enforces also gets the rule for packets whose port cannot be seen.
  // Its exemptions are of both families, so the verifier asks both exempt tries; the data path
  // fills in the counter slot when it writes the rule.
  const rule = {
    policyId: 1,
    action: IngressActionCode.Enforce,
    replayLimit: 0,
    slot: 0,
    flags: IngressFlag.Exempt4 | IngressFlag.Exempt6,
  };
  assert.deepEqual(
    ports.sort((a, b) => a.ifindex - b.ifindex || a.port - b.port),
    [
      { ifindex: 2, port: 0, enforcing: true, ...rule },
      { ifindex: 2, port: 80, enforcing: false, ...rule },
      { ifindex: 2, port: 443, enforcing: false, ...rule },
      { ifindex: 3, port: 0, enforcing: true, ...rule },
      { ifindex: 3, port: 80, enforcing: false, ...rule },
      { ifindex: 3, port: 443, enforcing: false, ...rule },
    ],
  );
  assert.deepEqual(
    [...d.exempt4.values()].map(([k]) => decodeSrcKey(k)),
    [{ policyId: 1, prefixLen: 8, addr: Buffer.from([10, 0, 0, 0]) }],
  );
  assert.equal(d.exempt6.size, 1);
  assert.deepEqual(d.outcomes[0]!.interfaces, ['eth0', 'eth1']);
});

test('ingress: no ports means every port (0); Monitor and the replay limit reach the rule; egress and ingress share one slot', () => {
  const p = validatePolicy({
    apiVersion: 'netoken.io/v1alpha1',
    kind: 'TokenPolicy',
    metadata: { name: 'both' },
    spec: {
      token: { mode: 'Keyed', secretRef: { name: 'k' }, epochSeconds: 60 },
      egress: {},
      ingress: { replayLimit: 3 },
    },
  });
  const d = desired([p], { both: { current: Buffer.alloc(16, 1) } });
  assert.deepEqual([...d.hooks.keys()].sort(), ['2/egress', '2/ingress']);
  const [[k, v]] = [...d.ingressPorts.values()] as [[Buffer, Buffer]];
  assert.deepEqual(
    decodePortKey(k),
    { ifindex: 2, port: 0, enforcing: false },
    'Monitor: no rule for packets without a visible port',
  );
  assert.deepEqual(
    decodeIngressRule(v),
    { policyId: 1, action: IngressActionCode.Monitor, replayLimit: 3, slot: 0, flags: 0 },
    'no exemptions: the verifier asks no exempt trie',
  );
  assert.equal(d.policySlots.size, 1);
  assert.deepEqual(d.outcomes[0]!.interfaces, ['eth0'], 'an interface is listed once for both directions');
});

test('ingress: the same port on the same interface in two policies: the name that sorts first wins, the other is warned', () => {
  const a = policy('alpha', { ingress: { ports: [443] } });
  const b = policy('beta', { ingress: { ports: [443, 8443] } });
  const d = desired([b, a], { alpha: key(1), beta: key(2) });
  const owner = (port: number): number | undefined => {
    for (const [k, v] of d.ingressPorts.values())
      if (decodePortKey(k).port === port && !decodePortKey(k).enforcing) return decodeIngressRule(v).policyId;
    return undefined;
  };
  assert.equal(owner(443), d.ids.get('alpha'));
  assert.equal(owner(8443), d.ids.get('beta'));
  const w = d.outcomes.find((o) => o.name === 'beta')!.warnings;
  assert.equal(w.length, 1);
  assert.equal(w[0]!.reason, 'PortConflict');
  assert.match(w[0]!.message, /port 443 on eth0 is also protected by policy "alpha"/);
  assert.deepEqual(d.hooks.get('2/ingress')?.policies, ['alpha', 'beta']);
});

test('an interface the programs cannot read gets no hook: the policy lists it, the hook is refused with the reason', () => {
  const withGre: HostInterface[] = [
    ...ifs,
    { name: 'gre1', ifindex: 9, up: true, loopback: false, mtu: 1476, defaultRoute: false, linkType: 'gre', kind: 'gre' },
  ];
  const p = policy('a', { interfaces: { names: ['eth0', 'gre1'] }, egress: {}, ingress: { action: 'Enforce' } });
  const d = desired([p], { a: key(1) }, withGre);
  assert.deepEqual([...d.hooks.keys()].sort(), ['2/egress', '2/ingress']);
  assert.deepEqual([...d.refused.keys()].sort(), ['9/egress', '9/ingress']);
  const r = d.refused.get('9/ingress')!;
  assert.equal(r.reason, 'UnsupportedDevice');
  assert.match(r.message, /gre1 is a gre device/);
  assert.deepEqual(d.outcomes[0]!.interfaces, ['eth0', 'gre1'], 'the policy names it, so its report shows the refusal');
  assert.ok(
    [...d.ingressPorts.values()].every(([k]) => k.readUInt32LE(0) !== 9),
    'no rule for it either',
  );
});

test('hooks carry the build their device needs: tun devices read the IP header first; only hardware devices may take native XDP', () => {
  const more: HostInterface[] = [
    ...ifs,
    { name: 'wg0', ifindex: 7, up: true, loopback: false, mtu: 1420, defaultRoute: false, linkType: 'none', kind: 'wireguard' },
    ether('veth1', 8, { kind: 'veth' }),
  ];
  const p = policy('a', { interfaces: { names: ['eth0', 'wg0', 'veth1'] }, ingress: {} });
  const d = desired([p], { a: key(1) }, more);
  const h = (k: string): { layer: string; xdpNative: boolean } => ({
    layer: d.hooks.get(k)!.layer,
    xdpNative: d.hooks.get(k)!.xdpNative,
  });
  assert.deepEqual(h('2/ingress'), { layer: 'ethernet', xdpNative: true });
  assert.deepEqual(h('7/ingress'), { layer: 'none', xdpNative: false });
  assert.deepEqual(h('8/ingress'), { layer: 'ethernet', xdpNative: false });
});

test("bond slaves get the bond's ingress rules, unless a policy protects the slave itself", () => {
  const bonded: HostInterface[] = [
    ...ifs,
    ether('bond0', 10, { kind: 'bond' }),
    ether('ens1', 11, { master: 'bond0' }),
    ether('ens2', 12, { master: 'bond0' }),
  ];
  const onBond = policy('a', { interfaces: { names: ['bond0'] }, ingress: { action: 'Enforce', ports: [443] } });
  const onSlave = policy('b', { interfaces: { names: ['ens2'] }, ingress: { action: 'Monitor', ports: [443] } });
  const d = desired([onBond, onSlave], { a: key(1), b: key(2) }, bonded);
  const rule = (ifindex: number, port: number): number | undefined => {
    for (const [k, v] of d.ingressPorts.values()) {
      const pk = decodePortKey(k);
      if (pk.ifindex === ifindex && pk.port === port && !pk.enforcing) return decodeIngressRule(v).policyId;
    }
    return undefined;
  };
  assert.equal(rule(10, 443), d.ids.get('a'));
  assert.equal(rule(11, 443), d.ids.get('a'), "the slave without a policy of its own: the bond's rule");
  assert.equal(rule(12, 443), d.ids.get('b'), 'the slave with its own policy keeps it');
  assert.deepEqual([...d.hooks.keys()].sort(), ['10/ingress', '12/ingress'], 'hooks only where policies select');
});

test('keyed slots carry the clock skew the verifier tolerates: clockSkewSeconds, by default 5 s or the epoch when shorter', () => {
  const keyed = (name: string, token: Record<string, unknown>) =>
    validatePolicy({
      apiVersion: 'netoken.io/v1alpha1',
      kind: 'TokenPolicy',
      metadata: { name },
      spec: { token: { mode: 'Keyed', secretRef: { name: `${name}-key` }, ...token }, ingress: {} },
    });
  const k16 = { current: Buffer.alloc(16, 3) };
  const d = desired(
    [keyed('a', { epochSeconds: 60 }), keyed('b', { epochSeconds: 2 }), keyed('c', { epochSeconds: 60, clockSkewSeconds: 20 })],
    { a: k16, b: k16, c: k16 },
  );
  const skew = (name: string): number => d.policySlots.get(d.ids.get(name)!)!.readUInt16LE(6);
  assert.equal(skew('a'), 5);
  assert.equal(skew('b'), 2);
  assert.equal(skew('c'), 20);
});

test(`at the limit: ${MAX_POLICIES_PER_NODE} policies apply to one node, the next one reports TooManyPolicies`, () => {
  const names = Array.from({ length: MAX_POLICIES_PER_NODE + 1 }, (_, i) => `p-${String(i).padStart(4, '0')}`);
  const policies = names.map((n, i) =>
    policy(n, { interfaces: { names: ['eth0'] }, egress: { destinations: [{ cidr: `10.${i >> 8}.${i & 255}.0/24` }] } }),
  );
  const keys = new Map(names.map((n) => [n, key(1)]));
  const d = computeDesired({ policies, keys, nodeLabels: {}, interfaces: ifs, previousIds: new Map() });
  const applied = d.outcomes.filter((o) => o.id > 0);
  assert.equal(applied.length, MAX_POLICIES_PER_NODE);
  assert.equal(new Set(applied.map((o) => o.id)).size, MAX_POLICIES_PER_NODE, 'each its own slot');
  const over = d.outcomes.filter((o) => o.id === 0);
  assert.deepEqual(
    over.map((o) => [o.name, o.errors[0]?.reason]),
    [['p-1023', 'TooManyPolicies']],
  );
  assert.match(over[0]?.errors[0]?.message ?? '', /at most 1023 policies can apply to one node/);
  assert.equal(d.egress4.size, MAX_POLICIES_PER_NODE);
});

test('an EncodingMemo kept across computations changes nothing: random edits give what a fresh computation gives', () => {
  let x = 0x4e54;
  const rnd = (n: number): number => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
  const pool = [
    '10.0.0.0/8',
    '10.1.0.0/16',
    '10.1.2.0/24',
    '192.0.2.0/24',
    '192.0.2.7/32',
    '2001:db8::/32',
    '2001:db8:1::/48',
    '0.0.0.0/0',
    '203.0.113.0/24',
    '198.51.100.0/24',
  ];
  const dest = (): { cidr: string; ports: number[] } => {
    const n = rnd(4) === 0 ? 9 + rnd(8) : rnd(3);
    return { cidr: pool[rnd(pool.length)] as string, ports: Array.from({ length: n }, () => 1 + rnd(40)) };
  };
  const memo = new EncodingMemo();
  const seen = new Set<string>();
  let specs = ['a', 'b', 'c'].map((n) => ({ name: n, dests: Array.from({ length: 3 + rnd(5) }, dest), ifs: ['eth0'] }));
  for (let round = 0; round < 300; round++) {
    // Edit one policy: change, add or drop a destination, or its interfaces.
    specs = specs.map((s) => {
      if (rnd(3) !== 0) return s;
      const dests = [...s.dests];
      const what = rnd(4);
      if (what === 0 && dests.length) dests[rnd(dests.length)] = dest();
      else if (what === 1) dests.push(dest());
      else if (what === 2 && dests.length > 1) dests.splice(rnd(dests.length), 1);
      return { ...s, dests, ifs: what === 3 ? (rnd(2) ? ['eth0', 'eth1'] : ['eth1']) : s.ifs };
    });
    const policies = specs.map((s) => policy(s.name, { interfaces: { names: s.ifs }, egress: { destinations: s.dests } }));
    const keys = new Map(specs.map((s, i) => [s.name, key(i + 1)]));
    const input = { policies, keys, nodeLabels: {}, interfaces: ifs, previousIds: new Map<string, number>() };
    const withMemo = computeDesired({ ...input, memo });
    const fresh = computeDesired(input);
    const entries = (m: ReadonlyMap<string, [Buffer, Buffer]>): string[] =>
      [...m].map(([h, [k, v]]) => `${h}=${k.toString('hex')}:${v.toString('hex')}`).sort();
    assert.deepEqual(entries(withMemo.egress4), entries(fresh.egress4), `round ${round}: egress4`);
    assert.deepEqual(entries(withMemo.egress6), entries(fresh.egress6), `round ${round}: egress6`);
    const problems = (d: typeof fresh): string[] =>
      d.outcomes.flatMap((o) => [...o.errors, ...o.warnings].map((e) => `${o.name}:${e.reason}:${e.message}`)).sort();
    assert.deepEqual(problems(withMemo), problems(fresh), `round ${round}: errors and warnings`);
    for (const o of fresh.outcomes) for (const e of [...o.errors, ...o.warnings]) seen.add(e.reason);
  }
  assert.deepEqual(
    [...seen].sort(),
    ['DestinationConflict', 'TooManyPorts'],
    'the edits ran into conflicts and merged port lists that are too long',
  );
});

test('edits of large policies with an EncodingMemo: each gives what a fresh computation gives, and changes only what it touched', () => {
  const nets = (from: number, n: number): string[] =>
    Array.from({ length: n }, (_, i) => `10.${(from + i) >> 8}.${(from + i) & 255}.0/24`);
  const memo = new EncodingMemo();
  const keys = new Map([
    ['a', key(1)],
    ['b', key(2)],
  ]);
  const both = { interfaces: { names: ['eth0', 'eth1'] } };
  let a = nets(0, 3000).map((cidr) => ({ cidr, ports: [443] }));
  let b = [...nets(5000, 1000), '2001:db8::/32'].map((cidr) => ({ cidr, ports: [] as number[] }));
  let last: ReturnType<typeof computeDesired> | undefined;
  const edits: [string, () => void, number | null][] = [
    ['first computation', () => {}, null],
    ['nothing changed', () => {}, 0],
    ['one prefix of a replaced', () => (a = a.map((d, i) => (i === 1234 ? { cidr: '172.16.0.0/12', ports: [443] } : d))), 2],
    ['one prefix added to a', () => (a = [...a.slice(0, 10), { cidr: '192.0.2.0/24', ports: [] }, ...a.slice(10)]), 1],
    ['one prefix removed from b', () => (b = b.filter((_, i) => i !== 500)), 2],
    ['ports of one prefix of a changed', () => (a = a.map((d, i) => (i === 0 ? { ...d, ports: [80, 443] } : d))), 1],
    [
      'an IPv6 prefix of b replaced',
      () => (b = b.map((d) => (d.cidr === '2001:db8::/32' ? { cidr: '2001:db8:1::/48', ports: [] } : d))),
      4,
    ],
    ['a prefix moved from b to a', () => ((a = [...a, { cidr: b[0]!.cidr, ports: [] }]), (b = b.slice(1))), 2],
    // Conflicts are found by a computation from scratch (and the next edit starts from scratch too).
    ['a claims a prefix b holds', () => (a = [...a, { cidr: b[1]!.cidr, ports: [] }]), null],
    ['the conflict is gone', () => (a = a.slice(0, -1)), null],
    ['one prefix of b replaced', () => (b = b.map((d, i) => (i === 7 ? { cidr: '198.51.100.0/24', ports: [] } : d))), 4],
  ];
  for (const [what, edit, changed] of edits) {
    edit();
    const policies = [policy('a', { egress: { destinations: a } }), policy('b', { ...both, egress: { destinations: b } })];
    const input = { policies, keys, nodeLabels: {}, interfaces: ifs, previousIds: new Map<string, number>() };
    const withMemo = computeDesired({ ...input, memo });
    const fresh = computeDesired(input);
    const entries = (m: ReadonlyMap<string, [Buffer, Buffer]>): string[] =>
      [...m].map(([h, [k, v]]) => `${h}=${k.toString('hex')}:${v.toString('hex')}`).sort();
    assert.deepEqual(entries(withMemo.egress4), entries(fresh.egress4), `${what}: egress4`);
    assert.deepEqual(entries(withMemo.egress6), entries(fresh.egress6), `${what}: egress6`);
    assert.deepEqual(withMemo.outcomes, fresh.outcomes, `${what}: outcomes`);
    if (changed !== null && last) {
      // The entries that differ from the last tables: the prefixes edited, on each interface of their policy.
      const k4 = EntryTable.changedKeys(last.egress4, withMemo.egress4);
      const k6 = EntryTable.changedKeys(last.egress6, withMemo.egress6);
      assert.ok(k4 && k6, `${what}: the tables were made from the last ones`);
      const differ = [...k4, ...k6].filter(
        (h) => (last!.egress4.get(h) ?? last!.egress6.get(h)) !== (withMemo.egress4.get(h) ?? withMemo.egress6.get(h)),
      );
      assert.equal(differ.length, changed, `${what}: the entries that changed`);
    }
    last = withMemo;
  }
  assert.deepEqual(
    last?.outcomes.flatMap((o) => o.warnings.map((w) => w.reason)),
    [],
    'no conflict is left at the end',
  );
});
