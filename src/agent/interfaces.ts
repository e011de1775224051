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
}

interface IpLink {
  ifname: string;
  ifindex: number;
  flags?: string[];
  mtu?: number;
  operstate?: string;
  link_type?: string;
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
    ipJson<IpLink>(['link', 'show']),
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
  }));
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
    if (chosen.size === 0) errors.push({ reason: 'NoDefaultRoute', message: 'no interface carries a default route; name the interfaces in spec.interfaces' });
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
