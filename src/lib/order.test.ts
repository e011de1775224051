import assert from 'node:assert/strict';
import { test } from 'node:test';
import { by, compareText } from './order.js';

test('names sort in code-unit order, the same on every host', () => {
  const names = ['web-b', 'web', 'Web', 'web-a', 'web.a', 'web10', 'web2', 'wéb'];
  assert.deepEqual([...names].sort(compareText), ['Web', 'web', 'web-a', 'web-b', 'web.a', 'web10', 'web2', 'wéb']);
  assert.equal(compareText('a', 'a'), 0);
  assert.deepEqual(
    [{ name: 'b' }, { name: 'a-1' }, { name: 'a' }].sort(by((x) => x.name)).map((x) => x.name),
    ['a', 'a-1', 'b'],
  );
});
