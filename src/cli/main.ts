/**
 * The `netoken` command: agent, status, detach, demo.
 */
import { hostname } from 'node:os';
import { Command, CommanderError } from 'commander';
import { Agent } from '../agent/agent.js';
import { Datapath, defaultObjectPath, detachAll } from '../agent/datapath.js';
import { FileSource } from '../agent/file-source.js';
import { createLogger } from '../lib/log.js';
import { UsageError, agentConfig, commonConfig, type RawOptions } from './config.js';
import { printStatus } from './status.js';

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
  const labels = { 'kubernetes.io/hostname': hostname(), ...cfg.nodeLabels };
  const datapath = Datapath.open({
    stateDir: cfg.stateDir,
    runDir: cfg.runDir,
    objectPath: cfg.objectPath ?? defaultObjectPath(),
    attach: cfg.attach,
    tcPriority: cfg.tcPriority,
    log,
  });
  const source = new FileSource(cfg.policyFile, labels, log);
  const agent = new Agent({ source, datapath, log, runDir: cfg.runDir, interfacePollMs: cfg.interfacePollMs });
  log.info('agent starting', { mode: 'standalone', policyFile: cfg.policyFile, stateDir: cfg.stateDir, programId: datapath.programId });
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
  datapath.close();
  return 0;
}

export async function run(argv: string[]): Promise<number> {
  const program = new Command('netoken')
    .description('Watermark TCP SYNs with a token option (eBPF, tc egress)')
    .exitOverride()
    .showHelpAfterError();
  let code = 0;

  common(program.command('agent').description('run the node agent (standalone: --policy-file)'))
    .option('--policy-file <file>', 'multi-document YAML with TokenPolicy and Secret objects')
    .option('--attach <mode>', 'auto (TCX, else clsact), tcx or tc (default auto)')
    .option('--tc-priority <n>', 'priority of our clsact filter (default 1)')
    .option('--interface-poll <duration>', 'how often to look for interface changes (default 2s)')
    .option('--node-label <key=value>', 'label of this node for spec.nodeSelector (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--bpf-object <file>', 'marker BPF object (default build/bpf/marker.bpf.o)')
    .action(async (o: RawOptions) => {
      code = await runAgent(o);
    });

  common(program.command('status').description('show hooks, policies and counters on this host'))
    .option('-o, --output <format>', 'table or json (default table)')
    .action((o: RawOptions) => {
      const out = String(o.output ?? 'table');
      if (out !== 'table' && out !== 'json') throw new UsageError(`--output must be table or json, got "${out}"`);
      code = printStatus(commonConfig(o), out);
    });

  common(program.command('detach').description('remove every hook and pin of ours from this host, and nothing else'))
    .action((o: RawOptions) => {
      const cfg = commonConfig(o);
      const log = createLogger({ level: cfg.logLevel, format: cfg.logFormat });
      const r = detachAll(cfg.stateDir, cfg.runDir, 1, log);
      process.stdout.write(`detached: ${r.links} TCX link(s), ${r.tcFilters} tc filter(s); removed ${r.pins} pin(s)\n`);
    });

  program.command('demo').description('two network namespaces, the agent, real connections, decoded tokens')
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
    if (e.code === 'EPERM') process.stderr.write('netoken: run as root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON)\n');
    return 1;
  }
  return code;
}
