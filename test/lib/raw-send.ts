/**
 * Raw Ethernet frames from inside a namespace (SYNs no TCP stack would send: replayed,
 * forged, flooded) through the small AF_PACKET sender in raw-send.c, compiled with the
 * host's C compiler once per process.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_PREFIX, netnsPath, run, trackTempDir } from './netns.js';

const SOURCE = fileURLToPath(new URL('../../../test/lib/raw-send.c', import.meta.url));

let built: Promise<string> | undefined;

/** Path of the compiled sender (built on first use; fails loudly without a C compiler). */
export function rawSendTool(): Promise<string> {
  built ??= (async () => {
    const dir = mkdtempSync(path.join(tmpdir(), `${DEFAULT_PREFIX}${process.pid}-rawsend-`));
    trackTempDir(dir);
    const bin = path.join(dir, 'raw-send');
    await run('cc', ['-O2', '-Wall', '-Werror', '-o', bin, SOURCE], { timeoutMs: 60_000 });
    return bin;
  })();
  return built;
}

export interface SendResult {
  sent: number;
  seconds: number;
}

async function raw(
  ns: string,
  mode: 'send' | 'flood',
  dev: string,
  frame: Buffer,
  count: number,
  timeoutMs: number,
): Promise<SendResult> {
  const bin = await rawSendTool();
  const { stdout } = await run(
    'nsenter',
    [`--net=${netnsPath(ns)}`, '--', bin, mode, dev, frame.toString('hex'), String(count)],
    { timeoutMs },
  );
  return JSON.parse(stdout.trim()) as SendResult;
}

/** Send `frame` (Ethernet header first) out of `dev` in `ns`, exactly as given, `count` times. It passes tc egress. */
export function sendFrame(ns: string, dev: string, frame: Buffer, count = 1): Promise<SendResult> {
  return raw(ns, 'send', dev, frame, count, 30_000);
}

/**
 * Send `count` copies of an Ethernet + IPv4 + TCP `frame` out of `dev`, each with its own
 * source port and sequence number (checksums fixed), as fast as the socket takes them.
 * Bypasses the qdisc and tc egress.
 */
export function floodFrames(ns: string, dev: string, frame: Buffer, count: number): Promise<SendResult> {
  return raw(ns, 'flood', dev, frame, count, 300_000);
}
