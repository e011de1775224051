/**
 * The port index's upkeep (map-sync.ts, syncPortIndex) on a real BPF array of the verifier's
 * nt_port_index shape: after each apply the map says what the port rules say, while the rules
 * change every changed entry sends the programs to the rules, and no single write changes an
 * entry's state together with its rule (what a program reading during the write could pair).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  IngressActionCode,
  NT_MAX_PORT_INDEX,
  PORT_INDEX_SIZE,
  PortIndexState,
  decodePortIndex,
  encodeIngressRule,
  encodePortKey,
  portIndexEntries,
} from '../lib/abi.js';
import { binding, type NativeMap } from '../native/binding.js';
import { type Entries, readPortIndex, syncPortIndex } from './map-sync.js';
import { wholePortIndex } from '../../test/lib/port-index.js';

const BPF_MAP_TYPE_ARRAY = 2;
/** Where struct nt_port_index keeps its state (abi.h): the rule, then the ifindex, then the state. */
const STATE_OFF = 20;

/** A real array map, every write of which is checked against the one-kind-of-change rule and recorded. */
function recordingIndex(): { map: NativeMap; writes: { port: number; before: Buffer; after: Buffer }[] } {
  const real = binding().createMap({
    type: BPF_MAP_TYPE_ARRAY,
    keySize: 4,
    valueSize: PORT_INDEX_SIZE,
    maxEntries: NT_MAX_PORT_INDEX,
    name: 'nt_test_index',
  });
  const writes: { port: number; before: Buffer; after: Buffer }[] = [];
  // What syncPortIndex and wholePortIndex use of a map, passed through to the real one.
  const map = {
    update: (key: Buffer, value: Buffer): void => {
      const before = real.lookup(key) ?? Buffer.alloc(PORT_INDEX_SIZE);
      writes.push({ port: key.readUInt32LE(0), before, after: Buffer.from(value) });
      real.update(key, value);
    },
    lookup: (key: Buffer): Buffer | null => real.lookup(key),
    close: (): void => real.close(),
  } as unknown as NativeMap;
  return { map, writes };
}

const rule = (policyId: number, action: IngressActionCode, slot: number): Buffer => encodeIngressRule(policyId, action, { slot });

test('the port index follows the port rules, and no write changes a state together with a rule', () => {
  const { map, writes } = recordingIndex();
  const have: Entries = new Map();
  const steps: { what: string; ports: [Buffer, Buffer][] }[] = [
    { what: '443 on ifindex 7', ports: [[encodePortKey(7, 443), rule(1, IngressActionCode.Enforce, 2)]] },
    { what: 'the rule goes to Monitor', ports: [[encodePortKey(7, 443), rule(1, IngressActionCode.Monitor, 2)]] },
    {
      what: '443 on a second interface, 22 and every port on others',
      ports: [
        [encodePortKey(7, 443), rule(1, IngressActionCode.Monitor, 2)],
        [encodePortKey(8, 443), rule(1, IngressActionCode.Monitor, 3)],
        [encodePortKey(8, 22), rule(2, IngressActionCode.Enforce, 4)],
        [encodePortKey(9, 0), rule(3, IngressActionCode.Enforce, 5)],
      ],
    },
    { what: '22 moves to ifindex 9', ports: [[encodePortKey(9, 22), rule(2, IngressActionCode.Enforce, 6)]] },
    { what: 'no rules', ports: [] },
  ];
  try {
    for (const step of steps) {
      const want = portIndexEntries(step.ports);
      const changed = new Set(
        [...new Set([...have.keys(), ...want.keys()])].filter((hex) => {
          const a = have.get(hex)?.[1];
          const b = want.get(hex)?.[1];
          return !(a && b ? a.equals(b) : a === b);
        }),
      );
      writes.length = 0;
      syncPortIndex(map, have, want, 'before');
      // Between the phases the rules change: every entry about to change asks them.
      for (const hex of changed) {
        const v = map.lookup(Buffer.from(hex, 'hex'))!;
        assert.equal(decodePortIndex(v).state, PortIndexState.Hash, `${step.what}: port ${hex} asks the rules while they change`);
      }
      syncPortIndex(map, have, want, 'after');
      assert.deepEqual(
        [...wholePortIndex(map)].map(([hex, [, v]]) => [hex, v.toString('hex')]).sort(),
        [...want].map(([hex, [, v]]) => [hex, v.toString('hex')]).sort(),
        `${step.what}: the map holds what the rules say`,
      );
      assert.ok(changed.size === 0 || writes.length > 0, `${step.what}: written`);
      for (const w of writes) {
        const stateOnly = w.before.subarray(0, STATE_OFF).equals(w.after.subarray(0, STATE_OFF));
        const ruleOnly =
          w.before.subarray(STATE_OFF).equals(w.after.subarray(STATE_OFF)) &&
          decodePortIndex(w.after).state === PortIndexState.Hash;
        assert.ok(
          stateOnly || ruleOnly,
          `${step.what}: port ${w.port}: ${w.before.toString('hex')} -> ${w.after.toString('hex')} changes the state with the rule`,
        );
      }
    }
    // Nothing to change: nothing written.
    writes.length = 0;
    syncPortIndex(map, have, new Map(), 'before');
    syncPortIndex(map, have, new Map(), 'after');
    assert.equal(writes.length, 0);
  } finally {
    map.close();
  }
});

test('a start clears index entries the rules no longer name (left by an older agent), in writes of one kind', () => {
  const { map, writes } = recordingIndex();
  try {
    // What the index held before an agent that predates it ran over the pins: 443 and 8443 each on one interface.
    const before: Entries = new Map();
    const old = portIndexEntries([
      [encodePortKey(7, 443), rule(1, IngressActionCode.Enforce, 2)],
      [encodePortKey(7, 8443), rule(2, IngressActionCode.Monitor, 3)],
    ]);
    syncPortIndex(map, before, old, 'before');
    syncPortIndex(map, before, old, 'after');
    // That agent then removed 8443's rule (without the index): the rules name 443 alone.
    const ports: Entries = new Map([
      [encodePortKey(7, 443).toString('hex'), [encodePortKey(7, 443), rule(1, IngressActionCode.Enforce, 2)]],
    ]);
    writes.length = 0;
    const held = readPortIndex(map, ports);
    const portsOf = (e: Entries): number[] =>
      [...e.keys()].map((hex) => Buffer.from(hex, 'hex').readUInt32LE(0)).sort((a, b) => a - b);
    assert.ok(!portsOf(wholePortIndex(map)).includes(8443), "8443's stale entry is gone: a SYN to it asks the rules");
    assert.ok(portsOf(held).includes(443), 'the entry of a port the rules name is kept and read back');
    assert.deepEqual(portsOf(held), portsOf(wholePortIndex(map)), 'what is read back is what the index holds');
    assert.deepEqual(
      writes.map((w) => [w.port, decodePortIndex(w.after).state]),
      [
        [8443, PortIndexState.Hash],
        [8443, PortIndexState.Hash],
      ],
      'the state first, then the rest',
    );
    assert.ok(
      writes[0]!.before.subarray(0, STATE_OFF).equals(writes[0]!.after.subarray(0, STATE_OFF)),
      'the first write changes the state alone',
    );
  } finally {
    map.close();
  }
});
