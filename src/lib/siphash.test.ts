import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BindBit } from './abi.js';
import { BIND_ALL, epochAt, keyedMessage, keyedToken, sipHash24, sipHash24Bytes } from './siphash.js';
import { SIPHASH24_VECTORS, VECTOR_KEY, vectorMessage } from '../../test/packet/siphash-vectors.js';

test('sipHash24 reproduces all 64 reference vectors', () => {
  SIPHASH24_VECTORS.forEach((want, n) => {
    assert.equal(sipHash24Bytes(VECTOR_KEY, vectorMessage(n)).toString('hex'), want, `message of ${n} bytes`);
  });
  // The paper's worked example (15 bytes): 0xa129ca6149be45e5.
  assert.equal(sipHash24(VECTOR_KEY, vectorMessage(15)), 0xa129ca6149be45e5n);
});

test('keyedMessage lays the bound fields out as abi.h documents', () => {
  const flow = { src: '192.0.2.10', dst: '203.0.113.7', sport: 40000, dport: 443, seq: 0x01020304 };
  const m = keyedMessage(flow, BIND_ALL, 0x1122334455667788n);
  assert.equal(m.length, 48);
  assert.equal(
    m.toString('hex'),
    '00000000000000000000ffffc000020a' + '00000000000000000000ffffcb007107' + '9c40' + '01bb' + '01020304' + '1122334455667788',
  );
  const v6 = keyedMessage({ ...flow, src: '2001:db8::1', dst: '2001:db8::2' }, BindBit.SourceAddress | BindBit.Sequence, 1);
  assert.equal(
    v6.toString('hex'),
    '20010db8000000000000000000000001' + '00'.repeat(16) + '0000' + '0000' + '01020304' + '0000000000000001',
  );
  assert.equal(keyedMessage(flow, 0, 0).equals(Buffer.alloc(48)), true, 'nothing bound, epoch 0: all zero');
});

test('keyed tokens change with every bound field, the key and the epoch, and not with unbound fields', () => {
  const key = Buffer.alloc(16, 0x42);
  const flow = { src: '192.0.2.10', dst: '203.0.113.7', sport: 40000, dport: 443, seq: 7 };
  const base = keyedToken(key, flow, BIND_ALL, 100).toString('hex');
  for (const changed of [{ src: '192.0.2.11' }, { dst: '203.0.113.8' }, { sport: 40001 }, { dport: 444 }, { seq: 8 }]) {
    assert.notEqual(keyedToken(key, { ...flow, ...changed }, BIND_ALL, 100).toString('hex'), base, JSON.stringify(changed));
  }
  assert.notEqual(keyedToken(key, flow, BIND_ALL, 101).toString('hex'), base, 'epoch');
  assert.notEqual(keyedToken(Buffer.alloc(16, 0x43), flow, BIND_ALL, 100).toString('hex'), base, 'key');
  const noPorts = BIND_ALL & ~(BindBit.SourcePort | BindBit.Sequence);
  assert.equal(
    keyedToken(key, { ...flow, sport: 1, seq: 99 }, noPorts, 100).toString('hex'),
    keyedToken(key, flow, noPorts, 100).toString('hex'),
    'a NAT that rewrites the source port and sequence number does not change a token not bound to them',
  );
});

test('epochAt divides unix seconds by the epoch length', () => {
  assert.equal(epochAt(0, 60), 0n);
  assert.equal(epochAt(59_999, 60), 0n);
  assert.equal(epochAt(60_000, 60), 1n);
  assert.equal(epochAt(1_700_000_000_123, 30), 56_666_666n);
  assert.throws(() => epochAt(1, 0), /positive integer/);
});
