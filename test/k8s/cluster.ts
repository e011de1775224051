/**
 * A real Kubernetes control plane for system tests: etcd and kube-apiserver on free loopback
 * ports, RBAC on, the netoken CRDs installed. Tests act as a cluster admin (client certificate
 * in group system:masters) and can mint ServiceAccount tokens, so the agent and operator run
 * with exactly the permissions their RBAC grants them.
 *
 * On its own there is no controller-manager or scheduler: no pods run, namespaces are never
 * finalized (deleting one leaves it Terminating) and nothing is garbage collected. node.ts
 * starts the same control plane inside a test node's namespaces (StartOptions.node) and adds
 * the rest of a single-node cluster. The binaries come from test/k8s/build-tools.sh.
 */
import { spawn, spawnSync, execFile, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { sleep } from '../../src/lib/wait.js';
import { PACKAGE_ROOT } from '../../src/lib/package.js';

/** Absolute path of the repository root (the directory holding netoken's package.json). */
export const repoRoot: string = PACKAGE_ROOT;

export interface ToolPaths {
  kubeApiserver: string;
  kubectl: string;
  etcd: string;
  helm: string;
  promtool: string;
}

/** What test/k8s/versions.env pins. */
export type PinnedVersions = Record<
  | 'KUBERNETES_VERSION'
  | 'ETCD_VERSION'
  | 'HELM_VERSION'
  | 'PROMETHEUS_VERSION'
  | 'DEBIAN_RELEASE'
  | 'NODE_VERSION'
  | 'NPM_VERSION',
  string
>;

/** The pinned versions from test/k8s/versions.env. */
export function toolVersions(): PinnedVersions {
  const file = join(repoRoot, 'test/k8s/versions.env');
  const vars: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^([A-Z_]+)=(\S+)\s*$/.exec(line);
    if (m) vars[m[1] as string] = m[2] as string;
  }
  const get = (k: string): string => {
    const v = vars[k];
    if (!v) throw new Error(`${file} does not set ${k}`);
    return v;
  };
  return {
    KUBERNETES_VERSION: get('KUBERNETES_VERSION'),
    ETCD_VERSION: get('ETCD_VERSION'),
    HELM_VERSION: get('HELM_VERSION'),
    PROMETHEUS_VERSION: get('PROMETHEUS_VERSION'),
    DEBIAN_RELEASE: get('DEBIAN_RELEASE'),
    NODE_VERSION: get('NODE_VERSION'),
    NPM_VERSION: get('NPM_VERSION'),
  };
}

/** build-tools.sh's cache: $NETOKEN_TOOLS_DIR, else ~/.cache/netoken-tools. */
export function toolsDir(): string {
  return process.env.NETOKEN_TOOLS_DIR || join(process.env.HOME ?? '/root', '.cache/netoken-tools');
}

/**
 * Where build-tools.sh puts the binaries: toolsDir(), one directory per component and
 * version. NETOKEN_KUBE_APISERVER, NETOKEN_KUBECTL, NETOKEN_ETCD, NETOKEN_HELM and
 * NETOKEN_PROMTOOL override single paths.
 */
export function toolPaths(): ToolPaths {
  const v = toolVersions();
  const dir = toolsDir();
  return {
    kubeApiserver: process.env.NETOKEN_KUBE_APISERVER || join(dir, `kubernetes-${v.KUBERNETES_VERSION}`, 'kube-apiserver'),
    kubectl: process.env.NETOKEN_KUBECTL || join(dir, `kubernetes-${v.KUBERNETES_VERSION}`, 'kubectl'),
    etcd: process.env.NETOKEN_ETCD || join(dir, `etcd-${v.ETCD_VERSION}`, 'etcd'),
    helm: process.env.NETOKEN_HELM || join(dir, `helm-${v.HELM_VERSION}`, 'helm'),
    promtool: process.env.NETOKEN_PROMTOOL || join(dir, `promtool-${v.PROMETHEUS_VERSION}`, 'promtool'),
  };
}

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface KubectlOptions {
  /** Kubeconfig to act as; it defaults to the cluster admin. */
  kubeconfig?: string;
  /** Text written to kubectl's stdin (for `-f -`). */
  input?: string;
  /** Milliseconds before kubectl is killed; it defaults to 60000. */
  timeoutMs?: number;
}

export interface StartOptions {
  /** Install crds/*.yaml and wait until they are served; it defaults to true. */
  crds?: boolean;
  /**
   * Keep an audit log of every write (create, update, patch, delete) at Metadata level: who,
   * what, when, and the answer (auditEvents() reads it). It defaults to false.
   */
  audit?: boolean;
  /** Milliseconds to wait for etcd and then the API server to be ready; it defaults to 120000 each. */
  readyTimeoutMs?: number;
  /** Run inside a test node's namespaces as that node's control plane (node.ts), not on the host's loopback. */
  node?: NodePlacement;
}

/**
 * Where the control plane runs when it belongs to a test node (node.ts): etcd and the API server
 * run in the node's namespaces on fixed ports, the API server advertises the node's address
 * (the kubernetes Service's endpoint), authorizes kubelets (Node,RBAC), admits pods with their
 * ServiceAccount tokens and can reach the kubelet; kubectl and helm run in the node's network
 * namespace and reach it at https://127.0.0.1:6443.
 */
export interface NodePlacement {
  /** The node's address. */
  address: string;
  /** The Service ClusterIP range. */
  serviceCidr: string;
  /** The kubernetes Service's ClusterIP (the range's first address), for the serving certificate. */
  serviceIp: string;
  /** The argv that runs a long-running process of the cluster in the node's namespaces. */
  server(cmd: string, args: string[]): string[];
  /** The argv that runs a short command (kubectl, helm, a probe) in the node's network namespace. */
  client(cmd: string, args: string[]): string[];
}

/** The user of the admin kubeconfig (group system:masters), as the audit log names it. */
export const ADMIN_USER = 'netoken-test-admin';

/** The API server's port inside a test node's network namespace. */
export const NODE_API_PORT = 6443;

/** The fields of an audit event the tests read. */
export interface AuditEvent {
  stage: string;
  verb: string;
  user: { username: string };
  objectRef?: { resource?: string; subresource?: string; namespace?: string; name?: string };
  responseStatus?: { code?: number };
  requestReceivedTimestamp: string;
  stageTimestamp: string;
}

export interface ServiceAccountTokenOptions {
  /** Bind the token to this Pod (name and uid), as the kubelet does for a pod's own token. */
  boundPod?: { name: string; uid: string };
}

/** A failed kubectl (or other) command; the message holds the command, exit code and stderr. */
export class CommandError extends Error {
  constructor(
    message: string,
    readonly result: CommandResult,
  ) {
    super(message);
    this.name = 'CommandError';
  }
}

/** A long-running process of the cluster: its own process group, output in `log`. */
export interface ClusterProcess {
  name: string;
  child: ChildProcess;
  log: string;
  exited: Promise<void>;
}
type Proc = ClusterProcess;

const endHooks = new Set<() => void>();
let endHooksInstalled = false;

/**
 * Runs `hook` (synchronous: kill outright, remove files) when this process exits or gets
 * SIGINT, SIGTERM or SIGHUP, newest hook first; the signal is re-raised afterwards so the exit
 * status still says which signal ended the run. Returns the function that removes the hook.
 */
export function onProcessEnd(hook: () => void): () => void {
  endHooks.add(hook);
  if (!endHooksInstalled) {
    endHooksInstalled = true;
    const runAll = (): void => {
      for (const h of [...endHooks].reverse()) {
        try {
          h();
        } catch {
          // best effort: the other hooks still run
        }
      }
      endHooks.clear();
    };
    process.on('exit', runAll);
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      process.once(sig, () => {
        runAll();
        process.kill(process.pid, sig);
      });
    }
  }
  return () => endHooks.delete(hook);
}

/** Is process `pid` alive: it exists and is not a zombie waiting for a parent that is gone. */
export function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/**
 * For tests of the fixtures themselves: runs `script` (an ES module) in a child Node process
 * and resolves with the child, the JSON object it printed as its first line, and the signal it
 * will have ended by; fails when the child exits first or prints nothing within timeoutMs.
 */
export async function fixtureChild<T>(
  script: string,
  timeoutMs: number,
): Promise<{ child: ChildProcess; info: T; exited: Promise<NodeJS.Signals | null> }> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<NodeJS.Signals | null>((res) => child.once('exit', (_code, sig) => res(sig)));
  const deadline = Date.now() + timeoutMs;
  while (!out.includes('\n')) {
    if (child.exitCode !== null) throw new Error(`the child exited early (${child.exitCode}): ${err}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`the child printed nothing within ${timeoutMs} ms: ${err}`);
    }
    await sleep(100);
  }
  return { child, info: JSON.parse(out.split('\n')[0] as string) as T, exited };
}

/** Free TCP ports on 127.0.0.1, all distinct (held open together until every one is known). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<ReturnType<typeof createServer>>((res, rej) => {
          const s = createServer();
          s.once('error', rej);
          s.listen(0, '127.0.0.1', () => res(s));
        }),
    ),
  );
  const ports = servers.map((s) => {
    const a = s.address();
    if (a === null || typeof a === 'string') throw new Error('listening socket has no port');
    return a.port;
  });
  await Promise.all(servers.map((s) => new Promise<void>((res) => s.close(() => res()))));
  return ports;
}

/**
 * A detached bash that outlives this process only long enough to clean up: when the test
 * process dies without running its handlers (SIGKILL, a crash in native code), it runs
 * `cleanup` (bash, with "$@" = args). Kill it (by its pid) once the cleanup is done.
 */
export function startWatchdog(label: string, cleanup: string, args: string[]): ChildProcess {
  const script = ['parent=$1; shift', 'while kill -0 "$parent" 2>/dev/null; do sleep 1; done', cleanup].join('\n');
  // bash, not sh: dash's kill does not take a negative process group id.
  const child = spawn('bash', ['-c', script, label, String(process.pid), ...args], { detached: true, stdio: 'ignore' });
  child.unref();
  return child;
}

function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

export function run(
  cmd: string,
  args: string[],
  opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<CommandResult> {
  return new Promise((res, rej) => {
    const child = execFile(
      cmd,
      args,
      { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024, env: opts.env ?? process.env, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') {
          if (err.killed) res({ code: -1, stdout, stderr: `${stderr}\n(killed after ${opts.timeoutMs ?? 60_000} ms)` });
          else rej(err);
          return;
        }
        res({ code: err ? (err.code as number) : 0, stdout, stderr });
      },
    );
    // A command that exits without reading its input must not fail the caller with EPIPE.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(opts.input ?? '');
  });
}

function openssl(args: string[], cwd: string): void {
  const r = spawnSync('openssl', args, { cwd, encoding: 'utf8' });
  if (r.error) throw new Error(`openssl is needed to make the test certificates: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`openssl ${args[0]} failed (exit ${r.status}): ${r.stderr.trim()}`);
}

/** Client TLS files for a health probe: paths of the CA, certificate and key. */
interface ProbeTls {
  ca: string;
  cert: string;
  key: string;
}

/** One GET: 'ok' for a 200, else what went wrong. */
function probeOnce(url: string, tls?: ProbeTls): Promise<string> {
  return new Promise<string>((res) => {
    const files = tls ? { ca: readFileSync(tls.ca), cert: readFileSync(tls.cert), key: readFileSync(tls.key) } : {};
    const req = (tls ? httpsRequest : httpRequest)(url, { method: 'GET', timeout: 2000, ...files }, (resp) => {
      let body = '';
      resp.setEncoding('utf8');
      resp.on('data', (d: string) => (body += d));
      resp.on('end', () => res(resp.statusCode === 200 ? 'ok' : `HTTP ${resp.statusCode}: ${body.slice(0, 400)}`));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (e) => res(e.message));
    req.end();
  });
}

/** probeOnce() as a script, for probes that must run in another network namespace. */
const PROBE_SCRIPT = `
const [url, ca, cert, key] = process.argv.slice(1);
const fs = require('node:fs');
const tls = ca ? { ca: fs.readFileSync(ca), cert: fs.readFileSync(cert), key: fs.readFileSync(key) } : {};
const req = require(url.startsWith('https:') ? 'node:https' : 'node:http').request(url, { timeout: 2000, ...tls }, (r) => {
  let b = ''; r.setEncoding('utf8'); r.on('data', (d) => (b += d));
  r.on('end', () => process.stdout.write(r.statusCode === 200 ? 'ok' : 'HTTP ' + r.statusCode + ': ' + b.slice(0, 400)));
});
req.on('timeout', () => req.destroy(new Error('timed out')));
req.on('error', (e) => process.stdout.write(e.message));
req.end();
`;

/** GET url until it answers 200 or the process exits or time runs out; `probe` makes one attempt. */
async function waitHealthy(url: string, proc: Proc, timeoutMs: number, probe: () => Promise<string>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  void proc.exited.then(() => {
    exited = true;
  });
  let last = 'no answer yet';
  while (Date.now() < deadline) {
    if (exited) {
      throw new Error(
        `${proc.name} exited (code ${proc.child.exitCode}, signal ${proc.child.signalCode}) before it was ready; last lines of ${proc.log}:\n${tail(proc.log, 30)}`,
      );
    }
    last = await probe();
    if (last === 'ok') return;
    await sleep(250);
  }
  throw new Error(
    `${proc.name} was not ready after ${timeoutMs} ms (${url}: ${last}); last lines of ${proc.log}:\n${tail(proc.log, 30)}`,
  );
}

function b64(data: Buffer | string): string {
  return Buffer.from(data).toString('base64');
}

export class TestCluster {
  /** https://127.0.0.1:<port> */
  readonly server: string;
  /** Admin kubeconfig path (user in group system:masters). */
  readonly kubeconfig: string;
  readonly tools: ToolPaths;
  /** Temporary directory with every file of this cluster; removed by stop(). */
  readonly dir: string;
  /** The certificates: ca.crt/ca.key and what issueCertificate() made. */
  readonly pki: string;
  /** The audit log (StartOptions.audit). */
  readonly auditLog: string;
  private readonly procs: Proc[] = [];
  private watchdog: ChildProcess | undefined;
  private stopped = false;
  private saCounter = 0;
  private forgetEndHook: () => void = () => undefined;

  private constructor(
    dir: string,
    server: string,
    tools: ToolPaths,
    private readonly node?: NodePlacement,
  ) {
    this.dir = dir;
    this.server = server;
    this.tools = tools;
    this.kubeconfig = join(dir, 'admin.kubeconfig');
    this.pki = join(dir, 'pki');
    this.auditLog = join(dir, 'audit.log');
  }

  /** Starts etcd and kube-apiserver, writes the admin kubeconfig, installs the CRDs. */
  static async start(opts: StartOptions = {}): Promise<TestCluster> {
    const tools = toolPaths();
    const missing = (['etcd', 'kubeApiserver', 'kubectl', 'helm'] as const).filter((k) => !existsSync(tools[k]));
    if (missing.length) {
      throw new Error(
        `missing test binaries: ${missing.map((k) => tools[k]).join(', ')}; build them with: bash test/k8s/build-tools.sh`,
      );
    }
    // A port picked as free can be taken before etcd or the API server binds it; try again then.
    // A node's network namespace is the cluster's own: fixed ports there.
    for (let attempt = 1; ; attempt++) {
      const dir = mkdtempSync(join(tmpdir(), 'netoken-k8s-'));
      const [etcdClient, etcdPeer, apiPort] = opts.node
        ? [2379, 2380, NODE_API_PORT]
        : ((await freePorts(3)) as [number, number, number]);
      const cluster = new TestCluster(dir, `https://127.0.0.1:${apiPort}`, tools, opts.node);
      cluster.forgetEndHook = onProcessEnd(() => cluster.stopSync());
      try {
        await cluster.boot(etcdClient, etcdPeer, apiPort, opts);
        return cluster;
      } catch (err) {
        const portClash = cluster.procs.some((p) => /address already in use/.test(tail(p.log, 50)));
        await cluster.stop();
        if (!portClash || attempt >= 3 || opts.node) throw err;
      }
    }
  }

  private async boot(etcdClient: number, etcdPeer: number, apiPort: number, opts: StartOptions): Promise<void> {
    const timeout = opts.readyTimeoutMs ?? 120_000;
    const pki = this.pki;
    mkdirSync(pki, { mode: 0o700 });
    this.makeCertificates(pki);
    this.startWatchdog();
    const node = this.node;

    const etcdUrl = `http://127.0.0.1:${etcdClient}`;
    const peerUrl = `http://127.0.0.1:${etcdPeer}`;
    const etcd = this.spawnProc('etcd', this.tools.etcd, [
      '--name=netoken-test',
      `--data-dir=${join(this.dir, 'etcd')}`,
      `--listen-client-urls=${etcdUrl}`,
      `--advertise-client-urls=${etcdUrl}`,
      `--listen-peer-urls=${peerUrl}`,
      `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=netoken-test=${peerUrl}`,
      '--unsafe-no-fsync=true',
      '--log-level=warn',
    ]);
    await waitHealthy(`${etcdUrl}/health`, etcd, timeout, () => this.probe(`${etcdUrl}/health`));

    const placement = node
      ? [
          '--bind-address=0.0.0.0',
          `--advertise-address=${node.address}`,
          `--service-cluster-ip-range=${node.serviceCidr}`,
          // Kubelets write only their own Node and pods (Node authorizer, NodeRestriction).
          '--authorization-mode=Node,RBAC',
          '--enable-admission-plugins=NodeRestriction',
          // kubectl logs/exec: the API server calls the kubelet with this identity and checks its certificate.
          `--kubelet-client-certificate=${join(pki, 'kubelet-client.crt')}`,
          `--kubelet-client-key=${join(pki, 'kubelet-client.key')}`,
          `--kubelet-certificate-authority=${join(pki, 'ca.crt')}`,
          // ...at the node's address: its name is in no DNS.
          '--kubelet-preferred-address-types=InternalIP',
        ]
      : [
          '--bind-address=127.0.0.1',
          '--advertise-address=127.0.0.1',
          '--service-cluster-ip-range=10.0.0.0/24',
          '--authorization-mode=RBAC',
          // Without a controller-manager nobody creates the namespaces' default ServiceAccounts,
          // which this plugin would insist on for pods; tests run no pods.
          '--disable-admission-plugins=ServiceAccount',
          '--endpoint-reconciler-type=none',
        ];
    const api = this.spawnProc('kube-apiserver', this.tools.kubeApiserver, [
      `--etcd-servers=${etcdUrl}`,
      `--cert-dir=${pki}`,
      `--tls-cert-file=${join(pki, 'serving.crt')}`,
      `--tls-private-key-file=${join(pki, 'serving.key')}`,
      `--client-ca-file=${join(pki, 'ca.crt')}`,
      `--secure-port=${apiPort}`,
      ...placement,
      '--allow-privileged=true',
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${join(pki, 'sa.pub')}`,
      `--service-account-signing-key-file=${join(pki, 'sa.key')}`,
      ...(opts.audit ? this.auditFlags() : []),
      '--v=1',
    ]);
    const tls = { ca: join(pki, 'ca.crt'), cert: join(pki, 'admin.crt'), key: join(pki, 'admin.key') };
    await waitHealthy(`${this.server}/readyz`, api, timeout, () => this.probe(`${this.server}/readyz`, tls));

    this.writeKubeconfig(this.kubeconfig, 'netoken-test-admin', {
      'client-certificate-data': b64(readFileSync(tls.cert)),
      'client-key-data': b64(readFileSync(tls.key)),
    });
    if (opts.crds ?? true) await this.installCrds();
  }

  private auditFlags(): string[] {
    const policy = join(this.dir, 'audit-policy.yaml');
    writeFileSync(
      policy,
      [
        'apiVersion: audit.k8s.io/v1',
        'kind: Policy',
        'omitStages: [RequestReceived]',
        'rules:',
        '  - level: Metadata',
        '    verbs: [create, update, patch, delete, deletecollection]',
        '  - level: None',
        '',
      ].join('\n'),
    );
    return [
      `--audit-policy-file=${policy}`,
      `--audit-log-path=${this.auditLog}`,
      '--audit-log-format=json',
      '--audit-log-mode=blocking',
    ];
  }

  /** The audit log's events so far (StartOptions.audit), oldest first. */
  auditEvents(): AuditEvent[] {
    if (!existsSync(this.auditLog)) return [];
    return readFileSync(this.auditLog, 'utf8')
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as AuditEvent);
  }

  /** CA, API server serving cert, admin client cert (group system:masters), ServiceAccount key pair. */
  private makeCertificates(pki: string): void {
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    openssl(
      [
        'req',
        '-x509',
        ...ec,
        '-keyout',
        'ca.key',
        '-out',
        'ca.crt',
        '-days',
        '2',
        '-subj',
        '/CN=netoken-test-ca',
        '-addext',
        'basicConstraints=critical,CA:TRUE',
        '-addext',
        'keyUsage=critical,keyCertSign,cRLSign',
      ],
      pki,
    );
    const sans = ['IP:127.0.0.1', 'DNS:localhost', 'DNS:kubernetes.default.svc'];
    if (this.node) {
      // Pods reach the API server through the kubernetes Service (by its ClusterIP or name).
      sans.push(
        `IP:${this.node.address}`,
        `IP:${this.node.serviceIp}`,
        'DNS:kubernetes',
        'DNS:kubernetes.default',
        'DNS:kubernetes.default.svc.cluster.local',
      );
      this.issueCertificate('kubelet-client', '/O=system:masters/CN=kube-apiserver-kubelet-client', 'client');
    }
    this.issueCertificate('serving', '/CN=kube-apiserver', 'server', sans);
    this.issueCertificate('admin', `/O=system:masters/CN=${ADMIN_USER}`, 'client');
    const sa = generateKeyPairSync('ec', {
      namedCurve: 'prime256v1',
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'sec1', format: 'pem' },
    });
    writeFileSync(join(pki, 'sa.key'), sa.privateKey, { mode: 0o600 });
    writeFileSync(join(pki, 'sa.pub'), sa.publicKey);
  }

  /**
   * A certificate signed by the cluster's CA, written to pki/<name>.crt and .key.
   * `subject` is an openssl subject (/O=group/CN=user); `sans` are subjectAltName entries.
   */
  issueCertificate(
    name: string,
    subject: string,
    usage: 'client' | 'server',
    sans: string[] = [],
  ): { cert: string; key: string } {
    openssl(
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-CA',
        'ca.crt',
        '-CAkey',
        'ca.key',
        '-keyout',
        `${name}.key`,
        '-out',
        `${name}.crt`,
        '-days',
        '2',
        '-subj',
        subject,
        ...(sans.length ? ['-addext', `subjectAltName=${sans.join(',')}`] : []),
        '-addext',
        'basicConstraints=critical,CA:FALSE',
        '-addext',
        'keyUsage=critical,digitalSignature',
        '-addext',
        `extendedKeyUsage=${usage === 'client' ? 'clientAuth' : 'serverAuth'}`,
      ],
      this.pki,
    );
    return { cert: join(this.pki, `${name}.crt`), key: join(this.pki, `${name}.key`) };
  }

  /** One health probe of url, from wherever the cluster's processes run. */
  private async probe(url: string, tls?: ProbeTls): Promise<string> {
    if (!this.node) return probeOnce(url, tls);
    const [cmd, ...args] = this.node.client(process.execPath, [
      '-e',
      PROBE_SCRIPT,
      url,
      ...(tls ? [tls.ca, tls.cert, tls.key] : []),
    ]);
    const r = await run(cmd as string, args, { timeoutMs: 10_000 });
    return r.code === 0 ? r.stdout.trim() || 'no answer' : `probe exited ${r.code}: ${r.stderr.trim()}`;
  }

  /**
   * The watchdog kills etcd, the API server and whatever startProcess() started, and removes
   * the directory, when the test process dies without running its handlers.
   */
  private startWatchdog(): void {
    writeFileSync(join(this.dir, 'pgids'), '');
    this.watchdog = startWatchdog(
      'netoken-k8s-watchdog',
      ['dir=$1', 'for g in $(cat "$dir/pgids" 2>/dev/null); do kill -KILL -- "-$g" "$g" 2>/dev/null; done', 'rm -rf "$dir"'].join(
        '\n',
      ),
      [this.dir],
    );
  }

  /**
   * Starts a long-running process that belongs to the cluster (in the node's namespaces when
   * the cluster is a node's), output to <dir>/<name>.log; stop() ends it after the ones started
   * later and before etcd and the API server.
   */
  startProcess(name: string, bin: string, args: string[]): ClusterProcess {
    return this.spawnProc(name, bin, args);
  }

  private spawnProc(name: string, bin: string, args: string[]): Proc {
    const log = join(this.dir, `${name}.log`);
    const fd = openSync(log, 'a');
    const [cmd, ...argv] = this.node ? this.node.server(bin, args) : [bin, ...args];
    // Own process group, so stop() can kill the process and anything it started in one call.
    const child = spawn(cmd as string, argv, { detached: true, stdio: ['ignore', fd, fd] });
    closeSync(fd);
    child.unref();
    const exited = new Promise<void>((res) => {
      if (child.exitCode !== null || child.signalCode !== null) res();
      else child.once('exit', () => res());
    });
    child.once('error', () => undefined);
    const proc: Proc = { name, child, log, exited };
    this.procs.push(proc);
    if (child.pid !== undefined) writeFileSync(join(this.dir, 'pgids'), `${child.pid}\n`, { flag: 'a' });
    return proc;
  }

  /**
   * Writes a kubeconfig for `user` with the given credentials (client-certificate-data and
   * client-key-data, or token) that trusts the cluster's CA; `server` defaults to this.server.
   */
  writeKubeconfig(path: string, user: string, credentials: Record<string, string>, server = this.server): void {
    const ca = b64(readFileSync(join(this.pki, 'ca.crt')));
    const lines = [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: netoken-test',
      '  cluster:',
      `    server: ${server}`,
      `    certificate-authority-data: ${ca}`,
      'users:',
      `- name: ${JSON.stringify(user)}`,
      '  user:',
      ...Object.entries(credentials).map(([k, v]) => `    ${k}: ${JSON.stringify(v)}`),
      'contexts:',
      '- name: netoken-test',
      '  context:',
      '    cluster: netoken-test',
      `    user: ${JSON.stringify(user)}`,
      'current-context: netoken-test',
      '',
    ];
    writeFileSync(path, lines.join('\n'), { mode: 0o600 });
  }

  /** Runs the pinned kubectl against this cluster; never throws for a non-zero exit. */
  kubectl(args: string[], opts: KubectlOptions = {}): Promise<CommandResult> {
    const kubeconfig = opts.kubeconfig ?? this.kubeconfig;
    // A discovery cache per kubeconfig: a shared one would hide CRDs installed after it was filled.
    const cacheDir = join(this.dir, 'kubectl-cache');
    return this.runClient(this.tools.kubectl, [`--kubeconfig=${kubeconfig}`, `--cache-dir=${cacheDir}`, ...args], {
      input: opts.input,
      timeoutMs: opts.timeoutMs,
    });
  }

  /** Runs a short command where it reaches the API server at this.server (in the node's network namespace for a node's cluster). */
  private runClient(
    cmd: string,
    args: string[],
    opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv },
  ): Promise<CommandResult> {
    const [c, ...a] = this.node ? this.node.client(cmd, args) : [cmd, ...args];
    return run(c as string, a, opts);
  }

  /** Runs kubectl and returns its stdout; throws CommandError (with stderr) on a non-zero exit. */
  async kubectlOk(args: string[], opts: KubectlOptions = {}): Promise<string> {
    const r = await this.kubectl(args, opts);
    if (r.code !== 0) throw new CommandError(`kubectl ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`, r);
    return r.stdout;
  }

  /**
   * Runs the pinned helm against this cluster (as admin unless opts.kubeconfig is given), with
   * its cache, config and data directories inside the cluster's directory; never throws for a
   * non-zero exit.
   */
  helm(args: string[], opts: KubectlOptions = {}): Promise<CommandResult> {
    const home = join(this.dir, 'helm');
    return this.runClient(this.tools.helm, [`--kubeconfig=${opts.kubeconfig ?? this.kubeconfig}`, ...args], {
      input: opts.input,
      timeoutMs: opts.timeoutMs,
      env: {
        ...process.env,
        HELM_CACHE_HOME: join(home, 'cache'),
        HELM_CONFIG_HOME: join(home, 'config'),
        HELM_DATA_HOME: join(home, 'data'),
      },
    });
  }

  /** `kubectl apply -f -` with the given YAML; throws CommandError on failure. */
  apply(yaml: string, opts: Omit<KubectlOptions, 'input'> = {}): Promise<string> {
    return this.kubectlOk(['apply', '-f', '-'], { ...opts, input: yaml });
  }

  /** `kubectl get <what> -o json`, parsed. */
  async getJson<T = unknown>(args: string[], opts: KubectlOptions = {}): Promise<T> {
    return JSON.parse(await this.kubectlOk(['get', ...args, '-o', 'json'], opts)) as T;
  }

  /** Applies crds/*.yaml and waits until the API server serves them. */
  async installCrds(): Promise<void> {
    const crdDir = join(repoRoot, 'crds');
    const out = await this.kubectlOk(['apply', '-f', crdDir, '-o', 'name']);
    const names = out.split('\n').filter((l) => l.trim() !== '');
    await this.kubectlOk(['wait', '--for=condition=Established', '--timeout=60s', ...names]);
    // Established can precede the resource showing up in discovery, and its OpenAPI schema
    // (what kubectl explain reads) is published later still.
    for (const crd of names) {
      const plural = crd.replace(/^customresourcedefinition\.apiextensions\.k8s\.io\//, '');
      for (const args of [
        ['get', plural, '-o', 'name'],
        ['explain', plural],
      ]) {
        const deadline = Date.now() + 60_000;
        for (;;) {
          const r = await this.kubectl(args);
          if (r.code === 0) break;
          if (Date.now() > deadline) {
            throw new CommandError(
              `kubectl ${args.join(' ')} still fails 60 s after the CRD was established: ${r.stderr.trim()}`,
              r,
            );
          }
          await sleep(250);
        }
      }
    }
  }

  /**
   * A token for ServiceAccount namespace/name from the TokenRequest API (the account must
   * exist). It is a secret: do not log it.
   *
   * With opts.boundPod the token is bound to that Pod (in the same namespace, running as this
   * account), as the kubelet's projected tokens are: it is valid only while the Pod exists, and
   * when the Pod has spec.nodeName and that Node exists, the API server adds the node to the
   * user's extra ('authentication.kubernetes.io/node-name', Kubernetes 1.30+).
   */
  async serviceAccountToken(
    namespace: string,
    name: string,
    expirationSeconds = 3600,
    opts: ServiceAccountTokenOptions = {},
  ): Promise<string> {
    const spec: Record<string, unknown> = { expirationSeconds };
    if (opts.boundPod) spec.boundObjectRef = { apiVersion: 'v1', kind: 'Pod', name: opts.boundPod.name, uid: opts.boundPod.uid };
    const body = JSON.stringify({
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenRequest',
      spec,
    });
    const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/serviceaccounts/${encodeURIComponent(name)}/token`;
    const r = await this.kubectl(['create', '--raw', path, '-f', '-'], { input: body });
    if (r.code !== 0) {
      throw new CommandError(`TokenRequest for ServiceAccount ${namespace}/${name} failed: ${r.stderr.trim()}`, {
        ...r,
        stdout: '',
      });
    }
    const token = (JSON.parse(r.stdout) as { status?: { token?: string } }).status?.token;
    if (!token) throw new Error(`TokenRequest for ServiceAccount ${namespace}/${name} returned no token`);
    return token;
  }

  /**
   * Path of a kubeconfig that authenticates as ServiceAccount namespace/name with a token from
   * the TokenRequest API: a process given it has exactly the permissions RBAC grants that account.
   */
  async serviceAccountKubeconfig(
    namespace: string,
    name: string,
    expirationSeconds = 3600,
    opts: ServiceAccountTokenOptions = {},
  ): Promise<string> {
    const token = await this.serviceAccountToken(namespace, name, expirationSeconds, opts);
    const path = join(this.dir, `sa-${namespace}-${name}-${++this.saCounter}.kubeconfig`);
    this.writeKubeconfig(path, `system:serviceaccount:${namespace}:${name}`, { token });
    return path;
  }

  /** Environment for a child process (agent, operator) that should use kubeconfig. */
  envFor(kubeconfig: string): NodeJS.ProcessEnv {
    return { ...process.env, KUBECONFIG: kubeconfig };
  }

  /** Process ids of etcd, kube-apiserver and what startProcess() started (for tests of the fixture itself). */
  pids(): number[] {
    return this.procs.map((p) => p.child.pid).filter((p): p is number => p !== undefined);
  }

  /** Stops the API server, then etcd, and removes every file; safe to call twice. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const p of [...this.procs].reverse()) {
      if (p.child.exitCode !== null || p.child.signalCode !== null) continue;
      signalGroup(p.child, 'SIGTERM');
      const done = await Promise.race([p.exited.then(() => true), sleep(10_000).then(() => false)]);
      if (!done) {
        signalGroup(p.child, 'SIGKILL');
        await p.exited;
      }
    }
    this.finish();
  }

  /** stop() for 'exit' and signal handlers, where nothing asynchronous runs any more. */
  stopSync(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const p of this.procs) signalGroup(p.child, 'SIGKILL');
    this.finish();
  }

  private finish(): void {
    this.watchdog?.kill('SIGKILL');
    this.forgetEndHook();
    if (process.env.NETOKEN_K8S_KEEP === '1') {
      process.stderr.write(`test cluster files kept in ${this.dir} (NETOKEN_K8S_KEEP=1)\n`);
      return;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function signalGroup(child: ChildProcess, sig: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, sig);
  } catch {
    try {
      child.kill(sig);
    } catch {
      // already gone
    }
  }
}

/** The CRD directory, for tests that want to apply the files themselves. */
export const crdsDir: string = resolve(repoRoot, 'crds');
