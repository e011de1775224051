/**
 * A TCP echo server or one-shot client, run inside a namespace by tcp.ts. Prints JSON lines:
 *   node tcp-peer.js server <host> <port>
 *     {"event":"listening","address","port"} then per connection
 *     {"event":"accept"|"data"|"close"|"error", ...}
 *   node tcp-peer.js client <host> <port> <timeoutMs> [localPort]
 *     one line: {"ok","connected","echoed","elapsedMs","localAddress","localPort","error"?}
 * The client connects, sends a short payload, waits for it to come back, and closes.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';

function emit(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function server(host: string, port: number): void {
  const srv = net.createServer((sock) => {
    const peer = {
      remoteAddress: sock.remoteAddress,
      remotePort: sock.remotePort,
      localAddress: sock.localAddress,
      localPort: sock.localPort,
    };
    emit({ event: 'accept', ...peer });
    sock.on('data', (d) => {
      emit({ event: 'data', bytes: d.length, ...peer });
      sock.write(d);
    });
    sock.on('end', () => sock.end());
    sock.on('error', (err: NodeJS.ErrnoException) => emit({ event: 'error', error: err.code ?? err.message, ...peer }));
    sock.on('close', () => emit({ event: 'close', ...peer }));
  });
  srv.on('error', (err: NodeJS.ErrnoException) => {
    emit({ event: 'error', error: err.code ?? err.message });
    process.exit(1);
  });
  srv.listen({ host, port }, () => {
    const a = srv.address();
    if (a && typeof a === 'object') {
      emit({ event: 'listening', address: a.address, port: a.port });
    }
  });
  const quit = (): void => {
    srv.close();
    process.exit(0);
  };
  process.on('SIGTERM', quit);
  process.on('SIGINT', quit);
}

function client(host: string, port: number, timeoutMs: number, localPort: number | undefined): void {
  const payload = Buffer.from('netoken-echo');
  const start = performance.now();
  let connected = false;
  let done = false;
  let echoed = Buffer.alloc(0);
  const sock = net.connect({ host, port, ...(localPort ? { localPort } : {}) });
  const finish = (extra: Record<string, unknown>): void => {
    if (done) {
      return;
    }
    done = true;
    clearTimeout(timer);
    const ok = connected && echoed.equals(payload);
    emit({
      ok,
      connected,
      echoed: echoed.equals(payload),
      elapsedMs: Math.round((performance.now() - start) * 1000) / 1000,
      localAddress: sock.localAddress,
      localPort: sock.localPort,
      ...extra,
    });
    sock.destroy();
    process.exitCode = 0;
  };
  const timer = setTimeout(() => finish({ error: connected ? 'ECHOTIMEOUT' : 'ETIMEDOUT' }), timeoutMs);
  sock.on('connect', () => {
    connected = true;
    sock.write(payload);
  });
  sock.on('data', (d) => {
    echoed = Buffer.concat([echoed, d]);
    if (echoed.length >= payload.length) {
      finish({});
    }
  });
  sock.on('error', (err: NodeJS.ErrnoException) => finish({ error: err.code ?? err.message }));
  sock.on('close', () => finish(connected && !echoed.equals(payload) ? { error: 'ECLOSED' } : {}));
}

const [mode, host, portArg, timeoutArg, localPortArg] = process.argv.slice(2);
const port = Number(portArg);
if (mode === 'server' && host && Number.isInteger(port)) {
  server(host, port);
} else if (mode === 'client' && host && Number.isInteger(port) && Number(timeoutArg) > 0) {
  client(host, port, Number(timeoutArg), localPortArg ? Number(localPortArg) : undefined);
} else {
  process.stderr.write('usage: tcp-peer.js server <host> <port> | client <host> <port> <timeoutMs> [localPort]\n');
  process.exit(2);
}
