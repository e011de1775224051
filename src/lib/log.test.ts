import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const logModule = fileURLToPath(new URL('./log.js', import.meta.url));

/** Runs `body` in a child with `log` (a JSON logger at info) and returns its stderr lines, parsed. */
function childLines(body: string): { lines: Record<string, unknown>[]; status: number | null } {
  const script = `import { createLogger } from ${JSON.stringify(logModule)};
const log = createLogger({ level: 'info', format: 'json' });
${body}`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  const lines = r.stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { lines, status: r.status };
}

test('a burst of log lines arrives whole and in order, below the level dropped', () => {
  const { lines } = childLines(
    `for (let i = 0; i < 2000; i++) { log.info('status changed', { policy: 'p-' + i }); log.debug('not shown'); }`,
  );
  assert.equal(lines.length, 2000);
  assert.deepEqual(
    lines.map((l) => l.policy),
    Array.from({ length: 2000 }, (_, i) => `p-${i}`),
  );
  assert.ok(lines.every((l) => l.level === 'info' && l.message === 'status changed' && typeof l.timestamp === 'string'));
});

test('lines logged just before the process exits, or dies of an uncaught error, are not lost', () => {
  const exit = childLines(`log.info('before exit'); process.exit(7);`);
  assert.equal(exit.status, 7);
  assert.deepEqual(
    exit.lines.map((l) => l.message),
    ['before exit'],
  );
  const fatal = childLines(`log.error('before the throw'); throw new Error('fatal');`);
  assert.equal(fatal.status, 1);
  assert.deepEqual(
    fatal.lines.map((l) => l.message),
    ['before the throw'],
  );
});
