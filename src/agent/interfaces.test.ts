import { test } from 'node:test';
import assert from 'node:assert/strict';
import { globToRegExp, listInterfaces } from './interfaces.js';

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
