import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cidrContains, formatIp, parseCidr, parseIp } from './cidr.js';

test('parseCidr accepts IPv4 and IPv6 prefixes and canonicalizes them', () => {
  const v4 = parseCidr('203.0.113.0/24');
  assert.equal(v4.family, 4);
  assert.deepEqual([...v4.addr], [203, 0, 113, 0]);
  assert.equal(v4.prefixLen, 24);
  const v6 = parseCidr('2001:DB8:0:0::/32');
  assert.equal(v6.family, 6);
  assert.equal(v6.text, '2001:db8::/32');
  assert.equal(parseCidr('10.1.2.3').text, '10.1.2.3/32', 'a bare address is a host prefix');
  assert.equal(parseCidr('::ffff:1.2.3.4/128').addr.toString('hex'), '00000000000000000000ffff01020304');
});

test('parseCidr rejects what is not a CIDR, saying why', () => {
  assert.throws(() => parseCidr('10.0.0.0/33'), /prefix length must be 0..32/);
  assert.throws(() => parseCidr('10.0.0.256/8'), /not an IPv4 or IPv6 address/);
  assert.throws(() => parseCidr('10.0.0.1/8'), /did you mean 10\.0\.0\.0\/8/);
  assert.throws(() => parseCidr('fe80::/10/2'), /not a CIDR/);
  assert.throws(() => parseCidr('10.0.0.0/x'), /prefix length/);
});

test('formatIp compresses the longest zero run and contains() matches', () => {
  assert.equal(formatIp(parseIp('2001:db8:0:0:1:0:0:1')!), '2001:db8::1:0:0:1');
  assert.equal(formatIp(parseIp('::')!), '::');
  assert.ok(cidrContains(parseCidr('10.0.0.0/8'), parseIp('10.200.1.1')!));
  assert.ok(!cidrContains(parseCidr('10.0.0.0/8'), parseIp('11.0.0.1')!));
  assert.ok(!cidrContains(parseCidr('::/0'), parseIp('10.0.0.1')!), 'families never mix');
});
