/**
 * The lint rule against import cycles (scripts/eslint-no-import-cycle.js): it reports a cycle
 * of any length, type-only imports included, leaves an import graph without one alone, and the
 * project's eslint.config.js turns it on for every TypeScript folder.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ESLint } from 'eslint';
import tseslint from 'typescript-eslint';
import { repoRoot } from './k8s/cluster.js';

const { default: local } = (await import(path.join(repoRoot, 'scripts/eslint-no-import-cycle.js'))) as { default: ESLint.Plugin };

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Lint a throwaway project of `files` with only the cycle rule; the messages by file. */
async function lint(files: Record<string, string>): Promise<Record<string, string[]>> {
  const dir = mkdtempSync(path.join(tmpdir(), 'netoken-lint-'));
  dirs.push(dir);
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), text);
  }
  const eslint = new ESLint({
    cwd: dir,
    overrideConfigFile: true,
    overrideConfig: [
      {
        files: ['**/*.ts'],
        languageOptions: { parser: tseslint.parser },
        plugins: { local },
        rules: { 'local/no-import-cycle': 'error' },
      },
    ],
  });
  const out: Record<string, string[]> = {};
  for (const r of await eslint.lintFiles(['.'])) out[path.relative(dir, r.filePath)] = r.messages.map((m) => m.message);
  return out;
}

test('a cycle through a type-only import is reported on both sides', async () => {
  const out = await lint({
    'a.ts': "import type { B } from './b.js';\nexport const a = (b: B): number => b.n;\n",
    'b.ts': "import { a } from './a.js';\nexport interface B { n: number }\nexport const twice = (b: B): number => 2 * a(b);\n",
  });
  assert.deepEqual(out, { 'a.ts': ['import cycle: a.ts -> b.ts -> a.ts'], 'b.ts': ['import cycle: b.ts -> a.ts -> b.ts'] });
});

test('a longer cycle across folders, through re-exports and dynamic import, is reported with its path', async () => {
  const out = await lint({
    'lib/a.ts': "export * from '../mid/b.js';\n",
    'mid/b.ts': "export const b = async (): Promise<unknown> => import('../top/c.js');\n",
    'top/c.ts': "import { b } from '../lib/a.js';\nexport const c = b;\n",
  });
  assert.deepEqual(out['lib/a.ts'], ['import cycle: lib/a.ts -> mid/b.ts -> top/c.ts -> lib/a.ts']);
  assert.deepEqual(out['top/c.ts'], ['import cycle: top/c.ts -> lib/a.ts -> mid/b.ts -> top/c.ts']);
});

test('shared imports without a way back are not cycles; packages and node: modules are not followed', async () => {
  const out = await lint({
    'a.ts':
      "import { c } from './c.js';\nimport { b } from './b.js';\nimport path from 'node:path';\nexport const a = path.join(b, c);\n",
    'b.ts': "import { c } from './c.js';\nexport const b = c;\n",
    'c.ts': "import type { ESLint } from 'eslint';\nexport const c = 'c';\nexport type P = ESLint.Plugin;\n",
  });
  assert.deepEqual(out, { 'a.ts': [], 'b.ts': [], 'c.ts': [] });
});

test("the project's eslint.config.js applies the rule as an error to every TypeScript folder", async () => {
  const eslint = new ESLint({ cwd: repoRoot });
  for (const f of ['src/cli/main.ts', 'fuzz/driver.ts', 'test/lib/native.ts', 'bench/run.ts']) {
    const config = (await eslint.calculateConfigForFile(path.join(repoRoot, f))) as { rules: Record<string, unknown[]> };
    assert.deepEqual(config.rules['local/no-import-cycle'], [2], f);
  }
});

test('shipped code in src/ may not import test, fuzz or bench code; its unit tests may', async () => {
  const eslint = new ESLint({ cwd: repoRoot });
  const lintAs = async (file: string, text: string): Promise<string[]> =>
    (await eslint.lintText(text, { filePath: path.join(repoRoot, file) })).flatMap((r) =>
      r.messages.map((m) => `${m.ruleId}: ${m.message}`),
    );
  const imports =
    "import { fixture } from '../../test/lib/native.js';\nimport { Rng } from '../../fuzz/rng.js';\nimport { ROOT } from '../../bench/report.js';\nexport const x = [fixture, Rng, ROOT];\n";
  const shipped = await lintAs('src/lib/x.ts', imports);
  assert.equal(shipped.filter((m) => m.startsWith('no-restricted-imports:')).length, 3, shipped.join('\n'));
  assert.deepEqual(await lintAs('src/lib/x.test.ts', imports), []);
});
