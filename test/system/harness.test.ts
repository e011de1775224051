/**
 * Tests of the network-namespace harness itself (test/lib): topologies carry TCP in IPv4, IPv6
 * and over VLAN-tagged links, captures see the frames, checksums stay right, and nothing is
 * left on the host afterwards, also when the test process dies.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { tmpdir } from 'node:os';
import { createInterface } from 'node:readline';
import { randomBytes } from 'node:crypto';
import { startCapture, vlanAware } from '../lib/capture.js';
import {
  createTopology,
  DEFAULT_PREFIX,
  exec,
  listNamespaces,
  run,
  spawnIn,
  sweepStale,
  waitForExit,
  type Iface,
  type Topology,
  type TopologyOptions,
} from '../lib/netns.js';
import { networkLayer } from '../../src/lib/pcap.js';
import { connect, counterDelta, counters, startServer, tcpCounters } from '../lib/tcp.js';
import { parseFrame, TCP_ACK, TCP_SYN } from '../../src/lib/packet.js';

const NETNS_MODULE = new URL('../lib/netns.js', import.meta.url).href;

async function withTopology(opts: TopologyOptions, fn: (t: Topology) => Promise<void>): Promise<void> {
  const t = await createTopology(opts);
  try {
    await fn(t);
  } finally {
    await t.destroy();
  }
}

function ifacesOf(t: Topology): Iface[] {
  return [t.client, t.server, ...(t.router ? [t.router.toClient, t.router.toServer] : [])];
}

/** Connects client -> server over IPv4 (and IPv6 when configured) and asserts the echo came back. */
async function assertConnects(t: Topology, port: number): Promise<void> {
  const targets = [t.server.ipv4, ...(t.server.ipv6 ? [t.server.ipv6] : [])];
  for (const addr of targets) {
    const r = await connect(t.client.ns, addr, port, { timeoutMs: 3_000 });
    assert.equal(
      r.ok,
      true,
      `${t.kind}${t.vlan ? ` vlan ${t.vlan.id}` : ''}: connect to [${addr}]:${port}: got ${JSON.stringify(r)}, want ok`,
    );
  }
}

async function assertNoCsumErrors(t: Topology): Promise<void> {
  for (const ns of t.namespaces) {
    const c = await tcpCounters(ns);
    assert.equal(c.TcpInCsumErrors, 0, `${ns}: TcpInCsumErrors got ${c.TcpInCsumErrors}, want 0`);
  }
}

async function assertTxOffloadOff(t: Topology): Promise<void> {
  for (const i of ifacesOf(t)) {
    for (const dev of new Set([i.dev, i.addrDev])) {
      const { stdout } = await exec(i.ns, 'ethtool', ['-k', dev]);
      const line = stdout.split('\n').find((l) => l.startsWith('tx-checksumming:'));
      assert.equal(
        line?.trim(),
        'tx-checksumming: off',
        `${i.ns} ${dev}: got ${JSON.stringify(line)}, want tx-checksumming: off`,
      );
    }
  }
}

async function assertIfindexes(t: Topology): Promise<void> {
  for (const i of ifacesOf(t)) {
    assert.ok(i.dev.length <= 15 && i.addrDev.length <= 15, `interface names ${i.dev}, ${i.addrDev} must fit in 15 characters`);
    for (const [dev, want] of [
      [i.dev, i.ifindex],
      [i.addrDev, i.addrIfindex],
    ] as const) {
      // sysfs as seen from inside the namespace (ip netns exec mounts the namespace's /sys)
      const { stdout } = await exec(i.ns, 'cat', [`/sys/class/net/${dev}/ifindex`]);
      assert.equal(Number(stdout.trim()), want, `${i.ns} ${dev}: ifindex got ${stdout.trim()}, want ${want}`);
    }
  }
}

for (const kind of ['pair', 'routed'] as const) {
  test(`${kind} topology carries TCP over IPv4 and IPv6 with tx checksum offload off and no checksum errors`, async () => {
    await withTopology({ name: `h-${kind}`, kind, ipv6: true }, async (t) => {
      assert.equal(t.namespaces.length, kind === 'pair' ? 2 : 3, `namespaces: got ${JSON.stringify(t.namespaces)}`);
      for (const ns of t.namespaces) {
        assert.ok(ns.startsWith(`${DEFAULT_PREFIX}${process.pid}-`), `namespace ${ns} must carry the prefix and pid`);
      }
      await assertIfindexes(t);
      await assertTxOffloadOff(t);
      const srv = await startServer(t.server.ns);
      const routerBefore = t.router ? await counters(t.router.ns) : {};
      await assertConnects(t, srv.port);
      await srv.waitFor((e) => e.event === 'accept' && e.remoteAddress?.endsWith(t.client.ipv4) === true);
      if (t.router) {
        const d = counterDelta(routerBefore, await counters(t.router.ns));
        assert.ok(
          (d.IpForwDatagrams ?? 0) > 0 && (d.Ip6OutForwDatagrams ?? 0) > 0,
          `router forwarded datagrams: got v4 +${d.IpForwDatagrams}, v6 +${d.Ip6OutForwDatagrams}, want both > 0`,
        );
      }
      await assertNoCsumErrors(t);
      await srv.stop();
    });
  });

  test(`${kind} topology with VLAN 100 carries tagged TCP over IPv4 and IPv6`, async () => {
    await withTopology({ name: `hv-${kind}`, kind, ipv6: true, vlan: 100 }, async (t) => {
      assert.deepEqual(t.vlan, { id: 100, impl: 'tc', tag: 'data' }, `vlan info: got ${JSON.stringify(t.vlan)}`);
      await assertIfindexes(t);
      await assertTxOffloadOff(t);
      const srv = await startServer(t.server.ns);
      const capServer = await startCapture(t.server.ns, t.server.dev, { filter: vlanAware(`tcp port ${srv.port}`) });
      const capClient = await startCapture(t.client.ns, t.client.dev, { filter: vlanAware(`tcp port ${srv.port}`) });
      await assertConnects(t, srv.port);
      for (const [side, cap] of [
        ['server', capServer],
        ['client', capClient],
      ] as const) {
        const got = await cap.stop();
        assert.ok(got.frames.length >= 10, `${side} ${cap.dev}: frames got ${got.frames.length}, want >= 10 (two connections)`);
        for (const f of got.frames) {
          const l3 = networkLayer(got.linkType, f);
          assert.deepEqual(
            l3?.vlanIds,
            [100],
            `${side} ${cap.dev}: frame vlan ids got ${JSON.stringify(l3?.vlanIds)}, want [100]`,
          );
        }
      }
      await assertNoCsumErrors(t);
      await srv.stop();
    });
  });
}

test('VLAN with the tag in skb metadata at egress still puts tagged frames on the link', async () => {
  await withTopology({ name: 'hv-meta', kind: 'pair', ipv6: true, vlan: 7, vlanTag: 'metadata' }, async (t) => {
    const srv = await startServer(t.server.ns);
    const cap = await startCapture(t.server.ns, t.server.dev, { filter: vlanAware(`tcp port ${srv.port}`) });
    await assertConnects(t, srv.port);
    const got = await cap.stop();
    assert.ok(got.frames.length > 0, 'capture saw no frames');
    for (const f of got.frames) {
      assert.deepEqual(networkLayer(got.linkType, f)?.vlanIds, [7], 'every frame carries VLAN 7');
    }
    await assertNoCsumErrors(t);
  });
});

test('in a VLAN topology a tc program on the client veth egress sees every outgoing frame', async () => {
  // What product tests rely on: `dev` is where hooks attach, also when the tag is emulated.
  const dir = await mkdtemp(path.join(tmpdir(), `${DEFAULT_PREFIX}${process.pid}-drop-`));
  try {
    const src = path.join(dir, 'drop.bpf.c');
    await writeFile(
      src,
      [
        '#include <linux/bpf.h>',
        '#include <linux/pkt_cls.h>',
        '#include <bpf/bpf_helpers.h>',
        'SEC("tc/egress") int drop_all(struct __sk_buff *skb) { return TC_ACT_SHOT; }',
        'char _license[] SEC("license") = "GPL";',
        '',
      ].join('\n'),
    );
    const obj = path.join(dir, 'drop.bpf.o');
    const triple = process.arch === 'arm64' ? 'aarch64-linux-gnu' : 'x86_64-linux-gnu';
    await run('clang', ['-O2', '-target', 'bpf', `-I/usr/include/${triple}`, '-c', src, '-o', obj]);
    await withTopology({ name: 'hv-hook', kind: 'pair', vlan: 100 }, async (t) => {
      const srv = await startServer(t.server.ns);
      await assertConnects(t, srv.port);
      await exec(t.client.ns, 'tc', [
        'filter',
        'add',
        'dev',
        t.client.dev,
        'egress',
        'bpf',
        'direct-action',
        'obj',
        obj,
        'sec',
        'tc/egress',
      ]);
      const r = await connect(t.client.ns, t.server.ipv4, srv.port, { timeoutMs: 1_500 });
      assert.equal(
        r.connected,
        false,
        `with a drop-all program on ${t.client.dev} egress: got ${JSON.stringify(r)}, want no connection`,
      );
      assert.equal(r.error, 'ETIMEDOUT', `error got ${r.error}, want ETIMEDOUT`);
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('kernel VLAN sub-interfaces work or fail with a message that names the missing kernel feature', async () => {
  let t: Topology | undefined;
  try {
    t = await createTopology({ name: 'hv-subif', kind: 'pair', vlan: 9, vlanImpl: 'subif' });
  } catch (err) {
    // This kernel may lack CONFIG_VLAN_8021Q; then the error must say so and nothing may be left.
    assert.match(String(err), /CONFIG_VLAN_8021Q/, `error got ${String(err)}`);
    const left = (await listNamespaces()).filter(
      (n) => n.startsWith(`${DEFAULT_PREFIX}${process.pid}-`) && n.includes('-hv-subif-'),
    );
    assert.deepEqual(left, [], 'a failed createTopology must remove its namespaces');
    return;
  }
  try {
    const srv = await startServer(t.server.ns);
    await assertConnects(t, srv.port);
  } finally {
    await t.destroy();
  }
});

test('a capture on the server veth sees the client SYN for IPv4 and IPv6 with valid checksums', async () => {
  await withTopology({ name: 'h-syn', kind: 'pair', ipv6: true }, async (t) => {
    const srv = await startServer(t.server.ns);
    const cap = await startCapture(t.server.ns, t.server.dev, { filter: `tcp port ${srv.port}` });
    await assertConnects(t, srv.port);
    const got = await cap.stop();
    assert.equal(got.droppedByKernel, 0, `dropped by kernel: got ${got.droppedByKernel}, want 0`);
    const syns = got.frames.map(parseFrame).filter((p) => p.tcp && (p.tcp.flags & (TCP_SYN | TCP_ACK)) === TCP_SYN);
    for (const [family, src] of [
      [4, t.client.ipv4],
      [6, t.client.ipv6],
    ] as const) {
      const syn = syns.find((p) => p.family === family);
      assert.ok(syn, `no IPv${family} SYN captured; frames: ${got.frames.length}`);
      assert.equal(syn.src, src, `IPv${family} SYN source: got ${syn.src}, want ${src}`);
      assert.equal(syn.tcp?.dport, srv.port, `IPv${family} SYN dport: got ${syn.tcp?.dport}, want ${srv.port}`);
      assert.equal(syn.tcpChecksumOk, true, `IPv${family} SYN TCP checksum: got ${syn.tcpChecksumOk}, want true`);
    }
  });
});

test('connect reports a refused connection and counters count active opens', async () => {
  await withTopology({ name: 'h-refuse', kind: 'pair' }, async (t) => {
    const before = await tcpCounters(t.client.ns);
    const refused = await connect(t.client.ns, t.server.ipv4, 9, { timeoutMs: 2_000 });
    assert.equal(refused.ok, false, `connect to a closed port: got ok ${refused.ok}`);
    assert.equal(refused.error, 'ECONNREFUSED', `error got ${refused.error}, want ECONNREFUSED`);
    assert.ok(refused.elapsedMs < 1_000, `a refusal is immediate: elapsed ${refused.elapsedMs} ms`);
    const srv = await startServer(t.server.ns, { host: t.server.ipv4, port: 0 });
    const ok = await connect(t.client.ns, t.server.ipv4, srv.port, { localPort: 40_123 });
    assert.equal(ok.ok, true, `connect: got ${JSON.stringify(ok)}`);
    assert.equal(ok.localPort, 40_123, `local port: got ${ok.localPort}, want 40123`);
    const delta = counterDelta(before, await tcpCounters(t.client.ns));
    assert.equal(delta.TcpActiveOpens, 2, `TcpActiveOpens delta: got ${delta.TcpActiveOpens}, want 2`);
    assert.equal(typeof delta.TcpExtTCPSynRetrans, 'number', 'TcpExtTCPSynRetrans is reported');
  });
});

test('topologies built concurrently get distinct names and all work', async () => {
  const ts = await Promise.all([
    createTopology({ name: 'h-par', kind: 'pair' }),
    createTopology({ name: 'h-par', kind: 'routed', ipv6: true }),
    createTopology({ name: 'h-par', kind: 'pair', vlan: 3 }),
  ]);
  try {
    const names = ts.flatMap((t) => t.namespaces);
    assert.equal(new Set(names).size, names.length, `namespace names repeat: ${JSON.stringify(names)}`);
    const devs = ts.flatMap((t) => ifacesOf(t).map((i) => i.dev));
    assert.equal(new Set(devs).size, devs.length, `interface names repeat: ${JSON.stringify(devs)}`);
    await Promise.all(
      ts.map(async (t) => {
        const srv = await startServer(t.server.ns);
        await assertConnects(t, srv.port);
      }),
    );
  } finally {
    await Promise.all(ts.map((t) => t.destroy()));
  }
});

test('destroy removes the namespaces, their interfaces and the processes started in them', async () => {
  const t = await createTopology({ name: 'h-destroy', kind: 'routed', ipv6: true, vlan: 12 });
  const srv = await startServer(t.server.ns);
  const sleeper = spawnIn(t.router!.ns, 'sleep', ['300']);
  await assertConnects(t, srv.port);
  const devs = ifacesOf(t).map((i) => i.dev);
  await t.destroy();
  await t.destroy(); // idempotent

  const nsList = (await run('ip', ['netns', 'list'])).stdout;
  for (const ns of t.namespaces) {
    assert.ok(!nsList.includes(ns), `ip netns list still shows ${ns}`);
  }
  const hostLinks = (await run('ip', ['-o', 'link', 'show'])).stdout;
  for (const dev of devs) {
    assert.ok(!hostLinks.includes(dev), `ip link on the host shows ${dev}`);
  }
  assert.ok(await waitForExit(sleeper, 1_000), 'a process spawned in the router namespace survived destroy');
  const leftDirs = readdirSync(tmpdir()).filter((d) => d.startsWith(`${DEFAULT_PREFIX}${process.pid}-vlan-`));
  assert.deepEqual(leftDirs, [], 'VLAN build directories left behind');
});

/** Starts a child process that builds a routed VLAN topology, prints its namespaces, then waits. */
async function childWithTopology(
  mode: 'exit' | 'wait',
  prefix = DEFAULT_PREFIX,
): Promise<{ child: ReturnType<typeof spawn>; namespaces: string[] }> {
  const code = `
    import { createTopology } from ${JSON.stringify(NETNS_MODULE)};
    const t = await createTopology({ name: 'h-child', kind: 'routed', ipv6: true, vlan: 5, prefix: ${JSON.stringify(prefix)} });
    console.log(JSON.stringify(t.namespaces));
    if (process.env.NT_CHILD_MODE === 'exit') process.exit(0);
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NT_CHILD_MODE: mode },
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const line = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout });
    rl.once('line', resolve);
    child.once('exit', (c, s) => reject(new Error(`child exited (${s ?? c}) before printing: ${stderr}`)));
  });
  return { child, namespaces: JSON.parse(line) as string[] };
}

for (const how of ['SIGTERM', 'SIGINT', 'exit'] as const) {
  test(`a test process ending by ${how} without destroy() leaves no namespace behind`, async () => {
    const { child, namespaces } = await childWithTopology(how === 'exit' ? 'exit' : 'wait');
    assert.equal(namespaces.length, 3, `child namespaces: ${JSON.stringify(namespaces)}`);
    if (how !== 'exit') {
      child.kill(how);
    }
    assert.ok(await waitForExit(child, 10_000), `child did not exit after ${how}`);
    const left = (await listNamespaces()).filter((n) => namespaces.includes(n));
    assert.deepEqual(left, [], `namespaces left after ${how}`);
    const leftDirs = readdirSync(tmpdir()).filter((d) => d.startsWith(`${DEFAULT_PREFIX}${child.pid}-`));
    assert.deepEqual(leftDirs, [], `temp directories left after ${how}`);
  });
}

test('sweepStale removes what a SIGKILLed run left and spares live runs', async () => {
  // A prefix of our own, so that sweeps by concurrently running test files cannot race with this test.
  const prefix = `ntkill${randomBytes(2).toString('hex')}-`;
  const mine = await createTopology({ name: 'h-live', kind: 'pair', prefix });
  try {
    const { child, namespaces } = await childWithTopology('wait', prefix);
    child.kill('SIGKILL');
    await waitForExit(child, 10_000);
    const survivors = (await listNamespaces()).filter((n) => namespaces.includes(n));
    assert.deepEqual(survivors, namespaces, 'SIGKILL gives no chance to clean up, so the namespaces must still be there');

    const removed = await sweepStale(prefix);
    for (const ns of namespaces) {
      assert.ok(removed.includes(ns), `sweepStale did not report ${ns}; removed ${JSON.stringify(removed)}`);
    }
    const after = await listNamespaces();
    assert.deepEqual(
      after.filter((n) => namespaces.includes(n)),
      [],
      'stale namespaces still listed',
    );
    for (const ns of mine.namespaces) {
      assert.ok(after.includes(ns), `sweepStale removed ${ns} of a live process`);
    }
    const staleDirs = readdirSync(tmpdir()).filter((d) => d.startsWith(`${prefix}${child.pid}-`));
    assert.deepEqual(staleDirs, [], 'stale temp directories left');
    await assert.rejects(sweepStale(''), /empty prefix/);
  } finally {
    await mine.destroy();
  }
});

test('sweepStale only looks at its own prefix', async () => {
  const prefix = `ntsweep${randomBytes(2).toString('hex')}-`;
  const dead = `${prefix}4194305-x-y-client`;
  const foreign = `ntother${randomBytes(2).toString('hex')}-4194305-x`;
  await run('ip', ['netns', 'add', dead]);
  await run('ip', ['netns', 'add', foreign]);
  try {
    const removed = await sweepStale(prefix);
    assert.deepEqual(removed, [dead], `removed: got ${JSON.stringify(removed)}, want [${dead}]`);
    assert.ok((await listNamespaces()).includes(foreign), 'a namespace with another prefix was removed');
  } finally {
    await run('ip', ['netns', 'del', foreign]).catch(() => undefined);
    await run('ip', ['netns', 'del', dead]).catch(() => undefined);
  }
});
