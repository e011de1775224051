/**
 * The build works from a clean checkout, the way the container image builds it: the files git
 * would commit (nothing it ignores: no node_modules, build/ or dist/) are copied to a fresh
 * directory, scripts/install-deps.sh and scripts/build.sh run there, and the outputs exist.
 * Then the build stage's remaining RUN lines (npm prune --omit=dev, npm pack) run as in the
 * Dockerfile, the image's runtime stage is assembled from its own COPY lines, and the CLI and
 * the native addon start from it. What ships, in the image and in the npm package, holds no
 * test-only file: no unit test, fuzzer, test helper, benchmark or test BPF object.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { repoRoot } from './k8s/cluster.js';
import { DAEMON_MALLOC_ARENA_MAX, DAEMON_NODE_OPTIONS } from '../src/lib/memory.js';

interface Result {
  code: number;
  out: string;
}

function run(
  cmd: string,
  args: string[],
  cwd: string,
  env: NodeJS.ProcessEnv = process.env,
  timeoutMs = 180_000,
): Promise<Result> {
  return new Promise((res) => {
    execFile(
      cmd,
      args,
      { cwd, env, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        res({ code, out: `${stdout}${stderr}` });
      },
    );
  });
}

/** The files of the working tree that git tracks or would track (not ignored, not deleted). */
function checkoutFiles(): string[] {
  const out = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
    cwd: repoRoot,
    encoding: 'utf8',
  });
  return [...new Set(out.split('\0').filter((f) => f !== ''))].filter(
    (f) => existsSync(join(repoRoot, f)) && !lstatSync(join(repoRoot, f)).isDirectory(),
  );
}

/** Dockerfile instructions, continuation lines joined, comments dropped, grouped by stage name. */
function dockerfileStages(text: string): Map<string, string[]> {
  const stages = new Map<string, string[]>();
  let current: string[] = [];
  const logical = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  for (const line of logical) {
    const from = /^FROM\s+\S+(?:\s+AS\s+(\S+))?/i.exec(line);
    if (from) {
      current = [];
      stages.set(from[1] ?? `stage${stages.size}`, current);
      continue;
    }
    current.push(line.replace(/\s+/g, ' '));
  }
  return stages;
}

/** Every file below `dir`, as paths relative to it, skipping the folders named in `skip`. */
function filesBelow(dir: string, skip: string[] = []): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => !skip.some((s) => f === s || f.startsWith(`${s}/`)))
    .filter((f) => !lstatSync(join(dir, f)).isDirectory())
    .sort();
}

/**
 * The shipped files that are test-only or that nothing in the checkout accounts for. Code under
 * dist/ must be the bundle (dist/bundle/*.js, which scripts/bundle.mjs makes from src/cli/main.ts
 * and what it imports); BPF objects must be build/bpf/N.bpf.o of a bpf/N.bpf.c, or the marker's
 * build for older kernels (bpf/test/ and bench/bpf/ build elsewhere).
 */
function notShippable(shipped: string[], checkout: string): string[] {
  return shipped.filter((f) => {
    if (f.startsWith('dist/')) return !/^dist\/bundle\/[^/]+\.js$/.test(f);
    if (f.startsWith('build/')) {
      if (f === 'build/Release/netoken_native.node' || f === 'build/bpf/marker_compat.bpf.o') return false;
      const m = /^build\/bpf\/([^/]+)\.bpf\.o$/.exec(f);
      return !m || !existsSync(join(checkout, 'bpf', `${m[1]}.bpf.c`));
    }
    return /\.test\.|(^|\/)(test|fuzz|bench)\//.test(f);
  });
}

/** Test-only code a bundle must not hold: names only the test, fuzz and bench sources use. */
const TEST_ONLY_MARKERS = ['netns-helper', 'installVerifierWorld', 'runPacketBench'];

describe('build from a clean checkout, as the image builds it', () => {
  let dir: string;
  let app: string;
  const env = { ...process.env, npm_config_nodedir: '/usr', npm_config_prefer_offline: 'true' };
  const dockerfile = readFileSync(join(repoRoot, 'Dockerfile'), 'utf8');
  const stages = dockerfileStages(dockerfile);

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'netoken-checkout-'));
    app = mkdtempSync(join(tmpdir(), 'netoken-image-'));
    for (const f of checkoutFiles()) {
      mkdirSync(dirname(join(dir, f)), { recursive: true });
      cpSync(join(repoRoot, f), join(dir, f));
    }
  });

  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    if (app) rmSync(app, { recursive: true, force: true });
  });

  test('the Dockerfile builds with the project scripts, unchanged', () => {
    const build = stages.get('build');
    assert.ok(build, `the Dockerfile has a stage named build; stages: ${[...stages.keys()].join(', ')}`);
    const runs = build.filter((l) => l.startsWith('RUN ')).map((l) => l.slice(4));
    assert.ok(
      runs.includes('bash scripts/install-deps.sh --build-only'),
      `the build stage runs scripts/install-deps.sh --build-only; RUN lines: ${runs.join(' | ')}`,
    );
    assert.ok(runs.includes('bash scripts/build.sh'), 'the build stage runs scripts/build.sh');
    const runtime = stages.get('runtime');
    assert.ok(runtime, 'the Dockerfile has a runtime stage');
    assert.ok(runtime.includes('ENTRYPOINT ["node", "/app/bin/netoken.js"]'), 'the entry point is the netoken CLI');
    assert.ok(
      runtime.includes(`ENV NODE_OPTIONS=${DAEMON_NODE_OPTIONS}`),
      `the image runs node with the options the tests and benchmarks use (${DAEMON_NODE_OPTIONS})`,
    );
    assert.ok(
      runtime.includes(`ENV MALLOC_ARENA_MAX=${DAEMON_MALLOC_ARENA_MAX}`),
      `the image runs node with the malloc arenas the tests and benchmarks use (${DAEMON_MALLOC_ARENA_MAX})`,
    );
    assert.ok(
      runtime.some((l) => /apt-get install .*\blibbpf1\b.*\blibelf1\b.*\bzlib1g\b.*\biproute2\b/.test(l)),
      'runtime libraries: libbpf1 libelf1 zlib1g iproute2',
    );
  });

  test('.dockerignore leaves out everything .gitignore does, so the build context is a clean checkout', () => {
    const patterns = (f: string): string[] =>
      readFileSync(join(repoRoot, f), 'utf8')
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l !== '' && !l.startsWith('#'));
    const docker = new Set(patterns('.dockerignore'));
    const missing = patterns('.gitignore').filter((p) => !docker.has(p) && !docker.has(`**/${p}`));
    assert.deepEqual(missing, [], '.gitignore patterns missing from .dockerignore');
    assert.ok(docker.has('.git'), '.git stays out of the image context (a directory in a clone, a file in a worktree)');
  });

  test('scripts/install-deps.sh and scripts/build.sh succeed on the clean checkout', { timeout: 240_000 }, async () => {
    assert.ok(
      !existsSync(join(dir, 'node_modules')) && !existsSync(join(dir, 'build')) && !existsSync(join(dir, 'dist')),
      'the checkout starts without build outputs',
    );
    const deps = await run('bash', ['scripts/install-deps.sh'], dir, env);
    assert.equal(deps.code, 0, `install-deps.sh failed:\n${deps.out.slice(-4000)}`);
    const build = await run('bash', ['scripts/build.sh'], dir, env);
    assert.equal(build.code, 0, `build.sh failed:\n${build.out.slice(-4000)}`);
    for (const f of [
      'build/bpf/marker.bpf.o',
      'build/bpf/marker_compat.bpf.o',
      'build/Release/netoken_native.node',
      'dist/src/cli/main.js',
      'dist/bundle/netoken.js',
    ]) {
      assert.ok(existsSync(join(dir, f)), `${f} was built`);
    }
  });

  test('the npm package holds nothing test-only', async () => {
    assert.ok(existsSync(join(dir, 'dist/src/cli/main.js')), 'the build ran (previous test)');
    const pack = await run('npm', ['pack', '--dry-run', '--json'], dir, env);
    assert.equal(pack.code, 0, `npm pack --dry-run failed:\n${pack.out.slice(-3000)}`);
    const files = (JSON.parse(pack.out.slice(pack.out.indexOf('['))) as { files: { path: string }[] }[])[0]!.files
      .map((f) => f.path)
      .sort();
    assert.ok(
      existsSync(join(dir, 'dist/src/lib/policy.test.js')) && existsSync(join(dir, 'build/bpf-test/progs.bpf.o')),
      'the checkout has test-only build outputs to leave out',
    );
    assert.deepEqual(notShippable(files, dir), [], 'test-only or unaccounted files in the npm package');
    for (const f of [
      'bin/netoken.js',
      'dist/bundle/netoken.js',
      'build/bpf/marker.bpf.o',
      'build/bpf/marker_compat.bpf.o',
      'build/bpf/verifier.bpf.o',
      'build/Release/netoken_native.node',
    ]) {
      assert.ok(files.includes(f), `${f} is in the npm package`);
    }
    assert.deepEqual(
      files.filter((f) => f.startsWith('dist/src/')),
      [],
      'the package ships the bundle, not the unbundled dist/src',
    );
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
    assert.deepEqual(pkg.dependencies ?? {}, {}, 'the bundle holds every JavaScript dependency: the package installs none');
  });

  test(
    "the runtime stage, assembled after the build stage's last steps, starts the CLI and the addon and holds nothing test-only",
    { timeout: 120_000 },
    async () => {
      assert.ok(existsSync(join(dir, 'dist/src/cli/main.js')), 'the build ran (previous test)');
      const runs = (stages.get('build') ?? []).filter((l) => l.startsWith('RUN ')).map((l) => l.slice(4));
      const after = runs.slice(runs.indexOf('bash scripts/build.sh') + 1);
      assert.ok(
        after.some((r) => r.startsWith('npm prune --omit=dev')),
        `the build stage prunes dev dependencies after building; RUN lines after build.sh: ${after.join(' | ')}`,
      );
      for (const cmd of after) {
        const r = await run('bash', ['-o', 'pipefail', '-c', cmd], dir, env);
        assert.equal(r.code, 0, `RUN ${cmd} failed:\n${r.out.slice(-3000)}`);
      }
      const copies = (stages.get('runtime') ?? [])
        .filter((l) => l.startsWith('COPY --from=build '))
        .map((l) => l.split(' ').slice(2))
        .filter(([src]) => src?.startsWith('/src/'));
      assert.ok(copies.length >= 1, `the runtime stage copies the build outputs; found ${copies.length} COPY lines`);
      for (const [src, dest] of copies) {
        const from = join(dir, (src as string).slice('/src/'.length));
        assert.ok(existsSync(from), `COPY --from=build ${src}: exists in the built checkout`);
        // WORKDIR /app: "./x" and "./x/" are relative to it; a trailing "/" means "into".
        const to = join(
          app,
          (dest as string).replace(/^\.\/?/, ''),
          (dest as string).endsWith('/') && !lstatSync(from).isDirectory() ? ((src as string).split('/').pop() as string) : '',
        );
        mkdirSync(dirname(to), { recursive: true });
        cpSync(from, to, { recursive: true });
      }
      assert.ok(
        !existsSync(join(app, 'node_modules')),
        'no node_modules in the image: the bundle holds every JavaScript dependency',
      );
      assert.ok(
        existsSync(join(app, 'build/bpf/marker.bpf.o')) && existsSync(join(app, 'build/bpf/marker_compat.bpf.o')),
        'the BPF objects are in the image',
      );
      const shipped = filesBelow(app);
      assert.deepEqual(notShippable(shipped, dir), [], 'test-only or unaccounted files in the image');
      const bundle = filesBelow(join(dir, 'dist/bundle'));
      assert.deepEqual(
        bundle.filter((f) => !shipped.includes(`dist/bundle/${f}`)),
        [],
        'every file of the bundle is in the image',
      );
      for (const f of bundle) {
        const text = readFileSync(join(app, 'dist/bundle', f), 'utf8');
        assert.deepEqual(
          TEST_ONLY_MARKERS.filter((m) => text.includes(m)),
          [],
          `dist/bundle/${f} holds no test-only code`,
        );
      }

      const help = await run(process.execPath, [join(app, 'bin/netoken.js'), 'agent', '--help'], app);
      assert.equal(help.code, 0, `netoken agent --help from the image layout:\n${help.out}`);
      assert.match(help.out, /--policy-file/);
      // `netoken status` loads the native addon to read the pins (there are none here).
      const nowhere = join(app, 'no-agent');
      const addon = await run(
        process.execPath,
        [join(app, 'bin/netoken.js'), 'status', '--run-dir', nowhere, '--state-dir', nowhere],
        app,
      );
      assert.match(addon.out, /no agent status found/, `the native addon loads from the image layout:\n${addon.out}`);
      assert.doesNotMatch(addon.out, /addon|libbpf|Error/, `the native addon loads from the image layout:\n${addon.out}`);
    },
  );
});
