/**
 * Makes a loopback TCP port of the host (e.g. the test kube-apiserver) reachable at the
 * same 127.0.0.1 port inside a test network namespace, through a unix socket: no
 * routing between the namespace and the host, and TLS passes through untouched.
 * stop() cuts every connection (an API server outage, as the namespace sees it).
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { spawnIn, waitForExit } from './netns.js';

const INNER = `
const net = require('node:net');
const [sock, port] = process.argv.slice(1);
net.createServer((c) => {
  const u = net.connect(sock);
  c.pipe(u).pipe(c);
  c.on('error', () => u.destroy());
  u.on('error', () => c.destroy());
}).listen(Number(port), '127.0.0.1', () => process.stdout.write('ready\\n'));
`;

export interface LoopbackBridge {
  /** stop forwarding (connections are cut); start() again to restore (a no-op while forwarding) */
  stop(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

export async function bridgeLoopback(ns: string, port: number): Promise<LoopbackBridge> {
  const dir = mkdtempSync(path.join(tmpdir(), 'nttest-bridge-'));
  const sock = path.join(dir, 'b.sock');
  let server: Server | null = null;
  const open = new Set<Socket>();
  const startHost = (): Promise<void> =>
    new Promise((resolve, reject) => {
      if (server) return resolve(); // already forwarding
      server = createServer((c) => {
        const up = createConnection(port, '127.0.0.1');
        open.add(c);
        open.add(up);
        c.pipe(up).pipe(c);
        const done = (): void => {
          c.destroy();
          up.destroy();
          open.delete(c);
          open.delete(up);
        };
        c.on('error', done).on('close', done);
        up.on('error', done).on('close', done);
      });
      server.once('error', reject);
      server.listen(sock, () => resolve());
    });
  await startHost();
  const inner = spawnIn(ns, process.execPath, ['-e', INNER, sock, String(port)]);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    inner.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    });
    inner.once('exit', (code) => reject(new Error(`loopback bridge in ${ns} exited with ${code}`)));
  });
  const stopHost = async (): Promise<void> => {
    const s = server as Server | null;
    server = null;
    for (const c of open) c.destroy();
    open.clear();
    if (s) await new Promise<void>((r) => s.close(() => r()));
    rmSync(sock, { force: true });
  };
  return {
    stop: stopHost,
    start: startHost,
    async close() {
      await stopHost();
      inner.kill('SIGKILL');
      await waitForExit(inner, 5000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
