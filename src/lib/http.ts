/**
 * The small HTTP endpoint every long-running part serves: /metrics (Prometheus text),
 * /healthz (the process is alive and its loop turns) and /readyz (the part has done
 * what it was asked since the last change). Nothing served here may hold key material.
 */
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

export interface Probe {
  ok: boolean;
  detail: string;
}

export interface EndpointOptions {
  /** "host:port", ":port" or "port" */
  address: string;
  registry: Registry;
  healthz: () => Probe;
  readyz: () => Probe;
}

export function parseAddress(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  const host = i > 0 ? address.slice(0, i).replace(/^\[|\]$/g, '') : '0.0.0.0';
  const port = Number(i >= 0 ? address.slice(i + 1) : address);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new Error(`"${address}" is not a listen address (want host:port or :port)`);
  return { host, port };
}

/** Start serving; resolves with the server once it listens (port 0 picks a free port). */
export function serveEndpoints(o: EndpointOptions): Promise<Server> {
  const { host, port } = parseAddress(o.address);
  const server = createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (url === '/metrics') {
      o.registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'Content-Type': o.registry.contentType });
          res.end(text);
        },
        (err: Error) => {
          res.writeHead(500);
          res.end(`metrics: ${err.message}\n`);
        },
      );
      return;
    }
    if (url === '/healthz' || url === '/readyz') {
      const p = url === '/healthz' ? o.healthz() : o.readyz();
      res.writeHead(p.ok ? 200 : 503, { 'Content-Type': 'text/plain' });
      res.end(`${p.ok ? 'ok' : 'not ok'}: ${p.detail}\n`);
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('not found: try /metrics, /healthz or /readyz\n');
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}
