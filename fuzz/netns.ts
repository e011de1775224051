/**
 * A private network namespace for a fuzz run: BPF_PROG_TEST_RUN resolves the ctx ifindex
 * in the caller's namespace, so the run re-executes itself inside one that holds, besides
 * its own loopback device, a veth pair with tiny MTUs (68 and 100). SYNs run on those reach
 * the marker's MTU check. Nothing is sent: the devices stay down.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { Device } from './world.js';

/** The small-MTU devices made inside the namespace, by name. */
export const MTU_DEVICES: ReadonlyArray<{ name: string; mtu: number }> = [
  { name: 'ntfz68', mtu: 68 },
  { name: 'ntfz100', mtu: 100 },
];

function ip(args: string[]): string {
  try {
    return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(' ')} failed: ${(e.stderr ?? e.message).trim()}`);
  }
}

/**
 * The loopback device and the named devices of the namespace this process runs in, with
 * their ifindex and MTU as the kernel reports them.
 */
export function discoverDevices(names: readonly string[]): Device[] {
  const links = JSON.parse(ip(['-j', 'link', 'show'])) as Array<{ ifindex: number; ifname: string; mtu: number }>;
  const find = (name: string): Device => {
    const l = links.find((x) => x.ifname === name);
    if (!l) throw new Error(`fuzz device ${name} not found in this network namespace`);
    return { name, ifindex: l.ifindex, mtu: l.mtu };
  };
  const lo = find('lo');
  if (lo.ifindex !== 1)
    throw new Error(`loopback has ifindex ${lo.ifindex}, want 1 (test_run falls back to it for ctx ifindex 0 and 1)`);
  return [lo, ...names.map(find)];
}

/**
 * Make the namespace, run `node argv...` inside it with nsenter (the bpffs mount stays
 * shared), remove the namespace, and resolve to the child's exit code. SIGINT/SIGTERM are
 * passed on to the child, which stops between batches and cleans up after itself.
 */
export async function runInPrivateNetns(argv: readonly string[]): Promise<number> {
  const ns = `ntfz-${process.pid}-${randomBytes(3).toString('hex')}`;
  const [a, b] = MTU_DEVICES;
  if (!a || !b) throw new Error('MTU_DEVICES needs two entries');
  ip(['netns', 'add', ns]);
  let child: ReturnType<typeof spawn> | undefined;
  const forward = (sig: NodeJS.Signals): void => {
    child?.kill(sig);
  };
  try {
    ip(['-n', ns, 'link', 'add', a.name, 'mtu', String(a.mtu), 'type', 'veth', 'peer', 'name', b.name, 'mtu', String(b.mtu)]);
    process.on('SIGINT', forward);
    process.on('SIGTERM', forward);
    const c = spawn('nsenter', [`--net=/var/run/netns/${ns}`, '--', process.execPath, ...argv], { stdio: 'inherit' });
    child = c;
    return await new Promise<number>((resolve, reject) => {
      c.on('error', (err) => reject(new Error(`cannot start nsenter: ${err.message}`)));
      c.on('exit', (code, signal) => resolve(code ?? (signal ? 128 + 2 : 1)));
    });
  } finally {
    process.off('SIGINT', forward);
    process.off('SIGTERM', forward);
    try {
      ip(['netns', 'del', ns]);
    } catch (err) {
      process.stderr.write(`fuzz: could not remove network namespace ${ns}: ${(err as Error).message}\n`);
    }
  }
}
