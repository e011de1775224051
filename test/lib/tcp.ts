/**
 * TCP endpoints inside namespaces (echo server, one-shot client) and the kernel's TCP counters.
 */
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { exec, spawnIn, waitForExit } from './netns.js';

const PEER_SCRIPT = fileURLToPath(new URL('./tcp-peer.js', import.meta.url));

/** One JSON line printed by the echo server. */
export interface ServerEvent {
  event: 'listening' | 'accept' | 'data' | 'close' | 'error';
  address?: string;
  port?: number;
  remoteAddress?: string;
  remotePort?: number;
  localAddress?: string;
  localPort?: number;
  bytes?: number;
  error?: string;
}

export interface TcpServer {
  readonly ns: string;
  /** the port actually bound (useful with port 0) */
  readonly port: number;
  /** every event so far, in order */
  readonly events: readonly ServerEvent[];
  /** Resolves with the first event (past or future) matching `pred`; rejects after timeoutMs. */
  waitFor(pred: (e: ServerEvent) => boolean, timeoutMs?: number): Promise<ServerEvent>;
  /** Stops the server; idempotent. */
  stop(): Promise<void>;
}

export interface ServerOptions {
  /** listen address; default '::' (IPv4 and IPv6) */
  host?: string;
  /** default 0: an ephemeral port */
  port?: number;
  startTimeoutMs?: number;
}

function spawnPeer(ns: string, args: string[]): ChildProcess {
  return spawnIn(ns, process.execPath, [PEER_SCRIPT, ...args]);
}

/** Starts the echo server in `ns` and resolves once it listens; rejects with its stderr if it fails. */
export async function startServer(ns: string, opts: ServerOptions = {}): Promise<TcpServer> {
  const child = spawnPeer(ns, ['server', opts.host ?? '::', String(opts.port ?? 0)]);
  const events: ServerEvent[] = [];
  const waiters = new Set<{ pred: (e: ServerEvent) => boolean; resolve: (e: ServerEvent) => void }>();
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (d: string) => {
    stderr += d;
  });
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  lines.on('line', (line) => {
    let e: ServerEvent;
    try {
      e = JSON.parse(line) as ServerEvent;
    } catch {
      return;
    }
    events.push(e);
    for (const w of waiters) {
      if (w.pred(e)) {
        waiters.delete(w);
        w.resolve(e);
      }
    }
  });

  const waitFor = (pred: (e: ServerEvent) => boolean, timeoutMs = 10_000): Promise<ServerEvent> => {
    const seen = events.find(pred);
    if (seen) {
      return Promise.resolve(seen);
    }
    return new Promise((resolve, reject) => {
      const w = {
        pred,
        resolve: (e: ServerEvent): void => {
          clearTimeout(timer);
          resolve(e);
        },
      };
      const timer = setTimeout(() => {
        waiters.delete(w);
        reject(
          new Error(
            `server in ${ns}: no matching event within ${timeoutMs} ms; events: ${JSON.stringify(events)}; stderr: ${stderr.trim()}`,
          ),
        );
      }, timeoutMs);
      waiters.add(w);
    });
  };

  const listening = await Promise.race([
    waitFor((e) => e.event === 'listening' || e.event === 'error', opts.startTimeoutMs ?? 10_000),
    new Promise<never>((_, reject) => {
      child.once('exit', (code, signal) => reject(new Error(`server in ${ns} exited (${signal ?? code}): ${stderr.trim()}`)));
    }),
  ]).catch(async (err: unknown) => {
    child.kill('SIGKILL');
    await waitForExit(child, 5_000);
    throw err;
  });
  if (listening.event !== 'listening' || typeof listening.port !== 'number') {
    child.kill('SIGKILL');
    throw new Error(`server in ${ns} could not listen: ${JSON.stringify(listening)} ${stderr.trim()}`);
  }

  let stopped: Promise<void> | undefined;
  return {
    ns,
    port: listening.port,
    events,
    waitFor,
    stop: () => {
      stopped ??= (async () => {
        child.kill('SIGTERM');
        if (!(await waitForExit(child, 5_000))) {
          child.kill('SIGKILL');
          await waitForExit(child, 5_000);
        }
      })();
      return stopped;
    },
  };
}

export interface ConnectOptions {
  /** give up connecting (and echoing) after this long; default 3000 ms */
  timeoutMs?: number;
  /** bind the client socket to this local port */
  localPort?: number;
}

export interface ConnectResult {
  /** connected and the payload came back */
  ok: boolean;
  connected: boolean;
  echoed: boolean;
  /** from the connect() call to the echo (or to the failure), measured inside the namespace */
  elapsedMs: number;
  localAddress?: string;
  localPort?: number;
  /** e.g. 'ETIMEDOUT', 'ECONNREFUSED', 'EHOSTUNREACH' */
  error?: string;
}

/** Connects from `ns` to addr:port, sends a short payload and waits for the echo; never rejects for network failures, only for harness failures. */
export async function connect(ns: string, addr: string, port: number, opts: ConnectOptions = {}): Promise<ConnectResult> {
  const timeoutMs = opts.timeoutMs ?? 3_000;
  const args = ['client', addr, String(port), String(timeoutMs)];
  if (opts.localPort !== undefined) {
    args.push(String(opts.localPort));
  }
  const child = spawnPeer(ns, args);
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  child.stdout?.on('data', (d: string) => {
    stdout += d;
  });
  child.stderr?.on('data', (d: string) => {
    stderr += d;
  });
  // 'close' (not 'exit') so that all of stdout has been read. Node start-up adds a little;
  // the deadline here only guards against a hung child.
  const closed = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs + 10_000);
    child.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
  if (!closed) {
    child.kill('SIGKILL');
    await waitForExit(child, 5_000);
    throw new Error(`client in ${ns} hung past ${timeoutMs} ms: ${stderr.trim()}`);
  }
  const line = stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as ConnectResult;
  } catch {
    throw new Error(
      `client in ${ns} printed no result (exit ${child.signalCode ?? child.exitCode}): ${stdout.trim()} ${stderr.trim()}`,
    );
  }
}

/** The kernel's SNMP/netstat counters of `ns` (absolute values, `nstat -asz`), e.g. TcpInCsumErrors, TcpExtTCPSynRetrans. */
export async function counters(ns: string): Promise<Record<string, number>> {
  // -s: do not write nstat's history file, which parallel runs would share.
  const { stdout } = await exec(ns, 'nstat', ['-asz', '--json'], { timeoutMs: 15_000 });
  const parsed = JSON.parse(stdout) as { kernel?: Record<string, unknown> };
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(parsed.kernel ?? {})) {
    if (typeof v === 'number') {
      out[k] = v;
    }
  }
  return out;
}

/** Only the TCP counters (Tcp*, TcpExt*) of `ns`. */
export async function tcpCounters(ns: string): Promise<Record<string, number>> {
  const all = await counters(ns);
  return Object.fromEntries(Object.entries(all).filter(([k]) => k.startsWith('Tcp')));
}

/** SYNs the stack of `ns` sent since `before` (connect() calls plus SYN retransmissions). */
export async function synsSent(ns: string, before: Record<string, number>): Promise<number> {
  const now = await tcpCounters(ns);
  const d = (k: string): number => (now[k] ?? 0) - (before[k] ?? 0);
  return d('TcpActiveOpens') + d('TcpExtTCPSynRetrans');
}

/** after - before for each counter in `after` (missing in before counts as 0). */
export function counterDelta(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - (before[k] ?? 0)]));
}
