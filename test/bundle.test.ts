/**
 * What the shipped bundle (dist/bundle/, made by scripts/build.sh) makes every process load.
 * Each module a process loads stays in its heap as source and compiled code for its whole life,
 * so the agent's and the operator's memory depends on what the entry point imports at start.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bundleDir = path.join(root, 'dist/bundle');

/** The bundle's files that loading `file` loads at once: its static imports, transitively. */
function loadedAtStart(file: string, seen = new Set<string>()): Set<string> {
  if (seen.has(file)) return seen;
  seen.add(file);
  const text = readFileSync(path.join(bundleDir, file), 'utf8');
  for (const m of text.matchAll(/(?:^|[;}\s])(?:import|export)\s*(?:[\w${},*\s]*?from\s*)?"\.\/([\w.-]+\.js)"/g))
    loadedAtStart(m[1] as string, seen);
  return seen;
}

function text(files: Iterable<string>): string {
  return [...files].map((f) => readFileSync(path.join(bundleDir, f), 'utf8')).join('\n');
}

/** Every JavaScript file of the bundle. */
function bundleFiles(): string[] {
  return readdirSync(bundleDir).filter((f) => f.endsWith('.js'));
}

/** Fails naming the first file of the bundle that matches `pattern`. */
function assertNoFileHolds(pattern: RegExp, what: string): void {
  for (const f of bundleFiles()) assert.ok(!pattern.test(text([f])), `${f} holds ${what}`);
}

describe('the bundle', () => {
  test('exists: scripts/build.sh made it', () => {
    assert.ok(existsSync(path.join(bundleDir, 'netoken.js')), 'dist/bundle/netoken.js is missing: run `npm run build`');
  });

  test('holds no Unicode mapping table for URLs: the HTTP client uses Node’s own URL', () => {
    assertNoFileHolds(/tr46|mappingTable|url-state-machine/, 'the whatwg-url package or tr46');
  });

  test('holds no colour library: winston traces itself through a tracer that prints nothing', () => {
    assertNoFileHolds(/colorspace|color-convert|kuler/, '@dabh/diagnostics or its colour library');
  });

  test('the YAML parser is loaded only by the commands that read YAML, not at start', () => {
    const start = loadedAtStart('netoken.js');
    assert.ok(start.size > 1, `the entry point imports its chunks (found ${[...start].join(', ')})`);
    assert.ok(!/\bYAMLParseError\b/.test(text(start)), `a file loaded at start holds the YAML parser: ${[...start].join(', ')}`);
    assert.ok(/\bYAMLParseError\b/.test(text(bundleFiles())), 'the bundle still holds the YAML parser, for the standalone agent');
  });
});
