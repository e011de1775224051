/**
 * The Helm chart in tests: render it with the pinned helm, install its ServiceAccounts, RBAC
 * and admission policy into a TestCluster, and get kubeconfigs for the agent and the operator
 * that carry exactly what the chart grants them. An agent's token is bound to a Pod on its
 * node, as the kubelet's projected token is, so the chart's admission policy sees the node.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { CommandError, repoRoot, toolPaths, toolVersions, type CommandResult, type TestCluster } from './cluster.js';
import { sleep, waitUntil } from '../../src/lib/wait.js';
import { daemonEnv } from '../../src/lib/memory.js';

export const chartDir: string = join(repoRoot, 'charts/netoken');

/** The namespace deploy/ installs into and the tests install the chart into by default. */
export const DEFAULT_NAMESPACE = 'netoken-system';

export const AGENT_SA = 'netoken-agent';
export const OPERATOR_SA = 'netoken-operator';

/** One rendered Kubernetes object (only the fields the tests read are typed). */
export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [field: string]: unknown;
}

/** Kinds that make up the chart's identities and permissions (no workloads). */
export const RBAC_KINDS: ReadonlySet<string> = new Set([
  'ServiceAccount',
  'ClusterRole',
  'ClusterRoleBinding',
  'Role',
  'RoleBinding',
  'ValidatingAdmissionPolicy',
  'ValidatingAdmissionPolicyBinding',
]);

/** Runs the pinned helm (no cluster needed); never throws for a non-zero exit. */
export function helm(args: string[], timeoutMs = 60_000): Promise<CommandResult> {
  return new Promise((res, rej) => {
    const home = mkdtempSync(join(tmpdir(), 'netoken-helm-'));
    execFile(
      toolPaths().helm,
      args,
      {
        timeout: timeoutMs,
        maxBuffer: 64 * 1024 * 1024,
        encoding: 'utf8',
        env: {
          ...process.env,
          HELM_CACHE_HOME: join(home, 'cache'),
          HELM_CONFIG_HOME: join(home, 'config'),
          HELM_DATA_HOME: join(home, 'data'),
        },
      },
      (err, stdout, stderr) => {
        rmSync(home, { recursive: true, force: true });
        if (err && typeof err.code !== 'number') {
          if (err.killed) res({ code: -1, stdout, stderr: `${stderr}\n(killed after ${timeoutMs} ms)` });
          else rej(err);
          return;
        }
        res({ code: err ? (err.code as number) : 0, stdout, stderr });
      },
    );
  });
}

export interface RenderOptions {
  /** Release namespace; it defaults to DEFAULT_NAMESPACE. */
  namespace?: string;
  /** Values YAML, given to helm as a file (-f). */
  values?: string;
  /** --set arguments. */
  set?: string[];
  /** Also render crds/ (--include-crds). */
  includeCrds?: boolean;
}

/**
 * `helm template netoken charts/netoken` with the Kubernetes version the tests run (the helm
 * that build-tools.sh makes has no default Kubernetes version of its own). Returns helm's
 * result: code, the YAML on stdout, errors on stderr.
 */
export function template(opts: RenderOptions = {}): Promise<CommandResult> {
  return chartCommand(['template', 'netoken', chartDir, ...(opts.includeCrds ? ['--include-crds'] : [])], opts);
}

/** `helm lint --strict charts/netoken` with the given values. */
export function lint(opts: Omit<RenderOptions, 'includeCrds'> = {}): Promise<CommandResult> {
  return chartCommand(['lint', chartDir, '--strict'], opts);
}

async function chartCommand(command: string[], opts: RenderOptions): Promise<CommandResult> {
  const args = [
    ...command,
    '--namespace',
    opts.namespace ?? DEFAULT_NAMESPACE,
    '--kube-version',
    toolVersions().KUBERNETES_VERSION,
  ];
  for (const s of opts.set ?? []) args.push('--set', s);
  let dir: string | undefined;
  if (opts.values !== undefined) {
    dir = mkdtempSync(join(tmpdir(), 'netoken-values-'));
    writeFileSync(join(dir, 'values.yaml'), opts.values);
    args.push('-f', join(dir, 'values.yaml'));
  }
  try {
    return await helm(args);
  } finally {
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}

/** Like template(), but throws on failure and returns the YAML. */
export async function render(opts: RenderOptions = {}): Promise<string> {
  const r = await template(opts);
  if (r.code !== 0) throw new CommandError(`helm template exited ${r.code}: ${r.stderr.trim()}`, r);
  return r.stdout;
}

/** The objects of a multi-document YAML stream, in order (empty documents dropped). */
export function parseObjects(yaml: string): K8sObject[] {
  const out: K8sObject[] = [];
  for (const doc of parseAllDocuments(yaml)) {
    if (doc.errors.length) throw new Error(`rendered YAML does not parse: ${doc.errors[0]?.message}`);
    const o = doc.toJS() as K8sObject | null;
    if (o) out.push(o);
  }
  return out;
}

/** Back to a YAML stream that kubectl takes. */
export function toYamlStream(objects: K8sObject[]): string {
  return objects.map((o) => JSON.stringify(o)).join('\n---\n') + '\n';
}

/**
 * Creates the namespace (if missing) and applies the chart's ServiceAccounts, ClusterRoles,
 * Roles, bindings and admission policy: what the agent and operator run with in a cluster,
 * without the workloads. Waits until the admission policy is enforced.
 */
export async function installChartRbac(
  cluster: TestCluster,
  namespace = DEFAULT_NAMESPACE,
  set: string[] = [],
): Promise<K8sObject[]> {
  await ensureNamespace(cluster, namespace);
  const objects = parseObjects(await render({ namespace, set })).filter((o) => RBAC_KINDS.has(o.kind));
  await cluster.apply(toYamlStream(objects));
  if (objects.some((o) => o.kind === 'ValidatingAdmissionPolicyBinding')) await waitAdmissionPolicy(cluster, namespace);
  return objects;
}

export async function ensureNamespace(cluster: TestCluster, namespace: string): Promise<void> {
  const r = await cluster.kubectl(['get', 'namespace', namespace, '-o', 'name']);
  if (r.code !== 0) await cluster.kubectlOk(['create', 'namespace', namespace]);
}

/**
 * A kubeconfig for the agent of `node`: the Node is created when missing (labels untouched
 * when it exists), and so is a Pod of the agent's ServiceAccount on it, never started (there is
 * no kubelet); the token is bound to that Pod, like the token the kubelet gives a real agent.
 */
export async function agentKubeconfig(cluster: TestCluster, node: string, namespace = DEFAULT_NAMESPACE): Promise<string> {
  const uid = await agentPod(cluster, node, namespace);
  return cluster.serviceAccountKubeconfig(namespace, AGENT_SA, 3600, { boundPod: { name: agentPodName(node), uid } });
}

/** A kubeconfig for the operator's ServiceAccount. */
export function operatorKubeconfig(cluster: TestCluster, namespace = DEFAULT_NAMESPACE): Promise<string> {
  return cluster.serviceAccountKubeconfig(namespace, OPERATOR_SA);
}

export function agentPodName(node: string): string {
  return `netoken-agent-${node}`
    .slice(0, 63)
    .replace(/[^a-z0-9-]/g, '-')
    .replace(/-+$/, '');
}

/** Creates (when missing) the Node and a Pod of the agent on it; returns the Pod's uid. */
async function agentPod(cluster: TestCluster, node: string, namespace: string): Promise<string> {
  if ((await cluster.kubectl(['get', 'node', node, '-o', 'name'])).code !== 0) {
    await cluster.kubectlOk(['create', '-f', '-'], {
      input: JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: node } }),
    });
  }
  const name = agentPodName(node);
  const existing = await cluster.kubectl(['get', 'pod', '-n', namespace, name, '-o', 'jsonpath={.metadata.uid}']);
  if (existing.code === 0 && existing.stdout) return existing.stdout;
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels: { 'app.kubernetes.io/name': 'netoken', 'app.kubernetes.io/component': 'agent' } },
    spec: {
      serviceAccountName: AGENT_SA,
      nodeName: node,
      containers: [{ name: 'agent', image: 'netoken:test' }],
    },
  };
  await cluster.kubectlOk(['create', '-f', '-'], { input: JSON.stringify(pod) });
  return cluster.kubectlOk(['get', 'pod', '-n', namespace, name, '-o', 'jsonpath={.metadata.uid}']);
}

/**
 * The API server compiles a new admission policy and its binding asynchronously: wait until a
 * dry-run write by an agent identity that names no node is refused by it.
 */
export async function waitAdmissionPolicy(cluster: TestCluster, namespace: string): Promise<void> {
  const kubeconfig = await cluster.serviceAccountKubeconfig(namespace, AGENT_SA, 600);
  const probe = JSON.stringify({
    apiVersion: 'netoken.io/v1alpha1',
    kind: 'TokenNodeState',
    metadata: { name: 'netoken-policy-probe' },
  });
  const deadline = Date.now() + 30_000;
  for (;;) {
    const r = await cluster.kubectl(['create', '--dry-run=server', '-f', '-'], { kubeconfig, input: probe });
    if (r.code !== 0 && /ValidatingAdmissionPolicy/.test(r.stderr)) return;
    if (Date.now() > deadline) {
      throw new CommandError(
        `the chart's admission policy is not enforced 30 s after it was applied (last probe: exit ${r.code}, ${r.stderr.trim()})`,
        r,
      );
    }
    await sleep(250);
  }
}

/** A TokenNodeState as the tests read it. */
export interface NodeState {
  status?: {
    agent?: { version: string; kernelRelease: string; tcx: boolean };
    conditions?: { type: string; status: string; reason: string; message: string }[];
    policies?: {
      name: string;
      generation: number;
      interfaces?: string[];
      counters?: Record<string, number>;
      errors?: { reason: string; message: string }[];
    }[];
    interfaces?: {
      name: string;
      ifindex?: number;
      hooks?: { direction: string; state: string; attachMode?: string; programId?: number; reason?: string }[];
      counters?: Record<string, number>;
    }[];
  };
  metadata: { ownerReferences?: { kind: string; name: string }[] };
}

/** A policy is attached on the node: it lists interfaces, and every hook on each of them is attached. */
export function policyAttached(s: NodeState, policy: string): boolean {
  const p = s.status?.policies?.find((x) => x.name === policy);
  if (!p?.interfaces?.length) return false;
  return p.interfaces.every((name) => {
    const hooks = s.status?.interfaces?.find((i) => i.name === name)?.hooks ?? [];
    return hooks.length > 0 && hooks.every((h) => h.state === 'Attached');
  });
}

/** Polls node `node`'s TokenNodeState until `pred` holds; fails with its last status and the tail of `agentLog()`. */
export async function waitNodeState(
  cluster: TestCluster,
  node: string,
  pred: (s: NodeState) => boolean,
  what: string,
  ms: number,
  agentLog: () => string,
): Promise<NodeState> {
  let last: NodeState | null = null;
  return waitUntil(
    what,
    ms,
    async () => {
      const r = await cluster.kubectl(['get', 'tokennodestate', node, '-o', 'json']);
      last = r.code === 0 ? (JSON.parse(r.stdout) as NodeState) : null;
      return last && pred(last) ? last : undefined;
    },
    {
      everyMs: 250,
      context: () => `TokenNodeState: ${JSON.stringify(last?.status, null, 1)}\nagent log:\n${agentLog().slice(-4000)}`,
    },
  );
}

export interface OperatorRun {
  child: ChildProcess;
  /** what it logged so far */
  log(): string;
}

/**
 * `netoken operator` as a real process with the chart's operator RBAC, serving /metrics on
 * 127.0.0.1:metricsPort. Stop it with child.kill().
 */
export async function startOperator(
  cluster: TestCluster,
  metricsPort: number,
  opts: { namespace?: string; podName?: string; extraArgs?: string[] } = {},
): Promise<OperatorRun> {
  const namespace = opts.namespace ?? DEFAULT_NAMESPACE;
  const child = spawn(
    process.execPath,
    [
      'bin/netoken.js',
      'operator',
      `--kubeconfig=${await operatorKubeconfig(cluster, namespace)}`,
      `--namespace=${namespace}`,
      `--metrics-address=127.0.0.1:${metricsPort}`,
      '--log-format=json',
      ...(opts.extraArgs ?? []),
    ],
    {
      cwd: repoRoot,
      env: daemonEnv({ ...process.env, POD_NAME: opts.podName ?? 'netoken-operator-test' }),
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let log = '';
  for (const st of [child.stdout, child.stderr]) st?.on('data', (d: Buffer) => (log += d.toString()));
  return { child, log: () => log };
}
