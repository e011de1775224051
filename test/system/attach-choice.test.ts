/**
 * Where the verifier goes. By default (--ingress-attach auto) it takes native XDP only on a
 * device a hardware driver made, and only when the driver takes it; everywhere else (veth,
 * bonds, VLANs, bridges, tunnels, or a device whose XDP slot another program holds) it goes
 * at tc, and never at generic XDP, which makes every received skb linear. Devices without a
 * link-layer header get the tc build that reads the IP header first, and are refused at XDP.
 * Driven here with the agent's own interface listing and data path, inside a namespace.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { ROOT } from '../lib/agent.js';
import { fixture } from '../lib/native.js';
import { createTopology, exec, run, type Topology } from '../lib/netns.js';

const PROBE = path.join(ROOT, 'dist/test/lib/datapath-probe.js');

const topologies: Topology[] = [];
after(async () => {
  for (const t of topologies) await t.destroy();
});

interface Seen {
  name: string;
  ifindex: number;
  linkType: string;
  kind: string | null;
  master?: string;
  layer: string | { unsupported: string };
  xdpNative: boolean;
}

async function probe(ns: string, args: string[]): Promise<string> {
  return (await run('nsenter', [`--net=/var/run/netns/${ns}`, '--', process.execPath, PROBE, ...args])).stdout;
}

test('the agent tells hardware devices from software ones, and devices without a link-layer header from Ethernet ones', async () => {
  const t = await createTopology({ name: 'kinds', kind: 'pair' });
  topologies.push(t);
  const ns = t.server.ns;
  await exec(ns, 'ip', ['link', 'add', 'ntbr0', 'type', 'bridge']);
  await exec(ns, 'ip', ['tuntap', 'add', 'dev', 'nttun0', 'mode', 'tun']);
  await exec(ns, 'ip', ['tuntap', 'add', 'dev', 'nttap0', 'mode', 'tap']);
  await exec(ns, 'ip', ['link', 'add', 'ntvx0', 'type', 'vxlan', 'id', '42', 'dstport', '4789', 'local', '127.0.0.1']);
  await exec(ns, 'ip', ['link', 'add', 'ntsl0', 'type', 'veth', 'peer', 'name', 'ntsl1']);
  await exec(ns, 'ip', ['link', 'set', 'ntsl0', 'master', 'ntbr0']);
  const seen = new Map((JSON.parse(await probe(ns, ['interfaces'])) as Seen[]).map((i) => [i.name, i]));
  const expect = (name: string, want: Partial<Seen>): void => {
    const got = seen.get(name);
    assert.ok(got, `${name} is listed`);
    for (const [k, v] of Object.entries(want)) assert.deepEqual(got[k as keyof Seen], v, `${name}.${k}`);
  };
  expect(t.server.dev, { linkType: 'ether', kind: 'veth', layer: 'ethernet', xdpNative: false });
  expect('ntbr0', { kind: 'bridge', layer: 'ethernet', xdpNative: false });
  expect('nttun0', { linkType: 'none', kind: 'tun', layer: 'none', xdpNative: false });
  expect('nttap0', { linkType: 'ether', kind: 'tun', layer: 'ethernet', xdpNative: false });
  expect('ntvx0', { kind: 'vxlan', layer: 'ethernet', xdpNative: false });
  expect('ntsl0', { master: 'ntbr0' });
  expect('lo', { linkType: 'loopback', layer: 'ethernet', xdpNative: false });
});

test("auto: native XDP where the device suits it and the driver takes it; tc next to someone else's XDP program, on software devices, and on devices without a link-layer header", async () => {
  const t = await createTopology({ name: 'choice', kind: 'pair' });
  topologies.push(t);
  const ns = t.server.ns;
  const stateDir = `/sys/fs/bpf/nttest-${process.pid}-choice`;
  const runDir = `/tmp/nttest-${process.pid}-choice-run`;
  await exec(ns, 'ip', ['tuntap', 'add', 'dev', 'nttun0', 'mode', 'tun']);
  const tun = Number((await exec(ns, 'cat', ['/sys/class/net/nttun0/ifindex'])).stdout.trim());
  const apply = async (
    mode: string,
    hooks: object[],
  ): Promise<{ hooks: { name: string; mode: string }[]; errors: { name: string; reason: string; message: string }[] }> =>
    JSON.parse(await probe(ns, ['apply', stateDir, runDir, mode, JSON.stringify(hooks)]));
  const veth = { ifindex: t.server.ifindex, name: t.server.dev, layer: 'ethernet' };
  try {
    // A device that suits native XDP (veth's driver has it; the agent offers it only to hardware devices).
    let r = await apply('auto', [{ ...veth, xdpNative: true }]);
    assert.deepEqual(r.hooks, [{ name: t.server.dev, mode: 'xdp-native' }]);
    // A software device: tc, never generic XDP.
    r = await apply('auto', [{ ...veth, xdpNative: false }]);
    assert.deepEqual(r.hooks, [{ name: t.server.dev, mode: 'tcx' }]);
    // Someone else's XDP program holds the device: tc beside it, theirs untouched.
    await exec(ns, 'ip', ['link', 'set', 'dev', t.server.dev, 'xdpgeneric', 'obj', fixture('foreign'), 'sec', 'xdp']);
    r = await apply('auto', [{ ...veth, xdpNative: true }]);
    assert.deepEqual(r.hooks, [{ name: t.server.dev, mode: 'tcx' }]);
    assert.match(
      (await exec(ns, 'ip', ['-d', '-j', 'link', 'show', 'dev', t.server.dev])).stdout,
      /foreign_xdp/,
      'their program stays',
    );
    await exec(ns, 'ip', ['link', 'set', 'dev', t.server.dev, 'xdpgeneric', 'off']);
    // No link-layer header: the tc build for such devices; XDP, which reads an Ethernet header, is refused there.
    r = await apply('auto', [{ ifindex: tun, name: 'nttun0', layer: 'none', xdpNative: false }]);
    assert.deepEqual(r.hooks, [{ name: 'nttun0', mode: 'tcx' }]);
    r = await apply('xdp-native', [{ ifindex: tun, name: 'nttun0', layer: 'none', xdpNative: false }]);
    assert.deepEqual(r.hooks, []);
    assert.equal(r.errors[0]?.reason, 'AttachFailed');
    assert.match(r.errors[0]?.message ?? '', /nttun0 has no Ethernet header, which the verifier at XDP reads/);
    r = await apply('auto', []);
    assert.deepEqual(r.hooks, []);
  } finally {
    await run('nsenter', [
      `--net=/var/run/netns/${ns}`,
      '--',
      process.execPath,
      path.join(ROOT, 'bin/netoken.js'),
      'detach',
      '--state-dir',
      stateDir,
      '--run-dir',
      runDir,
      '--log-level',
      'error',
    ]);
  }
});
