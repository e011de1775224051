/**
 * The C SipHash-2-4 (bpf/lib/siphash.h) and the keyed-token path built on it
 * (bpf/lib/keyed.h), run in the kernel through bpf/test/siphash.bpf.c with
 * BPF_PROG_TEST_RUN: against the reference vectors and against src/lib/siphash.ts.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { binding, type NativeObject, type NativeProgram } from '../../src/native/binding.js';
import { sipHash24Bytes } from '../../src/lib/siphash.js';
import { SIPHASH24_VECTORS, VECTOR_KEY, vectorMessage } from './siphash-vectors.js';
import { XdpAction } from '../../src/native/bpf.js';
import { fixture } from '../lib/native.js';

const OBJ = fixture('siphash');

let pinDir = '';
let obj: NativeObject;
let sip: NativeProgram;
let keyed: NativeProgram;

before(() => {
  const b = binding();
  if (!b.isBpffs('/sys/fs/bpf')) b.mountBpffs('/sys/fs/bpf');
  pinDir = `/sys/fs/bpf/netoken-test-${process.pid}-${randomBytes(3).toString('hex')}`;
  mkdirSync(pinDir, { mode: 0o700 });
  obj = b.openObject(OBJ, { pinRoot: pinDir });
  sip = obj.program('nt_test_siphash');
  keyed = obj.program('nt_test_keyed');
});

after(() => {
  sip?.close();
  keyed?.close();
  obj?.close();
  if (pinDir) rmSync(pinDir, { recursive: true, force: true });
});

/** SipHash-2-4 as the kernel computes it: 8 output bytes, wire order. */
function kernelSipHash(key: Buffer, msg: Buffer): Buffer {
  assert.ok(msg.length <= 63, 'the C function takes at most 63 bytes');
  const frame = Buffer.alloc(16 + 8 + 64);
  key.copy(frame, 0);
  frame[16] = msg.length;
  msg.copy(frame, 24);
  // Bytes past the message are not zero: the C side must ignore them.
  randomBytes(64 - msg.length).copy(frame, 24 + msg.length);
  const r = sip.testRun({ data: frame });
  assert.equal(r.retval, XdpAction.PASS, `nt_test_siphash returned ${r.retval}`);
  return r.data.subarray(0, 8);
}

test('the BPF SipHash-2-4 reproduces all 64 reference vectors', () => {
  SIPHASH24_VECTORS.forEach((want, n) => {
    assert.equal(kernelSipHash(VECTOR_KEY, vectorMessage(n)).toString('hex'), want, `message of ${n} bytes`);
  });
});

test('the BPF SipHash-2-4 agrees with the TypeScript one on 500 random keys and messages', () => {
  for (let i = 0; i < 500; i++) {
    const key = randomBytes(16);
    const msg = randomBytes(randomInt(0, 64));
    const got = kernelSipHash(key, msg).toString('hex');
    const want = sipHash24Bytes(key, msg).toString('hex');
    assert.equal(got, want, `key ${key.toString('hex')} message ${msg.toString('hex')}`);
  }
});

test('the keyed path (flow bytes hashed once, the epoch block per epoch) equals SipHash of the whole 48-byte message', () => {
  for (let i = 0; i < 300; i++) {
    const key = randomBytes(16);
    const msg = randomBytes(48);
    const r = keyed.testRun({ data: Buffer.concat([key, msg]) });
    assert.equal(r.retval, XdpAction.PASS);
    assert.equal(
      r.data.subarray(0, 8).toString('hex'),
      sipHash24Bytes(key, msg).toString('hex'),
      `key ${key.toString('hex')} message ${msg.toString('hex')}`,
    );
  }
});
