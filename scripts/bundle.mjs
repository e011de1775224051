// The bundle that ships (package.json "files", the image): src/cli/main.ts and what it imports,
// node_modules included, into dist/bundle/ (ES modules; what only some commands need, such as
// the Kubernetes client, in chunks loaded when they are). bin/netoken.js runs it, so the tests
// that start the CLI run what ships. The native addon and the BPF objects stay files beside it
// (build/), found from the package root (src/lib/package.ts).
//
// @kubernetes/client-node is bundled in the pieces netoken imports (src/lib/kube-client.ts):
// its modules are declared free of side effects, so that what nothing uses is left out, and
// ListWatch's one use of the model serializer (passing label and field selector strings
// through) gets an identity in its place, since that serializer loads every model of the API.
//
// node-fetch (client-node's HTTP layer) takes `URL` from Node's url module and falls back to the
// whatwg-url package only where Node has none; Node has had one since 10. That fallback brought
// tr46's Unicode mapping table (260 kB of source, 3 MB of heap in every process) along unused:
// the package is given Node's own URL instead.
//
// winston traces its own workings through @dabh/diagnostics, printed only when DEBUG names
// winston; loading it loads a colour library whose conversion tables every process then holds.
// netoken never turns that tracing on: winston gets a tracer that prints nothing.
import { rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const NODE_MODULES = `${path.sep}node_modules${path.sep}`;
const CLIENT_NODE = `${NODE_MODULES}@kubernetes${path.sep}client-node${path.sep}`;

/**
 * Modules that stand in for others (see the top): for the import `path` made by a file whose path
 * holds `from`, the module `name` with `contents`.
 */
const STAND_INS = [
  {
    name: 'selector-serializer',
    path: './serializer.js',
    from: `${CLIENT_NODE}dist${path.sep}cache.js`,
    contents: 'export class ObjectSerializer { static serialize(data) { return data; } }',
  },
  {
    name: 'whatwg-url',
    path: 'whatwg-url',
    from: `${NODE_MODULES}node-fetch${path.sep}`,
    contents: 'export const URL = globalThis.URL; export default { URL };',
  },
  {
    name: 'winston-diagnostics',
    path: '@dabh/diagnostics',
    from: `${NODE_MODULES}winston${path.sep}`,
    contents: 'module.exports = () => () => false;',
  },
];

/** @type {import('esbuild').Plugin} */
const clientNodePieces = {
  name: 'client-node-pieces',
  setup(b) {
    for (const { name, path: spec, from } of STAND_INS)
      b.onResolve({ filter: new RegExp(`^${spec.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`) }, (args) =>
        args.importer.includes(from) ? { path: name, namespace: 'netoken' } : undefined,
      );
    b.onLoad({ filter: /.*/, namespace: 'netoken' }, (args) => ({
      contents: STAND_INS.find((s) => s.name === args.path)?.contents,
      loader: 'js',
    }));
    b.onResolve({ filter: /.*/ }, async (args) => {
      if (
        args.pluginData === 'resolving' ||
        !(args.importer.includes(CLIENT_NODE) || args.path.startsWith('@kubernetes/client-node'))
      )
        return undefined;
      const r = await b.resolve(args.path, {
        kind: args.kind,
        importer: args.importer,
        resolveDir: args.resolveDir,
        pluginData: 'resolving',
      });
      if (r.errors.length > 0 || r.external || !r.path.includes(CLIENT_NODE))
        return r.errors.length > 0 ? { errors: r.errors } : r;
      return { path: r.path, sideEffects: false };
    });
  },
};
const outdir = path.join(root, 'dist/bundle');
rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: { netoken: path.join(root, 'src/cli/main.ts') },
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  splitting: true,
  outdir,
  chunkNames: 'chunk-[hash]',
  // CommonJS dependencies call require(): give the ES module bundle one.
  banner: {
    js: "import { createRequire as __netokenRequire } from 'node:module'; const require = __netokenRequire(import.meta.url);",
  },
  // ws tries these optional native speed-ups and does without them.
  external: ['bufferutil', 'utf-8-validate'],
  legalComments: 'none',
  // Every process holds its modules' source text in its heap, as two bytes per character where
  // a file has one character past Latin-1 (a comment's dash will do). Whitespace and comments
  // out, identifiers kept (stack traces name functions): 1.4 MB of source in one-byte strings
  // instead of 2.1 MB, most of it in two-byte ones.
  minifyWhitespace: true,
  minifySyntax: true,
  charset: 'ascii',
  logLevel: 'warning',
  plugins: [clientNodePieces],
});
