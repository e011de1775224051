/**
 * The test node (node.ts) is a real node and leaves nothing behind: pods start on it (on the
 * CNI bridge, and on the host network with the node's BPF filesystem mounted with
 * HostToContainer propagation), and stop(), or the signal handler or the watchdog when the test
 * process is interrupted or killed, ends every process and removes every cgroup, namespace, mount and file it made. The host's
 * mounts, interfaces, iptables rules and BPF filesystem are as they were.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { fixtureChild, processAlive } from './cluster.js';
import { POD_CIDR, SANDBOX_IMAGE, TestNode } from './node.js';

const nodeModule = pathToFileURL(join(dirname(fileURLToPath(import.meta.url)), 'node.js')).href;

/** What the node must leave as it found it on the host. */
function hostState(): Record<string, string[]> {
  const lines = (cmd: string, args: string[]): string[] =>
    (spawnSync(cmd, args, { encoding: 'utf8' }).stdout ?? '').split('\n').filter(Boolean);
  return {
    // Network namespace handles are mounts: other tests' come and go (the node's are checked by name).
    mounts: readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(' ')[4] as string)
      .filter((m) => !m.startsWith('/run/netns/'))
      .sort(),
    links: lines('ip', ['-o', 'link', 'show'])
      .map((l) => l.split(':')[1]?.trim() ?? l)
      .sort(),
    iptables: [...lines('iptables-save', []), ...lines('ip6tables-save', [])].filter((l) => !l.startsWith('#')),
    // Other tests pin under /sys/fs/bpf/nttest-*; the node has a BPF filesystem of its own.
    bpffs: readdirSync('/sys/fs/bpf')
      .filter((f) => !f.startsWith('nttest-'))
      .sort(),
  };
}

const alive = processAlive;

interface Leftovers {
  pids: number[];
  cgroups: string[];
  netns: string[];
  dirs: string[];
}

/** What is still there of a node, by the names and pids it had. */
function leftovers(info: { pids: number[]; cgroupRoot: string; namespaces: string[]; dir: string }): Leftovers {
  const top = info.cgroupRoot.split('/')[1] as string;
  return {
    pids: info.pids.filter(alive),
    cgroups: readdirSync('/sys/fs/cgroup')
      .map((h) => join('/sys/fs/cgroup', h, top))
      .filter((d) => existsSync(d)),
    netns: info.namespaces.filter((ns) => existsSync(join('/var/run/netns', ns))),
    dirs: [info.dir].filter((d) => existsSync(d)),
  };
}

const nothing: Leftovers = { pids: [], cgroups: [], netns: [], dirs: [] };

async function waitPodReady(node: TestNode, name: string): Promise<{ podIP: string; hostIP: string }> {
  const end = Date.now() + 60_000;
  let last = '';
  while (Date.now() < end) {
    const r = await node.cluster.kubectl(['get', 'pod', name, '-o', 'json']);
    if (r.code === 0) {
      const pod = JSON.parse(r.stdout) as {
        status: { podIP?: string; hostIP?: string; conditions?: { type: string; status: string }[] };
      };
      if (pod.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'))
        return { podIP: pod.status.podIP ?? '', hostIP: pod.status.hostIP ?? '' };
      last = JSON.stringify(pod.status);
    }
    await new Promise((res) => setTimeout(res, 250));
  }
  const events = await node.cluster.kubectl(['get', 'events', '-o', 'custom-columns=REASON:.reason,MESSAGE:.message']);
  throw new Error(`pod ${name} not Ready after 60 s: ${last}\n${events.stdout}`);
}

test('pods run on the node, and stop() leaves the host as it was', async () => {
  const host = hostState();
  const node = await TestNode.start();
  let info;
  try {
    info = { pids: node.pids(), cgroupRoot: node.cgroupRoot, namespaces: [node.node.ns, node.peer.ns], dir: node.cluster.dir };
    const nodes = await node.cluster.kubectlOk(['get', 'nodes', '-o', 'wide']);
    assert.match(
      nodes,
      new RegExp(`^${node.name}\\s+Ready\\s.*\\s${node.address.replaceAll('.', '\\.')}\\s.*containerd://`, 'm'),
      nodes,
    );
    // A pod on the CNI bridge, and one on the host network with the node's bpffs, as the agent mounts it.
    await node.cluster.apply(`apiVersion: v1
kind: Pod
metadata: {name: bridged}
spec:
  containers: [{name: pause, image: ${SANDBOX_IMAGE}, imagePullPolicy: Never}]
---
apiVersion: v1
kind: Pod
metadata: {name: host}
spec:
  hostNetwork: true
  containers:
    - name: pause
      image: ${SANDBOX_IMAGE}
      imagePullPolicy: Never
      volumeMounts: [{name: bpffs, mountPath: /sys/fs/bpf, mountPropagation: HostToContainer}]
  volumes: [{name: bpffs, hostPath: {path: /sys/fs/bpf, type: Directory}}]
`);
    const bridged = await waitPodReady(node, 'bridged');
    assert.ok(
      bridged.podIP.startsWith(POD_CIDR.split('.').slice(0, 3).join('.') + '.'),
      `a pod address from ${POD_CIDR}: ${bridged.podIP}`,
    );
    const hosted = await waitPodReady(node, 'host');
    assert.equal(hosted.podIP, node.address, "a hostNetwork pod has the node's address");
    // Every process of the node, the pods' included, is in its cgroup.
    const pids = node.pids();
    assert.ok(pids.length > info.pids.length, "the pods' processes are the node's");
    info.pids = pids;
  } finally {
    await node.stop();
  }
  assert.deepEqual(leftovers(info), nothing, 'nothing of the node is left');
  assert.deepEqual(hostState(), host, "the host's mounts, interfaces, iptables rules and bpffs are as before");
});

for (const signal of ['SIGINT', 'SIGKILL'] as const) {
  test(`a test process ended by ${signal} leaves no node behind`, async () => {
    const script = `
      const { TestNode } = await import(${JSON.stringify(nodeModule)});
      const n = await TestNode.start({ progress: () => {} });
      process.stdout.write(JSON.stringify({ pids: n.pids(), cgroupRoot: n.cgroupRoot, namespaces: [n.node.ns, n.peer.ns], dir: n.cluster.dir }) + '\\n');
      setInterval(() => {}, 1 << 30);
    `;
    const { child, info } = await fixtureChild<{ pids: number[]; cgroupRoot: string; namespaces: string[]; dir: string }>(
      script,
      180_000,
    );
    assert.ok(info.pids.length >= 8, `the node's processes run: ${info.pids.length}`);
    child.kill(signal);
    const end = Date.now() + 30_000;
    let left = leftovers(info);
    while (Date.now() < end && JSON.stringify(left) !== JSON.stringify(nothing)) {
      await new Promise((r) => setTimeout(r, 250));
      left = leftovers(info);
    }
    // SIGINT: the fixture's handler cleans up at once; SIGKILL: its watchdog notices within ~1 s.
    assert.deepEqual(left, nothing, 'nothing of the node is left 30 s later');
  });
}
