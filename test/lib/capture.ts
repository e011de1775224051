/**
 * Packet capture inside a namespace with tcpdump, read back with our own pcap reader.
 */
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DEFAULT_PREFIX, removeTempDir, spawnIn, trackTempDir, waitForExit } from './netns.js';
import { parsePcap, type PcapPacket } from '../../src/lib/pcap.js';
import { sleep } from '../../src/lib/wait.js';

export interface CaptureOptions {
  /** pcap-filter expression; in VLAN topologies use vlanAware() so tagged frames match */
  filter?: string;
  /** bytes kept per frame (default 262144) */
  snaplen?: number;
  /** how long to wait for tcpdump to start capturing (default 10 s) */
  startTimeoutMs?: number;
}

export interface StopOptions {
  /** time to let in-flight frames reach the file before stopping (default 200 ms) */
  settleMs?: number;
}

export interface CaptureResult {
  /** pcap link type (1 Ethernet, 113 SLL, 276 SLL2) */
  linkType: number;
  /** the captured frames in order, starting at the link-layer header */
  frames: Buffer[];
  /** the same frames with timestamps and original lengths */
  packets: PcapPacket[];
  /** frames the kernel dropped before tcpdump read them, as tcpdump reported */
  droppedByKernel: number;
}

export interface Capture {
  readonly ns: string;
  readonly dev: string;
  /** Stops tcpdump and resolves with the frames it wrote; idempotent. */
  stop(opts?: StopOptions): Promise<CaptureResult>;
}

/** A filter that matches `expr` on untagged and on 802.1Q-tagged frames. */
export function vlanAware(expr: string): string {
  // 'vlan' shifts the offsets of everything after it, so the tagged branch must come last.
  return `(${expr}) or (vlan and (${expr}))`;
}

/** Starts tcpdump on `dev` in `ns` and resolves once it reports "listening on"; rejects with tcpdump's stderr if it exits or stalls. */
export async function startCapture(ns: string, dev: string, opts: CaptureOptions = {}): Promise<Capture> {
  const dir = await mkdtemp(path.join(tmpdir(), `${DEFAULT_PREFIX}${process.pid}-cap-`));
  trackTempDir(dir);
  const file = path.join(dir, `${dev}.pcap`);
  const args = [
    '-i',
    dev,
    '-U',
    '-w',
    file,
    '--immediate-mode',
    '-n',
    // Debian's tcpdump otherwise drops to the tcpdump user and cannot write into our 0700 directory.
    '-Z',
    'root',
    '-s',
    String(opts.snaplen ?? 262144),
  ];
  if (opts.filter) {
    args.push(opts.filter);
  }
  const child = spawnIn(ns, 'tcpdump', args);
  let stderr = '';
  child.stderr?.setEncoding('utf8');

  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(
          new Error(`tcpdump on ${dev} in ${ns} did not start within ${opts.startTimeoutMs ?? 10_000} ms: ${stderr.trim()}`),
        );
      }, opts.startTimeoutMs ?? 10_000);
      const onData = (chunk: string): void => {
        stderr += chunk;
        if (stderr.includes('listening on')) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stderr?.on('data', onData);
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`cannot start tcpdump in ${ns}: ${err.message}`));
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`tcpdump on ${dev} in ${ns} exited (${signal ?? code}) before capturing: ${stderr.trim()}`));
      });
    });
  } catch (err) {
    child.kill('SIGKILL');
    await waitForExit(child, 5_000);
    await removeTempDir(dir);
    throw err;
  }

  let stopped: Promise<CaptureResult> | undefined;
  const stop = (stopOpts: StopOptions = {}): Promise<CaptureResult> => {
    stopped ??= (async () => {
      try {
        await sleep(stopOpts.settleMs ?? 200);
        child.kill('SIGTERM');
        if (!(await waitForExit(child, 5_000))) {
          child.kill('SIGKILL');
          await waitForExit(child, 5_000);
        }
        if (child.exitCode !== 0 && child.signalCode !== 'SIGTERM' && child.signalCode !== 'SIGKILL') {
          throw new Error(`tcpdump on ${dev} in ${ns} failed (${child.signalCode ?? child.exitCode}): ${stderr.trim()}`);
        }
        const pcap = parsePcap(await readFile(file));
        const dropped = /(\d+) packets? dropped by kernel/.exec(stderr);
        return {
          linkType: pcap.linkType,
          frames: pcap.packets.map((p) => p.data),
          packets: pcap.packets,
          droppedByKernel: dropped ? Number(dropped[1]) : 0,
        };
      } finally {
        await removeTempDir(dir);
      }
    })();
    return stopped;
  };
  return { ns, dev, stop };
}
