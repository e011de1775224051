/**
 * `netoken operator`: its flags (parsed once, here, with their defaults and errors) and its
 * run loop: caches, leader election, reconciles, the /metrics /healthz /readyz server, and a
 * clean stop on SIGTERM that hands the Lease to a standby at once.
 */
import path from 'node:path';
import type { Server } from 'node:http';
import type { Command } from 'commander';
import { parseAddress, serveEndpoints } from '../lib/http.js';
import { type LogFormat, createLogger } from '../lib/log.js';
import { startMemorySettler } from '../lib/memory.js';
import { parseDuration } from '../lib/policy.js';
import { defaultIdentity } from '../operator/identity.js';
import { type RawOptions, UsageError, commonConfig } from './config.js';

export const DEFAULT_OPERATOR_NAMESPACE = 'netoken-system';
export const DEFAULT_LEASE_NAME = 'netoken-operator';

export interface OperatorConfig {
  /** kubeconfig file; undefined = in-cluster config, else $KUBECONFIG or ~/.kube/config */
  kubeconfig: string | undefined;
  /** the operator's namespace: key Secrets and the leader Lease */
  namespace: string;
  leaderElect: boolean;
  leaseName: string;
  identity: string;
  /** "host:port" for /metrics /healthz /readyz; empty = off */
  metricsAddress: string;
  finalizerTimeoutMs: number;
  /** how long a retired key stays accepted after every node signs with the new one, besides epoch and skew */
  keyRetireMarginMs: number;
  /** how long a node that just joined has to start its agent before it counts as running none */
  agentGraceMs: number;
  /** reconciles run at once */
  workers: number;
  logLevel: string;
  logFormat: LogFormat | undefined;
}

/** Declares the operator's flags on `cmd`. */
export function operatorFlags(cmd: Command): Command {
  return cmd
    .option('--kubeconfig <file>', 'kubeconfig to use (default: in-cluster, else $KUBECONFIG or ~/.kube/config)')
    .option('--namespace <ns>', 'namespace of the key Secrets and the leader Lease (default $POD_NAMESPACE, else netoken-system)')
    .option(
      '--leader-elect [bool]',
      'true: only the holder of the Lease reconciles, so replicas can stand by; --leader-elect=false turns it off (default true)',
    )
    .option('--lease-name <name>', 'name of the leader-election Lease (default netoken-operator)')
    .option('--metrics-address <addr>', 'serve /metrics /healthz /readyz here; empty turns them off (default :9091)')
    .option('--finalizer-timeout <duration>', 'how long a deleted policy waits for nodes that stopped reporting (default 2m)')
    .option(
      '--key-retire-margin <duration>',
      'how long a rotated-out key stays accepted after every node signs with the new one, on top of the epoch and clock skew (default 1m)',
    )
    .option(
      '--agent-grace <duration>',
      'how long a node that just joined has to start its agent before policies report it as running none (default 2m)',
    )
    .option('--workers <n>', 'how many policies and node reports are reconciled at once, 1 to 64 (default 4)')
    .option('--log-level <level>', 'error, warn, info or debug (default info)')
    .option('--log-format <format>', 'json or text (default: text on a terminal, json otherwise)');
}

/** Reconciles at once: the work queue's workers (controller-runtime's MaxConcurrentReconciles). */
const DEFAULT_WORKERS = 4;

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export function parseOperatorOptions(o: RawOptions, env: NodeJS.ProcessEnv = process.env): OperatorConfig {
  const common = commonConfig(o, env);
  const namespace = String(o.namespace ?? (env.POD_NAMESPACE || DEFAULT_OPERATOR_NAMESPACE));
  if (!DNS_LABEL.test(namespace))
    throw new UsageError(`--namespace must be a namespace name (lowercase letters, digits, '-'), got "${namespace}"`);
  // A bare --leader-elect (as controller-runtime takes it) means true.
  const le = String(o.leaderElect ?? true);
  if (le !== 'true' && le !== 'false') throw new UsageError(`--leader-elect must be true or false, got "${le}"`);
  const leaseName = String(o.leaseName ?? DEFAULT_LEASE_NAME);
  if (leaseName.length > 253 || !DNS_SUBDOMAIN.test(leaseName))
    throw new UsageError(`--lease-name must be an object name, got "${leaseName}"`);
  const timeoutText = String(o.finalizerTimeout ?? '2m');
  const timeout = parseDuration(timeoutText);
  if (timeout === null) throw new UsageError(`--finalizer-timeout must be a duration such as 2m or 90s, got "${timeoutText}"`);
  const marginText = String(o.keyRetireMargin ?? '1m');
  const margin = parseDuration(marginText);
  if (margin === null) throw new UsageError(`--key-retire-margin must be a duration such as 1m or 30s, got "${marginText}"`);
  const graceText = String(o.agentGrace ?? '2m');
  const grace = parseDuration(graceText);
  if (grace === null) throw new UsageError(`--agent-grace must be a duration such as 2m or 30s, got "${graceText}"`);
  const workersText = String(o.workers ?? DEFAULT_WORKERS);
  const workers = Number(workersText);
  if (!/^[0-9]+$/.test(workersText) || workers < 1 || workers > 64)
    throw new UsageError(`--workers must be a whole number from 1 to 64, got "${workersText}"`);
  const kubeconfig = typeof o.kubeconfig === 'string' && o.kubeconfig !== '' ? path.resolve(o.kubeconfig) : undefined;
  const metricsAddress = String(o.metricsAddress ?? ':9091');
  if (metricsAddress !== '') {
    try {
      parseAddress(metricsAddress);
    } catch (err) {
      throw new UsageError(`--metrics-address: ${(err as Error).message}`);
    }
  }
  return {
    kubeconfig,
    namespace,
    leaderElect: le === 'true',
    leaseName,
    identity: defaultIdentity(env),
    metricsAddress,
    finalizerTimeoutMs: Math.round(timeout * 1000),
    keyRetireMarginMs: Math.round(margin * 1000),
    agentGraceMs: Math.round(grace * 1000),
    workers,
    logLevel: common.logLevel,
    logFormat: common.logFormat,
  };
}

/** Runs until SIGTERM/SIGINT (exit code 0) or until leadership is lost (exit code 1). */
export async function runOperator(cfg: OperatorConfig): Promise<number> {
  const log = createLogger({ level: cfg.logLevel, format: cfg.logFormat });
  // Loaded here, not at the top: the Kubernetes client alone is some 80 MiB of heap.
  const [{ loadKubeConfig }, { OperatorMetrics }, { Operator }] = await Promise.all([
    import('../lib/kube.js'),
    import('../operator/metrics.js'),
    import('../operator/operator.js'),
  ]);
  const kc = loadKubeConfig(cfg.kubeconfig, 'netoken-operator');
  const metrics = new OperatorMetrics();
  let finish: (code: number) => void = () => undefined;
  const finished = new Promise<number>((res) => (finish = res));
  let lost = false;
  const operator = new Operator({
    kc,
    namespace: cfg.namespace,
    log,
    metrics,
    leaderElect: cfg.leaderElect,
    identity: cfg.identity,
    leaseName: cfg.leaseName,
    finalizerTimeoutMs: cfg.finalizerTimeoutMs,
    retireMarginMs: cfg.keyRetireMarginMs,
    agentGraceMs: cfg.agentGraceMs,
    concurrency: cfg.workers,
    onLostLeadership: (why) => {
      // Like controller-runtime: a process that lost the Lease may hold stale views; start afresh.
      log.error('leadership lost; exiting so that a fresh process starts as a standby', { identity: cfg.identity, why });
      lost = true;
      finish(1);
    },
  });
  let server: Server | undefined;
  if (cfg.metricsAddress) {
    try {
      server = await serveEndpoints({
        address: cfg.metricsAddress,
        registry: metrics.registry,
        healthz: () => operator.healthy(),
        readyz: () => operator.ready(),
      });
    } catch (err) {
      log.error('cannot serve /metrics /healthz /readyz', { address: cfg.metricsAddress, error: (err as Error).message });
      return 1;
    }
    log.info('serving /metrics /healthz /readyz', { address: cfg.metricsAddress });
  }
  const onSignal = (sig: NodeJS.Signals): void => {
    log.info('operator stopping', { signal: sig, identity: cfg.identity });
    finish(0);
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  const settler = startMemorySettler({ log });
  await operator.start();
  const code = await finished;
  settler.close();
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
  await operator.stop({ releaseLease: !lost });
  if (server) {
    const s = server;
    s.closeAllConnections();
    await new Promise<void>((res) => s.close(() => res()));
  }
  log.info('operator stopped', { identity: cfg.identity, exitCode: code });
  // Whatever socket a library still holds must not keep a stopped operator alive.
  setTimeout(() => process.exit(code), 2000).unref();
  return code;
}
