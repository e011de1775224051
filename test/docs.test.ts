/**
 * The docs match the tree: the README's Layout table names every folder at the top of the
 * repository and under src/ (and none that is gone), and every relative link in README.md
 * and docs/ leads to a file that exists, and to a heading that exists where it names one; every
 * repository path the Architecture section names exists.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { PACKAGE_ROOT } from '../src/lib/package.js';

const readme = readFileSync(path.join(PACKAGE_ROOT, 'README.md'), 'utf8');

/** The folders git tracks files in, at the top and under src/, as "name/" and "src/name/". */
function trackedFolders(): string[] {
  const files = execFileSync('git', ['ls-files'], { cwd: PACKAGE_ROOT, encoding: 'utf8' })
    .split('\n')
    .filter((f) => f !== '');
  assert.ok(files.length > 0, 'git ls-files lists the checkout');
  const out = new Set<string>();
  for (const f of files) {
    const parts = f.split('/');
    if (parts.length < 2 || !existsSync(path.join(PACKAGE_ROOT, f))) continue;
    if (parts[0] === 'src' && parts.length > 2) out.add(`src/${parts[1]}/`);
    else if (parts[0] !== 'src') out.add(`${parts[0]}/`);
  }
  out.add('src/');
  return [...out].sort();
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens. */
const slug = (heading: string): string =>
  heading
    .trim()
    .toLowerCase()
    .replace(/`/g, '')
    .replace(/[^\p{L}\p{N} _-]/gu, '')
    .replace(/ /g, '-');

test("the README's Layout table lists every top-level folder and every src/ folder", () => {
  const section = /^## Layout\n([\s\S]*?)^## /m.exec(readme)?.[1];
  assert.ok(section, 'the README has a Layout section');
  const listed = [...section.matchAll(/^\| `([^`]+\/)` \|/gm)].map((m) => m[1] as string);
  const want = trackedFolders();
  // src/ itself is described by its subfolders, charts/ by its one chart (charts/netoken/).
  assert.deepEqual(
    want.filter((f) => f !== 'src/' && !listed.some((l) => l.startsWith(f))),
    [],
    'folders missing from the Layout table',
  );
  const gone = listed.filter((f) => !existsSync(path.join(PACKAGE_ROOT, f)));
  assert.deepEqual(gone, [], 'the Layout table lists folders that do not exist');
});

test('relative links in README.md and docs/ lead to files and headings that exist', () => {
  const docs = [
    'README.md',
    ...readdirSync(path.join(PACKAGE_ROOT, 'docs'))
      .filter((f) => f.endsWith('.md'))
      .map((f) => `docs/${f}`),
  ];
  const broken: string[] = [];
  let links = 0;
  for (const doc of docs) {
    const text = readFileSync(path.join(PACKAGE_ROOT, doc), 'utf8');
    for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      const target = m[1] as string;
      if (/^[a-z]+:/.test(target)) continue; // https:, mailto:
      links++;
      const [file, anchor] = target.split('#') as [string, string | undefined];
      const resolved = file === '' ? path.join(PACKAGE_ROOT, doc) : path.resolve(PACKAGE_ROOT, path.dirname(doc), file);
      if (!existsSync(resolved)) {
        broken.push(`${doc}: ${target} (no such file)`);
        continue;
      }
      if (anchor !== undefined) {
        const headings = [...readFileSync(resolved, 'utf8').matchAll(/^#+ (.+)$/gm)].map((h) => slug(h[1] as string));
        if (!headings.includes(anchor)) broken.push(`${doc}: ${target} (no heading #${anchor})`);
      }
    }
  }
  assert.ok(links >= 10, `found ${links} relative links; the pattern must have missed some`);
  assert.deepEqual(broken, []);
});

test("every repository path the README's Architecture section names exists", () => {
  const section = /^## Architecture\n([\s\S]*?)^## /m.exec(readme)?.[1];
  assert.ok(section, 'the README has an Architecture section');
  // A backticked path: folders and a name (`src/agent/datapath.ts`, `native/`), or a bare file name
  // (which must then be at the top of the repository: name paths in full).
  const paths = [...section.matchAll(/`([^`\s]+)`/g)]
    .map((m) => m[1] as string)
    .filter((p) => /^[\w.-]+(\/[\w.-]+)*\/?$/.test(p) && (p.includes('/') || /\.(ts|js|h|c|yaml|json|md|sh)$/.test(p)));
  assert.ok(paths.length >= 20, `found ${paths.length} paths; the pattern must have missed some`);
  const missing = paths.filter((p) => !existsSync(path.join(PACKAGE_ROOT, p)));
  assert.deepEqual(missing, [], 'paths the Architecture section names that do not exist');
});
