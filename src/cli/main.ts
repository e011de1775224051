/**
 * The `netoken` command: agent, operator, status, inspect, detach, demo.
 */
import { hostname } from 'node:os';
import { Command, CommanderError } from 'commander';
import { Agent, type AgentStatus } from '../agent/agent.js';
import { agentMetrics } from '../agent/metrics.js';
import type { PolicySource } from '../agent/source.js';
import { serveEndpoints } from '../lib/http.js';
import { Datapath } from '../agent/datapath.js';
import { detachAll } from '../agent/hooks/detach.js';
import { ensureBpffs } from '../agent/bpffs.js';
import { agentDirs, lockAgentDirs, lockForDetach } from '../agent/lock.js';
import { createLogger } from '../lib/log.js';
import { startMemorySettler } from '../lib/memory.js';
import { binding } from '../native/binding.js';
import { UsageError, agentConfig, commonConfig, inspectConfig, outputFormat, type RawOptions } from './config.js';
import { operatorFlags, parseOperatorOptions, runOperator } from './operator.js';
import { printStatus } from './status.js';
import { bpfObjectPath } from '../lib/package.js';

function common(cmd: Command): Command {
  return cmd
    .option('--state-dir <dir>', 'bpffs directory for our pins (default /sys/fs/bpf/netoken)')
    .option('--run-dir <dir>', 'directory for status and state files (default /run/netoken)')
    .option('--log-level <level>', 'error, warn, info or debug (default info)')
    .option('--log-format <format>', 'json or text (default: text on a terminal, json otherwise)');
}

async function runAgent(o: RawOptions): Promise<number> {
  const cfg = agentConfig(o);
  const log = createLogger({ level: cfg.logLevel, format: cfg.logFormat });
  // One agent per state and run directory: a second one over the same pins would undo the first one's work.
  ensureBpffs(cfg.stateDir, log);
  const lock = await lockAgentDirs(agentDirs(cfg.stateDir, cfg.runDir), { log, timeoutMs: cfg.lockTimeoutMs });
  const datapath = Datapath.open({
    stateDir: cfg.stateDir,
    runDir: cfg.runDir,
    objectPath: cfg.objectPath ?? bpfObjectPath('marker'),
    attach: cfg.attach,
    ingressAttach: cfg.ingressAttach,
    tcPriority: cfg.tcPriority,
    log,
  });
  const holder: { agent?: Agent } = {};
  const metrics = agentMetrics(datapath, () => holder.agent, { node: cfg.cluster?.nodeName ?? hostname() });
  let source: PolicySource;
  let onStatus: ((s: AgentStatus, settled: boolean) => void) | undefined;
  if (cfg.cluster) {
    const c = cfg.cluster;
    // Loaded only in cluster mode: the Kubernetes client alone is some 80 MiB of heap.
    const [{ loadKubeConfig }, { KubeSource }, { NodeStateWriter }] = await Promise.all([
      import('../lib/kube.js'),
      import('../agent/kube-source.js'),
      import('../agent/node-state.js'),
    ]);
    const kc = loadKubeConfig(c.kubeconfig, 'netoken-agent');
    metrics.watching(KubeSource.WATCHES);
    const kube = new KubeSource({
      kc,
      nodeName: c.nodeName,
      namespace: c.namespace,
      log,
      onWatchRestart: (w) => metrics.watchRestarted(w),
    });
    const writer = new NodeStateWriter({
      kc,
      nodeName: c.nodeName,
      log,
      counterIntervalMs: c.counterIntervalMs,
      node: () => kube.nodeObject(),
      onWrite: (bytes) => metrics.nodeStateWritten(bytes),
    });
    source = kube;
    onStatus = (s, settled) => writer.update(s, settled);
    log.info('agent starting', {
      mode: 'cluster',
      node: c.nodeName,
      namespace: c.namespace,
      stateDir: cfg.stateDir,
      programId: datapath.programId,
    });
  } else {
    // Loaded only in standalone mode: the YAML parser is some 160 kB of source in every process.
    const { FileSource } = await import('../agent/file-source.js');
    const labels = { 'kubernetes.io/hostname': hostname(), ...cfg.nodeLabels };
    source = new FileSource(cfg.policyFile as string, labels, log);
    log.info('agent starting', {
      mode: 'standalone',
      policyFile: cfg.policyFile,
      stateDir: cfg.stateDir,
      programId: datapath.programId,
    });
  }
  const agent = new Agent({
    source,
    datapath,
    log,
    runDir: cfg.runDir,
    interfacePollMs: cfg.interfacePollMs,
    stateDir: cfg.stateDir,
    tcPriority: cfg.tcPriority,
    onReconcile: (sec, ok) => metrics.reconciled(sec, ok),
    ...(onStatus ? { onStatus } : {}),
  });
  holder.agent = agent;
  const settler = startMemorySettler({ release: () => binding().trimMemory(), log });
  const started = agent;
  const server = cfg.metricsAddress
    ? await serveEndpoints({
        address: cfg.metricsAddress,
        registry: metrics.registry,
        healthz: () => ({ ok: true, detail: 'agent running' }),
        readyz: () =>
          started.isReady()
            ? { ok: true, detail: 'policies applied' }
            : { ok: false, detail: 'policies not yet applied since the last change' },
      })
    : undefined;
  if (server) log.info('serving /metrics /healthz /readyz', { address: cfg.metricsAddress });
  await agent.start();
  log.info('agent running', { ready: agent.lastStatus()?.ready ?? false });
  await new Promise<void>((resolve) => {
    const stop = (sig: string): void => {
      log.info('agent stopping; hooks stay attached and keep marking', { signal: sig });
      resolve();
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  await agent.stop();
  settler.close();
  server?.close();
  datapath.close();
  lock.release();
  return 0;
}

export async function run(argv: string[]): Promise<number> {
  const program = new Command('netoken')
    .description('Watermark TCP SYNs with a token option (eBPF, tc egress)')
    .exitOverride()
    .showHelpAfterError();
  let code = 0;

  common(program.command('agent').description('run the node agent: standalone with --policy-file, else in a cluster'))
    .option('--policy-file <file>', 'standalone: multi-document YAML with TokenPolicy and Secret objects')
    .option('--kubeconfig <file>', 'cluster: kubeconfig (default: in-cluster config)')
    .option('--node-name <name>', 'cluster: this node (default $NODE_NAME)')
    .option('--namespace <ns>', 'cluster: namespace of the key Secrets (default $POD_NAMESPACE or netoken-system)')
    .option('--counter-interval <duration>', 'cluster: write counters to TokenNodeState at most this often (default 5m)')
    .option('--metrics-address <addr>', 'serve /metrics /healthz /readyz here (default :9090 in a cluster, off standalone)')
    .option('--attach <mode>', 'marker hook: auto (TCX, else clsact), tcx or tc (default auto)')
    .option(
      '--ingress-attach <mode>',
      'verifier hook: auto (native XDP on devices a hardware driver made, when the driver takes it; tc elsewhere), xdp-native, xdp-generic or tc (default auto)',
    )
    .option('--tc-priority <n>', 'priority of our clsact filter (default 1)')
    .option('--interface-poll <duration>', 'how often to look for interface changes (default 2s)')
    .option(
      '--lock-timeout <duration>',
      'how long to wait for another agent using the same --state-dir to stop before giving up (default 30s)',
    )
    .option(
      '--node-label <key=value>',
      'label of this node for spec.nodeSelector (repeatable)',
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option('--bpf-object <file>', 'marker BPF object (default build/bpf/marker.bpf.o)')
    .action(async (o: RawOptions) => {
      code = await runAgent(o);
    });

  operatorFlags(
    program.command('operator').description('run the cluster operator: key Secrets and rotation, policy status, finalizers'),
  ).action(async (o: RawOptions) => {
    code = await runOperator(parseOperatorOptions(o));
  });

  common(program.command('status').description('show hooks, policies and counters on this host'))
    .option('-o, --output <format>', 'table or json (default table)')
    .action((o: RawOptions) => {
      code = printStatus(commonConfig(o), outputFormat(o.output));
    });

  program
    .command('inspect')
    .description('show SYNs on an interface or in a pcap file: 4-tuple, direction, token option and verdict')
    .option('-i, --interface <name>', 'watch this interface live ("any": every interface); needs root (CAP_NET_RAW)')
    .option('-r, --read <file>', 'read SYNs from a pcap file (tcpdump -w, or --pcap-out of an earlier run)')
    .option('--policy-file <file>', 'judge tokens with the keys of a policy file (TokenPolicy and Secret documents)')
    .option('--policy <name>', 'the TokenPolicy whose keys judge the tokens: from --policy-file, else from the cluster')
    .option(
      '--kubeconfig <file>',
      'cluster: kubeconfig to read the TokenPolicy and its Secret with (default: $KUBECONFIG, ~/.kube/config or in-cluster)',
    )
    .option('--namespace <ns>', 'cluster: namespace of the key Secrets (default $POD_NAMESPACE or netoken-system)')
    .option('-c, --count <n>', 'stop after this many SYNs')
    .option('-d, --duration <duration>', 'live: stop after this long, e.g. 30s')
    .option('-w, --pcap-out <file>', 'keep the SYNs seen in this pcap file (Linux cooked headers when live)')
    .option('-o, --output <format>', 'table or json: one JSON object per SYN, then a summary object (default table)')
    .option('--summary-interval <duration>', 'live: print the verdict counts this often; 0s: only at the end (default 5s)')
    .action(async (o: RawOptions) => {
      const { runInspect } = await import('./inspect.js');
      code = await runInspect(inspectConfig(o));
    });

  common(program.command('detach').description('remove every hook and pin of ours from this host, and nothing else')).action(
    (o: RawOptions) => {
      const cfg = commonConfig(o);
      const log = createLogger({ level: cfg.logLevel, format: cfg.logFormat });
      const lock = lockForDetach(agentDirs(cfg.stateDir, cfg.runDir));
      const r = detachAll(cfg.stateDir, cfg.runDir, 1, log);
      lock.release();
      process.stdout.write(
        `detached: ${r.links} TCX link(s), ${r.tcFilters} tc filter(s), ${r.xdp} XDP program(s); removed ${r.pins} pin(s)\n`,
      );
    },
  );

  program
    .command('demo')
    .description('two network namespaces, the agent, real connections, decoded tokens')
    .option('--keep', 'leave the namespaces in place for a look around')
    .action(async (o: RawOptions) => {
      const { runDemo } = await import('./demo.js');
      code = await runDemo({ keep: o.keep === true });
    });

  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    if (err instanceof UsageError) {
      process.stderr.write(`netoken: ${err.message}\n`);
      return 2;
    }
    const e = err as Error & { code?: string; syscall?: string };
    process.stderr.write(`netoken: ${e.message}\n`);
    if (e.code === 'EPERM' && e.syscall !== 'socket')
      process.stderr.write('netoken: run as root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON)\n');
    return 1;
  }
  return code;
}
