/**
 * The cluster the apply → wire, memory and CPU, and status aggregation rows share: a TestCluster
 * (etcd and kube-apiserver from test/k8s/build-tools.sh) with the Helm chart's RBAC, `netoken
 * operator` on the host, and a cluster-mode `netoken agent` in a network namespace that stands for
 * the node (it reaches the API server through a loopback bridge) with a veth to a peer namespace.
 * Every token is random, made for the run and never logged: checkNoTokens fails the run if one
 * shows up in the agent's or the operator's output.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import path from 'node:path';
import { KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { waitUntil } from '../../src/lib/wait.js';
import { agentKubeconfig, installChartRbac, operatorKubeconfig } from '../../test/k8s/chart.js';
import { TestCluster, freePorts } from '../../test/k8s/cluster.js';
import { BIN, agentIn, type AgentRun } from '../../test/lib/agent.js';
import { bridgeLoopback, type LoopbackBridge } from '../../test/lib/loopback-bridge.js';
import { createTopology, waitForExit, type Topology } from '../../test/lib/netns.js';
import { ROOT } from '../report.js';
import { PREFIX } from './common.js';
import { nodePid } from './proc.js';
import { daemonEnv } from '../../src/lib/memory.js';

const NS = 'netoken-system';
/** The real node: the agent's Node and TokenNodeState. */
export const NODE = 'bench-node';
/** The node agent's labels, and the selector of every policy meant for it alone (not for the simulated nodes). */
export const NODE_SELECTOR = 'role: bench';

export const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

/** The last `max` characters of a growing text (process output kept for error messages). */
class Tail {
  text = '';
  constructor(private readonly max = 256 * 1024) {}
  add(s: string): void {
    this.text += s;
    if (this.text.length > this.max) this.text = this.text.slice(-this.max);
  }
  last(chars = 3000): string {
    return this.text.slice(-chars);
  }
}

export function secretYaml(name: string, token: Buffer): string {
  return `apiVersion: v1
kind: Secret
metadata: {name: ${name}, namespace: ${NS}}
type: Opaque
data: {current: ${token.toString('base64')}}
`;
}

export function policyYaml(
  name: string,
  label: string,
  dev: string,
  secret: string,
  cidr: string,
  port: number,
  selector = '',
): string {
  return `apiVersion: netoken.io/v1alpha1
kind: TokenPolicy
metadata: {name: ${name}, labels: {netoken-bench: ${label}}}
spec:
${selector ? `  nodeSelector: {matchLabels: {${selector}}}\n` : ''}  interfaces: {names: [${dev}]}
  token: {mode: Static, secretRef: {name: ${secret}}}
  egress: {destinations: [{cidr: ${cidr}, ports: [${port}]}]}
`;
}

export interface PolicyObject {
  metadata?: { name?: string; generation?: number };
  status?: {
    observedGeneration?: number;
    nodes?: { selected: number; ready: number; failed: number };
    conditions?: { type: string; status: string }[];
  };
}

export interface SessionOptions {
  /** keep the API server's audit log of writes (TestCluster's StartOptions.audit) */
  audit?: boolean;
  /** the agent's --counter-interval: how often counters alone may be written to its TokenNodeState */
  counterInterval?: string;
}

export class Session {
  cluster: TestCluster | null = null;
  topo: Topology | null = null;
  bridge: LoopbackBridge | null = null;
  agent: AgentRun | null = null;
  operator: ChildProcess | null = null;
  readonly operatorLog = new Tail();
  operatorPort = 0;
  kc = new KubeConfig();
  /** every token made for the run, to prove none of them leaks into a log */
  readonly tokens: Buffer[] = [];

  get c(): TestCluster {
    if (!this.cluster) throw new Error('no cluster');
    return this.cluster;
  }

  get t(): Topology {
    if (!this.topo) throw new Error('no topology');
    return this.topo;
  }

  get a(): AgentRun {
    if (!this.agent) throw new Error('no agent');
    return this.agent;
  }

  token(): Buffer {
    const t = randomBytes(8);
    this.tokens.push(t);
    return t;
  }

  constructor(private readonly opts: SessionOptions = {}) {}

  context = (): string => `agent log:\n${this.agent?.log().slice(-3000) ?? ''}\noperator log:\n${this.operatorLog.last()}`;

  async start(log: (line: string) => void): Promise<void> {
    const t0 = performance.now();
    this.cluster = await TestCluster.start({ audit: this.opts.audit ?? false });
    this.kc.loadFromFile(this.cluster.kubeconfig);
    this.topo = await createTopology({ name: 'cp', kind: 'pair', prefix: PREFIX });
    this.bridge = await bridgeLoopback(this.topo.client.ns, Number(new URL(this.cluster.server).port));
    await installChartRbac(this.cluster, NS);
    await this.cluster.apply(`apiVersion: v1
kind: Node
metadata: {name: ${NODE}, labels: {${NODE_SELECTOR}}}
`);
    const agentKc = await agentKubeconfig(this.cluster, NODE, NS);
    this.agent = agentIn(this.topo.client.ns, 'cp');
    // The agent's own defaults where they matter for its cost (startCluster asks for 1 s counters and debug logs).
    await this.agent.startCluster(agentKc, NODE, NS, [
      '--counter-interval',
      this.opts.counterInterval ?? '60s',
      '--log-level',
      'info',
      '--interface-poll',
      '2s',
    ]);
    const opKc = await operatorKubeconfig(this.cluster, NS);
    this.operatorPort = (await freePorts(1))[0] as number;
    const child = spawn(
      process.execPath,
      [
        BIN,
        'operator',
        `--kubeconfig=${opKc}`,
        `--namespace=${NS}`,
        `--metrics-address=127.0.0.1:${this.operatorPort}`,
        '--log-format=json',
        '--log-level=info',
      ],
      {
        cwd: ROOT,
        env: daemonEnv({ ...process.env, POD_NAME: 'netoken-operator-bench', KUBECONFIG: '' }),
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      },
    );
    // Listed for the cluster's watchdog: if this process dies, the operator goes with the API server.
    if (child.pid !== undefined) appendFileSync(path.join(this.cluster.dir, 'pgids'), `${child.pid}\n`);
    this.operator = child;
    for (const s of [child.stdout, child.stderr]) {
      s?.setEncoding('utf8');
      s?.on('data', (d: string) => this.operatorLog.add(d));
    }
    await this.a.waitStatus((s) => s.ready, 60_000, 'the agent to sync with the API server');
    await waitUntil('the operator to be ready', 60_000, async () => {
      if (child.exitCode !== null) throw new Error(`the operator exited with ${child.exitCode}\n${this.operatorLog.last()}`);
      try {
        const r = await fetch(`http://127.0.0.1:${this.operatorPort}/readyz`);
        return r.ok && /leader/.test(await r.text()) ? true : undefined;
      } catch {
        return undefined;
      }
    });
    log(`control plane: API server, operator and agent ready in ${Math.round((performance.now() - t0) / 1000)} s`);
  }

  pids(): { agent: number; operator: number } {
    const agent = this.agent?.child?.pid;
    const operator = this.operator?.pid;
    if (agent === undefined || operator === undefined) throw new Error('the agent or the operator is not running');
    return { agent: nodePid(agent), operator };
  }

  /** Fails the run when any token of the run appears in the agent's or the operator's output. */
  checkNoTokens(): void {
    for (const [where, text] of [
      ['agent', this.agent?.log() ?? ''],
      ['operator', this.operatorLog.text],
    ] as const) {
      for (const t of this.tokens) {
        for (const enc of [t.toString('hex'), t.toString('base64'), t.toString('base64url')]) {
          if (text.includes(enc)) throw new Error(`a token of this run appears in the ${where}'s output`);
        }
      }
    }
  }

  async stop(): Promise<void> {
    const op = this.operator;
    if (op?.pid !== undefined && op.exitCode === null && op.signalCode === null) {
      process.kill(-op.pid, 'SIGTERM');
      if (!(await waitForExit(op, 15_000))) {
        process.kill(-op.pid, 'SIGKILL');
        await waitForExit(op, 5000);
      }
    }
    await this.agent?.cleanup().catch(() => undefined);
    await this.bridge?.close().catch(() => undefined);
    await this.topo?.destroy().catch(() => undefined);
    await this.cluster?.stop();
  }
}
