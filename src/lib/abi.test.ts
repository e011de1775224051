import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import {
  CLOCK_SIZE,
  CONFIG_SIZE,
  COUNTERS,
  COUNTERS_SIZE,
  COUNTER_OWNER_SIZE,
  EGRESS_RULE_SIZE,
  IFACE_SIZE,
  INGRESS_RULE_SIZE,
  NT_MAX_PORT_INDEX,
  PORT_INDEX_SIZE,
  PortIndexState,
  decodePortIndex,
  encodePortIndex,
  portIndexEntries,
  IngressActionCode,
  IngressFlag,
  LAYOUT_VERSION,
  LPM4_KEY_SIZE,
  LPM6_KEY_SIZE,
  NT_COUNTER_CELLS,
  NT_MAX_COUNTER_SLOTS,
  POLICY_SIZE,
  PORT_KEY_SIZE,
  REPLAY_KEY_SIZE,
  REPLAY_VAL_SIZE,
  SRC4_KEY_SIZE,
  SRC6_KEY_SIZE,
  TokenModeCode,
  decodeClock,
  decodeConfig,
  decodeCounterOwner,
  decodeEgressRule,
  decodeIface,
  decodeIngressRule,
  decodeLpmKey,
  decodePortKey,
  decodeSrcKey,
  encodeClock,
  encodeConfig,
  encodeCounterOwner,
  encodeEgressRule,
  encodeEnforcingKey,
  encodeIface,
  encodeIngressRule,
  encodeLpmKey,
  encodePolicy,
  encodePortKey,
  encodeSrcKey,
  sumCounterCells,
  withCounterSlot,
  NT_MAX_POLICIES,
  NT_MAX_PORTS,
  NT_OPT_LEN,
} from './abi.js';
import { parseCidr } from './cidr.js';
import { PACKAGE_ROOT, bpfObjectPath } from './package.js';

const object = bpfObjectPath('marker');
const verifierObject = bpfObjectPath('verifier');

function btfSizes(file: string): (name: string) => number {
  const btf = execFileSync('bpftool', ['btf', 'dump', 'file', file], { encoding: 'utf8' });
  return (name) => {
    const m = new RegExp(`STRUCT '${name}' size=(\\d+)`).exec(btf);
    assert.ok(m, `struct ${name} not in the BTF of ${file}`);
    return Number(m[1]);
  };
}
const header = path.join(PACKAGE_ROOT, 'bpf/abi.h');

test('struct sizes agree with the BTF of the built marker object', () => {
  const size = btfSizes(object);
  assert.equal(size('nt_lpm4_key'), LPM4_KEY_SIZE);
  assert.equal(size('nt_lpm6_key'), LPM6_KEY_SIZE);
  assert.equal(size('nt_egress_rule'), EGRESS_RULE_SIZE);
  assert.equal(size('nt_policy'), POLICY_SIZE);
  assert.equal(size('nt_counters'), COUNTERS_SIZE);
  assert.equal(size('nt_counter_owner'), COUNTER_OWNER_SIZE);
  assert.equal(size('nt_iface'), IFACE_SIZE);
  assert.equal(size('nt_config'), CONFIG_SIZE);
  assert.equal(size('nt_clock'), CLOCK_SIZE);
});

test('struct sizes agree with the BTF of the built verifier object', () => {
  const size = btfSizes(verifierObject);
  assert.equal(size('nt_policy'), POLICY_SIZE);
  assert.equal(size('nt_counters'), COUNTERS_SIZE);
  assert.equal(size('nt_counter_owner'), COUNTER_OWNER_SIZE);
  assert.equal(size('nt_iface'), IFACE_SIZE);
  assert.equal(size('nt_clock'), CLOCK_SIZE);
  assert.equal(size('nt_port_key'), PORT_KEY_SIZE);
  assert.equal(size('nt_ingress_rule'), INGRESS_RULE_SIZE);
  assert.equal(size('nt_port_index'), PORT_INDEX_SIZE);
  assert.equal(size('nt_src4_key'), SRC4_KEY_SIZE);
  assert.equal(size('nt_src6_key'), SRC6_KEY_SIZE);
  assert.equal(size('nt_replay_key'), REPLAY_KEY_SIZE);
  assert.equal(size('nt_replay_val'), REPLAY_VAL_SIZE);
});

test('the limits, the layout version and the counter array sizes are the ones abi.h defines', () => {
  const text = readFileSync(header, 'utf8');
  const define = (name: string): number => Number(new RegExp(`^#define ${name}\\s+(\\w+)`, 'm').exec(text)?.[1]);
  assert.equal(NT_OPT_LEN, define('NT_OPT_LEN'));
  assert.equal(NT_MAX_PORTS, define('NT_MAX_PORTS'));
  assert.equal(NT_MAX_POLICIES, define('NT_MAX_POLICIES'));
  assert.equal(LAYOUT_VERSION, define('NT_LAYOUT_VERSION'));
  assert.equal(NT_MAX_COUNTER_SLOTS, define('NT_MAX_COUNTER_SLOTS'));
  assert.equal(NT_COUNTER_CELLS, define('NT_COUNTER_CELLS'));
  assert.equal(NT_MAX_PORT_INDEX, define('NT_MAX_PORT_INDEX'));
  assert.ok(COUNTERS.length <= NT_COUNTER_CELLS, 'every counter has a cell');
});

test('counter names follow enum nt_counter in abi.h', () => {
  const text = execFileSync('sed', ['-n', '/enum nt_counter {/,/};/p', header], { encoding: 'utf8' });
  const names = [...text.matchAll(/^\s*(NT_C_[A-Z0-9_]+)/gm)].map((m) => m[1]).filter((n) => n !== 'NT_C__MAX');
  assert.equal(names.length, COUNTERS.length, `abi.h has ${names.length} counters, abi.ts ${COUNTERS.length}`);
  assert.equal(names[0], 'NT_C_MARKED');
  assert.equal(COUNTERS[0], 'marked');
  const at = (c: string): number => names.indexOf(c);
  assert.equal(COUNTERS[at('NT_C_V_VALID')], 'verify_valid');
  assert.equal(COUNTERS[at('NT_C_V_REPLAY')], 'verify_replay');
  assert.equal(COUNTERS[at('NT_C_SKIP_NO_CLOCK')], 'skipped_no_clock');
});

test('encodings round-trip and put fields where the header says', () => {
  const key = encodeLpmKey(5, parseCidr('203.0.113.0/24'));
  assert.equal(key.toString('hex'), '38000000' + '00000005' + 'cb007100');
  assert.deepEqual(decodeLpmKey(key), { ifindex: 5, prefixLen: 24, addr: Buffer.from([203, 0, 113, 0]) });
  assert.deepEqual(decodeEgressRule(encodeEgressRule(3, [80, 443])), { policyId: 3, ports: [80, 443], slot: 0 });
  assert.equal(encodeEgressRule(3, [443], 0x102).toString('hex'), '03000000' + '0100' + '0201' + 'bb01' + '00'.repeat(30));
  assert.deepEqual(decodeEgressRule(withCounterSlot(encodeEgressRule(3, [443]), 9)), { policyId: 3, ports: [443], slot: 9 });
  assert.throws(
    () =>
      encodeEgressRule(
        1,
        Array.from({ length: 17 }, (_, i) => i + 1),
      ),
    /at most 16 ports/,
  );
  const p = encodePolicy({
    mode: TokenModeCode.Static,
    kind: 253,
    exid: 0x4e54,
    epochSeconds: 0,
    bind: 0,
    current: Buffer.from('0102030405060708', 'hex'),
  });
  assert.equal(p.length, POLICY_SIZE);
  assert.equal(p.subarray(0, 4).toString('hex'), '01fd544e');
  assert.equal(p.subarray(16, 24).toString('hex'), '0102030405060708');
});

test('ingress encodings put fields where the header says', () => {
  assert.equal(encodePortKey(7, 443).toString('hex'), '07000000' + 'bb01' + '0000');
  assert.deepEqual(decodePortKey(encodePortKey(7, 0)), { ifindex: 7, port: 0, enforcing: false });
  assert.deepEqual(decodePortKey(encodeEnforcingKey(7)), { ifindex: 7, port: 0, enforcing: true });
  assert.equal(encodeEnforcingKey(7).readUInt16LE(6), 1, 'scope NT_SCOPE_ENFORCING at offsetof(struct nt_port_key, scope)');
  assert.equal(
    encodeIngressRule(3, IngressActionCode.Enforce, { replayLimit: 5 }).toString('hex'),
    '03000000' + '01000000' + '05000000' + '00000000',
  );
  assert.equal(
    encodeIngressRule(3, IngressActionCode.Enforce, { slot: 7, flags: IngressFlag.Exempt6 }).toString('hex'),
    '03000000' + '01000000' + '00000000' + '0700' + '0200',
  );
  assert.deepEqual(decodeIngressRule(withCounterSlot(encodeIngressRule(9, IngressActionCode.Monitor), 4)), {
    policyId: 9,
    action: IngressActionCode.Monitor,
    replayLimit: 0,
    slot: 4,
    flags: 0,
  });
  const k4 = encodeSrcKey(3, parseCidr('10.0.0.0/8'));
  assert.equal(k4.toString('hex'), '28000000' + '00000003' + '0a000000');
  assert.deepEqual(decodeSrcKey(encodeSrcKey(2, parseCidr('2001:db8::/32'))), {
    policyId: 2,
    prefixLen: 32,
    addr: parseCidr('2001:db8::/32').addr,
  });
  const clock = encodeClock(-37_000_000_000n, 1_700_000_000_123_456_789n);
  assert.equal(clock.length, CLOCK_SIZE);
  assert.deepEqual(decodeClock(clock), { taiOffsetNs: -37_000_000_000n, bootOffsetNs: 1_700_000_000_123_456_789n, valid: true });
});

test('the port index: the rule where one interface alone has rules for a port, nothing where several have', () => {
  const rule = (policyId: number, slot: number): Buffer => encodeIngressRule(policyId, IngressActionCode.Enforce, { slot });
  assert.equal(
    encodePortIndex(PortIndexState.One, 7, rule(3, 5)).toString('hex'),
    rule(3, 5).toString('hex') + '07000000' + '02000000',
    'rule, ifindex, state',
  );
  const entries = portIndexEntries([
    [encodePortKey(7, 443), rule(1, 2)],
    [encodePortKey(8, 443), rule(1, 3)],
    [encodePortKey(7, 22), rule(2, 4)],
    [encodeEnforcingKey(9), rule(2, 6)],
  ]);
  const at = (port: number): ReturnType<typeof decodePortIndex> | undefined => {
    const k = Buffer.alloc(4);
    k.writeUInt32LE(port);
    const e = entries.get(k.toString('hex'));
    return e && decodePortIndex(e[1]);
  };
  assert.equal(at(443), undefined, 'two interfaces protect 443: no entry (ask the hash)');
  assert.deepEqual(at(22), { state: PortIndexState.One, ifindex: 7, rule: rule(2, 4) });
  assert.equal(at(0)?.state, PortIndexState.None, 'no interface protects every port (the enforcing key is not a port)');
  assert.equal(entries.size, 2);
  const every = portIndexEntries([[encodePortKey(7, 0), rule(1, 2)]]);
  assert.equal([...every.values()].map(([, v]) => decodePortIndex(v).state).join(), String(PortIndexState.One));
});

test('counter, interface and config encodings put fields where the header says', () => {
  assert.equal(encodeCounterOwner(7, 3).toString('hex'), '07000000' + '03000000' + '00000000');
  assert.equal(encodeCounterOwner(7, 3, true).toString('hex'), '07000000' + '03000000' + '01000000');
  assert.deepEqual(decodeCounterOwner(encodeCounterOwner(7, 0)), { ifindex: 7, policyId: 0, carried: false });
  assert.equal(encodeIface(0x1234).toString('hex'), '3412' + '0000' + '00000000');
  assert.deepEqual(decodeIface(encodeIface(5)), { slot: 5 });
  assert.equal(encodeConfig({ egressGeneration: 2, carriedLayout: 1 }).toString('hex'), '02000000' + '01000000');
  assert.deepEqual(decodeConfig(encodeConfig({ egressGeneration: 0xffffffff, carriedLayout: 0 })), {
    egressGeneration: 0xffffffff,
    carriedLayout: 0,
  });
  // Two CPUs' struct nt_counters, summed cell by cell.
  const v = Buffer.alloc(2 * COUNTERS_SIZE);
  v.writeBigUInt64LE(3n, 0);
  v.writeBigUInt64LE(4n, COUNTERS_SIZE);
  v.writeBigUInt64LE(5n, COUNTERS_SIZE + 8 * 25);
  const sums = sumCounterCells(v);
  assert.equal(sums.length, NT_COUNTER_CELLS);
  assert.equal(sums[0], 7n);
  assert.equal(sums[25], 5n);
  assert.equal(sums[1], 0n);
});
