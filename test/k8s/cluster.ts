/**
 * A real Kubernetes control plane for system tests: etcd and kube-apiserver on free loopback
 * ports, RBAC on, the netoken CRDs installed. Tests act as a cluster admin (client certificate
 * in group system:masters) and can mint ServiceAccount tokens, so the agent and operator run
 * with exactly the permissions their RBAC grants them.
 *
 * There is no controller-manager or scheduler: no pods run, namespaces are never finalized
 * (deleting one leaves it Terminating) and nothing is garbage collected. The binaries come from
 * test/k8s/build-tools.sh.
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

/** The pinned versions from test/k8s/versions.env. */
export function toolVersions(): Record<'KUBERNETES_VERSION' | 'ETCD_VERSION' | 'HELM_VERSION' | 'PROMETHEUS_VERSION', string> {
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
    KUBERNETES_VERSION: get('KUBERNETES_VERSION'), ETCD_VERSION: get('ETCD_VERSION'), HELM_VERSION: get('HELM_VERSION'),
    PROMETHEUS_VERSION: get('PROMETHEUS_VERSION'),
  };
}

/**
 * Where build-tools.sh puts the binaries: $NETOKEN_TOOLS_DIR (default ~/.cache/netoken-tools),
 * one directory per component and version. NETOKEN_KUBE_APISERVER, NETOKEN_KUBECTL,
 * NETOKEN_ETCD, NETOKEN_HELM and NETOKEN_PROMTOOL override single paths.
 */
export function toolPaths(): ToolPaths {
  const v = toolVersions();
  const home = process.env.HOME ?? '/root';
  const dir = process.env.NETOKEN_TOOLS_DIR || join(home, '.cache/netoken-tools');
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
  /** Milliseconds to wait for etcd and then the API server to be ready; it defaults to 120000 each. */
  readyTimeoutMs?: number;
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

interface Proc {
  name: string;
  child: ChildProcess;
  log: string;
  exited: Promise<void>;
}

const liveClusters = new Set<TestCluster>();
let exitHooksInstalled = false;

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  // 'exit' handlers must be synchronous: kill outright and remove the files.
  process.on('exit', () => {
    for (const c of liveClusters) c.stopSync();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      for (const c of liveClusters) c.stopSync();
      // Re-raise so the exit status still says which signal ended the run.
      process.kill(process.pid, sig);
    });
  }
}

/** Free TCP ports on 127.0.0.1, all distinct (held open together until every one is known). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () =>
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


function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

function run(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<CommandResult> {
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
    child.stdin?.end(opts.input ?? '');
  });
}

function openssl(args: string[], cwd: string): void {
  const r = spawnSync('openssl', args, { cwd, encoding: 'utf8' });
  if (r.error) throw new Error(`openssl is needed to make the test certificates: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`openssl ${args[0]} failed (exit ${r.status}): ${r.stderr.trim()}`);
}

/** GET url until it answers 200 with body "ok" or the child exits or time runs out. */
async function waitHealthy(url: string, proc: Proc, timeoutMs: number, tls?: { ca: Buffer; cert: Buffer; key: Buffer }): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  void proc.exited.then(() => {
    exited = true;
  });
  let last = 'no answer yet';
  while (Date.now() < deadline) {
    if (exited) {
      throw new Error(`${proc.name} exited (code ${proc.child.exitCode}, signal ${proc.child.signalCode}) before it was ready; last lines of ${proc.log}:\n${tail(proc.log, 30)}`);
    }
    last = await new Promise<string>((res) => {
      const req = (tls ? httpsRequest : httpRequest)(url, { method: 'GET', timeout: 2000, ...(tls ?? {}) }, (resp) => {
        let body = '';
        resp.setEncoding('utf8');
        resp.on('data', (d: string) => (body += d));
        resp.on('end', () => res(resp.statusCode === 200 ? 'ok' : `HTTP ${resp.statusCode}: ${body.slice(0, 400)}`));
      });
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.on('error', (e) => res(e.message));
      req.end();
    });
    if (last === 'ok') return;
    await sleep(250);
  }
  throw new Error(`${proc.name} was not ready after ${timeoutMs} ms (${url}: ${last}); last lines of ${proc.log}:\n${tail(proc.log, 30)}`);
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
  private readonly procs: Proc[] = [];
  private watchdog: ChildProcess | undefined;
  private stopped = false;
  private saCounter = 0;

  private constructor(dir: string, server: string, tools: ToolPaths) {
    this.dir = dir;
    this.server = server;
    this.tools = tools;
    this.kubeconfig = join(dir, 'admin.kubeconfig');
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
    for (let attempt = 1; ; attempt++) {
      const dir = mkdtempSync(join(tmpdir(), 'netoken-k8s-'));
      const [etcdClient, etcdPeer, apiPort] = (await freePorts(3)) as [number, number, number];
      const cluster = new TestCluster(dir, `https://127.0.0.1:${apiPort}`, tools);
      liveClusters.add(cluster);
      installExitHooks();
      try {
        await cluster.boot(etcdClient, etcdPeer, apiPort, opts);
        return cluster;
      } catch (err) {
        const portClash = cluster.procs.some((p) => /address already in use/.test(tail(p.log, 50)));
        await cluster.stop();
        if (!portClash || attempt >= 3) throw err;
      }
    }
  }

  private async boot(etcdClient: number, etcdPeer: number, apiPort: number, opts: StartOptions): Promise<void> {
    const timeout = opts.readyTimeoutMs ?? 120_000;
    const pki = join(this.dir, 'pki');
    mkdirSync(pki, { mode: 0o700 });
    this.makeCertificates(pki);
    this.startWatchdog();

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
    await waitHealthy(`${etcdUrl}/health`, etcd, timeout);

    const api = this.spawnProc('kube-apiserver', this.tools.kubeApiserver, [
      `--etcd-servers=${etcdUrl}`,
      `--cert-dir=${pki}`,
      `--tls-cert-file=${join(pki, 'serving.crt')}`,
      `--tls-private-key-file=${join(pki, 'serving.key')}`,
      `--client-ca-file=${join(pki, 'ca.crt')}`,
      `--secure-port=${apiPort}`,
      '--bind-address=127.0.0.1',
      '--advertise-address=127.0.0.1',
      '--service-cluster-ip-range=10.0.0.0/24',
      '--allow-privileged=true',
      '--authorization-mode=RBAC',
      // Without a controller-manager nobody creates the namespaces' default ServiceAccounts,
      // which this plugin would insist on for pods; tests run no pods.
      '--disable-admission-plugins=ServiceAccount',
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${join(pki, 'sa.pub')}`,
      `--service-account-signing-key-file=${join(pki, 'sa.key')}`,
      '--endpoint-reconciler-type=none',
      '--v=1',
    ]);
    const tls = {
      ca: readFileSync(join(pki, 'ca.crt')),
      cert: readFileSync(join(pki, 'admin.crt')),
      key: readFileSync(join(pki, 'admin.key')),
    };
    await waitHealthy(`${this.server}/readyz`, api, timeout, tls);

    this.writeKubeconfig(this.kubeconfig, 'netoken-test-admin', {
      'client-certificate-data': b64(tls.cert),
      'client-key-data': b64(tls.key),
    });
    if (opts.crds ?? true) await this.installCrds();
  }

  /** CA, API server serving cert, admin client cert (group system:masters), ServiceAccount key pair. */
  private makeCertificates(pki: string): void {
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=netoken-test-ca',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], pki);
    openssl(['req', '-x509', ...ec, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-keyout', 'serving.key', '-out', 'serving.crt',
      '-days', '2', '-subj', '/CN=kube-apiserver',
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc',
      '-addext', 'basicConstraints=critical,CA:FALSE', '-addext', 'keyUsage=critical,digitalSignature',
      '-addext', 'extendedKeyUsage=serverAuth'], pki);
    openssl(['req', '-x509', ...ec, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-keyout', 'admin.key', '-out', 'admin.crt',
      '-days', '2', '-subj', '/O=system:masters/CN=netoken-test-admin',
      '-addext', 'basicConstraints=critical,CA:FALSE', '-addext', 'keyUsage=critical,digitalSignature',
      '-addext', 'extendedKeyUsage=clientAuth'], pki);
    const sa = generateKeyPairSync('ec', {
      namedCurve: 'prime256v1',
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'sec1', format: 'pem' },
    });
    writeFileSync(join(pki, 'sa.key'), sa.privateKey, { mode: 0o600 });
    writeFileSync(join(pki, 'sa.pub'), sa.publicKey);
  }

  /**
   * A shell that outlives this process only long enough to clean up: when the test process
   * dies without running its handlers (SIGKILL, a crash in native code), it kills etcd and the
   * API server and removes the directory.
   */
  private startWatchdog(): void {
    const pidFile = join(this.dir, 'pgids');
    writeFileSync(pidFile, '');
    const script = [
      'parent=$1; dir=$2',
      'while kill -0 "$parent" 2>/dev/null; do sleep 1; done',
      'for g in $(cat "$dir/pgids" 2>/dev/null); do kill -KILL -- "-$g" "$g" 2>/dev/null; done',
      'rm -rf "$dir"',
    ].join('\n');
    // bash, not sh: dash's kill does not take a negative process group id.
    const child = spawn('bash', ['-c', script, 'netoken-k8s-watchdog', String(process.pid), this.dir], {
      detached: true,
      stdio: 'ignore',
    });
    child.unref();
    this.watchdog = child;
  }

  private spawnProc(name: string, bin: string, args: string[]): Proc {
    const log = join(this.dir, `${name}.log`);
    const fd = openSync(log, 'a');
    // Own process group, so stop() can kill the process and anything it started in one call.
    const child = spawn(bin, args, { detached: true, stdio: ['ignore', fd, fd] });
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

  private writeKubeconfig(path: string, user: string, credentials: Record<string, string>): void {
    const ca = b64(readFileSync(join(this.dir, 'pki/ca.crt')));
    const lines = [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: netoken-test',
      '  cluster:',
      `    server: ${this.server}`,
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
    return run(this.tools.kubectl, [`--kubeconfig=${kubeconfig}`, `--cache-dir=${cacheDir}`, ...args], {
      input: opts.input,
      timeoutMs: opts.timeoutMs,
    });
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
    return run(this.tools.helm, [`--kubeconfig=${opts.kubeconfig ?? this.kubeconfig}`, ...args], {
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
      for (const args of [['get', plural, '-o', 'name'], ['explain', plural]]) {
        const deadline = Date.now() + 60_000;
        for (;;) {
          const r = await this.kubectl(args);
          if (r.code === 0) break;
          if (Date.now() > deadline) {
            throw new CommandError(`kubectl ${args.join(' ')} still fails 60 s after the CRD was established: ${r.stderr.trim()}`, r);
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
  async serviceAccountToken(namespace: string, name: string, expirationSeconds = 3600, opts: ServiceAccountTokenOptions = {}): Promise<string> {
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
      throw new CommandError(`TokenRequest for ServiceAccount ${namespace}/${name} failed: ${r.stderr.trim()}`, { ...r, stdout: '' });
    }
    const token = (JSON.parse(r.stdout) as { status?: { token?: string } }).status?.token;
    if (!token) throw new Error(`TokenRequest for ServiceAccount ${namespace}/${name} returned no token`);
    return token;
  }

  /**
   * Path of a kubeconfig that authenticates as ServiceAccount namespace/name with a token from
   * the TokenRequest API: a process given it has exactly the permissions RBAC grants that account.
   */
  async serviceAccountKubeconfig(namespace: string, name: string, expirationSeconds = 3600, opts: ServiceAccountTokenOptions = {}): Promise<string> {
    const token = await this.serviceAccountToken(namespace, name, expirationSeconds, opts);
    const path = join(this.dir, `sa-${namespace}-${name}-${++this.saCounter}.kubeconfig`);
    this.writeKubeconfig(path, `system:serviceaccount:${namespace}:${name}`, { token });
    return path;
  }

  /** Environment for a child process (agent, operator) that should use kubeconfig. */
  envFor(kubeconfig: string): NodeJS.ProcessEnv {
    return { ...process.env, KUBECONFIG: kubeconfig };
  }

  /** Process ids of etcd and kube-apiserver (for tests of the fixture itself). */
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
    if (this.watchdog?.pid !== undefined) {
      try {
        process.kill(this.watchdog.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    liveClusters.delete(this);
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
