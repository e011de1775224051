/**
 * Runs the real `netoken` CLI (agent, status, detach) inside a test network namespace,
 * with its own bpffs state directory and run directory, and reads the kernel's view of
 * the hooks from inside that namespace.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { AgentStatus } from '../../src/agent/agent.js';
import type { StatusReport } from '../../src/cli/status.js';
import { CommandError, run, spawnIn, waitForExit } from './netns.js';
import { waitUntil } from '../../src/lib/wait.js';
import { PACKAGE_ROOT } from '../../src/lib/package.js';
import { daemonEnv } from '../../src/lib/memory.js';

export const ROOT = PACKAGE_ROOT;
export const BIN = path.join(ROOT, 'bin/netoken.js');
const BINDING = path.join(ROOT, 'dist/src/native/binding.js');

export const TOKEN = Buffer.from('4e546f6b656e2121', 'hex');

/** A policy file: one TokenPolicy per entry plus its Secret (8-byte static token). */
export function policyYaml(policies: { name: string; spec: string; token?: Buffer }[]): string {
  return policies
    .map(
      (p) => `apiVersion: netoken.io/v1alpha1
kind: TokenPolicy
metadata: {name: ${p.name}}
spec:
  token: {mode: Static, secretRef: {name: ${p.name}-token}}
${p.spec.replace(/^/gm, '  ')}
---
apiVersion: v1
kind: Secret
metadata: {name: ${p.name}-token}
type: Opaque
data: {current: ${(p.token ?? TOKEN).toString('base64')}}
`,
    )
    .join('---\n');
}

export interface AgentRun {
  ns: string;
  dir: string;
  stateDir: string;
  runDir: string;
  policyFile: string;
  child: ChildProcess | null;
  log(): string;
  writePolicy(yaml: string): void;
  start(extra?: string[]): Promise<void>;
  /** cluster mode: no policy file, the API server through kubeconfig */
  startCluster(kubeconfig: string, nodeName: string, namespace: string, extra?: string[]): Promise<void>;
  /** SIGTERM (graceful) or SIGKILL */
  stop(signal?: NodeJS.Signals): Promise<void>;
  status(): AgentStatus | null;
  /** Resolves with the first status for which pred holds (polling the status file). */
  waitStatus(pred: (s: AgentStatus) => boolean, timeoutMs?: number, what?: string): Promise<AgentStatus>;
  cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  statusReport(): Promise<StatusReport>;
  /** `netoken detach` and removal of the temp dir */
  cleanup(): Promise<void>;
}

export interface AgentOptions {
  /** environment for the agent process, on top of this one's (e.g. a faked wall clock) */
  env?: Record<string, string>;
  /**
   * run the agent with only these capabilities (e.g. ['bpf', 'net_admin', 'perfmon'], as the
   * chart's pod has them), through `setpriv --bounding-set`; default: all of root's
   */
  capabilities?: string[];
}

export function agentIn(ns: string, label: string, opts: AgentOptions = {}): AgentRun {
  const dir = mkdtempSync(path.join(tmpdir(), `nttest-agent-${label}-`));
  const stateDir = `/sys/fs/bpf/nttest-${process.pid}-${label}-${Math.random().toString(36).slice(2, 7)}`;
  const runDir = path.join(dir, 'run');
  const policyFile = path.join(dir, 'policy.yaml');
  let logText = '';
  const spawnAgent = (args: string[]): void => {
    const argv = [
      process.execPath,
      BIN,
      'agent',
      '--state-dir',
      stateDir,
      '--run-dir',
      runDir,
      '--log-format',
      'json',
      '--log-level',
      'debug',
      '--interface-poll',
      '300ms',
      ...args,
    ];
    const caps = opts.capabilities;
    const [cmd, ...rest] = caps
      ? ['setpriv', '--inh-caps=-all', `--bounding-set=-all,${caps.map((c) => `+${c}`).join(',')}`, '--', ...argv]
      : argv;
    const child = spawnIn(ns, cmd as string, rest, { env: daemonEnv({ ...process.env, ...opts.env }) });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (d: string) => (logText += d));
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (d: string) => (logText += d));
    a.child = child;
  };
  const a: AgentRun = {
    ns,
    dir,
    stateDir,
    runDir,
    policyFile,
    child: null,
    log: () => logText,
    writePolicy(yaml) {
      writeFileSync(policyFile, yaml, { mode: 0o600 });
    },
    async start(extra = []) {
      spawnAgent(['--policy-file', policyFile, ...extra]);
    },
    async startCluster(kubeconfig, nodeName, namespace, extra = []) {
      spawnAgent([
        '--kubeconfig',
        kubeconfig,
        '--node-name',
        nodeName,
        '--namespace',
        namespace,
        '--counter-interval',
        '1s',
        ...extra,
      ]);
    },
    async stop(signal = 'SIGTERM') {
      const c = a.child;
      if (!c) return;
      c.kill(signal);
      if (!(await waitForExit(c, 10_000))) throw new Error(`agent did not exit after ${signal}\n${logText}`);
      a.child = null;
    },
    status() {
      const f = path.join(runDir, 'status.json');
      if (!existsSync(f)) return null;
      try {
        return JSON.parse(readFileSync(f, 'utf8')) as AgentStatus;
      } catch {
        return null;
      }
    },
    async waitStatus(pred, timeoutMs = 15_000, what = 'agent status') {
      let last: AgentStatus | null = null;
      return waitUntil(
        what,
        timeoutMs,
        () => {
          if (a.child && a.child.exitCode !== null) throw new Error(`agent exited with ${a.child.exitCode}\n${logText}`);
          last = a.status();
          return last && pred(last) ? last : undefined;
        },
        { everyMs: 100, context: () => `last status: ${JSON.stringify(last, null, 1)}\nagent log:\n${logText}` },
      );
    },
    async cli(args) {
      try {
        const r = await run('nsenter', [
          `--net=/var/run/netns/${ns}`,
          '--',
          process.execPath,
          BIN,
          ...args,
          '--state-dir',
          stateDir,
          '--run-dir',
          runDir,
        ]);
        return { code: 0, stdout: r.stdout, stderr: r.stderr };
      } catch (err) {
        if (!(err instanceof CommandError)) throw err;
        return { code: err.exitCode ?? -1, stdout: err.stdout, stderr: err.stderr };
      }
    },
    async statusReport() {
      const r = await a.cli(['status', '-o', 'json']);
      return JSON.parse(r.stdout) as StatusReport;
    },
    async cleanup() {
      if (a.child) await a.stop('SIGKILL');
      await a.cli(['detach', '--log-level', 'error']);
      rmSync(stateDir, { recursive: true, force: true });
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return a;
}

/** Sum of one counter over a status report (optionally for one policy). */
export function counter(r: StatusReport, name: string, policy?: string): number {
  return r.counters
    .filter((c) => c.counter === name && (policy === undefined || c.policy === policy))
    .reduce((n, c) => n + Number(c.value), 0);
}

export interface KernelHooks {
  /** TCX program ids at the interface's egress, in run order */
  tcx: number[];
  /** our clsact filter's program id (handle 0x4e54, the given priority), or null */
  tc: number | null;
  /** is there a clsact qdisc at all */
  clsact: boolean;
}

/**
 * Runs an ES module `script` with node inside `ns` (nsenter: bpffs stays visible), `binding`
 * (the native addon's loader) already imported, `args` in process.argv[1..]; resolves with
 * its standard output.
 */
export async function bindingScriptIn(ns: string, script: string, args: readonly string[]): Promise<string> {
  const body = `const { binding } = await import(${JSON.stringify(BINDING)});\n${script}`;
  const r = await run('nsenter', [
    `--net=/var/run/netns/${ns}`,
    '--',
    process.execPath,
    '--input-type=module',
    '-e',
    body,
    ...args,
  ]);
  return r.stdout;
}

/** What the kernel has attached at `dev`'s egress, read from inside `ns`. */
export async function kernelHooks(ns: string, dev: string, priority = 1): Promise<KernelHooks> {
  const script = `
    const b = binding();
    const ifindex = Number(process.argv[1]);
    const tcx = b.tcxQuery(ifindex, 'egress');
    const tc = b.tcQuery({ ifindex, direction: 'egress', handle: 0x4e54, priority: ${priority} });
    console.log(JSON.stringify({ tcx, tc }));
  `;
  const idx = await run('ip', ['netns', 'exec', ns, 'cat', `/sys/class/net/${dev}/ifindex`]);
  const stdout = await bindingScriptIn(ns, script, [idx.stdout.trim()]);
  const q = await run('ip', ['netns', 'exec', ns, 'tc', 'qdisc', 'show', 'dev', dev]);
  const parsed = JSON.parse(stdout) as { tcx: number[]; tc: number | null };
  return { ...parsed, clsact: /clsact/.test(q.stdout) };
}

/** The /metrics page of the agent in `ns` (cluster mode serves it on :9090 of the node's network). */
export async function agentMetricsIn(ns: string, port = 9090): Promise<string> {
  const script = `fetch("http://127.0.0.1:${port}/metrics").then((r) => r.text()).then((t) => process.stdout.write(t))`;
  return (await run('nsenter', [`--net=/var/run/netns/${ns}`, '--', process.execPath, '-e', script])).stdout;
}
