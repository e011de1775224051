/**
 * End to end, as a user installs netoken: the image built from the repository's Dockerfile
 * (buildah, from local base images), imported into a real node (node.ts: kubelet, containerd,
 * kube-proxy), installed with the README's own commands (`helm install`, then `kubectl apply -f
 * deploy/`), the README's TokenPolicy applied, and the node's SYNs toward a peer namespace
 * checked on the wire. Then what an operator of the cluster does to it: an Enforce policy, a
 * `helm upgrade` to a rebuilt image, the agent pod deleted and its container killed, and the
 * uninstall in the README's order, with the kernel's view of the node checked after each.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path, { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { layoutDir } from '../../src/agent/layout.js';
import { TCP_ACK, TCP_SYN, findTokenOption, parseFrame } from '../../src/lib/packet.js';
import { toEthernet } from '../../src/lib/pcap.js';
import { BIND_ALL, epochAt, keyedToken } from '../../src/lib/siphash.js';
import { ROOT, agentIn, counter, kernelHooks, policyYaml, type AgentRun } from '../lib/agent.js';
import { startCapture } from '../lib/capture.js';
import { netnsPath, run, spawnIn, waitForExit } from '../lib/netns.js';
import { connect, startServer, type TcpServer } from '../lib/tcp.js';
import { repoRoot, toolPaths, type CommandResult } from './cluster.js';
import { ImageBuilder, type BuildResult } from './image.js';
import { type NodeState, policyAttached } from './chart.js';
import { TestNode } from './node.js';
import { reportedPolicies } from '../../src/agent/node-state.js';

const NS = 'netoken-system';
/** The image as the tests name it: the README's registry.example.com/netoken, but local. */
const REPOSITORY = 'localhost/netoken';
const FIRST_TAG = '0.1.0';
const REBUILT_TAG = '0.1.0-rebuild';
/** CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39): and nothing else. */
const AGENT_CAPS = ((1n << 12n) | (1n << 38n) | (1n << 39n)).toString(16).padStart(16, '0');
const CONNECT_LOOP = fileURLToPath(new URL('../lib/connect-loop.js', import.meta.url));

/** Every command of the README's sh blocks, continuation lines joined, comments dropped. */
function readmeCommands(): string[] {
  const text = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const out: string[] = [];
  for (const block of text.matchAll(/```sh\n([\s\S]*?)```/g)) {
    const joined = (block[1] as string).replace(/\\\n\s*/g, '');
    for (const line of joined.split('\n')) {
      const cmd = line.replace(/\s+#.*$/, '').trim();
      if (cmd) out.push(cmd);
    }
  }
  return out;
}

/** The README's commands that start with `prefix`, as argv with the example registry replaced by the local image. */
function readme(prefix: string): string[][] {
  const found = readmeCommands().filter((c) => c.startsWith(prefix));
  assert.ok(found.length, `the README has a command starting with "${prefix}"`);
  return found.map((c) =>
    c
      .replace(/<<'YAML'$/, '')
      .trim()
      .split(/\s+/)
      .map((a) => a.replaceAll('registry.example.com/netoken', REPOSITORY))
      // Paths in the repository (charts/netoken, deploy/, crds/) from wherever the test runs.
      .map((a) => (/^[a-z][\w-]*\/[\w./-]*$/.test(a) && existsSync(join(repoRoot, a)) ? join(repoRoot, a) : a)),
  );
}

/** The README's TokenPolicy (its `kubectl apply -f - <<'YAML'` document). */
function readmePolicy(): string {
  const text = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const m = /kubectl apply -f - <<'YAML'\n([\s\S]*?)\nYAML\n/.exec(text);
  assert.ok(m, "the README shows a TokenPolicy applied with kubectl apply -f - <<'YAML'");
  return `${m[1]}\n`;
}

interface PodJson {
  metadata: { name: string; uid: string; labels?: Record<string, string> };
  spec: { containers: { securityContext?: Record<string, unknown> }[] };
  status: {
    phase: string;
    conditions?: { type: string; status: string }[];
    containerStatuses?: { containerID?: string; imageID: string; image: string; ready: boolean; restartCount: number }[];
  };
}

describe('netoken on a real node: image from the Dockerfile, helm install, deploy/', () => {
  let node: TestNode;
  let images: ImageBuilder;
  let logs: string;
  let first: BuildResult;
  /** The rebuilt image for the upgrade, built while the first tests run. */
  let rebuilt: Promise<BuildResult>;
  let peerAgent: AgentRun | undefined;
  const servers: TcpServer[] = [];

  const kubectl = (args: string[], input?: string, timeoutMs?: number): Promise<CommandResult> =>
    node.cluster.kubectl(args, { input, timeoutMs });
  const kubectlOk = (args: string[], input?: string, timeoutMs?: number): Promise<string> =>
    node.cluster.kubectlOk(args, { input, timeoutMs });
  /** Runs one README command (kubectl or helm) against the node's cluster. */
  const runReadme = async (argv: string[], input?: string): Promise<string> => {
    const [tool, ...args] = argv;
    const r = tool === 'helm' ? await node.cluster.helm(args, { timeoutMs: 300_000 }) : await kubectl(args, input, 300_000);
    assert.equal(r.code, 0, `${argv.join(' ')} failed:\n${r.stdout}${r.stderr}`);
    return r.stdout;
  };
  const say = (line: string): void => {
    process.stderr.write(`e2e: ${line}\n`);
  };

  before(async () => {
    for (const [k, p] of Object.entries(toolPaths()))
      assert.ok(existsSync(p), `${k} is missing at ${p}: bash test/k8s/build-tools.sh`);
    images = new ImageBuilder();
    logs = images.dir;
    say('building the image from the Dockerfile while the node starts');
    const build = images.buildNetoken(`${REPOSITORY}:${FIRST_TAG}`, { log: join(logs, 'build-1.log') });
    const started = TestNode.start();
    [first, node] = await Promise.all([
      build,
      started.catch(async (e: unknown) => {
        await build.catch(() => undefined);
        throw e;
      }),
    ]);
    const archive = await images.exportArchive(first.ref);
    say(
      `image ${first.ref}: built from the Dockerfile in ${first.seconds.toFixed(0)} s, ${(archive.sizeBytes / 1e6).toFixed(0)} MB`,
    );
    await node.importImage(archive.path);
    // The upgrade's image: the same sources built again, with another version label (so another image).
    rebuilt = images.buildNetoken(`${REPOSITORY}:${REBUILT_TAG}`, {
      labels: { 'org.opencontainers.image.version': REBUILT_TAG },
      log: join(logs, 'build-2.log'),
    });
    rebuilt.catch(() => undefined);
  });

  after(async () => {
    // Every step, whatever the one before it did; the first failure is reported.
    const errors: unknown[] = [];
    const step = async (f: () => Promise<unknown> | undefined): Promise<void> => {
      try {
        await f();
      } catch (err) {
        errors.push(err);
      }
    };
    for (const s of servers) await step(() => s.stop());
    await step(() => peerAgent?.cleanup());
    await step(() => rebuilt?.catch(() => undefined));
    await step(() => node?.stop());
    await step(() => images?.close());
    if (errors.length) throw errors[0];
  });

  const agentPod = async (): Promise<PodJson> => {
    const pods = await node.cluster.getJson<{ items: PodJson[] }>(['pods', '-n', NS, '-l', 'app.kubernetes.io/component=agent']);
    const running = pods.items.filter((p) => p.status.phase === 'Running');
    assert.equal(
      running.length,
      1,
      `one agent pod runs: ${pods.items.map((p) => `${p.metadata.name} ${p.status.phase}`).join(', ')}`,
    );
    return running[0] as PodJson;
  };
  /** Waits until `pred` holds for the Running agent pod and it is Ready; returns it. */
  const waitAgent = async (pred: (p: PodJson) => boolean, what: string, ms = 120_000): Promise<PodJson> => {
    const end = Date.now() + ms;
    let last = '';
    while (Date.now() < end) {
      const pods = await node.cluster.getJson<{ items: PodJson[] }>([
        'pods',
        '-n',
        NS,
        '-l',
        'app.kubernetes.io/component=agent',
      ]);
      const ready = pods.items.filter(
        (p) => p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') && pred(p),
      );
      if (ready.length === 1 && pods.items.length === 1) return ready[0] as PodJson;
      last = JSON.stringify(
        pods.items.map((p) => ({ name: p.metadata.name, phase: p.status.phase, containers: p.status.containerStatuses })),
      );
      await new Promise((r) => setTimeout(r, 500));
    }
    throw new Error(`timed out waiting for ${what}; agent pods: ${last}`);
  };
  /** The agent container's process, seen from the host. */
  const agentPid = async (pod: PodJson): Promise<number> => {
    const pid = await node.containerPid(pod.status.containerStatuses?.[0]?.containerID ?? '');
    assert.match(
      readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' '),
      /netoken\.js agent /,
      `pid ${pid} is the agent of pod ${pod.metadata.name}`,
    );
    return pid;
  };

  /** The checks a user makes right after installing: both workloads Ready, the agent with exactly its rights. */
  const checkInstalled = async (): Promise<void> => {
    for (const argv of readme(`kubectl -n ${NS} rollout status`)) await runReadme([...argv, '--timeout=180s']);
    const pod = await waitAgent(() => true, 'the agent pod Ready');
    const sc = pod.spec.containers[0]?.securityContext ?? {};
    assert.equal(sc.privileged, false, 'the agent container is not privileged');
    const pid = await agentPid(pod);
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const field = (name: string): string => new RegExp(`^${name}:\\s*(\\S+)`, 'm').exec(status)?.[1] ?? `(no ${name})`;
    assert.equal(field('CapEff'), AGENT_CAPS, 'effective capabilities: exactly BPF, NET_ADMIN and PERFMON');
    assert.equal(field('CapPrm'), AGENT_CAPS, 'permitted capabilities: the same three');
    assert.equal(field('CapBnd'), AGENT_CAPS, 'bounding set: the same three');
    assert.equal(field('CapAmb'), '0000000000000000', 'no ambient capabilities');
    assert.equal(field('NoNewPrivs'), '1', 'no privilege escalation');
    assert.equal(field('Seccomp'), '2', 'a seccomp filter (RuntimeDefault)');
    assert.match(status, /^Uid:\s+0\s/m, 'root, so that its added capabilities apply');
    const root = readFileSync(`/proc/${pid}/mountinfo`, 'utf8')
      .split('\n')
      .find((l) => l.split(' ')[4] === '/');
    assert.match(root?.split(' ')[5] ?? '', /^ro\b/, `the root filesystem is read-only: ${root}`);

    const operators = await node.cluster.getJson<{ items: PodJson[] }>([
      'pods',
      '-n',
      NS,
      '-l',
      'app.kubernetes.io/component=operator',
    ]);
    const op = operators.items.find((p) => p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
    assert.ok(op, 'the operator pod is Ready');
    const opStatus = readFileSync(
      `/proc/${await node.containerPid(op.status.containerStatuses?.[0]?.containerID ?? '')}/status`,
      'utf8',
    );
    assert.match(opStatus, /^Uid:\s+65532\s/m, 'the operator runs as 65532');
    assert.match(opStatus, /^CapEff:\s+0{16}$/m, 'the operator has no capabilities');
  };

  /**
   * The README's TokenPolicy applied: a real connection from the node to the peer's port 443
   * carries the keyed token (checked against the key in the operator's Secret) with both
   * checksums right, the node reports it Ready and `kubectl get tokenpolicies` says so.
   */
  const checkMarking = async (): Promise<void> => {
    const yaml = readmePolicy();
    assert.match(
      yaml,
      /cidr: 203\.0\.113\.0\/24, ports: \[443\]/,
      'the README policy marks 203.0.113.0/24:443, where the peer is',
    );
    assert.equal(node.peer.ipv4, '203.0.113.2');
    await runReadme(['kubectl', 'apply', '-f', '-'], yaml);
    const table = await waitFor(
      async () => {
        const out = await kubectlOk(['get', 'tokenpolicies']);
        return /^web-egress\s+Keyed\s+True\s+AllNodesReady\s+1\s+1\s/m.test(out) ? out : null;
      },
      'kubectl get tokenpolicies: web-egress READY True on 1 of 1 node',
      60_000,
    );
    assert.match(table, /NAME\s+MODE\s+READY\s+REASON\s+NODES READY\s+SELECTED/);
    const states = await kubectlOk(['get', 'tokennodestates']);
    assert.match(states, new RegExp(`^${node.name}\\s+True\\s`, 'm'), `the node's TokenNodeState is Ready:\n${states}`);
    const nodeState = await node.cluster.getJson<NodeState>(['tokennodestate', node.name]);
    assert.deepEqual(
      reportedPolicies(nodeState.status).find((p) => p.name === 'web-egress')?.interfaces,
      [node.dev],
      "the policy (no interfaces given) is on the interface of the node's default route",
    );
    assert.ok(
      policyAttached(nodeState, 'web-egress'),
      `its hooks there are attached: ${JSON.stringify(nodeState.status?.interfaces)}`,
    );

    const secret = await node.cluster.getJson<{ data: { current: string } }>(['secret', '-n', NS, 'web-egress-token']);
    const key = Buffer.from(secret.data.current, 'base64');
    assert.equal(key.length, 16, 'the operator generated a 16-byte key');
    const server = await startServer(node.peer.ns, { port: 443 });
    try {
      const cap = await startCapture(node.peer.ns, node.peer.dev, { filter: 'tcp port 443' });
      const r = await connect(node.node.ns, node.peer.ipv4, 443);
      const res = await cap.stop();
      assert.ok(r.ok, `a connection from the node to the peer: ${JSON.stringify(r)}`);
      const synPacket = res.packets.find((p) => {
        const f = parseFrame(toEthernet(res.linkType, p.data));
        return f.tcp !== null && (f.tcp.flags & TCP_SYN) !== 0 && (f.tcp.flags & TCP_ACK) === 0;
      });
      assert.ok(synPacket, 'the SYN reached the peer');
      const syn = parseFrame(toEthernet(res.linkType, synPacket.data));
      assert.equal(syn.ipv4ChecksumOk, true, 'IPv4 header checksum');
      assert.equal(syn.tcpChecksumOk, true, 'TCP checksum (transmit offload is off: the wire has the real sum)');
      assert.deepEqual(syn.errors, []);
      const token = findTokenOption(syn, 253, 0x4e54);
      assert.ok(token, 'the SYN carries the token option (kind 253, ExID 0x4e54)');
      const tcp = syn.tcp as NonNullable<typeof syn.tcp>;
      const flow = { src: syn.src as string, dst: syn.dst as string, sport: tcp.sport, dport: tcp.dport, seq: tcp.seq };
      const at = epochAt(synPacket.tsSec * 1000, 60);
      const want = [at, at - 1n, at + 1n].map((e) => keyedToken(key, flow, BIND_ALL, e).toString('hex'));
      assert.ok(want.includes(token.toString('hex')), "the token is SipHash of the SYN under the Secret's key, this epoch");
    } finally {
      await server.stop();
    }
    // kubectl logs reaches the kubelet; neither component logged an error, nor the key.
    for (const workload of ['daemonset/netoken-agent', 'deployment/netoken-operator']) {
      const log = await kubectlOk(['logs', '-n', NS, workload]);
      assert.match(log, /"level":"info"/, `${workload} logs JSON lines`);
      assert.doesNotMatch(log, /"level":"error"/, `${workload} logged no error:\n${log.slice(-3000)}`);
      for (const enc of [key.toString('hex'), key.toString('base64')])
        assert.ok(!log.includes(enc), `the key is not in the ${workload} log`);
    }
  };

  test('helm install as the README says: the operator and the agent become Ready; the agent runs unprivileged with exactly three capabilities and a read-only root', async () => {
    const [install] = readme('helm install');
    assert.ok(
      install?.includes(`image.repository=${REPOSITORY}`),
      `the README's helm install sets image.repository: ${install?.join(' ')}`,
    );
    await runReadme(install as string[]);
    await checkInstalled();
  });

  test("kubectl apply of the README's TokenPolicy: the node's SYNs toward the peer carry the token on the wire; node and policy Ready", async () => {
    await checkMarking();
  });

  test('an Enforce policy on the node drops token-less SYNs from the peer and lets marked ones in', async () => {
    const secret = await node.cluster.getJson<{ data: { current: string } }>(['secret', '-n', NS, 'web-egress-token']);
    const key = Buffer.from(secret.data.current, 'base64');
    const guarded = await startServer(node.node.ns, { port: 0 });
    servers.push(guarded);
    await kubectlOk(
      ['apply', '-f', '-'],
      `apiVersion: netoken.io/v1alpha1
kind: TokenPolicy
metadata: {name: guard}
spec:
  interfaces: {names: [${node.dev}]}
  token: {mode: Keyed, secretRef: {name: web-egress-token}, epochSeconds: 60}
  ingress: {action: Enforce, ports: [${guarded.port}]}
`,
    );
    await waitFor(
      async () => {
        const out = await kubectlOk([
          'get',
          'tokenpolicy',
          'guard',
          '-o',
          'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
        ]);
        return out === 'True' ? out : null;
      },
      'policy guard Ready',
      60_000,
    );
    const refused = await connect(node.peer.ns, node.address, guarded.port, { timeoutMs: 3_000 });
    assert.equal(refused.ok, false, `an unmarked connection from the peer is dropped: ${JSON.stringify(refused)}`);
    assert.equal(refused.error, 'ETIMEDOUT', 'dropped, not refused: the SYN never reached the socket');

    // The peer marks its SYNs to the node with the same key, and verifies the node's SYNs to its
    // port 443 (Enforce): from now on a SYN of the node without a valid token would be dropped.
    peerAgent = agentIn(node.peer.ns, 'e2e-peer');
    const peerPolicy = policyYaml([
      {
        name: 'peer',
        token: key,
        spec: `interfaces: {names: [${node.peer.dev}]}
egress: {destinations: [{cidr: ${node.address}/32, ports: [${guarded.port}]}]}
ingress: {action: Enforce, ports: [443]}`,
      },
    ]).replace('mode: Static', 'mode: Keyed, epochSeconds: 60');
    peerAgent.writePolicy(peerPolicy);
    await peerAgent.start();
    await peerAgent.waitStatus((s) => s.ready && s.hooks.length === 2, 30_000, 'the peer marks and verifies');
    const admitted = await connect(node.peer.ns, node.address, guarded.port, { timeoutMs: 3_000 });
    assert.ok(admitted.ok, `a marked connection from the peer gets in: ${JSON.stringify(admitted)}`);
    const layout = await hookLayout();
    assert.ok(
      layout.xdp === 'nt_verify_xdp' || layout.ingressTcx.some((n) => n.startsWith('nt_verify')),
      `the node's verifier is at ingress: ${JSON.stringify(layout)}`,
    );
  });

  /**
   * How the node's interface is hooked: the program at XDP (by name) and its mode, the TCX
   * programs at ingress (by name) and at egress, a clsact qdisc.
   */
  const hookLayout = async (): Promise<{
    xdp: string | null;
    xdpMode: number | null;
    ingressTcx: string[];
    egressTcx: number;
    clsact: boolean;
  }> => {
    const [link] = JSON.parse(await node.execOk('ip', ['-d', '-j', 'link', 'show', 'dev', node.dev])) as {
      xdp?: { mode?: number; prog?: { name?: string } };
    }[];
    const egress = await kernelHooks(node.node.ns, node.dev);
    const script = `const { binding } = await import(${JSON.stringify(join(ROOT, 'dist/src/native/binding.js'))}); const b = binding();
const names = b.tcxQuery(Number(process.argv[1]), 'ingress').map((id) => { const p = b.programFromId(id); const n = p.info.name; p.close(); return n; });
console.log(JSON.stringify(names));`;
    const ingress = JSON.parse(
      (
        await run('nsenter', [
          `--net=${netnsPath(node.node.ns)}`,
          '--',
          process.execPath,
          '--input-type=module',
          '-e',
          script,
          String(node.node.ifindex),
        ])
      ).stdout,
    ) as string[];
    return {
      xdp: link?.xdp?.prog?.name ?? null,
      xdpMode: link?.xdp?.mode ?? null,
      ingressTcx: ingress,
      egressTcx: egress.tcx.length,
      clsact: egress.clsact,
    };
  };

  /** Pinned maps (of the current layout) and links under the node's /sys/fs/bpf/netoken: path → kernel object id. */
  const pins = async (): Promise<Record<string, number>> => {
    const out: Record<string, number> = {};
    const dirs = { maps: path.relative('/sys/fs/bpf/netoken', layoutDir('/sys/fs/bpf/netoken')), links: 'links' } as const;
    for (const kind of ['maps', 'links'] as const) {
      const files = (await node.execOk('ls', [`/sys/fs/bpf/netoken/${dirs[kind]}`]))
        .split('\n')
        .filter((f) => f && !f.endsWith('.json'));
      for (const f of files) {
        const pin = `/sys/fs/bpf/netoken/${dirs[kind]}/${f}`;
        const info = JSON.parse(
          await node.execOk('bpftool', ['-j', kind === 'maps' ? 'map' : 'link', 'show', 'pinned', pin]),
        ) as { id: number };
        out[`${dirs[kind]}/${f}`] = info.id;
      }
    }
    return out;
  };

  /**
   * Connections from the node to the peer's port 443 in a loop (50 a second, so that minutes of
   * them do not use up the node's local ports) while `disrupt` runs: the peer drops any SYN
   * without a valid token, and its verifier counts every SYN, so marking must never stop.
   */
  const loopAcross = async (
    what: string,
    disrupt: () => Promise<void>,
  ): Promise<{ attempts: number; ok: number; failures: unknown[]; maxMs: number }> => {
    assert.ok(peerAgent, 'the peer verifies (previous test)');
    const before = { ...(await pins()) };
    assert.ok(
      Object.keys(before).some((k) => k.startsWith('links/')),
      `a pinned TCX link: ${JSON.stringify(before)}`,
    );
    const layoutBefore = await hookLayout();
    const verified0 = await peerAgent.statusReport();
    const server = await startServer(node.peer.ns, { port: 443 });
    const loop = spawnIn(node.node.ns, process.execPath, [CONNECT_LOOP, node.peer.ipv4, '443', '600000', '5000', '20']);
    let out = '';
    let err = '';
    loop.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
    loop.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
    try {
      await new Promise((r) => setTimeout(r, 2_000));
      await disrupt();
      // Marking after the new agent took over, too.
      await new Promise((r) => setTimeout(r, 3_000));
    } finally {
      loop.kill('SIGTERM');
      const exited = await waitForExit(loop, 15_000);
      await server.stop();
      assert.ok(
        exited && out.trim(),
        `the connection loop ended with its summary (exit ${loop.signalCode ?? loop.exitCode}): ${out}${err}`,
      );
    }
    const summary = JSON.parse(out.trim().split('\n').pop() as string) as {
      attempts: number;
      ok: number;
      failures: unknown[];
      maxMs: number;
    };
    const verified = await peerAgent.statusReport();
    const delta = (name: string): number => counter(verified, name, 'peer') - counter(verified0, name, 'peer');
    say(
      `${what}: ${summary.attempts} connections, ${summary.failures.length} failed, slowest ${summary.maxMs} ms; peer verifier: ${delta('verify_valid')} valid, ${delta('verify_missing')} without token, ${delta('verify_dropped')} dropped`,
    );
    assert.ok(summary.attempts >= 10, `the loop ran: ${out}`);
    assert.deepEqual(summary.failures, [], `${what}: no connection failed`);
    assert.equal(
      delta('verify_missing') + delta('verify_invalid') + delta('verify_dropped'),
      0,
      `${what}: the peer saw no SYN without a valid token`,
    );
    assert.ok(delta('verify_valid') >= summary.attempts, `${what}: every SYN was verified valid`);
    assert.deepEqual(await pins(), before, `${what}: the same pinned maps and TCX links (same kernel ids)`);
    assert.deepEqual(
      await hookLayout(),
      layoutBefore,
      `${what}: the new agent kept every hook where it was (XDP verifier included)`,
    );
    return summary;
  };

  test('helm upgrade to a rebuilt image: the DaemonSet rolls, marking never stops, the new agent keeps the pinned maps and TCX link', async () => {
    const image = await rebuilt;
    assert.notEqual(image.id, first.id, 'the rebuilt image is another image');
    await node.importImage((await images.exportArchive(image.ref)).path);
    const old = await agentPod();
    await loopAcross('helm upgrade', async () => {
      await runReadme([
        'helm',
        'upgrade',
        'netoken',
        join(repoRoot, 'charts/netoken'),
        '--namespace',
        NS,
        '--reuse-values',
        '--set',
        `image.tag=${REBUILT_TAG}`,
      ]);
      await runReadme(['kubectl', '-n', NS, 'rollout', 'status', 'daemonset/netoken-agent', '--timeout=180s']);
      await waitAgent(
        (p) => p.metadata.uid !== old.metadata.uid && p.status.containerStatuses?.[0]?.image === `${REPOSITORY}:${REBUILT_TAG}`,
        'the upgraded agent pod',
      );
    });
    const now = await agentPod();
    assert.notEqual(
      now.status.containerStatuses?.[0]?.imageID,
      old.status.containerStatuses?.[0]?.imageID,
      'the agent runs the rebuilt image',
    );
  });

  test('the agent pod deleted, then its container killed with SIGKILL: marking never stops, the new agent adopts the pins', async () => {
    const old = await agentPod();
    await loopAcross('kubectl delete pod', async () => {
      await kubectlOk(['delete', 'pod', '-n', NS, old.metadata.name, '--wait=true', '--timeout=120s']);
      await waitAgent((p) => p.metadata.uid !== old.metadata.uid, "the DaemonSet's new agent pod");
    });
    const pod = await agentPod();
    const restarts = pod.status.containerStatuses?.[0]?.restartCount ?? 0;
    await loopAcross('SIGKILL of the agent container', async () => {
      const pid = await agentPid(pod);
      say(`SIGKILL to the agent, pid ${pid}`);
      process.kill(pid, 'SIGKILL');
      await waitAgent(
        (p) => p.metadata.uid === pod.metadata.uid && (p.status.containerStatuses?.[0]?.restartCount ?? 0) > restarts,
        'the killed agent container restarted',
      );
    });
  });

  /** Nothing of ours on the node: no hook at either direction of its interface, no XDP, no qdisc, no pin, no run file. */
  const checkNothingLeft = async (): Promise<void> => {
    const hooks = await kernelHooks(node.node.ns, node.dev);
    assert.deepEqual(hooks.tcx, [], 'no TCX program at egress');
    assert.equal(hooks.tc, null, 'no tc filter of ours at egress');
    assert.equal(hooks.clsact, false, 'no clsact qdisc');
    const link = await node.execOk('ip', ['-d', 'link', 'show', 'dev', node.dev]);
    assert.doesNotMatch(link, /\bxdp/, `no XDP program: ${link}`);
    const ingress = JSON.parse(await node.execOk('bpftool', ['-j', 'net', 'show', 'dev', node.dev])) as {
      tc?: unknown[];
      xdp?: unknown[];
      tcx?: unknown[];
    }[];
    assert.deepEqual(
      ingress.flatMap((e) => [...(e.tc ?? []), ...(e.xdp ?? []), ...(e.tcx ?? [])]),
      [],
      `bpftool net show dev ${node.dev}: nothing attached`,
    );
    const bpffs = await node.exec('ls', ['-A', '/sys/fs/bpf/netoken']);
    assert.notEqual(bpffs.code, 0, `no /sys/fs/bpf/netoken on the node: ${bpffs.stdout}`);
    const runDir = await node.exec('ls', ['-A', '/run/netoken']);
    assert.equal(runDir.stdout.trim(), '', 'no run file left in /run/netoken');
  };

  /** Waits until the namespace has no pod left (an uninstall's agent has stopped and cleaned up). */
  const waitNoPods = async (): Promise<void> => {
    await waitFor(
      async () => {
        const out = await kubectlOk(['get', 'pods', '-n', NS, '-o', 'name']);
        return out.trim() === '' ? 'none' : null;
      },
      `no pod left in ${NS}`,
      120_000,
    );
  };

  test("uninstall in the README's order: no hook, pin or qdisc of ours is left on the node", async () => {
    await peerAgent?.cleanup();
    peerAgent = undefined;
    const steps = readmeCommands().filter((c) =>
      /^(kubectl delete tokenpolicies|helm uninstall|kubectl delete -f crds\/)/.test(c),
    );
    assert.deepEqual(
      steps.map((c) => c.split(' ').slice(0, 3).join(' ')),
      ['kubectl delete tokenpolicies', 'helm uninstall netoken', 'kubectl delete -f'],
      'the README uninstalls in three steps',
    );
    for (const argv of readme('kubectl delete tokenpolicies')) await runReadme(argv);
    for (const argv of readme('helm uninstall')) await runReadme(argv);
    await waitNoPods();
    for (const argv of readme('kubectl delete -f crds/')) await runReadme(argv);
    await checkNothingLeft();
    assert.notEqual((await kubectl(['get', 'crd', 'tokenpolicies.netoken.io'])).code, 0, 'the CRDs are gone');
  });

  test('deploy/ (the rendered manifests) installs as the README says and passes the same checks', async () => {
    await runReadme(readme('kubectl apply -f deploy/')[0] as string[]);
    for (const argv of readme(`kubectl -n ${NS} set image`)) await runReadme(argv);
    await checkInstalled();
    await checkMarking();
    await runReadme(['kubectl', 'delete', 'tokenpolicies', '--all']);
    await runReadme(['kubectl', 'delete', '-f', join(repoRoot, 'deploy'), '--wait=true', '--timeout=180s']);
    await checkNothingLeft();
  });
});

async function waitFor<T>(probe: () => Promise<T | null>, what: string, ms: number): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== null) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}
