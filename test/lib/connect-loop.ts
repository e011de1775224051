/**
 * Connects to host:port over and over for a while, one connection at a time, and prints
 * one JSON line at the end: {"attempts","ok","failures":[{"at","error","elapsedMs"}],"maxMs"}.
 * Each connection sends a few bytes, waits for them to come back (an echo server) and closes;
 * the connect timeout leaves room for SYN retransmissions.
 *
 *   node connect-loop.js <host> <port> <durationMs> [timeoutMs] [pauseMs]
 * pauseMs (default 0) waits between connections, so that a long loop does not run out of
 * ephemeral ports to connections still in TIME_WAIT.
 * SIGTERM ends the loop early (the summary is still printed).
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { sleep } from '../../src/lib/wait.js';

interface Failure {
  at: number;
  error: string;
  elapsedMs: number;
}

function once(host: string, port: number, timeoutMs: number): Promise<{ ok: boolean; error?: string; ms: number }> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const payload = Buffer.from('loop');
    let got = Buffer.alloc(0);
    let done = false;
    const sock = net.connect({ host, port });
    const finish = (ok: boolean, error?: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ ok, ms: performance.now() - t0, ...(error ? { error } : {}) });
    };
    const timer = setTimeout(() => finish(false, 'ETIMEDOUT'), timeoutMs);
    sock.on('connect', () => sock.write(payload));
    sock.on('data', (d) => {
      got = Buffer.concat([got, d]);
      if (got.length >= payload.length) finish(got.equals(payload), got.equals(payload) ? undefined : 'EBADECHO');
    });
    sock.on('error', (e: NodeJS.ErrnoException) => finish(false, e.code ?? e.message));
    sock.on('close', () => finish(false, 'ECLOSED'));
  });
}

async function main(): Promise<void> {
  const [host, portArg, durationArg, timeoutArg] = process.argv.slice(2);
  const port = Number(portArg);
  const duration = Number(durationArg);
  if (!host || !Number.isInteger(port) || !(duration > 0)) {
    process.stderr.write('usage: connect-loop.js <host> <port> <durationMs> [timeoutMs] [pauseMs]\n');
    process.exit(2);
  }
  const timeoutMs = Number(timeoutArg ?? 5000);
  const pauseMs = Number(process.argv[6] ?? 0);
  let stop = false;
  process.on('SIGTERM', () => (stop = true));
  const start = performance.now();
  const failures: Failure[] = [];
  let attempts = 0;
  let ok = 0;
  let maxMs = 0;
  while (!stop && performance.now() - start < duration) {
    attempts++;
    const r = await once(host, port, timeoutMs);
    maxMs = Math.max(maxMs, r.ms);
    if (r.ok) ok++;
    else failures.push({ at: Math.round(performance.now() - start), error: r.error ?? 'unknown', elapsedMs: Math.round(r.ms) });
    if (pauseMs > 0) await sleep(pauseMs);
  }
  process.stdout.write(`${JSON.stringify({ attempts, ok, failures, maxMs: Math.round(maxMs) })}\n`);
}

void main();
