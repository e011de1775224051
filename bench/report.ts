/**
 * What every benchmark produces (a Figure: the median of several runs, its baseline from the
 * same run, the ratio, the target and the verdict), the machine it ran on, and the three
 * renderings: the console table, bench/results/latest.json and bench/results/latest.md.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { writeFileAtomic } from '../src/lib/files.js';
import os from 'node:os';
import path from 'node:path';
import { PACKAGE_ROOT } from '../src/lib/package.js';

export const ROOT = PACKAGE_ROOT;

/** 'inconclusive': the ratio's interval reaches both sides of the target (too much noise to tell). */
export type Verdict = 'pass' | 'FAIL' | 'inconclusive' | 'info' | 'not yet available';

/** A target on the ratio value / baseline. */
export type Target =
  | { kind: 'at most'; ratio: number }
  | { kind: 'at least'; ratio: number }
  /** unchanged within noise: 1.00 lies inside the ratio's interval */
  | { kind: 'unchanged' }
  /** a count that must be zero (writes a quiet cluster must not make): judged on the value, there is no ratio */
  | { kind: 'zero' };

export interface Baseline {
  benchmark: string;
  value: number | null;
}

export interface Figure {
  group: 'per packet' | 'connection rate' | 'bulk throughput' | 'SYN flood' | 'control plane';
  benchmark: string;
  config: string;
  unit: string;
  /** median of `runs`; null when not available */
  value: number | null;
  runs: number[];
  baseline: Baseline | null;
  /** median of the per-run ratios (or value / baseline when the runs are not paired) */
  ratio: number | null;
  /** confidence interval of that median (see ratioInterval), when the runs are paired */
  interval: [number, number] | null;
  target: Target | null;
  verdict: Verdict;
  /** why a row is not available, or how its value was derived */
  note?: string;
}

/** What each benchmark returns: its rows, the raw numbers for latest.json, and remarks for latest.md. */
export interface BenchResult {
  figures: Figure[];
  details: Record<string, unknown>;
  remarks: string[];
}

export interface FigureSpec {
  group: Figure['group'];
  benchmark: string;
  config: string;
  unit: string;
  runs: number[];
  baseline?: Baseline | null;
  /**
   * The baseline's runs, paired with `runs` (run i of both measured back to back): the ratio
   * is then the median of the per-run ratios, which cancels drift in the machine's load.
   */
  baselineRuns?: number[];
  target?: Target | null;
  note?: string;
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** Nearest-rank percentile (q in 0..1). */
export function percentile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] as number;
}

/** x rounded to `digits` decimals, for details and remarks. */
export const round = (x: number, digits = 1): number => Math.round(x * 10 ** digits) / 10 ** digits;

/** "100 000 prefixes": a count with its thousands apart, for row configurations. */
export const countLabel = (n: number, what: string): string => `${n.toLocaleString('en-US').replace(/,/g, ' ')} ${what}`;

/** (max - min) / median: the run-to-run spread of one configuration. */
export function spread(xs: readonly number[]): number {
  if (xs.length < 2) return 0;
  return (Math.max(...xs) - Math.min(...xs)) / median(xs);
}

/**
 * Distribution-free confidence interval of a median: the order statistics x(L) and x(n+1-L)
 * with the largest L for which P(Binomial(n, 1/2) < L) <= 3.5%. That is at least 93%
 * coverage from n = 5 on (n = 5: the whole range; n = 15: the 4th to the 12th value); below
 * 5 runs it is simply the range.
 */
export function medianInterval(xs: readonly number[]): [number, number] | null {
  const n = xs.length;
  if (n === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  let tail = 0;
  let choose = 1; // C(n, i)
  let l = 0;
  for (let i = 0; i < n; i++) {
    tail += choose / 2 ** n;
    if (tail > 0.035) break;
    l = i + 1;
    choose = (choose * (n - i)) / (i + 1);
  }
  l = Math.max(1, l);
  return [s[l - 1] as number, s[n - l] as number];
}
/** Pass or fail only when the whole interval is on one side of the target. */
export function judge(ratio: number | null, interval: [number, number] | null, target: Target | null): Verdict {
  if (!target || ratio === null || !Number.isFinite(ratio)) return 'info';
  const [lo, hi] = interval ?? [ratio, ratio];
  switch (target.kind) {
    case 'at most':
      return hi <= target.ratio ? 'pass' : lo > target.ratio ? 'FAIL' : 'inconclusive';
    case 'at least':
      return lo >= target.ratio ? 'pass' : hi < target.ratio ? 'FAIL' : 'inconclusive';
    case 'unchanged':
      return lo <= 1 && 1 <= hi ? 'pass' : 'FAIL';
    case 'zero':
      return 'info'; // judged on the value (figure), never on a ratio
  }
}

/** A measured figure: median, ratio against the baseline, verdict. */
export function figure(spec: FigureSpec): Figure {
  const value = spec.runs.length > 0 ? median(spec.runs) : null;
  const baseline = spec.baseline ?? null;
  const paired = spec.baselineRuns;
  let ratio: number | null = null;
  let interval: [number, number] | null = null;
  if (paired && paired.length === spec.runs.length && paired.length > 0 && paired.every((x) => x > 0)) {
    const ratios = spec.runs.map((x, i) => x / (paired[i] as number));
    ratio = median(ratios);
    interval = medianInterval(ratios);
  } else if (value !== null && baseline?.value) {
    ratio = value / baseline.value;
  }
  const target = spec.target ?? null;
  return {
    group: spec.group,
    benchmark: spec.benchmark,
    config: spec.config,
    unit: spec.unit,
    value,
    runs: spec.runs,
    baseline,
    ratio,
    interval,
    target,
    verdict: target?.kind === 'zero' ? (value === null ? 'info' : value === 0 ? 'pass' : 'FAIL') : judge(ratio, interval, target),
    ...(spec.note ? { note: spec.note } : {}),
  };
}

/** A row for something not built yet: listed, never given a number. */
export function unavailable(spec: Omit<FigureSpec, 'runs'>, reason: string): Figure {
  return {
    group: spec.group,
    benchmark: spec.benchmark,
    config: spec.config,
    unit: spec.unit,
    value: null,
    runs: [],
    baseline: spec.baseline ?? null,
    ratio: null,
    interval: null,
    target: spec.target ?? null,
    verdict: 'not yet available',
    note: reason,
  };
}

// -------------------------------------------------------------------------------------------
// The machine

export interface Machine {
  kernel: string;
  cpuModel: string;
  nproc: number;
  memoryGiB: number;
  /** 1, 5 and 15 minute load averages when the benchmarks started and when they ended */
  loadAverageStart: number[];
  loadAverageEnd: number[];
  clocksource: string;
  node: string;
  libbpf: string;
  /** git HEAD of the tree the benchmarks ran from, with "-dirty" when it had local changes */
  commit: string;
}

function git(args: string[]): string {
  try {
    return execFileSync('git', ['-C', ROOT, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '';
  }
}

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

export function loadAverage(): number[] {
  return os.loadavg().map((x) => Math.round(x * 100) / 100);
}

export function describeMachine(libbpf: string, loadAverageStart: number[]): Machine {
  const head = git(['rev-parse', '--short', 'HEAD']);
  const dirty = git(['status', '--porcelain', '--untracked-files=no']) !== '';
  return {
    kernel: os.release(),
    cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
    nproc: os.availableParallelism(),
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    loadAverageStart,
    loadAverageEnd: loadAverage(),
    clocksource: readText('/sys/devices/system/clocksource/clocksource0/current_clocksource'),
    node: process.version,
    libbpf,
    commit: head ? `${head}${dirty ? '-dirty' : ''}` : 'unknown',
  };
}

// -------------------------------------------------------------------------------------------
// Results and their renderings

export interface Results {
  startedAt: string;
  durationSeconds: number;
  machine: Machine;
  /** the parameters each benchmark ran with */
  parameters: Record<string, unknown>;
  figures: Figure[];
  /** measurements that support the figures (restore costs, cross-checks, counters) */
  details: Record<string, unknown>;
  /** one-line findings of the checks behind the figures, shown under the table */
  remarks: string[];
}

function fmtNumber(x: number): string {
  const abs = Math.abs(x);
  const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : 2;
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function fmtValue(value: number | null, unit: string): string {
  return value === null ? 'not yet available' : `${fmtNumber(value)} ${unit}`;
}

export function fmtTarget(t: Target | null): string {
  if (!t) return '—';
  switch (t.kind) {
    case 'at most':
      return `≤ ${t.ratio.toFixed(2)}×`;
    case 'at least':
      return `≥ ${t.ratio.toFixed(2)}×`;
    case 'unchanged':
      return '1.00× inside the interval';
    case 'zero':
      return '= 0';
  }
}

export function fmtRatio(f: Pick<Figure, 'ratio' | 'interval'>): string {
  if (f.ratio === null) return '—';
  const iv = f.interval && f.interval[0] !== f.interval[1] ? ` [${f.interval[0].toFixed(2)}, ${f.interval[1].toFixed(2)}]` : '';
  return `${f.ratio.toFixed(2)}×${iv}`;
}

const COLUMNS = ['benchmark', 'config', 'value (unit)', 'baseline', 'ratio', 'target', 'verdict'] as const;

export function tableRows(figures: readonly Figure[]): string[][] {
  return figures.map((f) => [
    `${f.group}: ${f.benchmark}`,
    f.config,
    fmtValue(f.value, f.unit),
    f.baseline ? `${f.baseline.benchmark}: ${fmtValue(f.baseline.value, f.unit)}` : '—',
    fmtRatio(f),
    fmtTarget(f.target),
    f.verdict,
  ]);
}

/** The console table: aligned plain text. */
export function textTable(figures: readonly Figure[]): string {
  const rows = [COLUMNS.map(String), ...tableRows(figures)];
  const widths = COLUMNS.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string =>
    r
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(rows[0] as string[]), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

function mdCell(s: string): string {
  return s.replace(/\|/g, '\\|');
}

export function markdown(r: Results): string {
  const m = r.machine;
  const out: string[] = [];
  out.push('# netoken benchmarks: latest results', '');
  out.push(`Recorded by \`npm run bench\` on ${r.startedAt} (${Math.round(r.durationSeconds)} s), commit \`${m.commit}\`.`);
  out.push(
    `Machine: ${m.cpuModel}, ${m.nproc} CPUs, ${m.memoryGiB} GiB, kernel ${m.kernel} (clocksource ${m.clocksource}), ` +
      `node ${m.node}, libbpf ${m.libbpf}. Load average (1/5/15 min) ${m.loadAverageStart.join(' / ')} at the start, ` +
      `${m.loadAverageEnd.join(' / ')} at the end: other work shares this machine, so compare ratios, not absolute numbers.`,
  );
  out.push('');
  out.push(
    'Each value is the median of several runs. Each baseline was measured in the same runs, back to back with the row; ' +
      'the ratio is the median of the per-run ratios (row / baseline), which cancels drift in the load of the machine, ' +
      'and [lo, hi] is a distribution-free interval of at least 93% for that median. A verdict is pass or FAIL only when the ' +
      'whole interval is on one side of the target, else inconclusive.',
    '',
  );
  if ((m.loadAverageStart[0] ?? 0) > m.nproc || (m.loadAverageEnd[0] ?? 0) > m.nproc) {
    out.push(
      `**The machine was busy** (load average above its ${m.nproc} CPUs): the connection and throughput runs shared it with other work, ` +
        'hence their wide intervals. Per-packet rows suffer less (each test run is one tight loop in the kernel), but their intervals widen too.',
      '',
    );
  }
  out.push(`| ${COLUMNS.join(' | ')} |`);
  out.push(`|${COLUMNS.map((_, i) => (i >= 2 && i <= 4 ? '---:' : '---')).join('|')}|`);
  for (const row of tableRows(r.figures)) out.push(`| ${row.map(mdCell).join(' | ')} |`);
  out.push('');
  const notes = r.figures.filter((f) => f.note);
  if (notes.length > 0) {
    out.push('## Notes', '');
    const seen = new Set<string>();
    for (const f of notes) {
      const text = `**${f.group}: ${f.benchmark}**${f.verdict === 'not yet available' ? ' (not yet available)' : ''}: ${f.note}`;
      if (seen.has(text)) continue;
      seen.add(text);
      out.push(`- ${text}`);
    }
    out.push('');
  }
  if (r.remarks.length > 0) {
    out.push('## Checks', '');
    for (const line of r.remarks) out.push(`- ${line}`);
    out.push('');
  }
  out.push('## How these were measured', '');
  for (const line of METHOD) out.push(`- ${line}`);
  out.push('');
  out.push('Every run, the supporting measurements and the parameters are in [`latest.json`](latest.json).', '');
  return out.join('\n');
}

const METHOD = [
  "Per packet: `BPF_PROG_TEST_RUN` on crafted Ethernet frames; a run's value is the CPU time the calling thread spent in the test run divided by its repetitions (the kernel's own mean is whole nanoseconds), less the fixed cost of one call; every row runs in turn within each run (the order rotates between runs) and the median of the runs is shown. " +
    'A row with a target gets more runs, with its baseline, until its verdict is decided or its runs or time run out; an absolute target (a time budget) is a ratio against that budget. ' +
    'The destination trie (`nt_egress4`) holds the stated number of prefixes for the test device (random /16../32 prefixes plus the one covering the marked destination).',
  'A test run repeats the program on one skb without resetting it, so a SYN would be marked only once. Marking rows therefore run a wrapper (bench/bpf/restore.h) that marks and then restores the frame, ' +
    'back to back with its restore-only twin; the value is the median of the per-run differences: the marking alone. The seed port (bench/seed/seed.bpf.c) is measured the same way.',
  'Test-run skbs are linear and not cloned; real egress SYNs are clones, and the first write copies their header, for the marker and the seed alike.',
  'Connection rate: two network namespaces joined by a veth pair (transmit checksum offload left on, as veth has it by default); bench/net/netbench.c opens connections one after another (one thread, and several threads at once), each a full handshake closed with an RST so that no TIME_WAIT socket holds the port. ' +
    'The marker is attached by the real `netoken agent` from a policy file covering the server, which is then stopped so that it uses no CPU during the runs (the pinned hook keeps marking); the marked-SYN counter is checked against the number of connections.',
  "Bulk throughput: one connection writing 128 KiB at a time for the stated time; the sender half-closes and waits for the receiver's EOF, so every byte counted arrived. " +
    '"Unchanged within noise": 1.00 lies inside the interval of the ratio.',
  'SYN flood: an AF_PACKET generator (bench/net/synflood.c) on one CPU sends unmarked SYNs with random source ports and sequence numbers over a veth pair to a port the verifier protects in Enforce; ' +
    "the receiving veth runs XDP in native mode in softirq on the sending CPU, so the rate is what one core sends and receives. Handled: dropped at XDP (the veth's xdp_drops counter, checked against verify_dropped) or, with no hook, taken in by TCP (TcpInSegs).",
  "Control plane: a test etcd and kube-apiserver (test/k8s), the real operator and a cluster-mode agent with the chart's RBAC, the agent on a veth in a network namespace; apply → wire ends at the first captured SYN carrying the new policy's token. " +
    "Map updates: the agent's Datapath against pinned maps of its own, beside a plain loop of map writes as the baseline. Memory and CPU: /proc/PID/status and /proc/PID/stat over a fixed window.",
  'Kernel test-run times are whole nanoseconds (the kernel divides the total by the repetitions), so a 26 ns row is known to about ±2%.',
];

/** Writes latest.json and latest.md into `dir` (atomically, via a temporary file each). */
export function writeResults(dir: string, r: Results): { json: string; md: string } {
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true });
  const json = path.join(dir, 'latest.json');
  const md = path.join(dir, 'latest.md');
  for (const [file, text] of [
    [json, `${JSON.stringify(r, null, 2)}\n`],
    [md, markdown(r)],
  ] as const) {
    writeFileAtomic(file, text);
  }
  return { json, md };
}
