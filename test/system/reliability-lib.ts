/**
 * Helpers of the reliability tests (reliability-*.test.ts): the kernel's view of our pins,
 * counters read straight from the pinned map, large destination lists, a connection loop
 * with a capture of every SYN it sends, and searching text for key material.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { readCounterRows } from '../../src/agent/counters.js';
import { layoutDir } from '../../src/agent/layout.js';
import { NT_OPT_EXID_DEFAULT, NT_OPT_KIND_DEFAULT } from '../../src/lib/abi.js';
import { TCP_ACK, TCP_SYN, findTokenOption, parseFrame } from '../../src/lib/packet.js';
import { toEthernet } from '../../src/lib/pcap.js';
import { binding } from '../../src/native/binding.js';
import { ROOT, TOKEN } from '../lib/agent.js';
import { startCapture, type Capture } from '../lib/capture.js';
import { run, spawnIn, waitForExit, type Topology } from '../lib/netns.js';

export const CONNECT_LOOP = path.join(ROOT, 'dist/test/lib/connect-loop.js');

/** map name -> kernel map id, for every map pinned under `stateDir` (the current layout's directory). */
export function pinnedMapIds(stateDir: string): Record<string, number> {
  const dir = layoutDir(stateDir);
  const out: Record<string, number> = {};
  if (!existsSync(dir)) return out;
  const b = binding();
  for (const name of readdirSync(dir).sort()) {
    const m = b.mapFromPin(path.join(dir, name));
    out[name] = m.info.id;
    m.close();
  }
  return out;
}

/** Every counter in the pinned counter maps, summed over interfaces, policies and CPUs, by name. */
export function pinnedCounters(stateDir: string): Record<string, bigint> {
  const dir = layoutDir(stateDir);
  const out: Record<string, bigint> = {};
  if (!existsSync(path.join(dir, 'nt_counters'))) return out;
  const counters = binding().mapFromPin(path.join(dir, 'nt_counters'));
  const owners = binding().mapFromPin(path.join(dir, 'nt_counter_slots'));
  try {
    for (const r of readCounterRows(counters, owners)) out[r.counter] = (out[r.counter] ?? 0n) + r.value;
  } finally {
    counters.close();
    owners.close();
  }
  return out;
}

/** `n` distinct /32 destinations from 198.18.0.0/15, the `shift`-th set of that size. */
export function destinations(n: number, shift = 0): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const x = (shift * n + i) % 131072;
    out.push(`198.${18 + (x >> 16)}.${(x >> 8) & 255}.${x & 255}/32`);
  }
  return out;
}

/** A YAML flow list of destination entries. */
export function destinationList(cidrs: readonly string[], ports: readonly number[] = []): string {
  const p = ports.length ? `, ports: [${ports.join(', ')}]` : '';
  return `[${cidrs.map((c) => `{cidr: "${c}"${p}}`).join(', ')}]`;
}

export interface LoopSummary {
  attempts: number;
  ok: number;
  failures: Array<{ at: number; error: string; elapsedMs: number }>;
  maxMs: number;
}

export interface SynWatch {
  /** SIGTERM the loop, stop the capture: every SYN seen, how many carried `token`, the loop's summary */
  stop(): Promise<{ syns: number; marked: number; unmarked: string[]; loop: LoopSummary; droppedByKernel: number }>;
}

/**
 * Connections in a loop from the topology's client to the server's IPv4 address, `port` (one
 * at a time, echo checked), and a capture at the server's end of every opening SYN to that
 * port, until stop(). A SYN counts as marked when it carries the default token option with
 * TOKEN.
 */
export async function watchSyns(topo: Topology, port: number): Promise<SynWatch> {
  const opts = {
    clientNs: topo.client.ns,
    serverNs: topo.server.ns,
    serverDev: topo.server.dev,
    addr: topo.server.ipv4,
    port,
    kind: NT_OPT_KIND_DEFAULT,
    exid: NT_OPT_EXID_DEFAULT,
    token: TOKEN,
  };
  const cap: Capture = await startCapture(opts.serverNs, opts.serverDev, {
    filter: `tcp dst port ${opts.port} and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn`,
  });
  const loop: ChildProcess = spawnIn(opts.clientNs, process.execPath, [
    CONNECT_LOOP,
    opts.addr,
    String(opts.port),
    '3600000',
    '5000',
  ]);
  let out = '';
  loop.stdout?.setEncoding('utf8');
  loop.stdout?.on('data', (d: string) => (out += d));
  return {
    async stop() {
      loop.kill('SIGTERM');
      if (!(await waitForExit(loop, 15_000))) throw new Error('the connect loop did not stop');
      const res = await cap.stop({ settleMs: 300 });
      let syns = 0;
      let marked = 0;
      const unmarked: string[] = [];
      for (const f of res.frames) {
        const p = parseFrame(toEthernet(res.linkType, f));
        if (!p.tcp || (p.tcp.flags & (TCP_SYN | TCP_ACK)) !== TCP_SYN) continue;
        syns++;
        if (findTokenOption(p, opts.kind, opts.exid)?.equals(opts.token)) marked++;
        else if (unmarked.length < 10) unmarked.push(`${p.src}:${p.tcp.sport} seq ${p.tcp.seq}`);
      }
      return {
        syns,
        marked,
        unmarked,
        loop: JSON.parse(out.trim() || '{}') as LoopSummary,
        droppedByKernel: res.droppedByKernel,
      };
    },
  };
}

/** The encodings of a key someone might print by mistake. */
export function keyEncodings(key: Buffer): string[] {
  const out = [
    key.toString('hex'),
    key.toString('base64'),
    key.toString('base64url').replace(/=+$/, ''),
    key.toString('hex').toUpperCase(),
  ];
  // Go-style byte lists and JSON Buffer dumps
  out.push(`[${[...key].join(' ')}]`, `[${[...key].join(',')}]`);
  return out;
}

/** Where in `text` any encoding of any of `keys` appears, as short descriptions; empty when nowhere. */
export function keyLeaks(where: string, text: string, keys: readonly Buffer[]): string[] {
  const found: string[] = [];
  keys.forEach((k, i) => {
    for (const enc of keyEncodings(k)) if (text.includes(enc)) found.push(`${where}: key ${i} as "${enc.slice(0, 6)}…"`);
  });
  return found;
}

/** Program ids attached at `dev`'s XDP hook in `ns` (0 when none), as the kernel reports them. */
export async function xdpProgId(ns: string, dev: string): Promise<number> {
  const { stdout } = await run('ip', ['-n', ns, '-j', 'link', 'show', 'dev', dev]);
  const [l] = JSON.parse(stdout) as Array<{ xdp?: { prog?: { id?: number } } }>;
  return l?.xdp?.prog?.id ?? 0;
}

/** The clsact qdisc and tc filters on `dev` in `ns`, as `tc` prints them. */
export async function tcState(ns: string, dev: string): Promise<{ qdiscs: string; ingress: string; egress: string }> {
  const q = await run('ip', ['netns', 'exec', ns, 'tc', 'qdisc', 'show', 'dev', dev]);
  const i = await run('ip', ['netns', 'exec', ns, 'tc', 'filter', 'show', 'dev', dev, 'ingress']).catch(() => ({ stdout: '' }));
  const e = await run('ip', ['netns', 'exec', ns, 'tc', 'filter', 'show', 'dev', dev, 'egress']).catch(() => ({ stdout: '' }));
  return { qdiscs: q.stdout, ingress: i.stdout, egress: e.stdout };
}
