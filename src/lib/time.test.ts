import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isoSeconds, isoTime } from './time.js';

test('isoTime writes what toISOString writes, isoSeconds the same to the second', () => {
  const samples = [
    0,
    1,
    999,
    1000,
    951782400000 /* 2000-02-29 */,
    4102444799999,
    Date.UTC(2026, 11, 5, 4, 5, 6, 7),
    -62135596800000,
  ];
  for (let i = 0; i < 2000; i++) samples.push(Math.floor(Math.random() * 253402300799999));
  for (const ms of samples) {
    const d = new Date(ms);
    assert.equal(isoTime(d), d.toISOString(), `at ${ms}`);
    assert.equal(isoTime(ms), d.toISOString(), `at ${ms} (a number)`);
    assert.equal(isoSeconds(d), d.toISOString().replace(/\.\d{3}Z$/, 'Z'), `at ${ms}, to the second`);
  }
  assert.equal(isoTime(Date.UTC(12345, 0, 1)), new Date(Date.UTC(12345, 0, 1)).toISOString(), 'past 9999: six digits');
  assert.throws(() => isoTime(new Date(Number.NaN)), RangeError, 'an invalid date throws, as toISOString does');
});
