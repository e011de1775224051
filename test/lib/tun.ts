/**
 * A point-to-point link made of two tun devices (no link-layer header: frames start with the
 * IP header), one in each namespace of a topology, joined by the small relay in tun-pair.c
 * (compiled with the host's C compiler once per process). The relay keeps a pcap of every
 * packet it carries, as each stack sent it: after its tc egress hook, with the checksums it
 * computed (a tun device takes no checksum offload unless its reader asks for it).
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parsePcap, toEthernet } from '../../src/lib/pcap.js';
import { DEFAULT_PREFIX, exec, netnsPath, run, spawnIn, trackTempDir, waitForExit, type Topology } from './netns.js';

const SOURCE = fileURLToPath(new URL('../../../test/lib/tun-pair.c', import.meta.url));

let built: Promise<string> | undefined;

function relayTool(): Promise<string> {
  built ??= (async () => {
    const dir = mkdtempSync(path.join(tmpdir(), `${DEFAULT_PREFIX}${process.pid}-tunpair-`));
    trackTempDir(dir);
    const bin = path.join(dir, 'tun-pair');
    await run('cc', ['-O2', '-Wall', '-Werror', '-o', bin, SOURCE], { timeoutMs: 60_000 });
    return bin;
  })();
  return built;
}

export interface TunSide {
  ns: string;
  dev: string;
  ipv4: string;
  ipv6: string;
}

export interface TunLink {
  client: TunSide;
  server: TunSide;
  /** every packet the relay carried so far, as Ethernet frames (a zero MAC header in front) */
  frames(): Buffer[];
  close(): Promise<void>;
}

/** Two tun devices, `tunc` in the client's namespace and `tuns` in the server's, addressed point to point, transmit checksum offload off. */
export async function createTunLink(topo: Topology): Promise<TunLink> {
  const bin = await relayTool();
  const dir = mkdtempSync(path.join(tmpdir(), `${DEFAULT_PREFIX}${process.pid}-tun-`));
  trackTempDir(dir);
  const pcap = path.join(dir, 'relay.pcap');
  const client: TunSide = { ns: topo.client.ns, dev: 'tunc', ipv4: '10.77.0.1', ipv6: 'fd77::1' };
  const server: TunSide = { ns: topo.server.ns, dev: 'tuns', ipv4: '10.77.0.2', ipv6: 'fd77::2' };
  const relay = spawnIn(topo.client.ns, bin, [netnsPath(client.ns), client.dev, netnsPath(server.ns), server.dev, pcap], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let err = '';
  relay.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`tun-pair did not start: ${err}`)), 10_000);
    relay.stdout?.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) {
        clearTimeout(t);
        resolve();
      }
    });
    relay.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`tun-pair exited with ${code}: ${err}`));
    });
  });
  for (const me of [client, server]) {
    // On-link prefixes: the device is point to point and resolves no neighbours (NOARP).
    await exec(me.ns, 'ip', ['addr', 'add', `${me.ipv4}/24`, 'dev', me.dev]);
    await exec(me.ns, 'ip', ['-6', 'addr', 'add', `${me.ipv6}/64`, 'dev', me.dev, 'nodad']);
    await exec(me.ns, 'ip', ['link', 'set', me.dev, 'up']);
    await exec(me.ns, 'ethtool', ['-K', me.dev, 'tx', 'off']).catch(() => undefined);
  }
  return {
    client,
    server,
    frames() {
      const cap = parsePcap(readFileSync(pcap));
      return cap.packets.map((p) => toEthernet(cap.linkType, p.data));
    },
    async close() {
      relay.stdin?.end();
      if (!(await waitForExit(relay, 5_000))) relay.kill('SIGKILL');
    },
  };
}
