import { test } from 'node:test';
import assert from 'node:assert/strict';
import { globToRegExp, linkLayer, listInterfaces, nativeXdpCandidate } from './interfaces.js';

test('globs match like a shell', () => {
  assert.ok(globToRegExp('eth*').test('eth0'));
  assert.ok(!globToRegExp('eth*').test('veth0'));
  assert.ok(globToRegExp('en?[0-9]').test('ens5'));
  assert.ok(globToRegExp('[!v]*').test('eth0'));
  assert.ok(!globToRegExp('[!v]*').test('veth0'));
  assert.ok(globToRegExp('a.b').test('a.b') && !globToRegExp('a.b').test('axb'), 'dots are literal');
});

test('listInterfaces reads this namespace', async () => {
  const all = await listInterfaces();
  const lo = all.find((i) => i.name === 'lo');
  assert.ok(lo, `want lo in ${JSON.stringify(all.map((i) => i.name))}`);
  assert.equal(lo.loopback, true);
  assert.equal(lo.ifindex, 1);
});

test('link layers: Ethernet and loopback frames have an Ethernet header; tun, WireGuard, ipip, sit, ip6tnl and ppp start with the IP header; GRE and the rest are refused with a reason', () => {
  for (const linkType of ['ether', 'loopback']) assert.equal(linkLayer({ name: 'x', linkType }), 'ethernet', linkType);
  for (const linkType of ['none', 'ipip', 'sit', 'tunnel6', 'ppp', 'rawip'])
    assert.equal(linkLayer({ name: 'x', linkType }), 'none', linkType);
  const gre = linkLayer({ name: 'gre1', linkType: 'gre' });
  assert.ok(
    typeof gre === 'object' &&
      /gre1 is a gre device, whose frames may carry the tunnel's outer header at tc/.test(gre.unsupported),
    JSON.stringify(gre),
  );
  const ib = linkLayer({ name: 'ib0', linkType: 'infiniband' });
  assert.ok(
    typeof ib === 'object' &&
      /ib0 has link type infiniband: only Ethernet devices and devices without a link-layer header/.test(ib.unsupported),
    JSON.stringify(ib),
  );
});

test('native XDP is offered only to Ethernet devices a hardware driver made', () => {
  assert.equal(nativeXdpCandidate({ kind: null, linkType: 'ether', loopback: false }), true, 'a NIC');
  for (const kind of ['veth', 'bond', 'vlan', 'bridge', 'vxlan', 'tun', 'macvlan']) {
    assert.equal(nativeXdpCandidate({ kind, linkType: 'ether', loopback: false }), false, kind);
  }
  assert.equal(nativeXdpCandidate({ kind: null, linkType: 'loopback', loopback: true }), false, 'the loopback');
  assert.equal(nativeXdpCandidate({ kind: null, linkType: 'none', loopback: false }), false, 'no Ethernet header');
});
