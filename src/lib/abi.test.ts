import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  COUNTERS, EGRESS_RULE_SIZE, LPM4_KEY_SIZE, LPM6_KEY_SIZE, POLICY_SIZE, STAT_KEY_SIZE, TokenModeCode,
  decodeEgressRule, decodeLpmKey, encodeEgressRule, encodeLpmKey, encodePolicy,
} from './abi.js';
import { parseCidr } from './cidr.js';

const object = fileURLToPath(new URL('../../../build/bpf/marker.bpf.o', import.meta.url));
const header = fileURLToPath(new URL('../../../bpf/abi.h', import.meta.url));

test('struct sizes agree with the BTF of the built marker object', () => {
  const btf = execFileSync('bpftool', ['btf', 'dump', 'file', object], { encoding: 'utf8' });
  const size = (name: string): number => {
    const m = new RegExp(`STRUCT '${name}' size=(\\d+)`).exec(btf);
    assert.ok(m, `struct ${name} not in the BTF of ${object}`);
    return Number(m[1]);
  };
  assert.equal(size('nt_lpm4_key'), LPM4_KEY_SIZE);
  assert.equal(size('nt_lpm6_key'), LPM6_KEY_SIZE);
  assert.equal(size('nt_egress_rule'), EGRESS_RULE_SIZE);
  assert.equal(size('nt_policy'), POLICY_SIZE);
  assert.equal(size('nt_stat_key'), STAT_KEY_SIZE);
});

test('counter names follow enum nt_counter in abi.h', () => {
  const text = execFileSync('sed', ['-n', '/enum nt_counter {/,/};/p', header], { encoding: 'utf8' });
  const names = [...text.matchAll(/^\s*(NT_C_[A-Z0-9_]+)/gm)].map((m) => m[1]).filter((n) => n !== 'NT_C__MAX');
  assert.equal(names.length, COUNTERS.length, `abi.h has ${names.length} counters, abi.ts ${COUNTERS.length}`);
  assert.equal(names[0], 'NT_C_MARKED');
  assert.equal(COUNTERS[0], 'marked');
});

test('encodings round-trip and put fields where the header says', () => {
  const key = encodeLpmKey(5, parseCidr('203.0.113.0/24'));
  assert.equal(key.toString('hex'), '38000000' + '00000005' + 'cb007100');
  assert.deepEqual(decodeLpmKey(key), { ifindex: 5, prefixLen: 24, addr: Buffer.from([203, 0, 113, 0]) });
  assert.deepEqual(decodeEgressRule(encodeEgressRule(3, [80, 443])), { policyId: 3, ports: [80, 443] });
  assert.throws(() => encodeEgressRule(1, Array.from({ length: 17 }, (_, i) => i + 1)), /at most 16 ports/);
  const p = encodePolicy({ mode: TokenModeCode.Static, kind: 253, exid: 0x4e54, epochSeconds: 0, bind: 0, current: Buffer.from('0102030405060708', 'hex') });
  assert.equal(p.length, POLICY_SIZE);
  assert.equal(p.subarray(0, 4).toString('hex'), '01fd544e');
  assert.equal(p.subarray(16, 24).toString('hex'), '0102030405060708');
});
