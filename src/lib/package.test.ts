import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { PACKAGE_ROOT, VERSION, bpfObjectPath } from './package.js';

const THIS_MODULE = fileURLToPath(new URL('./package.js', import.meta.url));

test("from dist/, the package root is the checkout and the version is its package.json's", () => {
  const pkg = JSON.parse(readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { name: string; version: string };
  assert.equal(pkg.name, 'netoken');
  assert.equal(VERSION, pkg.version);
  assert.equal(path.relative(PACKAGE_ROOT, THIS_MODULE), path.join('dist', 'src', 'lib', 'package.js'));
  for (const name of ['marker', 'verifier'] as const) {
    assert.equal(bpfObjectPath(name), path.join(PACKAGE_ROOT, 'build', 'bpf', `${name}.bpf.o`));
    assert.ok(existsSync(bpfObjectPath(name)), `${bpfObjectPath(name)} is built`);
  }
});

test('moved anywhere inside the package (as a bundle would be), it still finds the package and skips other package.json files', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'nttest-package-'));
  try {
    writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'netoken', version: '9.8.7-test' }));
    // A package.json that is not netoken's between the module and the root (node_modules, a workspace): passed over.
    mkdirSync(path.join(dir, 'out/deep'), { recursive: true });
    writeFileSync(path.join(dir, 'out/package.json'), JSON.stringify({ type: 'module' }));
    const moved = path.join(dir, 'out/deep/bundle.js');
    copyFileSync(THIS_MODULE, moved);
    const m = (await import(pathToFileURL(moved).href)) as typeof import('./package.js');
    assert.equal(m.PACKAGE_ROOT, dir);
    assert.equal(m.VERSION, '9.8.7-test');
    assert.equal(m.bpfObjectPath('verifier'), path.join(dir, 'build/bpf/verifier.bpf.o'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('outside any netoken package it fails, saying what it looked for', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'nttest-package-'));
  try {
    writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'something-else', type: 'module' }));
    const moved = path.join(dir, 'package.js');
    copyFileSync(THIS_MODULE, moved);
    await assert.rejects(
      import(pathToFileURL(moved).href),
      (err: Error) => err.message === `cannot find netoken's package.json above ${dir}`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
