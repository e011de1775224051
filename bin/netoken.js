#!/usr/bin/env node
// Entry point of the `netoken` CLI. The code runs from dist/bundle/, the bundle scripts/build.sh
// makes (what the image and the npm package ship): run `npm run build` first.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const main = new URL('../dist/bundle/netoken.js', import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  console.error('netoken: dist/bundle/ is missing; run `npm run build` in the repository first');
  process.exit(2);
}
const { run } = await import(main.href);
process.exitCode = await run(process.argv.slice(2));
