// @ts-check
/**
 * ESLint rule `no-import-cycle`: no module of the project may import, directly or through
 * others, a module that imports it back. Type-only imports count: a cycle that is only types
 * at one step costs nothing at run time but still ties the two modules into one, which is
 * what the rule is for (import/no-cycle of eslint-plugin-import and import-x skips them).
 *
 * The graph comes from TypeScript's own import scanner (ts.preProcessFile) over the files on
 * disk; only relative specifiers are followed, and './x.js' names './x.ts' as NodeNext
 * resolution has it. Each import that starts a way back to the file is reported with the
 * shortest such cycle.
 */
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

/** file -> its project imports, kept while the file's mtime stays the same */
const graph = new Map();

function isFile(p) {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** The project file a specifier names, or null (packages, node: modules, missing files). */
function resolve(from, specifier) {
  if (!specifier.startsWith('.')) return null;
  const base = path.resolve(path.dirname(from), specifier);
  if (base.endsWith('.js') && isFile(`${base.slice(0, -3)}.ts`)) return `${base.slice(0, -3)}.ts`;
  return isFile(base) ? base : null;
}

/** @returns {string[]} */
function importsOf(file) {
  const mtimeMs = statSync(file).mtimeMs;
  const known = graph.get(file);
  if (known && known.mtimeMs === mtimeMs) return known.deps;
  const found = ts.preProcessFile(readFileSync(file, 'utf8'), true, true).importedFiles;
  const deps = [...new Set(found.map((f) => resolve(file, f.fileName)).filter((d) => d !== null))];
  graph.set(file, { mtimeMs, deps });
  return deps;
}

/** The shortest import path from `start` to `target` ([start, …, target]), or null. */
function pathTo(start, target) {
  const prev = new Map([[start, '']]);
  const queue = [start];
  for (let i = 0; i < queue.length; i++) {
    const at = queue[i];
    if (at === target) {
      const out = [];
      for (let p = at; p !== ''; p = prev.get(p)) out.unshift(p);
      return out;
    }
    for (const next of importsOf(at)) {
      if (!prev.has(next)) {
        prev.set(next, at);
        queue.push(next);
      }
    }
  }
  return null;
}

/** @type {import('eslint').Rule.RuleModule} */
const noImportCycle = {
  meta: {
    type: 'problem',
    docs: { description: 'forbid import cycles between project modules, type-only imports included' },
    schema: [],
    messages: { cycle: 'import cycle: {{cycle}}' },
  },
  create(context) {
    const file = context.physicalFilename;
    const check = (source) => {
      if (!source || source.type !== 'Literal' || typeof source.value !== 'string') return;
      const target = resolve(file, source.value);
      const back = target && pathTo(target, file);
      if (!back) return;
      const cycle = [file, ...back].map((f) => path.relative(context.cwd, f)).join(' -> ');
      context.report({ node: source, messageId: 'cycle', data: { cycle } });
    };
    return {
      ImportDeclaration: (node) => check(node.source),
      ExportNamedDeclaration: (node) => check(node.source),
      ExportAllDeclaration: (node) => check(node.source),
      ImportExpression: (node) => check(node.source),
    };
  },
};

export default { rules: { 'no-import-cycle': noImportCycle } };
