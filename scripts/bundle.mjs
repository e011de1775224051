// The bundle that ships (package.json "files", the image): src/cli/main.ts and what it imports,
// node_modules included, into dist/bundle/ (ES modules; what only some commands need, such as
// the Kubernetes client, in chunks loaded when they are). bin/netoken.js runs it, so the tests
// that start the CLI run what ships. The native addon and the BPF objects stay files beside it
// (build/), found from the package root (src/lib/files.ts).
import { rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
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
  banner: { js: "import { createRequire as __netokenRequire } from 'node:module'; const require = __netokenRequire(import.meta.url);" },
  // ws tries these optional native speed-ups and does without them.
  external: ['bufferutil', 'utf-8-validate'],
  legalComments: 'none',
  logLevel: 'warning',
});
