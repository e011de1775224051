/**
 * Host interfaces of the agent's network namespace, and which of them a policy selects.
 * Read through iproute2's JSON output: /sys/class/net shows the namespace that mounted
 * sysfs, not ours, when the agent runs with `nsenter --net`.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface HostInterface {
  name: string;
  ifindex: number;
  up: boolean;
  loopback: boolean;
  mtu: number;
  /** carries an IPv4 or IPv6 default route */
  defaultRoute: boolean;
  /** iproute2's link type: ether, loopback, none (tun, WireGuard), ipip, sit, tunnel6, gre, ... */
  linkType: string;
  /** the kind of a software device (veth, bond, vlan, bridge, tun, ...); null for a device a hardware driver made */
  kind: string | null;
  /** the bond or bridge this device is enslaved to */
  master?: string;
}

interface IpLink {
  ifname: string;
  ifindex: number;
  flags?: string[];
  mtu?: number;
  operstate?: string;
  link_type?: string;
  master?: string;
  linkinfo?: { info_kind?: string };
}

interface IpRoute {
  dev?: string;
  nexthops?: { dev?: string }[];
}

async function ipJson<T>(args: string[]): Promise<T[]> {
  const { stdout } = await run('ip', ['-json', ...args], { maxBuffer: 64 * 1024 * 1024 });
  const text = stdout.trim();
  return text ? (JSON.parse(text) as T[]) : [];
}

/** Every interface in this network namespace, with default-route flags. */
export async function listInterfaces(): Promise<HostInterface[]> {
  const [links, r4, r6] = await Promise.all([
    ipJson<IpLink>(['-details', 'link', 'show']),
    ipJson<IpRoute>(['-4', 'route', 'show', 'default']),
    ipJson<IpRoute>(['-6', 'route', 'show', 'default']),
  ]);
  const defaults = new Set<string>();
  for (const r of [...r4, ...r6]) {
    if (r.dev) defaults.add(r.dev);
    for (const nh of r.nexthops ?? []) if (nh.dev) defaults.add(nh.dev);
  }
  return links.map((l) => ({
    name: l.ifname,
    ifindex: l.ifindex,
    up: (l.flags ?? []).includes('UP'),
    loopback: (l.flags ?? []).includes('LOOPBACK') || l.link_type === 'loopback',
    mtu: l.mtu ?? 0,
    defaultRoute: defaults.has(l.ifname),
    linkType: l.link_type ?? 'unknown',
    kind: l.linkinfo?.info_kind ?? null,
    ...(l.master ? { master: l.master } : {}),
  }));
}

/**
 * How frames start on a device, as the programs must read them: with an Ethernet header, or
 * with the IP header (devices without a link-layer header). Anything else is refused.
 */
export type LinkLayer = 'ethernet' | 'none';

/** Link types whose frames start with the IP header at tc (no link-layer header on the skb). */
const RAW_IP_LINK_TYPES = new Set(['none', 'ipip', 'sit', 'tunnel6', 'ppp', 'rawip']);

/** The link layer of an interface, or why the programs cannot handle it. */
export function linkLayer(i: Pick<HostInterface, 'name' | 'linkType'>): LinkLayer | { unsupported: string } {
  if (i.linkType === 'ether' || i.linkType === 'loopback') return 'ethernet';
  if (RAW_IP_LINK_TYPES.has(i.linkType)) return 'none';
  if (i.linkType === 'gre' || i.linkType === 'ip6gre') {
    return {
      unsupported: `${i.name} is a ${i.linkType} device, whose frames may carry the tunnel's outer header at tc; select the device the traffic leaves or arrives on before or after it instead`,
    };
  }
  return {
    unsupported: `${i.name} has link type ${i.linkType}: only Ethernet devices and devices without a link-layer header (tun, WireGuard, ipip, sit, ip6tnl, ppp) can be marked or verified`,
  };
}

/**
 * May the verifier go on this interface at native XDP? Only a device a hardware driver made
 * (veth, bond, VLAN and other software devices run XDP on copies, or not at all), with
 * Ethernet frames, and not the loopback. Whether the driver takes it is up to the driver.
 */
export function nativeXdpCandidate(i: Pick<HostInterface, 'kind' | 'linkType' | 'loopback'>): boolean {
  return i.kind === null && i.linkType === 'ether' && !i.loopback;
}

/** Shell-style glob (*, ?, [abc], [!abc], [a-z]) to an anchored RegExp. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i] as string;
    if (ch === '*') re += '.*';
    else if (ch === '?') re += '.';
    else if (ch === '[') {
      const end = glob.indexOf(']', i + 2);
      if (end < 0) {
        re += '\\[';
        continue;
      }
      let body = glob.slice(i + 1, end);
      if (body.startsWith('!')) body = '^' + body.slice(1);
      re += '[' + body.replace(/\\/g, '\\\\') + ']';
      i = end;
    } else re += ch.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

export interface InterfaceSelection {
  selected: HostInterface[];
  /** problems a person must fix (reason is a stable CamelCase word) */
  errors: { reason: 'InterfaceNotFound' | 'NoInterfaceMatched' | 'NoDefaultRoute'; message: string }[];
}

/**
 * The interfaces a policy's `interfaces` block selects: exact names, globs (loopback
 * only when named exactly), or, when neither is given, the default-route interfaces.
 */
export function selectInterfaces(
  spec: { names: readonly string[]; patterns: readonly string[] },
  all: readonly HostInterface[],
): InterfaceSelection {
  const byName = new Map(all.map((i) => [i.name, i]));
  const chosen = new Map<string, HostInterface>();
  const errors: InterfaceSelection['errors'] = [];
  if (spec.names.length === 0 && spec.patterns.length === 0) {
    for (const i of all) if (i.defaultRoute && !i.loopback) chosen.set(i.name, i);
    if (chosen.size === 0)
      errors.push({
        reason: 'NoDefaultRoute',
        message: 'no interface carries a default route; name the interfaces in spec.interfaces',
      });
  }
  for (const n of spec.names) {
    const i = byName.get(n);
    if (i) chosen.set(n, i);
    else errors.push({ reason: 'InterfaceNotFound', message: `interface "${n}" does not exist on this node` });
  }
  for (const p of spec.patterns) {
    const re = globToRegExp(p);
    const hits = all.filter((i) => !i.loopback && re.test(i.name));
    for (const i of hits) chosen.set(i.name, i);
    if (hits.length === 0) errors.push({ reason: 'NoInterfaceMatched', message: `no interface matches the pattern "${p}"` });
  }
  return { selected: [...chosen.values()].sort((a, b) => a.ifindex - b.ifindex), errors };
}
