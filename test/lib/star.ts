/**
 * A star of network namespaces for tests where one server meets several clients that
 * differ in what they put on their SYNs:
 *
 *   client 1 [c1] ==== [s1] \
 *   client 2 [c2] ==== [s2] -- server
 *   ...                     /
 *
 * Client i has 10.88.i.2/24 (and fd00:88:i::2/64), the server 10.88.i.1 (fd00:88:i::1) on
 * the link to it; each client's default route points at the server. Names carry the
 * prefix, the pid and a random part like netns.ts topologies, so sweepStale() finds
 * leftovers. Transmit checksum offload is off on every veth end.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { DEFAULT_PREFIX, exec, run } from './netns.js';

export interface StarClient {
  /** 1-based */
  index: number;
  ns: string;
  /** the client's veth end */
  dev: string;
  mac: string;
  ipv4: string;
  ipv6: string;
  /** the server's veth end toward this client */
  serverDev: string;
  serverIfindex: number;
  serverMac: string;
  /** the server's address on this link */
  serverIpv4: string;
  serverIpv6: string;
}

export interface Star {
  readonly serverNs: string;
  readonly clients: readonly StarClient[];
  readonly namespaces: readonly string[];
  /** Kills the processes in the namespaces and deletes them; idempotent. */
  destroy(): Promise<void>;
}

const live = new Set<string>();
let exitHook = false;

function deleteNow(ns: string): Promise<void> {
  return (async () => {
    try {
      const { stdout } = await run('ip', ['netns', 'pids', ns], { timeoutMs: 10_000 });
      for (const pid of stdout.split(/\s+/).filter(Boolean).map(Number)) {
        if (Number.isInteger(pid) && pid > 1 && pid !== process.pid) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone already
          }
        }
      }
    } catch {
      // no such namespace
    }
    if (existsSync(`/var/run/netns/${ns}`)) await run('ip', ['netns', 'del', ns], { timeoutMs: 15_000 });
    live.delete(ns);
  })();
}

async function linkInfo(ns: string, dev: string): Promise<{ ifindex: number; mac: string }> {
  const { stdout } = await run('ip', ['-n', ns, '-j', 'link', 'show', 'dev', dev]);
  const [l] = JSON.parse(stdout) as Array<{ ifindex: number; address: string }>;
  if (!l) throw new Error(`no interface ${dev} in ${ns}`);
  return { ifindex: l.ifindex, mac: l.address };
}

/** Create the star; on any failure, remove what was made and reject. */
export async function createStar(opts: { name: string; clients: number }): Promise<Star> {
  if (!/^[a-z0-9-]{1,16}$/.test(opts.name)) throw new Error(`createStar: name "${opts.name}" must be 1-16 of [a-z0-9-]`);
  if (opts.clients < 1 || opts.clients > 9) throw new Error('createStar: 1 to 9 clients');
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => {
      for (const ns of live) {
        try {
          // Synchronous at exit: the async path cannot run any more.
          execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
        } catch {
          // best effort; sweepStale() removes leftovers
        }
      }
    });
  }
  const rand = randomBytes(3).toString('hex');
  const base = `${DEFAULT_PREFIX}${process.pid}-${rand}-${opts.name}`;
  const serverNs = `${base}-srv`;
  const ifBase = `n${process.pid.toString(36)}${rand.slice(0, 3)}`;
  const clientNs = (i: number): string => `${base}-c${i}`;
  const namespaces = [serverNs, ...Array.from({ length: opts.clients }, (_, i) => clientNs(i + 1))];
  let destroyed: Promise<void> | undefined;
  const destroy = (): Promise<void> => {
    destroyed ??= (async () => {
      for (const ns of namespaces) await deleteNow(ns);
      const left = namespaces.filter((ns) => existsSync(`/var/run/netns/${ns}`));
      if (left.length) throw new Error(`star: namespaces left behind: ${left.join(', ')}`);
    })();
    return destroyed;
  };
  try {
    for (const ns of namespaces) {
      live.add(ns);
      await run('ip', ['netns', 'add', ns]);
      await exec(ns, 'sysctl', [
        '-q',
        '-w',
        'net.ipv4.conf.all.rp_filter=0',
        'net.ipv4.conf.default.rp_filter=0',
        'net.ipv6.conf.all.accept_dad=0',
        'net.ipv6.conf.default.accept_dad=0',
      ]);
      await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    }
    const clients: StarClient[] = [];
    for (let i = 1; i <= opts.clients; i++) {
      const ns = clientNs(i);
      const dev = `${ifBase}c${i}`;
      const serverDev = `${ifBase}s${i}`;
      await run('ip', ['-n', ns, 'link', 'add', dev, 'type', 'veth', 'peer', 'name', serverDev, 'netns', serverNs]);
      for (const [n, d, v4, v6] of [
        [ns, dev, `10.88.${i}.2/24`, `fd00:88:${i}::2/64`],
        [serverNs, serverDev, `10.88.${i}.1/24`, `fd00:88:${i}::1/64`],
      ] as const) {
        await run('ip', ['-n', n, 'addr', 'add', v4, 'dev', d]);
        await run('ip', ['-n', n, '-6', 'addr', 'add', v6, 'dev', d, 'nodad']);
        await run('ip', ['-n', n, 'link', 'set', d, 'up']);
        await exec(n, 'ethtool', ['-K', d, 'tx', 'off']);
      }
      await run('ip', ['-n', ns, 'route', 'add', 'default', 'via', `10.88.${i}.1`]);
      await run('ip', ['-n', ns, '-6', 'route', 'add', 'default', 'via', `fd00:88:${i}::1`]);
      const c = await linkInfo(ns, dev);
      const s = await linkInfo(serverNs, serverDev);
      clients.push({
        index: i,
        ns,
        dev,
        mac: c.mac,
        ipv4: `10.88.${i}.2`,
        ipv6: `fd00:88:${i}::2`,
        serverDev,
        serverIfindex: s.ifindex,
        serverMac: s.mac,
        serverIpv4: `10.88.${i}.1`,
        serverIpv6: `fd00:88:${i}::1`,
      });
    }
    return { serverNs, clients, namespaces, destroy };
  } catch (err) {
    await destroy().catch(() => undefined);
    throw err;
  }
}
