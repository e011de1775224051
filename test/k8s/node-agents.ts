/**
 * Nodes in network namespaces against a real API server: the fixture of the cluster-mode tests
 * that run the operator and agents. A pair topology stands for up to two nodes (its client
 * and server sides); an agent reaches the API server through its own side's loopback bridge,
 * with exactly the chart's RBAC as a Pod-bound token on its node, and the operator runs as a
 * real process with the chart's operator RBAC. stop() ends whatever was started, last first.
 */
import { agentIn, type AgentRun } from '../lib/agent.js';
import { bridgeLoopback, type LoopbackBridge } from '../lib/loopback-bridge.js';
import { createTopology, type Topology } from '../lib/netns.js';
import { tokenOnSyn } from '../lib/syn-token.js';
import { startServer, type TcpServer } from '../lib/tcp.js';
import {
  DEFAULT_NAMESPACE,
  type NodeState,
  type OperatorRun,
  agentKubeconfig,
  installChartRbac,
  startOperator,
  waitNodeState,
} from './chart.js';
import { TestCluster, freePorts } from './cluster.js';

/** The namespace of the operator, the agents and the key Secrets. */
export const NS = DEFAULT_NAMESPACE;

export type Side = 'client' | 'server';

export class ClusterNodes {
  private readonly bridges = new Map<Side, LoopbackBridge>();
  private readonly agents: AgentRun[] = [];
  private readonly servers: TcpServer[] = [];
  private readonly operators: OperatorRun[] = [];

  private constructor(
    readonly cluster: TestCluster,
    readonly topo: Topology,
  ) {}

  /** A fresh API server and a pair topology named `name`, with the chart's RBAC in NS. */
  static async start(name: string): Promise<ClusterNodes> {
    const cluster = await TestCluster.start();
    let topo: Topology | undefined;
    try {
      topo = await createTopology({ name, kind: 'pair' });
      await installChartRbac(cluster, NS);
      return new ClusterNodes(cluster, topo);
    } catch (err) {
      await topo?.destroy();
      await cluster.stop();
      throw err;
    }
  }

  /** The loopback bridge from `side`'s namespace to the API server (made on first use). */
  async bridge(side: Side): Promise<LoopbackBridge> {
    let b = this.bridges.get(side);
    if (!b) {
      b = await bridgeLoopback(this.topo[side].ns, Number(new URL(this.cluster.server).port));
      this.bridges.set(side, b);
    }
    return b;
  }

  /** A TCP echo server in `side`'s namespace on a free port, stopped by stop(). */
  async server(side: Side = 'server'): Promise<TcpServer> {
    const s = await startServer(this.topo[side].ns, { port: 0 });
    this.servers.push(s);
    return s;
  }

  /** The agent of Node `node` in cluster mode, in `side`'s namespace, named `label` for its files. */
  async startAgent(side: Side, node: string, label: string, extraArgs: string[] = []): Promise<AgentRun> {
    await this.bridge(side);
    const kubeconfig = await agentKubeconfig(this.cluster, node, NS);
    const agent = agentIn(this.topo[side].ns, label);
    this.agents.push(agent);
    await agent.startCluster(kubeconfig, node, NS, extraArgs);
    return agent;
  }

  /** `netoken operator` with metrics on 127.0.0.1:`metricsPort` (a free port when not given). */
  async startOperator(podName: string, opts: { metricsPort?: number; extraArgs?: string[] } = {}): Promise<OperatorRun> {
    const port = opts.metricsPort ?? ((await freePorts(1))[0] as number);
    const op = await startOperator(this.cluster, port, { namespace: NS, podName, extraArgs: opts.extraArgs });
    this.operators.push(op);
    return op;
  }

  /** Polls Node `node`'s TokenNodeState until `pred` holds; fails with its last status and the tail of `agent`'s log. */
  nodeState(node: string, agent: AgentRun, pred: (s: NodeState) => boolean, what: string, ms = 30_000): Promise<NodeState> {
    return waitNodeState(this.cluster, node, pred, what, ms, () => agent.log());
  }

  /** The token on the SYN of one handshake from the client side to `addr`:`port`, or null (syn-token.ts). */
  synToken(addr: string, port: number): Promise<Buffer | null> {
    return tokenOnSyn(this.topo, addr, port);
  }

  /** Ends the operators, agents, servers, bridges, the topology and the API server, in that order. */
  async stop(): Promise<void> {
    for (const op of this.operators) op.child.kill('SIGTERM');
    for (const a of this.agents) await a.cleanup();
    for (const s of this.servers) await s.stop();
    for (const b of this.bridges.values()) await b.close();
    await this.topo.destroy();
    await this.cluster.stop();
  }
}
