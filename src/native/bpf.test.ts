import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MapType, isPerCpuMapType, perCpuSlotSize, perCpuSlots, perCpuValue, sumPerCpuU64, tcxAttachType } from './bpf.js';

test('per-CPU slots are the value size rounded up to 8 bytes', () => {
  assert.equal(perCpuSlotSize(4), 8);
  assert.equal(perCpuSlotSize(8), 8);
  assert.equal(perCpuSlotSize(12), 16);
});

test('perCpuValue and perCpuSlots round-trip', () => {
  const slots = [Buffer.from([1, 2, 3, 4]), Buffer.from([5, 6, 7, 8])];
  const value = perCpuValue(slots, 4);
  assert.deepEqual(value, Buffer.from([1, 2, 3, 4, 0, 0, 0, 0, 5, 6, 7, 8, 0, 0, 0, 0]));
  assert.deepEqual(perCpuSlots(value, 4), slots);
  assert.throws(() => perCpuSlots(Buffer.alloc(12), 4), RangeError);
  assert.throws(() => perCpuValue([Buffer.alloc(3)], 4), RangeError);
});

test('sumPerCpuU64 adds one counter across CPUs', () => {
  const value = Buffer.alloc(3 * 16);
  value.writeBigUInt64LE(1n, 0);
  value.writeBigUInt64LE(2n, 16);
  value.writeBigUInt64LE(3n, 32);
  value.writeBigUInt64LE(100n, 8 + 16);
  assert.equal(sumPerCpuU64(value, 16), 6n);
  assert.equal(sumPerCpuU64(value, 16, 8), 100n);
});

test('map and attach type helpers', () => {
  assert.equal(isPerCpuMapType(MapType.PERCPU_HASH), true);
  assert.equal(isPerCpuMapType(MapType.LRU_PERCPU_HASH), true);
  assert.equal(isPerCpuMapType(MapType.HASH), false);
  assert.equal(tcxAttachType('ingress'), 46);
  assert.equal(tcxAttachType('egress'), 47);
});
