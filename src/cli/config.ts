/**
 * Every flag and environment variable the CLI reads, parsed once, with defaults and
 * errors here. Commands receive these typed objects and never look at argv or env.
 */
import path from 'node:path';
import { parseDuration } from '../lib/policy.js';
import type { LogFormat } from '../lib/log.js';
import { DEFAULT_STATE_DIR } from '../agent/bpffs.js';
import type { IngressAttachPreference } from '../agent/datapath.js';
import type { AttachPreference } from '../agent/hooks/tc.js';
import { DEFAULT_RUN_DIR } from '../agent/run-state.js';

export class UsageError extends Error {
  override name = 'UsageError';
}

export interface CommonConfig {
  stateDir: string;
  runDir: string;
  logLevel: string;
  logFormat: LogFormat | undefined;
}

export interface ClusterConfig {
  /** empty: in-cluster config (or ~/.kube/config outside a pod) */
  kubeconfig: string | undefined;
  nodeName: string;
  namespace: string;
  /** TokenNodeState counters are written at most this often */
  counterIntervalMs: number;
}

export interface AgentConfig extends CommonConfig {
  /** standalone mode when set; cluster mode otherwise */
  policyFile: string | undefined;
  cluster: ClusterConfig | undefined;
  /** "host:port" for /metrics /healthz /readyz; empty = off */
  metricsAddress: string;
  attach: AttachPreference;
  /** where the verifier goes: XDP (native, else generic) with tc as the fallback, or one of them */
  ingressAttach: IngressAttachPreference;
  tcPriority: number;
  interfacePollMs: number;
  nodeLabels: Record<string, string>;
  objectPath: string | undefined;
}

export type RawOptions = Record<string, unknown>;

const LOG_LEVELS = ['error', 'warn', 'info', 'debug'];

export function commonConfig(o: RawOptions, env: NodeJS.ProcessEnv = process.env): CommonConfig {
  const level = String(o.logLevel ?? env.NETOKEN_LOG_LEVEL ?? 'info');
  if (!LOG_LEVELS.includes(level)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}, got "${level}"`);
  const fmt = o.logFormat ?? env.NETOKEN_LOG_FORMAT;
  if (fmt !== undefined && fmt !== 'json' && fmt !== 'text') throw new UsageError(`--log-format must be json or text, got "${String(fmt)}"`);
  return {
    stateDir: path.resolve(String(o.stateDir ?? env.NETOKEN_STATE_DIR ?? DEFAULT_STATE_DIR)),
    runDir: path.resolve(String(o.runDir ?? env.NETOKEN_RUN_DIR ?? DEFAULT_RUN_DIR)),
    logLevel: level,
    logFormat: fmt as LogFormat | undefined,
  };
}

export function agentConfig(o: RawOptions, env: NodeJS.ProcessEnv = process.env): AgentConfig {
  const common = commonConfig(o, env);
  const policyFile = typeof o.policyFile === 'string' && o.policyFile !== '' ? path.resolve(o.policyFile) : undefined;
  let cluster: ClusterConfig | undefined;
  if (!policyFile) {
    const nodeName = String(o.nodeName ?? env.NODE_NAME ?? '');
    if (!nodeName) {
      throw new UsageError('cluster mode needs the node name: --node-name or NODE_NAME (from the downward API); for standalone mode give --policy-file');
    }
    const every = parseDuration(String(o.counterInterval ?? '60s'));
    if (every === null || every < 1) throw new UsageError(`--counter-interval must be a duration of at least 1s, got "${String(o.counterInterval)}"`);
    cluster = {
      kubeconfig: typeof o.kubeconfig === 'string' ? path.resolve(o.kubeconfig) : undefined,
      nodeName,
      namespace: String(o.namespace ?? env.POD_NAMESPACE ?? 'netoken-system'),
      counterIntervalMs: Math.round(every * 1000),
    };
  }
  const metricsAddress = String(o.metricsAddress ?? (cluster ? ':9090' : ''));
  const attach = String(o.attach ?? 'auto');
  if (attach !== 'auto' && attach !== 'tcx' && attach !== 'tc') throw new UsageError(`--attach must be auto, tcx or tc, got "${attach}"`);
  const ingressAttach = String(o.ingressAttach ?? 'auto');
  if (!['auto', 'xdp-native', 'xdp-generic', 'tc'].includes(ingressAttach)) {
    throw new UsageError(`--ingress-attach must be auto, xdp-native, xdp-generic or tc, got "${ingressAttach}"`);
  }
  const prio = Number(o.tcPriority ?? 1);
  if (!Number.isInteger(prio) || prio < 1 || prio > 0xffff) throw new UsageError(`--tc-priority must be 1..65535, got "${String(o.tcPriority)}"`);
  const poll = parseDuration(String(o.interfacePoll ?? '2s'));
  if (poll === null || poll < 0.1) throw new UsageError(`--interface-poll must be a duration of at least 100ms, like 2s, got "${String(o.interfacePoll)}"`);
  const nodeLabels: Record<string, string> = {};
  for (const l of (o.nodeLabel as string[] | undefined) ?? []) {
    const i = l.indexOf('=');
    if (i <= 0) throw new UsageError(`--node-label must be key=value, got "${l}"`);
    nodeLabels[l.slice(0, i)] = l.slice(i + 1);
  }
  return {
    ...common,
    policyFile,
    cluster,
    metricsAddress,
    attach,
    ingressAttach: ingressAttach as IngressAttachPreference,
    tcPriority: prio,
    interfacePollMs: Math.round(poll * 1000),
    nodeLabels,
    objectPath: typeof o.bpfObject === 'string' ? path.resolve(o.bpfObject) : undefined,
  };
}
