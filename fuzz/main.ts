/**
 * `node dist/fuzz/main.js`: the packet fuzzer (`npm run fuzz`). Feeds generated and
 * mutated packets to the egress marker and to the ingress verifier (its XDP and its tc entry
 * point) through BPF_PROG_TEST_RUN and checks every output; each failure prints
 * `seed=<n> case=<i> target=<t>`, replayable with `--target <t> --replay <n>:<i>`.
 *
 *   --target <t>        marker, verifier-xdp, verifier-tc, verifier (both hooks), fragments
 *                       (fragment sequences through the verifier, reassembled) or all (default)
 *   --seed <n>          run seed (default: derived from the time, printed)
 *   --count <n>         cases to run per target (default 100000)
 *   --start <i>         first case number (default 0)
 *   --replay <n>:<i>    run one case and print everything about it
 *   --max-failures <n>  stop after this many failing cases per target (default 10)
 *   --object <path>     marker object (default build/bpf/marker.bpf.o)
 *   --verifier-object <path>  verifier object (default build/bpf/verifier.bpf.o)
 *   --no-netns          run in this network namespace: loopback only, the MTU check is not reached
 *   --json              end with one JSON line per target: its run's summary
 *
 * By default the run re-executes itself (with the internal flag --in-netns) inside a
 * private network namespace holding two small-MTU devices, removed afterwards (netns.ts).
 *
 * Needs root (BPF, network namespaces). Exit code 0 when every invariant held, 1 otherwise,
 * 2 on a usage or setup error.
 */
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { COUNTERS } from '../src/lib/abi.js';
import {
  DEFAULT_MARKER_OBJECT,
  DEFAULT_VERIFIER_OBJECT,
  Fuzzer,
  describeRun,
  formatFailure,
  fragmentsTarget,
  fuzz,
  markerTarget,
  verifierTarget,
  type CaseRun,
  type FuzzSummary,
  type Target,
} from './driver.js';
import { MTU_DEVICES, discoverDevices, runInPrivateNetns } from './netns.js';

const SCRIPT = fileURLToPath(import.meta.url);
const DISPLAY = 'node dist/fuzz/main.js';

class UsageError extends Error {}

export const TARGETS = ['marker', 'verifier-xdp', 'verifier-tc', 'fragments'] as const;
type TargetName = (typeof TARGETS)[number];
const TARGET_GROUPS: Record<string, readonly TargetName[]> = {
  all: TARGETS,
  verifier: ['verifier-xdp', 'verifier-tc'],
  marker: ['marker'],
  'verifier-xdp': ['verifier-xdp'],
  'verifier-tc': ['verifier-tc'],
  fragments: ['fragments'],
};

interface Config {
  targets: readonly TargetName[];
  seed: number;
  count: number;
  start: number;
  replay: { seed: number; index: number } | null;
  maxFailures: number;
  object: string;
  verifierObject: string;
  netns: boolean;
  json: boolean;
  /** set by the parent when it re-executes itself inside the private namespace */
  inNetns: boolean;
}

function nonNegInt(text: string, what: string, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^\d+$/.test(text) || Number(text) > max)
    throw new UsageError(`${what} must be an integer from 0 to ${max}, got "${text}"`);
  return Number(text);
}

function parseConfig(argv: string[]): Config {
  const { values } = parseArgs({
    args: argv,
    options: {
      seed: { type: 'string' },
      count: { type: 'string' },
      start: { type: 'string' },
      replay: { type: 'string' },
      'max-failures': { type: 'string' },
      object: { type: 'string' },
      'verifier-object': { type: 'string' },
      target: { type: 'string' },
      'no-netns': { type: 'boolean' },
      json: { type: 'boolean' },
      'in-netns': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(
      `usage: ${DISPLAY} [--target all|marker|verifier|verifier-xdp|verifier-tc|fragments] [--seed N] [--count N] [--start I] [--max-failures N]\n` +
        `       ${' '.repeat(DISPLAY.length)} [--object PATH] [--verifier-object PATH] [--no-netns] [--json]\n` +
        `       ${DISPLAY} --target TARGET --replay SEED:CASE [--no-netns]\n`,
    );
    process.exit(0);
  }
  let replay: Config['replay'] = null;
  if (values.replay !== undefined) {
    const m = /^(\d+):(\d+)$/.exec(values.replay);
    if (!m || m[1] === undefined || m[2] === undefined)
      throw new UsageError(`--replay wants SEED:CASE (e.g. 1234:56), got "${values.replay}"`);
    replay = { seed: nonNegInt(m[1], 'the replay seed', 0xffffffff), index: nonNegInt(m[2], 'the replay case') };
  }
  const timeSeed = ((Date.now() % 0x100000000) ^ (process.pid << 12)) >>> 0;
  const targets = TARGET_GROUPS[values.target ?? 'all'];
  if (!targets) throw new UsageError(`--target must be one of ${Object.keys(TARGET_GROUPS).join(', ')}, got "${values.target}"`);
  return {
    targets,
    seed: values.seed !== undefined ? nonNegInt(values.seed, '--seed', 0xffffffff) : timeSeed,
    count: values.count !== undefined ? nonNegInt(values.count, '--count') : 100000,
    start: values.start !== undefined ? nonNegInt(values.start, '--start') : 0,
    replay,
    maxFailures: values['max-failures'] !== undefined ? Math.max(1, nonNegInt(values['max-failures'], '--max-failures')) : 10,
    object: values.object ?? DEFAULT_MARKER_OBJECT,
    verifierObject: values['verifier-object'] ?? DEFAULT_VERIFIER_OBJECT,
    netns: !values['no-netns'],
    json: values.json === true,
    inNetns: values['in-netns'] === true,
  };
}

function replayHint(cfg: Config, target: string): string {
  return `${cfg.netns ? DISPLAY : `${DISPLAY} --no-netns`} --target ${target}`;
}

function makeTarget(name: TargetName, cfg: Config): Target<unknown> {
  switch (name) {
    case 'marker':
      return markerTarget(cfg.object) as Target<unknown>;
    case 'verifier-xdp':
      return verifierTarget('xdp', cfg.verifierObject) as Target<unknown>;
    case 'fragments':
      return fragmentsTarget(cfg.verifierObject) as Target<unknown>;
    default:
      return verifierTarget('tc', cfg.verifierObject) as Target<unknown>;
  }
}

function printSummary(s: FuzzSummary): void {
  const out: string[] = [];
  const last = s.start + s.cases - 1;
  out.push(
    `fuzzed ${s.cases} packets (target ${s.target}, seed ${s.seed}, cases ${s.start}..${last}) in ${(s.elapsedMs / 1000).toFixed(1)} s: ${s.casesPerSecond} cases/s`,
  );
  out.push(`devices: ${s.devices.map((d) => `${d.name} (ifindex ${d.ifindex}, mtu ${d.mtu})`).join(', ')}`);
  out.push(
    `expected (${s.target}): ${Object.entries(s.verdicts)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, n]) => `${k} ${n}`)
      .join(', ')}`,
  );
  const verifier = s.target.startsWith('verifier') || s.target === 'fragments';
  const names = COUNTERS.filter(
    (n) => (s.counters[n] ?? 0) > 0 || (verifier ? n.startsWith('verify_') : n.startsWith('skipped_') || n === 'marked'),
  );
  out.push(`counters: ${names.map((n) => `${n}=${s.counters[n] ?? 0}`).join(' ')}`);
  if (s.failures === 0) out.push(s.stoppedEarly ? 'stopped early; no invariant broken so far' : 'every invariant held');
  else
    out.push(
      `${s.failures} failing case(s)${s.stoppedEarly ? ' (stopped early)' : ''}: ${Object.entries(s.violations)
        .map(([k, v]) => `${k} x${v}`)
        .join(', ')}`,
    );
  process.stdout.write(out.join('\n') + '\n');
}

function printReplay<V>(f: Fuzzer<V>, run: CaseRun<V>, cfg: Config): void {
  if (run.violations.length > 0) {
    process.stdout.write(formatFailure(f, run, replayHint(cfg, f.target.name)) + '\n');
    return;
  }
  const c = run.fuzzCase;
  const lines = [`ok seed=${c.seed} case=${c.index} target=${f.target.name}: every invariant held`, ...describeRun(f, run)];
  process.stdout.write(lines.join('\n') + '\n');
}

async function inside(cfg: Config): Promise<number> {
  const devices = discoverDevices(cfg.inNetns ? MTU_DEVICES.map((d) => d.name) : []);
  let stop = false;
  const onSignal = (): void => {
    stop = true;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let code = 0;
  try {
    for (const name of cfg.targets) {
      if (stop) break;
      const f = Fuzzer.open(makeTarget(name, cfg), devices);
      try {
        code = Math.max(code, await runTarget(f, cfg, () => stop));
      } finally {
        f.close();
      }
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  // Interrupted without a failure: not a pass.
  return code === 0 && stop ? 130 : code;
}

async function runTarget(f: Fuzzer<unknown>, cfg: Config, stopped: () => boolean): Promise<number> {
  const hint = replayHint(cfg, f.target.name);
  if (cfg.replay) {
    const run = f.runCase(f.generate(cfg.replay.seed, cfg.replay.index));
    printReplay(f, run, cfg);
    return run.violations.length > 0 ? 1 : 0;
  }
  process.stdout.write(
    `fuzzing the ${f.target.name}: seed=${cfg.seed} count=${cfg.count} (replay a case with: ${hint} --replay ${cfg.seed}:<case>)\n`,
  );
  let nextReport = 100000;
  const t0 = Date.now();
  const summary = await fuzz(f, {
    seed: cfg.seed,
    count: cfg.count,
    start: cfg.start,
    maxFailures: cfg.maxFailures,
    onFailure: (run) => process.stdout.write(formatFailure(f, run, hint) + '\n'),
    onProgress: (done) => {
      if (done >= nextReport && done < cfg.count) {
        process.stderr.write(`  ${f.target.name}: ${done} cases, ${Math.round(done / ((Date.now() - t0) / 1000))} cases/s\n`);
        nextReport += 100000;
      }
    },
    shouldStop: stopped,
  });
  printSummary(summary);
  if (cfg.json) process.stdout.write(JSON.stringify(summary) + '\n');
  return summary.failures > 0 ? 1 : 0;
}

async function main(argv: string[]): Promise<number> {
  let cfg: Config;
  try {
    cfg = parseConfig(argv);
  } catch (err) {
    process.stderr.write(`fuzz: ${(err as Error).message}\n`);
    return 2;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('fuzz: run as root (it loads BPF programs and makes a network namespace)\n');
    return 2;
  }
  try {
    if (cfg.netns && !cfg.inNetns) {
      // The child gets the seed explicitly, so that a time-derived one is the same on both sides.
      return await runInPrivateNetns([SCRIPT, ...withoutSeed(argv), '--seed', String(cfg.seed), '--in-netns']);
    }
    return await inside(cfg);
  } catch (err) {
    process.stderr.write(`fuzz: ${(err as Error).message}\n`);
    return 2;
  }
}

/** `argv` without any `--seed N` or `--seed=N`. */
function withoutSeed(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (a === '--seed') i++;
    else if (!a.startsWith('--seed=')) out.push(a);
  }
  return out;
}

process.exitCode = await main(process.argv.slice(2));
