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
  /** how long to wait for another agent on the same state directory to stop */
  lockTimeoutMs: number;
  nodeLabels: Record<string, string>;
  objectPath: string | undefined;
}

export type RawOptions = Record<string, unknown>;

const LOG_LEVELS = ['error', 'warn', 'info', 'debug'];

export function commonConfig(o: RawOptions, env: NodeJS.ProcessEnv = process.env): CommonConfig {
  const level = String(o.logLevel ?? env.NETOKEN_LOG_LEVEL ?? 'info');
  if (!LOG_LEVELS.includes(level)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}, got "${level}"`);
  const fmt = o.logFormat ?? env.NETOKEN_LOG_FORMAT;
  if (fmt !== undefined && fmt !== 'json' && fmt !== 'text')
    throw new UsageError(`--log-format must be json or text, got "${String(fmt)}"`);
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
      throw new UsageError(
        'cluster mode needs the node name: --node-name or NODE_NAME (from the downward API); for standalone mode give --policy-file',
      );
    }
    const every = parseDuration(String(o.counterInterval ?? '5m'));
    if (every === null || every < 1)
      throw new UsageError(`--counter-interval must be a duration of at least 1s, got "${String(o.counterInterval)}"`);
    cluster = {
      kubeconfig: typeof o.kubeconfig === 'string' ? path.resolve(o.kubeconfig) : undefined,
      nodeName,
      namespace: String(o.namespace ?? env.POD_NAMESPACE ?? 'netoken-system'),
      counterIntervalMs: Math.round(every * 1000),
    };
  }
  const metricsAddress = String(o.metricsAddress ?? (cluster ? ':9090' : ''));
  const attach = String(o.attach ?? 'auto');
  if (attach !== 'auto' && attach !== 'tcx' && attach !== 'tc')
    throw new UsageError(`--attach must be auto, tcx or tc, got "${attach}"`);
  const ingressAttach = String(o.ingressAttach ?? 'auto');
  if (!['auto', 'xdp-native', 'xdp-generic', 'tc'].includes(ingressAttach)) {
    throw new UsageError(`--ingress-attach must be auto, xdp-native, xdp-generic or tc, got "${ingressAttach}"`);
  }
  const prio = Number(o.tcPriority ?? 1);
  if (!Number.isInteger(prio) || prio < 1 || prio > 0xffff)
    throw new UsageError(`--tc-priority must be 1..65535, got "${String(o.tcPriority)}"`);
  const poll = parseDuration(String(o.interfacePoll ?? '2s'));
  if (poll === null || poll < 0.1)
    throw new UsageError(`--interface-poll must be a duration of at least 100ms, like 2s, got "${String(o.interfacePoll)}"`);
  const lockTimeout = parseDuration(String(o.lockTimeout ?? '30s'));
  if (lockTimeout === null)
    throw new UsageError(`--lock-timeout must be a duration, like 30s or 0s, got "${String(o.lockTimeout)}"`);
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
    lockTimeoutMs: Math.round(lockTimeout * 1000),
    nodeLabels,
    objectPath: typeof o.bpfObject === 'string' ? path.resolve(o.bpfObject) : undefined,
  };
}

export type OutputFormat = 'table' | 'json';

export interface InspectConfig {
  /** live: the interface to watch ("any": every one); exactly one of interface and read is set */
  interface: string | undefined;
  /** a pcap file to read instead */
  read: string | undefined;
  /** standalone keys: a policy file (TokenPolicy and Secret documents) */
  policyFile: string | undefined;
  /** which TokenPolicy; required in cluster mode and when the file holds more than one */
  policy: string | undefined;
  /** keys from the API server: set when --policy is given without --policy-file */
  cluster: { kubeconfig: string | undefined; namespace: string } | undefined;
  /** stop after this many SYNs */
  count: number | undefined;
  /** live: stop after this long */
  durationMs: number | undefined;
  /** keep the SYNs seen in this pcap file */
  pcapOut: string | undefined;
  output: OutputFormat;
  /** live: print a summary this often (0: only at the end) */
  summaryEveryMs: number;
}

export function outputFormat(v: unknown): OutputFormat {
  const out = String(v ?? 'table');
  if (out !== 'table' && out !== 'json') throw new UsageError(`--output must be table or json, got "${out}"`);
  return out;
}

export function inspectConfig(o: RawOptions, env: NodeJS.ProcessEnv = process.env): InspectConfig {
  const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
  const iface = str(o.interface);
  const read = str(o.read);
  if ((iface === undefined) === (read === undefined)) {
    throw new UsageError('give exactly one of --interface NAME (watch live; "any" for every interface) and --read FILE.pcap');
  }
  if (iface !== undefined && !/^[^\s/:]{1,15}$/.test(iface))
    throw new UsageError(`--interface: "${iface}" is not an interface name`);
  const policyFile = str(o.policyFile);
  const policy = str(o.policy);
  if (str(o.kubeconfig) !== undefined && policyFile !== undefined) {
    throw new UsageError('--kubeconfig reads the policy from the cluster; --policy-file reads it from a file: give one of them');
  }
  if (str(o.kubeconfig) !== undefined && policy === undefined)
    throw new UsageError('--kubeconfig needs --policy NAME: the TokenPolicy whose keys judge the SYNs');
  let count: number | undefined;
  if (o.count !== undefined) {
    count = Number(o.count);
    if (!Number.isInteger(count) || count < 1)
      throw new UsageError(`--count must be a whole number of SYNs, at least 1, got "${String(o.count)}"`);
  }
  let durationMs: number | undefined;
  if (o.duration !== undefined) {
    const s = parseDuration(String(o.duration));
    if (s === null || s <= 0) throw new UsageError(`--duration must be a duration like 30s or 5m, got "${String(o.duration)}"`);
    if (read !== undefined) throw new UsageError('--duration bounds a live capture; with --read use --count');
    durationMs = Math.round(s * 1000);
  }
  const every = parseDuration(String(o.summaryInterval ?? '5s'));
  if (every === null)
    throw new UsageError(
      `--summary-interval must be a duration like 5s (0s: only at the end), got "${String(o.summaryInterval)}"`,
    );
  return {
    interface: iface,
    read: read === undefined ? undefined : path.resolve(read),
    policyFile: policyFile === undefined ? undefined : path.resolve(policyFile),
    policy,
    cluster:
      policy !== undefined && policyFile === undefined
        ? {
            kubeconfig: str(o.kubeconfig) === undefined ? undefined : path.resolve(o.kubeconfig as string),
            namespace: String(o.namespace ?? env.POD_NAMESPACE ?? 'netoken-system'),
          }
        : undefined,
    count,
    durationMs,
    pcapOut: str(o.pcapOut) === undefined ? undefined : path.resolve(o.pcapOut as string),
    output: outputFormat(o.output),
    summaryEveryMs: Math.round(every * 1000),
  };
}
