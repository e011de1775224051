/**
 * Network-namespace topologies for system tests and the demo.
 *
 *   pair:    client [c] ======= [s] server
 *   routed:  client [c] ======= [rc] router [rs] ======= [s] server   (router forwards v4 and v6)
 *
 * Every name carries the prefix, the pid and a random part, so parallel test files never collide
 * and sweepStale() can remove what a crashed run left. Nothing is created in the host namespace:
 * veths are created inside the namespaces, so deleting the namespaces removes everything.
 * Transmit checksum offload is off on every veth end by default, because veth otherwise hands
 * CHECKSUM_PARTIAL packets across unchecked and hides checksum bugs.
 *
 * With `vlan`, frames on each veth link carry an 802.1Q tag and the addresses live on a separate
 * device (`addrDev`); `dev` stays the veth end where tc hooks attach. Two implementations:
 *   'subif': a kernel VLAN sub-interface on each veth end (needs CONFIG_VLAN_8021Q);
 *   'tc':    emulation with a small tc program (see vlan-tc.ts), for kernels without 8021q.
 */
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { run, type RunOptions, type RunResult } from './run.js';
import { attachVlanEmulation, buildVlanObject, makeBuildDir, type VlanTagPlacement } from './vlan-tc.js';

export { CommandError, run, type RunOptions, type RunResult } from './run.js';
export type { VlanTagPlacement } from './vlan-tc.js';

/** Prefix of every namespace and temporary directory this module creates. */
export const DEFAULT_PREFIX = 'nttest-';
export const NETNS_DIR = '/var/run/netns';
const IFNAMSIZ = 15;

// ---------------------------------------------------------------------------------------------
// Running commands inside a namespace

/** Runs a short command inside `ns` with `ip netns exec` (private /sys) and resolves with its output; rejects with a CommandError. */
export function exec(ns: string, cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return run('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

/** Path of a namespace's handle, for `nsenter --net=` and setns. */
export function netnsPath(ns: string): string {
  return path.join(NETNS_DIR, ns);
}

const childrenByNs = new Map<string, Set<ChildProcess>>();

/** Starts a long-running command in `ns` with nsenter (host mounts such as bpffs stay visible); destroy() of the topology kills it if still running. */
export function spawnIn(ns: string, cmd: string, args: readonly string[], opts: SpawnOptions = {}): ChildProcess {
  const child = spawn('nsenter', [`--net=${netnsPath(ns)}`, '--', cmd, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    ...opts,
  });
  let set = childrenByNs.get(ns);
  if (!set) {
    set = new Set();
    childrenByNs.set(ns, set);
  }
  set.add(child);
  const forget = (): void => {
    set.delete(child);
  };
  child.once('exit', forget);
  child.once('error', forget);
  return child;
}

/** Resolves when the child has exited (immediately if it already has). */
export function waitForExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve(true);
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

async function killNsChildren(ns: string): Promise<void> {
  const set = childrenByNs.get(ns);
  if (!set) {
    return;
  }
  const waits: Promise<boolean>[] = [];
  for (const child of set) {
    child.kill('SIGKILL');
    waits.push(waitForExit(child, 5_000));
  }
  await Promise.all(waits);
  childrenByNs.delete(ns);
}

// ---------------------------------------------------------------------------------------------
// Process-wide registry, so a crash, Ctrl-C or a forgotten destroy() leaves nothing behind

const liveNamespaces = new Set<string>();
const liveDirs = new Set<string>();
let exitHandlersInstalled = false;

function cleanupAllSync(): void {
  for (const set of childrenByNs.values()) {
    for (const child of set) {
      child.kill('SIGKILL');
    }
  }
  childrenByNs.clear();
  for (const ns of liveNamespaces) {
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: 10_000 });
    } catch {
      // best effort at exit; sweepStale() catches what is left
    }
  }
  liveNamespaces.clear();
  for (const dir of liveDirs) {
    rmSync(dir, { recursive: true, force: true });
  }
  liveDirs.clear();
}

function installExitHandlers(): void {
  if (exitHandlersInstalled) {
    return;
  }
  exitHandlersInstalled = true;
  process.on('exit', cleanupAllSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      cleanupAllSync();
      // Keep the signal's default meaning (terminate) unless someone else handles it.
      if (process.listenerCount(sig) === 0) {
        process.kill(process.pid, sig);
      }
    });
  }
}

/** Registers a temporary directory for removal at process exit (used by capture and VLAN builds). */
export function trackTempDir(dir: string): void {
  installExitHandlers();
  liveDirs.add(dir);
}

/** Removes a temporary directory now and forgets it. */
export async function removeTempDir(dir: string): Promise<void> {
  liveDirs.delete(dir);
  await rm(dir, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------
// Namespace lifecycle

/** Names of all named network namespaces on the host. */
export async function listNamespaces(): Promise<string[]> {
  try {
    return (await readdir(NETNS_DIR)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      return [];
    }
    throw err;
  }
}

/** Kills every process still inside `ns` (all of them were started by this harness), by pid. */
async function killNsPids(ns: string): Promise<void> {
  let out: string;
  try {
    out = (await run('ip', ['netns', 'pids', ns], { timeoutMs: 10_000 })).stdout;
  } catch {
    return;
  }
  for (const pid of out.split(/\s+/).filter(Boolean).map(Number)) {
    if (Number.isInteger(pid) && pid > 1 && pid !== process.pid) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

/** Deletes a namespace after stopping the processes in it; a namespace that is already gone is fine. */
async function deleteNamespace(ns: string): Promise<void> {
  await killNsChildren(ns);
  if (!existsSync(netnsPath(ns))) {
    liveNamespaces.delete(ns);
    return;
  }
  await killNsPids(ns);
  try {
    await run('ip', ['netns', 'del', ns], { timeoutMs: 15_000 });
  } catch (err) {
    if (existsSync(netnsPath(ns))) {
      throw err;
    }
  }
  liveNamespaces.delete(ns);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function ownerPid(name: string, prefix: string): number | undefined {
  const pid = Number(name.slice(prefix.length).split('-')[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/** Removes namespaces and temp directories named `<prefix><pid>-…` whose pid is no longer running; resolves with what it removed. */
export async function sweepStale(prefix: string = DEFAULT_PREFIX): Promise<string[]> {
  if (prefix.length === 0) {
    throw new Error('sweepStale: an empty prefix would match every namespace');
  }
  const removed: string[] = [];
  for (const ns of await listNamespaces()) {
    const pid = ns.startsWith(prefix) ? ownerPid(ns, prefix) : undefined;
    if (pid !== undefined && !pidAlive(pid)) {
      await deleteNamespace(ns);
      removed.push(ns);
    }
  }
  for (const entry of readdirSync(tmpdir())) {
    const pid = entry.startsWith(prefix) ? ownerPid(entry, prefix) : undefined;
    if (pid !== undefined && !pidAlive(pid)) {
      await rm(path.join(tmpdir(), entry), { recursive: true, force: true });
      removed.push(path.join(tmpdir(), entry));
    }
  }
  return removed;
}

// ---------------------------------------------------------------------------------------------
// Topologies

export type TopologyKind = 'pair' | 'routed';

export interface TopologyOptions {
  /** short label (letters, digits, '-') that appears in every namespace name */
  name: string;
  kind: TopologyKind;
  /** also give every interface an IPv6 address (2001:db8::/32) and IPv6 routes; default false */
  ipv6?: boolean;
  /** tag every frame on the veth links with this 802.1Q id (1..4094) */
  vlan?: number;
  /** how to tag: 'tc' emulation (default; works without the 8021q module) or kernel 'subif' */
  vlanImpl?: 'tc' | 'subif';
  /** where the tag sits when a frame reaches the veth's tc egress hook; default 'data' for 'tc', 'metadata' for 'subif' */
  vlanTag?: VlanTagPlacement;
  /** leave transmit checksum offload on (default false: `ethtool -K <dev> tx off` on every veth end) */
  txChecksumOffload?: boolean;
  /** namespace and temp-dir prefix; default DEFAULT_PREFIX */
  prefix?: string;
}

/** One side of a veth link, seen from inside its namespace. */
export interface Iface {
  ns: string;
  /** the veth end: where tc hooks attach and where a capture sees the frames on the link */
  dev: string;
  ifindex: number;
  mac: string;
  /** the device holding the addresses: `dev` itself, or the VLAN device in VLAN topologies */
  addrDev: string;
  addrIfindex: number;
  /** IPv4 address without prefix length, e.g. '203.0.113.2' */
  ipv4: string;
  /** with prefix length, e.g. '203.0.113.2/24' */
  ipv4Cidr: string;
  ipv6?: string;
  ipv6Cidr?: string;
}

export interface VlanInfo {
  id: number;
  impl: 'tc' | 'subif';
  tag: VlanTagPlacement;
}

export interface Topology {
  readonly name: string;
  readonly kind: TopologyKind;
  /** the side that opens connections (and whose `dev` egress gets the marker in tests) */
  readonly client: Iface;
  /** the side that accepts connections */
  readonly server: Iface;
  /** routed only: the router's interface toward the client and toward the server */
  readonly router?: { readonly ns: string; readonly toClient: Iface; readonly toServer: Iface };
  /** every namespace of the topology */
  readonly namespaces: readonly string[];
  readonly vlan?: VlanInfo;
  readonly txChecksumOffload: boolean;
  /** Stops processes started in the namespaces and deletes them; idempotent; rejects if a namespace survives. */
  destroy(): Promise<void>;
}

interface SidePlan {
  key: 'client' | 'server' | 'routerC' | 'routerS';
  ns: string;
  dev: string;
  addrDev: string;
  /** tc emulation: the veth peer of addrDev, kept only for carrier */
  sinkDev?: string;
  ipv4Cidr: string;
  ipv6Cidr: string;
  gw4?: string;
  gw6?: string;
}

interface LinkInfo {
  ifindex: number;
  mac: string;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9-]{0,23}$/;

function addrOf(cidr: string): string {
  const slash = cidr.indexOf('/');
  return slash < 0 ? cidr : cidr.slice(0, slash);
}

async function ipIn(ns: string, args: readonly string[]): Promise<RunResult> {
  return run('ip', ['-n', ns, ...args], { timeoutMs: 15_000 });
}

/**
 * A permanent neighbour entry in `ns`: `ip` on `dev` is at `mac`, without ARP or ND. The
 * family comes from the address.
 */
export async function permanentNeighbour(ns: string, ip: string, mac: string, dev: string): Promise<void> {
  await ipIn(ns, ['neigh', 'replace', ip, 'lladdr', mac, 'dev', dev, 'nud', 'permanent']);
}

async function readLinks(ns: string): Promise<Map<string, LinkInfo>> {
  const { stdout } = await ipIn(ns, ['-j', 'link', 'show']);
  const parsed = JSON.parse(stdout) as Array<{ ifname?: unknown; ifindex?: unknown; address?: unknown }>;
  const links = new Map<string, LinkInfo>();
  for (const l of parsed) {
    if (typeof l.ifname === 'string' && typeof l.ifindex === 'number') {
      links.set(l.ifname, { ifindex: l.ifindex, mac: typeof l.address === 'string' ? l.address : '' });
    }
  }
  return links;
}

async function txOff(ns: string, dev: string): Promise<void> {
  await exec(ns, 'ethtool', ['-K', dev, 'tx', 'off'], { timeoutMs: 15_000 });
}

/** Creates namespaces, veths, addresses and routes for a topology; on any failure removes what it made and rejects. */
export async function createTopology(opts: TopologyOptions): Promise<Topology> {
  if (!NAME_RE.test(opts.name)) {
    throw new Error(`createTopology: name ${JSON.stringify(opts.name)} must be 1-24 letters, digits or '-'`);
  }
  if (opts.vlan !== undefined && !(Number.isInteger(opts.vlan) && opts.vlan >= 1 && opts.vlan <= 4094)) {
    throw new Error(`createTopology: vlan ${opts.vlan} must be an integer in 1..4094`);
  }
  installExitHandlers();
  const prefix = opts.prefix ?? DEFAULT_PREFIX;
  const ipv6 = opts.ipv6 ?? false;
  const offload = opts.txChecksumOffload ?? false;
  const vlanImpl = opts.vlanImpl ?? 'tc';
  const vlan: VlanInfo | undefined =
    opts.vlan === undefined
      ? undefined
      : { id: opts.vlan, impl: vlanImpl, tag: opts.vlanTag ?? (vlanImpl === 'tc' ? 'data' : 'metadata') };

  const rand = randomBytes(3).toString('hex');
  const nsName = (role: string): string => `${prefix}${process.pid}-${rand}-${opts.name}-${role}`;
  // Interface names are per namespace, but unique names make captures and logs unambiguous.
  const ifBase = `n${process.pid.toString(36)}${rand.slice(0, 4)}`;
  const ifName = (suffix: string): string => {
    const name = `${ifBase}${suffix}`;
    if (name.length > IFNAMSIZ) {
      throw new Error(`interface name ${name} is longer than ${IFNAMSIZ} characters`);
    }
    return name;
  };

  const clientNs = nsName('client');
  const serverNs = nsName('server');
  const routerNs = opts.kind === 'routed' ? nsName('router') : undefined;
  const namespaces = routerNs ? [clientNs, routerNs, serverNs] : [clientNs, serverNs];

  const side = (
    key: SidePlan['key'],
    ns: string,
    wire: string,
    ipv4Cidr: string,
    ipv6Cidr: string,
    gw4?: string,
    gw6?: string,
  ): SidePlan => ({
    key,
    ns,
    dev: ifName(wire),
    addrDev: vlan ? ifName(`${wire}v`) : ifName(wire),
    ...(vlan?.impl === 'tc' ? { sinkDev: ifName(`${wire}k`) } : {}),
    ipv4Cidr,
    ipv6Cidr,
    ...(gw4 ? { gw4 } : {}),
    ...(gw6 ? { gw6 } : {}),
  });

  let sides: SidePlan[];
  let links: Array<[SidePlan, SidePlan]>;
  if (routerNs) {
    const client = side('client', clientNs, 'c', '192.0.2.2/24', '2001:db8:2::2/64', '192.0.2.1', '2001:db8:2::1');
    const routerC = side('routerC', routerNs, 'rc', '192.0.2.1/24', '2001:db8:2::1/64');
    const routerS = side('routerS', routerNs, 'rs', '203.0.113.1/24', '2001:db8:113::1/64');
    const server = side('server', serverNs, 's', '203.0.113.2/24', '2001:db8:113::2/64', '203.0.113.1', '2001:db8:113::1');
    sides = [client, routerC, routerS, server];
    links = [
      [client, routerC],
      [routerS, server],
    ];
  } else {
    const client = side('client', clientNs, 'c', '203.0.113.1/24', '2001:db8:113::1/64');
    const server = side('server', serverNs, 's', '203.0.113.2/24', '2001:db8:113::2/64');
    sides = [client, server];
    links = [[client, server]];
  }

  let buildDir: string | undefined;
  let destroyed: Promise<void> | undefined;
  const destroy = (): Promise<void> => {
    destroyed ??= (async () => {
      const errors: unknown[] = [];
      for (const ns of namespaces) {
        try {
          await deleteNamespace(ns);
        } catch (err) {
          errors.push(err);
        }
      }
      if (buildDir) {
        await removeTempDir(buildDir);
      }
      const left = namespaces.filter((ns) => existsSync(netnsPath(ns)));
      if (errors.length > 0 || left.length > 0) {
        throw new Error(
          `destroy: namespaces left behind: ${left.join(', ') || 'none'}; errors: ${errors.map(String).join('; ')}`,
        );
      }
    })();
    return destroyed;
  };

  try {
    for (const ns of namespaces) {
      liveNamespaces.add(ns);
      await run('ip', ['netns', 'add', ns], { timeoutMs: 15_000 });
    }
    for (const ns of namespaces) {
      // Sysctls first, so devices created below inherit the defaults. rp_filter off: in VLAN 'tc'
      // mode packets arrive on `dev` while the addresses and routes use `addrDev`.
      const sysctls = [
        'net.ipv4.conf.all.rp_filter=0',
        'net.ipv4.conf.default.rp_filter=0',
        'net.ipv6.conf.all.accept_dad=0',
        'net.ipv6.conf.default.accept_dad=0',
      ];
      if (ns === routerNs) {
        sysctls.push('net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1', 'net.ipv6.conf.default.forwarding=1');
      }
      await exec(ns, 'sysctl', ['-q', '-w', ...sysctls]);
      await ipIn(ns, ['link', 'set', 'lo', 'up']);
    }
    for (const [a, b] of links) {
      await ipIn(a.ns, ['link', 'add', a.dev, 'type', 'veth', 'peer', 'name', b.dev, 'netns', b.ns]);
    }
    for (const s of sides) {
      await ipIn(s.ns, ['link', 'set', s.dev, 'up']);
      if (!offload) {
        await txOff(s.ns, s.dev);
      }
    }

    const infoByNs = new Map<string, Map<string, LinkInfo>>();
    const info = (ns: string, dev: string): LinkInfo => {
      const l = infoByNs.get(ns)?.get(dev);
      if (!l) {
        throw new Error(`createTopology: interface ${dev} not found in namespace ${ns}`);
      }
      return l;
    };
    const refresh = async (): Promise<void> => {
      for (const ns of namespaces) {
        infoByNs.set(ns, await readLinks(ns));
      }
    };
    await refresh();

    if (vlan) {
      if (vlan.impl === 'subif') {
        for (const s of sides) {
          const args = ['link', 'add', 'link', s.dev, 'name', s.addrDev, 'type', 'vlan', 'id', String(vlan.id)];
          if (vlan.tag === 'data') {
            args.push('reorder_hdr', 'off');
          }
          try {
            await ipIn(s.ns, args);
          } catch (err) {
            throw new Error(
              `createTopology: cannot create a VLAN sub-interface (kernel built without CONFIG_VLAN_8021Q?); use vlanImpl 'tc': ${String(err)}`,
            );
          }
        }
      } else {
        buildDir = await makeBuildDir(prefix);
        trackTempDir(buildDir);
        for (const s of sides) {
          const sink = s.sinkDev as string;
          await ipIn(s.ns, ['link', 'add', s.addrDev, 'type', 'veth', 'peer', 'name', sink]);
          // Same MAC as the wire veth: the peer answers to that MAC, and replies arrive on `dev`.
          await ipIn(s.ns, ['link', 'set', s.addrDev, 'address', info(s.ns, s.dev).mac]);
          await ipIn(s.ns, ['link', 'set', sink, 'up']);
          if (!offload) {
            await txOff(s.ns, sink);
          }
        }
      }
      for (const s of sides) {
        await ipIn(s.ns, ['link', 'set', s.addrDev, 'up']);
        if (!offload) {
          await txOff(s.ns, s.addrDev);
        }
      }
      await refresh();
      if (vlan.impl === 'tc') {
        for (const s of sides) {
          const obj = await buildVlanObject(buildDir as string, vlan.id, info(s.ns, s.dev).ifindex, vlan.tag);
          await attachVlanEmulation(s.ns, s.addrDev, s.dev, obj);
        }
        // The emulation cannot carry ARP/ND replies to addrDev (they arrive on `dev`): static neighbours.
        for (const [a, b] of links) {
          for (const [from, to] of [
            [a, b],
            [b, a],
          ] as const) {
            const mac = info(to.ns, to.dev).mac;
            await permanentNeighbour(from.ns, addrOf(to.ipv4Cidr), mac, from.addrDev);
            if (ipv6) await permanentNeighbour(from.ns, addrOf(to.ipv6Cidr), mac, from.addrDev);
          }
        }
      }
    }

    for (const s of sides) {
      await ipIn(s.ns, ['addr', 'add', s.ipv4Cidr, 'dev', s.addrDev]);
      if (ipv6) {
        await ipIn(s.ns, ['-6', 'addr', 'add', s.ipv6Cidr, 'dev', s.addrDev, 'nodad']);
      }
    }
    for (const s of sides) {
      if (s.gw4) {
        await ipIn(s.ns, ['route', 'add', 'default', 'via', s.gw4, 'dev', s.addrDev]);
      }
      if (ipv6 && s.gw6) {
        await ipIn(s.ns, ['-6', 'route', 'add', 'default', 'via', s.gw6, 'dev', s.addrDev]);
      }
    }

    const iface = (s: SidePlan): Iface => ({
      ns: s.ns,
      dev: s.dev,
      ifindex: info(s.ns, s.dev).ifindex,
      mac: info(s.ns, s.dev).mac,
      addrDev: s.addrDev,
      addrIfindex: info(s.ns, s.addrDev).ifindex,
      ipv4: addrOf(s.ipv4Cidr),
      ipv4Cidr: s.ipv4Cidr,
      ...(ipv6 ? { ipv6: addrOf(s.ipv6Cidr), ipv6Cidr: s.ipv6Cidr } : {}),
    });
    const byKey = (k: SidePlan['key']): SidePlan => sides.find((s) => s.key === k) as SidePlan;
    return {
      name: opts.name,
      kind: opts.kind,
      client: iface(byKey('client')),
      server: iface(byKey('server')),
      ...(routerNs ? { router: { ns: routerNs, toClient: iface(byKey('routerC')), toServer: iface(byKey('routerS')) } } : {}),
      namespaces,
      ...(vlan ? { vlan } : {}),
      txChecksumOffload: offload,
      destroy,
    };
  } catch (err) {
    await destroy().catch(() => undefined);
    throw err;
  }
}
