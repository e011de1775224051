/**
 * A real single-node Kubernetes cluster for end-to-end tests: etcd, kube-apiserver,
 * kube-controller-manager, kube-scheduler, containerd (CRI, runc, a CNI bridge), kubelet and
 * kube-proxy, all as real processes, so that a DaemonSet's pods really start.
 *
 * The node is a pair of network namespaces (netns.ts): the node's own, where every process of
 * the cluster runs, and a peer at the other end of a veth (transmit checksum offload off on
 * both ends). The node's address is its end of the veth, its default route points at the peer,
 * and its iptables, interfaces, CNI bridge and pod network namespaces are its own. Every process
 * also runs in a mount namespace of the node's, with a fresh /run, /var/lib, /var/log and BPF
 * filesystem (/sys/fs/bpf), and / shared (what systemd does on a real node; a hostPath with
 * mount propagation needs it): what the kubelet, containerd and the pods mount or pin stays in
 * there. Every process is in a cgroup of the node's (the kubelet's cgroup root too), so it can
 * be found and killed by PID, pods included.
 *
 * What this sandbox needs that a real node does not, each where it is configured below:
 * containerd must not lower oom_score_adj, the kubelet must accept cgroup v1, the node needs a
 * non-loopback address (the veth), and images are imported (no registry), fully qualified.
 *
 * stop() (and the exit and signal handlers, and a watchdog when the test process is killed)
 * kills every process of the node by PID, removes its cgroups and namespaces and files; the
 * namespaces take the mounts, links, iptables chains and BPF pins with them.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTopology, netnsPath, type Iface, type Topology } from '../lib/netns.js';
import {
  CommandError,
  NODE_API_PORT,
  onProcessEnd,
  run,
  startWatchdog,
  TestCluster,
  toolsDir,
  toolVersions,
  type ClusterProcess,
  type CommandResult,
} from './cluster.js';

/** Binaries of the node beyond the control plane TestCluster runs. */
export interface NodeToolPaths {
  kubelet: string;
  kubeProxy: string;
  kubeControllerManager: string;
  kubeScheduler: string;
}

/** Where `build-tools.sh node` puts them (NETOKEN_KUBELET etc. override single paths). */
export function nodeToolPaths(): NodeToolPaths {
  const dir = join(toolsDir(), `kubernetes-node-${toolVersions().KUBERNETES_VERSION}`);
  return {
    kubelet: process.env.NETOKEN_KUBELET || join(dir, 'kubelet'),
    kubeProxy: process.env.NETOKEN_KUBE_PROXY || join(dir, 'kube-proxy'),
    kubeControllerManager: process.env.NETOKEN_KUBE_CONTROLLER_MANAGER || join(dir, 'kube-controller-manager'),
    kubeScheduler: process.env.NETOKEN_KUBE_SCHEDULER || join(dir, 'kube-scheduler'),
  };
}

/** Pod addresses (the CNI bridge) and Service ClusterIPs: benchmarking ranges, never routed anywhere. */
export const POD_CIDR = '198.18.0.0/24';
export const SERVICE_CIDR = '198.19.0.0/24';
const SERVICE_IP = '198.19.0.1';
/** The pod sandbox image (pause.c), imported under this name; containerd's sandbox_image. */
export const SANDBOX_IMAGE = 'localhost/netoken-test/pause:1';
/** containerd's socket inside the node's mount namespace (its /run is the node's). */
const CONTAINERD_SOCKET = '/run/containerd/containerd.sock';
const CNI_BIN_DIR = '/usr/lib/cni';

export interface NodeOptions {
  /** The Node's name; it defaults to netoken-node. */
  name?: string;
  /** Milliseconds from the start until the Node is Ready, else start() fails; it defaults to 180000. */
  readyTimeoutMs?: number;
  /** docker-archive or OCI archives to import into containerd before the kubelet starts. */
  images?: string[];
  /** Progress lines; they default to stderr. */
  progress?: (line: string) => void;
}

function sleep(ms: number): Promise<void> {
  return new Promise((res) => setTimeout(res, ms));
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Mount points of the host's cgroup hierarchies (v1 controllers, the v2 unified one). */
function cgroupHierarchies(): { path: string; v2: boolean; controllers: string[] }[] {
  const out: { path: string; v2: boolean; controllers: string[] }[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [pre, post] = line.split(' - ');
    if (!pre || !post) continue;
    const [fstype, , superOpts] = post.split(' ');
    const mountPoint = pre.split(' ')[4];
    if (!mountPoint || (fstype !== 'cgroup' && fstype !== 'cgroup2')) continue;
    const controllers =
      fstype === 'cgroup2'
        ? []
        : (superOpts ?? '').split(',').filter((o) => !['rw', 'ro', 'relatime', 'nosuid', 'nodev', 'noexec', 'xattr'].includes(o));
    out.push({ path: mountPoint, v2: fstype === 'cgroup2', controllers });
  }
  return out;
}

/** Process ids in a cgroup directory and every cgroup below it. */
function cgroupPids(dir: string): number[] {
  const pids: number[] = [];
  const walk = (d: string): void => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    try {
      for (const l of readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n')) if (l.trim()) pids.push(Number(l));
    } catch {
      // removed meanwhile
    }
    for (const e of entries) if (e.isDirectory()) walk(join(d, e.name));
  };
  walk(dir);
  return pids;
}

/** Removes a cgroup directory tree, deepest first; the directories still there. */
function removeCgroupTree(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const left: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true }))
    if (e.isDirectory()) left.push(...removeCgroupTree(join(dir, e.name)));
  try {
    rmdirSync(dir);
  } catch {
    left.push(dir);
  }
  return left;
}

/**
 * The cleanup the watchdog runs when the test process died without stop(): "$1" is the state
 * file that lists the tracking cgroup, every cgroup directory and the namespaces.
 */
const WATCHDOG_CLEANUP = `
state=$1
track=$(sed -n 's/^track //p' "$state")
for i in $(seq 1 50); do
  pids=$(find "$track" -name cgroup.procs -exec cat {} + 2>/dev/null)
  [ -z "$pids" ] && break
  kill -KILL $pids 2>/dev/null
  sleep 0.2
done
for i in 1 2 3 4 5; do
  for cg in $(sed -n 's/^cgroup //p' "$state"); do
    [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  sleep 0.2
done
for ns in $(sed -n 's/^netns //p' "$state"); do ip netns del "$ns" 2>/dev/null; done
rm -rf "$(dirname "$state")"
`;

export class TestNode {
  /** The control plane; kubectl and helm through it act as cluster admin. */
  cluster!: TestCluster;
  /** The node's network namespace and its interface toward the peer. */
  readonly node: Iface;
  /** The peer network namespace at the other end of the node's interface. */
  readonly peer: Iface;
  private readonly cgroupId: string;
  private readonly hierarchies = cgroupHierarchies();
  private readonly track: string;
  private holder: ChildProcess | undefined;
  private watchdog: ChildProcess | undefined;
  private stopped = false;
  private forgetEndHook: () => void = () => undefined;
  private readonly started = Date.now();

  private constructor(
    readonly name: string,
    private readonly topo: Topology,
    private readonly stateDir: string,
    private readonly progress: (line: string) => void,
  ) {
    this.node = topo.client;
    this.peer = topo.server;
    this.cgroupId = `nttest-${process.pid}-${randomBytes(3).toString('hex')}`;
    const tracking = this.hierarchies.find((h) => h.controllers.includes('pids')) ?? this.hierarchies.find((h) => h.v2);
    if (!tracking) throw new Error('no pids cgroup controller and no cgroup v2 hierarchy is mounted under /sys/fs/cgroup');
    this.track = join(tracking.path, this.cgroupId);
  }

  /** The node's address (its end of the veth): the Node's InternalIP and the API server's advertised address. */
  get address(): string {
    return this.node.ipv4;
  }

  /** The node's interface toward the peer, as the agent sees it. */
  get dev(): string {
    return this.node.dev;
  }

  /** The kubelet's cgroup root, below which every pod's cgroup is. */
  get cgroupRoot(): string {
    return `/${this.cgroupId}/pods`;
  }

  /** Starts everything and waits until the Node is Ready; on any failure removes what it started and rejects. */
  static async start(opts: NodeOptions = {}): Promise<TestNode> {
    const t0 = Date.now();
    const progress = opts.progress ?? ((line: string) => process.stderr.write(`${line}\n`));
    const name = opts.name ?? 'netoken-node';
    const deadline = t0 + (opts.readyTimeoutMs ?? 180_000);
    checkPrerequisites();
    const stateDir = mkdtempSync(join(tmpdir(), `nttest-${process.pid}-node-`));
    let topo: Topology | undefined;
    let node: TestNode | undefined;
    const watchdog = startWatchdog('netoken-node-watchdog', WATCHDOG_CLEANUP, [join(stateDir, 'state')]);
    try {
      topo = await createTopology({ name: 'node', kind: 'pair' });
      node = new TestNode(name, topo, stateDir, progress);
      node.watchdog = watchdog;
      const n = node;
      node.forgetEndHook = onProcessEnd(() => n.stopSync());
      await node.boot(opts, deadline);
      return node;
    } catch (err) {
      if (node) await node.stop().catch(() => undefined);
      else {
        await topo?.destroy().catch(() => undefined);
        watchdog.kill('SIGKILL');
        rmSync(stateDir, { recursive: true, force: true });
      }
      throw err;
    }
  }

  private say(what: string): void {
    this.progress(`node ${this.name}: ${what} (${((Date.now() - this.started) / 1000).toFixed(1)} s)`);
  }

  private record(line: string): void {
    appendFileSync(join(this.stateDir, 'state'), `${line}\n`);
  }

  private async boot(opts: NodeOptions, deadline: number): Promise<void> {
    const remaining = (): number => Math.max(1_000, deadline - Date.now());
    for (const ns of this.topo.namespaces) this.record(`netns ${ns}`);
    // A real node has a default route; the agent's default interface selection follows it.
    const route = await run('ip', ['-n', this.node.ns, 'route', 'add', 'default', 'via', this.peer.ipv4]);
    if (route.code !== 0) throw new CommandError(`adding the node's default route failed: ${route.stderr.trim()}`, route);
    this.makeCgroups();
    this.say(`namespaces ${this.node.ns} (${this.address} on ${this.dev}) and ${this.peer.ns}, cgroup ${this.cgroupId}`);
    await this.startHolder();

    this.cluster = await TestCluster.start({
      crds: false,
      readyTimeoutMs: remaining(),
      node: {
        address: this.address,
        serviceCidr: SERVICE_CIDR,
        serviceIp: SERVICE_IP,
        server: (cmd, args) => this.serverArgv(cmd, args),
        client: (cmd, args) => ['nsenter', `--net=${netnsPath(this.node.ns)}`, '--', cmd, ...args],
      },
    });
    this.say('etcd and kube-apiserver ready');

    const dir = join(this.cluster.dir, 'node');
    mkdirSync(dir);
    const server = `https://${this.address}:${NODE_API_PORT}`;
    const kubeconfig = (user: string, subject: string): string => {
      const cert = this.cluster.issueCertificate(user.replace(/[^a-z0-9-]/g, '-'), subject, 'client');
      const path = join(dir, `${user.replace(/[^a-z0-9-]/g, '-')}.kubeconfig`);
      this.cluster.writeKubeconfig(path, user, { 'client-certificate': cert.cert, 'client-key': cert.key }, server);
      return path;
    };
    const pki = this.cluster.pki;
    const tools = nodeToolPaths();

    const cm = this.cluster.startProcess('kube-controller-manager', tools.kubeControllerManager, [
      `--kubeconfig=${kubeconfig('system:kube-controller-manager', '/CN=system:kube-controller-manager')}`,
      '--leader-elect=false',
      '--bind-address=127.0.0.1',
      // Each controller with its own ServiceAccount, as kubeadm runs it; the CA goes to every
      // namespace's kube-root-ca.crt, which pods' ServiceAccount volumes carry.
      '--use-service-account-credentials=true',
      `--service-account-private-key-file=${join(pki, 'sa.key')}`,
      `--root-ca-file=${join(pki, 'ca.crt')}`,
      `--cluster-signing-cert-file=${join(pki, 'ca.crt')}`,
      `--cluster-signing-key-file=${join(pki, 'ca.key')}`,
      // The CNI configuration fixes the pod range; there is no cloud.
      '--controllers=*,-nodeipam,-cloud-node-lifecycle',
      '--v=1',
    ]);
    const sched = kubeconfig('system:kube-scheduler', '/CN=system:kube-scheduler');
    this.cluster.startProcess('kube-scheduler', tools.kubeScheduler, [
      `--kubeconfig=${sched}`,
      '--leader-elect=false',
      '--bind-address=127.0.0.1',
      '--v=1',
    ]);

    // containerd with its CRI plugin; everything it keeps is under the node's /var/lib and /run.
    const cniDir = join(dir, 'cni');
    mkdirSync(cniDir);
    writeFileSync(
      join(cniDir, '10-netoken-test.conflist'),
      JSON.stringify(
        {
          cniVersion: '0.4.0',
          name: 'netoken-test',
          // No loopback plugin: containerd sets up each pod's lo itself.
          plugins: [
            {
              type: 'bridge',
              bridge: 'cni0',
              isGateway: true,
              ipMasq: true,
              hairpinMode: true,
              ipam: { type: 'host-local', ranges: [[{ subnet: POD_CIDR }]], routes: [{ dst: '0.0.0.0/0' }] },
            },
            { type: 'portmap', capabilities: { portMappings: true } },
          ],
        },
        null,
        1,
      ),
    );
    const containerdConfig = join(dir, 'containerd.toml');
    writeFileSync(
      containerdConfig,
      [
        'version = 2',
        '[grpc]',
        `  address = "${CONTAINERD_SOCKET}"`,
        '[plugins."io.containerd.grpc.v1.cri"]',
        `  sandbox_image = "${SANDBOX_IMAGE}"`,
        // This VM refuses to lower oom_score_adj even to root (no CAP_SYS_RESOURCE), and the CRI
        // gives sandboxes -998: runc then fails every pod. Restricted, it never goes below the
        // score containerd itself has.
        '  restrict_oom_score_adj = true',
        '  [plugins."io.containerd.grpc.v1.cri".containerd]',
        '    snapshotter = "overlayfs"',
        '    default_runtime_name = "runc"',
        '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
        '      runtime_type = "io.containerd.runc.v2"',
        '      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]',
        // The kubelet's cgroup driver below is cgroupfs (there is no systemd).
        '        SystemdCgroup = false',
        '  [plugins."io.containerd.grpc.v1.cri".cni]',
        `    bin_dir = "${CNI_BIN_DIR}"`,
        `    conf_dir = "${cniDir}"`,
        '',
      ].join('\n'),
    );
    const containerd = this.cluster.startProcess('containerd', 'containerd', [
      '--config',
      containerdConfig,
      '--log-level',
      'warn',
    ]);
    await this.waitFor('containerd', containerd, remaining(), async () => (await this.ctr(['version'])).code === 0);
    this.say('containerd ready');

    const { ImageBuilder } = await import('./image.js');
    const images = new ImageBuilder(`nttest-${process.pid}-pause-`);
    try {
      await images.buildPause(SANDBOX_IMAGE);
      await this.importImage((await images.exportArchive(SANDBOX_IMAGE)).path);
    } finally {
      await images.close();
    }
    for (const archive of opts.images ?? []) await this.importImage(archive);
    this.say('images imported');

    const kubeletCert = this.cluster.issueCertificate('kubelet-serving', `/CN=${this.name}`, 'server', [
      `IP:${this.address}`,
      `DNS:${this.name}`,
    ]);
    const kubeletConfig = join(dir, 'kubelet.yaml');
    writeFileSync(
      kubeletConfig,
      JSON.stringify(
        {
          apiVersion: 'kubelet.config.k8s.io/v1beta1',
          kind: 'KubeletConfiguration',
          containerRuntimeEndpoint: `unix://${CONTAINERD_SOCKET}`,
          cgroupDriver: 'cgroupfs',
          // The node's own cgroup, so that every pod can be found and killed by stop().
          cgroupRoot: this.cgroupRoot,
          // This VM has cgroup v1 hierarchies; Kubernetes 1.35 refuses them unless told otherwise.
          failCgroupV1: false,
          authentication: {
            anonymous: { enabled: false },
            webhook: { enabled: true },
            x509: { clientCAFile: join(pki, 'ca.crt') },
          },
          authorization: { mode: 'Webhook' },
          tlsCertFile: kubeletCert.cert,
          tlsPrivateKeyFile: kubeletCert.key,
          readOnlyPort: 0,
          healthzBindAddress: '127.0.0.1',
          clusterDomain: 'cluster.local',
          resolvConf: '/etc/resolv.conf',
          // Whatever this machine's disk holds, never evict the test's pods or collect its images.
          evictionHard: {
            'memory.available': '100Mi',
            'nodefs.available': '1%',
            'nodefs.inodesFree': '1%',
            'imagefs.available': '1%',
          },
          imageGCHighThresholdPercent: 100,
          imageGCLowThresholdPercent: 99,
        },
        null,
        1,
      ),
    );
    const kubelet = this.cluster.startProcess('kubelet', tools.kubelet, [
      `--config=${kubeletConfig}`,
      `--kubeconfig=${kubeconfig(`system:node:${this.name}`, `/O=system:nodes/CN=system:node:${this.name}`)}`,
      `--hostname-override=${this.name}`,
      // The node's address on its interface toward the peer (a loopback node IP is refused).
      `--node-ip=${this.address}`,
      '--v=1',
    ]);

    // kube-proxy: the kubernetes Service (and every other) works for pods, as on a real node.
    const proxyConfig = join(dir, 'kube-proxy.yaml');
    writeFileSync(
      proxyConfig,
      JSON.stringify(
        {
          apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
          kind: 'KubeProxyConfiguration',
          clientConnection: { kubeconfig: kubeconfig('system:kube-proxy', '/CN=system:kube-proxy') },
          hostnameOverride: this.name,
          mode: 'iptables',
          clusterCIDR: POD_CIDR,
          healthzBindAddress: '127.0.0.1:10256',
          metricsBindAddress: '127.0.0.1:10249',
          // The conntrack sysctls are read-only outside the host's network namespace: leave them.
          conntrack: { maxPerCore: 0, min: 0, tcpEstablishedTimeout: '0s', tcpCloseWaitTimeout: '0s' },
          // NodePorts on 127.0.0.1 would need route_localnet; nothing here uses them.
          iptables: { localhostNodePorts: false },
        },
        null,
        1,
      ),
    );
    const proxy = this.cluster.startProcess('kube-proxy', tools.kubeProxy, [`--config=${proxyConfig}`, '--v=1']);

    await this.waitFor('kubelet (Node Ready)', kubelet, remaining(), async () => {
      const r = await this.cluster.kubectl([
        'get',
        'node',
        this.name,
        '-o',
        'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
      ]);
      return r.code === 0 && r.stdout.trim() === 'True';
    });
    this.say('Node Ready');
    await this.waitFor('kube-proxy', proxy, remaining(), async () => {
      const r = await this.exec('iptables', ['-t', 'nat', '-S', 'KUBE-SERVICES']);
      return r.code === 0 && r.stdout.includes(SERVICE_IP);
    });
    this.say('kube-proxy programs the kubernetes Service');
    // The controller-manager at work: namespaces get their ServiceAccount and the cluster's CA.
    await this.waitFor('kube-controller-manager', cm, remaining(), async () => {
      const r = await this.cluster.kubectl([
        'get',
        '-n',
        'default',
        'serviceaccount/default',
        'configmap/kube-root-ca.crt',
        '-o',
        'name',
      ]);
      return r.code === 0;
    });
    this.say('the node is up');
  }

  /** Waits until `check` holds, failing early (with its log) when `proc` exits. */
  private async waitFor(what: string, proc: ClusterProcess, ms: number, check: () => Promise<boolean>): Promise<void> {
    const end = Date.now() + ms;
    for (;;) {
      if (proc.child.exitCode !== null || proc.child.signalCode !== null) {
        throw new Error(
          `${proc.name} exited (${proc.child.signalCode ?? proc.child.exitCode}) before ${what} was ready; last lines of ${proc.log}:\n${tailOf(proc.log)}`,
        );
      }
      if (await check()) return;
      if (Date.now() > end) throw new Error(`${what} not ready after ${ms} ms; last lines of ${proc.log}:\n${tailOf(proc.log)}`);
      await sleep(250);
    }
  }

  /** The node's cgroup in every hierarchy, with the kubelet's root below it, and the tracking leaf for processes. */
  private makeCgroups(): void {
    for (const h of this.hierarchies) {
      const top = join(h.path, this.cgroupId);
      this.record(`cgroup ${top}`);
      for (const d of [top, join(top, 'pods')]) {
        mkdirSync(d);
        // A v1 cpuset cgroup starts with no CPUs and memory nodes: take the parent's.
        if (h.controllers.includes('cpuset')) {
          for (const f of ['cpuset.cpus', 'cpuset.mems']) writeFileSync(join(d, f), readFileSync(join(d, '..', f)));
        }
        // A v2 cgroup hands its controllers down only when told to.
        if (h.v2 && existsSync(join(d, 'cgroup.controllers'))) {
          const ctl = readFileSync(join(d, 'cgroup.controllers'), 'utf8').trim().split(/\s+/).filter(Boolean);
          if (ctl.length) writeFileSync(join(d, 'cgroup.subtree_control'), ctl.map((c) => `+${c}`).join(' '));
        }
      }
    }
    mkdirSync(join(this.track, 'node'));
    this.record(`track ${this.track}`);
  }

  /**
   * Arguments to `sh` that join the node's cgroup, then run nsenter in the node's network
   * namespace; the caller appends nsenter's further options, `--` and the command.
   */
  private enterNode(): string[] {
    return [
      '-c',
      'echo $$ > "$0" && exec "$@"',
      join(this.track, 'node', 'cgroup.procs'),
      'nsenter',
      `--net=${netnsPath(this.node.ns)}`,
    ];
  }

  /** argv of a long-running process of the node: joins the node's cgroup, then its namespaces. */
  private serverArgv(cmd: string, args: string[]): string[] {
    const holder = this.holder?.pid;
    if (holder === undefined) throw new Error('the node has no mount namespace yet');
    return ['sh', ...this.enterNode(), `--mount=/proc/${holder}/ns/mnt`, '--', cmd, ...args];
  }

  /**
   * The node's mount namespace, held by a sleeping process: a private copy of the host's mounts
   * with / shared again and the node's own /run, /var/lib, /var/log and /sys/fs/bpf.
   */
  private async startHolder(): Promise<void> {
    const setup = [
      'set -e',
      'mount --make-rshared /',
      'mount -t tmpfs -o mode=0755 netoken-node-run /run',
      'mount -t tmpfs -o mode=0755 netoken-node-lib /var/lib',
      'mount -t tmpfs -o mode=0755 netoken-node-log /var/log',
      'mount -t bpf -o mode=0700 bpffs /sys/fs/bpf',
      'echo ready',
      'exec sleep infinity',
    ].join('\n');
    const child = spawn(
      'sh',
      [...this.enterNode(), '--', 'unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c', setup],
      { detached: true, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child.unref();
    this.holder = child;
    let out = '';
    await new Promise<void>((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`the node's mount namespace was not set up in 10 s: ${out}`)), 10_000);
      const onData = (d: Buffer): void => {
        out += d.toString();
        if (out.includes('ready')) {
          clearTimeout(timer);
          res();
        }
      };
      child.stdout?.on('data', onData);
      child.stderr?.on('data', onData);
      child.once('exit', (code) => {
        clearTimeout(timer);
        rej(new Error(`setting up the node's mount namespace failed (exit ${code}): ${out}`));
      });
    });
    child.stdout?.destroy();
    child.stderr?.destroy();
  }

  /** argv that runs cmd in the node's network and mount namespaces (what its processes see). */
  nodeArgv(cmd: string, args: string[]): string[] {
    const holder = this.holder?.pid;
    if (holder === undefined) throw new Error('the node has no mount namespace');
    return ['nsenter', `--net=${netnsPath(this.node.ns)}`, `--mount=/proc/${holder}/ns/mnt`, '--', cmd, ...args];
  }

  /** Runs a short command on the node (its network and mount namespaces); never throws for a non-zero exit. */
  exec(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<CommandResult> {
    const [c, ...a] = this.nodeArgv(cmd, args);
    return run(c as string, a, opts);
  }

  /** Like exec(), but throws CommandError on a non-zero exit and returns stdout. */
  async execOk(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<string> {
    const r = await this.exec(cmd, args, opts);
    if (r.code !== 0) throw new CommandError(`${cmd} ${args.join(' ')} on the node exited ${r.code}: ${r.stderr.trim()}`, r);
    return r.stdout;
  }

  /** `ctr` against the node's containerd, in the CRI's namespace. */
  ctr(args: string[], timeoutMs = 60_000): Promise<CommandResult> {
    return this.exec('ctr', ['--address', CONTAINERD_SOCKET, '--namespace', 'k8s.io', ...args], { timeoutMs });
  }

  /** Imports an image archive (docker-archive or OCI) into the node's containerd; returns the references it added. */
  async importImage(archive: string): Promise<string[]> {
    const before = new Set(await this.imageRefs());
    const r = await this.ctr(['images', 'import', archive], 600_000);
    if (r.code !== 0) throw new CommandError(`ctr images import ${archive} exited ${r.code}: ${r.stderr.trim()}`, r);
    return (await this.imageRefs()).filter((x) => !before.has(x));
  }

  private async imageRefs(): Promise<string[]> {
    const r = await this.ctr(['images', 'ls', '-q']);
    return r.stdout
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
  }

  /** The host PID of a running container ("containerd://<id>" from a pod's containerStatuses, or the bare id). */
  async containerPid(containerId: string): Promise<number> {
    const id = containerId.replace(/^containerd:\/\//, '');
    const r = await this.ctr(['tasks', 'ls']);
    const line = r.stdout.split('\n').find((l) => l.split(/\s+/)[0] === id);
    const pid = Number(line?.split(/\s+/)[1]);
    if (!Number.isInteger(pid) || pid <= 0)
      throw new Error(`container ${id} has no running task on the node:\n${r.stdout}${r.stderr}`);
    return pid;
  }

  /** Process ids of everything the node runs (control plane, containerd and its shims, every container). */
  pids(): number[] {
    return cgroupPids(this.track);
  }

  /** Stops every process of the node, removes its cgroups, namespaces and files; safe to call twice. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const problems: string[] = [];
    // The kubelet, kube-proxy, containerd and the control plane, newest first (SIGTERM, then SIGKILL).
    if (this.cluster) await this.cluster.stop().catch((e: Error) => problems.push(e.message));
    // Then what outlives them: containers, containerd's shims, the mount namespace's holder.
    for (let i = 0; i < 50; i++) {
      const pids = this.pids();
      if (!pids.length) break;
      for (const pid of pids) kill(pid);
      await sleep(100);
    }
    const left = this.pids();
    if (left.length) problems.push(`processes that survived SIGKILL: ${left.join(', ')}`);
    problems.push(...(await this.removeCgroups()));
    await this.topo.destroy().catch((e: Error) => problems.push(e.message));
    this.finish();
    if (problems.length) throw new Error(`node ${this.name} left things behind: ${problems.join('; ')}`);
  }

  private async removeCgroups(): Promise<string[]> {
    let left: string[] = [];
    for (let i = 0; i < 20; i++) {
      left = this.hierarchies.flatMap((h) => removeCgroupTree(join(h.path, this.cgroupId)));
      if (!left.length) return [];
      await sleep(100);
    }
    return [`cgroups not removed: ${left.join(', ')}`];
  }

  /** stop() for the exit and signal handlers, where nothing asynchronous runs any more. */
  stopSync(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.cluster?.stopSync();
    for (let i = 0; i < 30; i++) {
      const pids = this.pids();
      if (!pids.length) break;
      for (const pid of pids) kill(pid);
      sleepSync(100);
    }
    for (let i = 0; i < 10; i++) {
      if (!this.hierarchies.flatMap((h) => removeCgroupTree(join(h.path, this.cgroupId))).length) break;
      sleepSync(100);
    }
    for (const ns of this.topo.namespaces) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: 10_000 });
    this.finish();
  }

  private finish(): void {
    this.watchdog?.kill('SIGKILL');
    this.forgetEndHook();
    rmSync(this.stateDir, { recursive: true, force: true });
  }
}

function kill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

function tailOf(file: string): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-30).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Fails with what to install when a binary the node needs is missing. */
function checkPrerequisites(): void {
  const missing: string[] = [];
  for (const [what, path] of Object.entries(nodeToolPaths()))
    if (!existsSync(path)) missing.push(`${what} (${path}): bash test/k8s/build-tools.sh node`);
  for (const bin of ['containerd', 'containerd-shim-runc-v2', 'runc', 'ctr', 'iptables', 'nsenter', 'unshare', 'buildah', 'cc']) {
    if (spawnSync('sh', ['-c', `command -v ${bin}`]).status !== 0) missing.push(`${bin}: bash scripts/install-deps.sh`);
  }
  for (const plugin of ['bridge', 'host-local', 'portmap']) {
    if (!existsSync(join(CNI_BIN_DIR, plugin)))
      missing.push(`CNI plugin ${plugin} in ${CNI_BIN_DIR}: bash scripts/install-deps.sh (containernetworking-plugins)`);
  }
  if (missing.length) throw new Error(`the test node needs:\n  ${missing.join('\n  ')}`);
}
