/**
 * `netoken inspect`: SYNs on a live interface (the addon's AF_PACKET capture) or in a pcap
 * file, each with its 4-tuple, direction, token option and verdict under a policy's keys
 * (from a policy file or, through the kubeconfig, from the cluster), and a summary of the
 * verdicts. Keys and token values never reach the output, in either format or in errors.
 */
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { listInterfaces } from '../agent/interfaces.js';
import { parsePolicyFile } from '../agent/file-source.js';
import { TCP_ACK, TCP_SYN, parseFrame } from '../lib/packet.js';
import {
  LINKTYPE_LINUX_SLL,
  PACKET_OUTGOING,
  packetType,
  parsePcap,
  pcapHeader,
  pcapRecord,
  sllHeader,
  toEthernet,
  type PcapPacket,
} from '../lib/pcap.js';
import { PolicyError, validatePolicy } from '../lib/policy.js';
import { VERDICTS, type Judgement, type Keyring, type Verdict, judgeSyn, keyringFor } from '../lib/verdict.js';
import { binding, type NativeSynCapture } from '../native/binding.js';
import { isNativeError } from '../native/errors.js';
import { type InspectConfig, UsageError } from './config.js';
import { isoTime } from '../lib/time.js';

/** How often a live capture is read. */
const POLL_MS = 20;
const SNAPLEN = 256;

export type Direction = 'in' | 'out';

/** One SYN as it is printed (JSON) or tabulated: never a key or a token value. */
export interface SynRecord extends Judgement {
  type: 'syn';
  /** capture time, ISO 8601 */
  time: string;
  interface: string | null;
  /** null when the capture does not say (an Ethernet pcap file) */
  direction: Direction | null;
  family: 4 | 6 | null;
  src: string | null;
  sport: number;
  dst: string | null;
  dport: number;
  seq: number;
  policy: string | null;
}

export interface Summary {
  type: 'summary';
  final: boolean;
  syns: number;
  seconds: number;
  verdicts: Record<Verdict, number>;
  /** live: frames the kernel dropped because inspect read too slowly */
  droppedByKernel?: number;
}

/** One captured frame, before it is judged. */
interface Captured {
  atMs: number;
  ts: { sec: number; nsec: number };
  ifname: string | null;
  direction: Direction | null;
  /** the frame as Ethernet, for parseFrame */
  ether: Buffer;
  /** what --pcap-out keeps of it */
  record: PcapPacket;
}

/** The policy whose keys judge the SYNs, or null (then only the option's presence is shown). */
export async function loadKeyring(cfg: InspectConfig): Promise<Keyring | null> {
  if (cfg.policyFile) return keyringFromFile(cfg.policyFile, cfg.policy);
  if (cfg.cluster && cfg.policy) return keyringFromCluster(cfg.policy, cfg.cluster.namespace, cfg.cluster.kubeconfig);
  return null;
}

function keyringFromFile(file: string, name: string | undefined): Keyring {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read the policy file: ${(err as Error).message}`);
  }
  const parsed = parsePolicyFile(text, file);
  const base = path.basename(file);
  const names = [...parsed.policies.keys(), ...parsed.invalidPolicyNames];
  const chosen = name ?? (names.length === 1 ? names[0] : undefined);
  if (chosen === undefined) {
    throw new UsageError(
      names.length === 0
        ? `${base} holds no valid TokenPolicy${parsed.errors.length ? `: ${parsed.errors.map((e) => `${e.where}: ${e.message}`).join('; ')}` : ''}`
        : `${base} holds ${names.length} policies (${names.sort().join(', ')}): choose one with --policy`,
    );
  }
  const policy = parsed.policies.get(chosen);
  if (!policy) {
    const why = parsed.errors
      .filter((e) => e.where.includes(`"${chosen}"`) || parsed.fatal)
      .map((e) => `${e.where}: ${e.message}`);
    throw new UsageError(
      why.length ? why.join('; ') : `${base} has no TokenPolicy "${chosen}" (it has: ${names.sort().join(', ') || 'none'})`,
    );
  }
  const secret = parsed.secrets.get(policy.spec.token.secretRef.name);
  if (!secret)
    throw new UsageError(`Secret "${policy.spec.token.secretRef.name}" named by TokenPolicy "${chosen}" is not in ${base}`);
  return keyringFor(policy, secret, base);
}

async function keyringFromCluster(name: string, namespace: string, kubeconfig: string | undefined): Promise<Keyring> {
  // Loaded only when needed: the Kubernetes client is large.
  const [{ loadKubeConfig, describeError }, k8s, { API_GROUP, API_VERSION }] = await Promise.all([
    import('../lib/kube.js'),
    import('../lib/kube-client.js'),
    import('../lib/types.js'),
  ]);
  const kc = loadKubeConfig(kubeconfig, 'netoken-inspect');
  const ask = async <T>(what: string, call: () => Promise<T>): Promise<T> => {
    try {
      return await call();
    } catch (err) {
      const code = err instanceof k8s.ApiException ? err.code : undefined;
      if (code === 404) throw new Error(`${what} not found`);
      if (code === 401 || code === 403) {
        throw new Error(
          `not allowed to read ${what} (${describeError(err)}); inspect needs get on tokenpolicies and on the policy's Secret: see examples/inspect-rbac.yaml`,
        );
      }
      throw new Error(`reading ${what}: ${describeError(err)}`);
    }
  };
  const raw = await ask(`TokenPolicy "${name}"`, () =>
    new k8s.CustomObjectsApi(kc).getClusterCustomObject({
      group: API_GROUP,
      version: API_VERSION,
      plural: 'tokenpolicies',
      name,
    }),
  );
  let policy;
  try {
    policy = validatePolicy(raw, `TokenPolicy "${name}"`);
  } catch (err) {
    throw new Error(err instanceof PolicyError ? err.message : (err as Error).message);
  }
  const secretName = policy.spec.token.secretRef.name;
  const secret = await ask(`Secret "${secretName}" in namespace ${namespace}`, () =>
    new k8s.CoreV1Api(kc).readNamespacedSecret({ name: secretName, namespace }),
  );
  return keyringFor(policy, secret, `namespace ${namespace}`);
}

/** Frames of a pcap file, as captured, and the file's link type. */
function readPcapFile(file: string): { linkType: number; frames: Captured[] } {
  let buf: Buffer;
  try {
    buf = readFileSync(file);
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${(err as Error).message}`);
  }
  let pcap;
  try {
    pcap = parsePcap(buf);
  } catch (err) {
    throw new UsageError(`${path.basename(file)}: ${(err as Error).message}`);
  }
  const frames: Captured[] = [];
  for (const p of pcap.packets) {
    let ether: Buffer;
    try {
      ether = toEthernet(pcap.linkType, p.data);
    } catch {
      continue; // a frame of a link type or length we cannot read: not a SYN we can judge
    }
    const t = packetType(pcap.linkType, p.data);
    frames.push({
      atMs: p.tsSec * 1000 + Math.floor(p.tsNsec / 1e6),
      ts: { sec: p.tsSec, nsec: p.tsNsec },
      ifname: null,
      direction: t === undefined ? null : t === PACKET_OUTGOING ? 'out' : 'in',
      ether,
      record: p,
    });
  }
  return { linkType: pcap.linkType, frames };
}

/** A live capture, read every POLL_MS until stopped. */
class LiveSource {
  private readonly cap: NativeSynCapture;
  private names = new Map<number, string>();

  private constructor(cap: NativeSynCapture, names: Map<number, string>) {
    this.cap = cap;
    this.names = names;
  }

  static async open(ifname: string): Promise<LiveSource> {
    const ifs = await listInterfaces();
    const names = new Map(ifs.map((i) => [i.ifindex, i.name]));
    let ifindex = 0;
    if (ifname !== 'any') {
      const i = ifs.find((x) => x.name === ifname);
      if (!i)
        throw new UsageError(
          `no interface "${ifname}" in this network namespace (there are: ${ifs.map((x) => x.name).join(', ')})`,
        );
      ifindex = i.ifindex;
    }
    try {
      return new LiveSource(binding().openSynCapture(ifindex, { snaplen: SNAPLEN }), names);
    } catch (err) {
      if (isNativeError(err) && err.code === 'EPERM')
        throw new Error(`${err.message}: watching an interface needs root (CAP_NET_RAW)`);
      throw err;
    }
  }

  read(): Captured[] {
    return this.cap.recv(512).map((f) => {
      const eth = Buffer.alloc(14);
      f.addr.copy(eth, 6, 0, Math.min(6, f.addr.length));
      eth.writeUInt16BE(f.protocol, 12);
      const name = this.names.get(f.ifindex) ?? `if${f.ifindex}`;
      return {
        atMs: f.tsSec * 1000 + Math.floor(f.tsNsec / 1e6),
        ts: { sec: f.tsSec, nsec: f.tsNsec },
        ifname: name,
        direction: f.pktType === PACKET_OUTGOING ? 'out' : 'in',
        ether: Buffer.concat([eth, f.data]),
        record: {
          tsSec: f.tsSec,
          tsNsec: f.tsNsec,
          data: Buffer.concat([sllHeader(f.pktType, f.hatype, f.addr, f.protocol), f.data]),
          origLen: f.length + 16,
        },
      };
    });
  }

  dropped(): number {
    return this.cap.stats().drops;
  }

  close(): void {
    this.cap.close();
  }
}

/** The SYN record of a captured frame, or null when it is not an opening SYN. */
export function synRecord(c: Pick<Captured, 'atMs' | 'ifname' | 'direction' | 'ether'>, ring: Keyring | null): SynRecord | null {
  const f = parseFrame(c.ether);
  if (!f.tcp || (f.tcp.flags & (TCP_SYN | TCP_ACK)) !== TCP_SYN) return null;
  return {
    type: 'syn',
    time: isoTime(c.atMs),
    interface: c.ifname,
    direction: c.direction,
    family: f.family,
    src: f.src,
    sport: f.tcp.sport,
    dst: f.dst,
    dport: f.tcp.dport,
    seq: f.tcp.seq,
    policy: ring?.policy ?? null,
    ...judgeSyn(f, ring, c.atMs),
  };
}

function endpoint(addr: string | null, port: number): string {
  if (addr === null) return `?:${port}`;
  return addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`;
}

const COLUMNS = ['TIME', 'INTERFACE', 'DIR', 'SOURCE', 'DESTINATION', 'OPTION', 'VERDICT', 'DETAIL'];
const WIDTHS = [12, 10, 3, 24, 24, 11, 14];

function row(cells: string[]): string {
  return (
    cells
      .map((c, i) => (i < WIDTHS.length ? c.padEnd(WIDTHS[i] as number) : c))
      .join(' ')
      .trimEnd() + '\n'
  );
}

/** One table line per SYN. */
export function formatSyn(r: SynRecord): string {
  const t = new Date(r.time);
  const clock = `${String(t.getHours()).padStart(2, '0')}:${String(t.getMinutes()).padStart(2, '0')}:${String(t.getSeconds()).padStart(2, '0')}.${String(t.getMilliseconds()).padStart(3, '0')}`;
  const option = r.option ? `${r.option.kind}/0x${r.option.exid.toString(16).padStart(4, '0')}` : '-';
  const detail: string[] = [];
  if (r.key && r.key !== 'current') detail.push(`key ${r.key}`);
  if (r.epochOffset) detail.push(`epoch ${r.epochOffset > 0 ? '+1' : '-1'}`);
  if (r.clockOffsetSeconds !== undefined) {
    detail.push(
      r.clockOffsetSeconds > 0
        ? `sender clock ≥${r.clockOffsetSeconds}s ahead`
        : `sender clock ≥${-r.clockOffsetSeconds}s behind or SYN late`,
    );
    if (r.withinClockSkew !== undefined && r.policy)
      detail.push(r.withinClockSkew ? 'within the clock-skew grace' : 'beyond the clock-skew grace');
  }
  if (r.detail) detail.push(r.detail);
  return row([
    clock,
    r.interface ?? '-',
    r.direction ?? '-',
    endpoint(r.src, r.sport),
    endpoint(r.dst, r.dport),
    option,
    r.verdict,
    detail.join('; '),
  ]);
}

export function formatSummary(s: Summary): string {
  const counts =
    VERDICTS.filter((v) => s.verdicts[v] > 0)
      .map((v) => `${v} ${s.verdicts[v]}`)
      .join(', ') || 'none';
  const dropped = s.droppedByKernel ? `; ${s.droppedByKernel} frame(s) dropped by the kernel before inspect read them` : '';
  return `${s.final ? 'summary' : 'so far'}: ${s.syns} SYN(s) in ${s.seconds.toFixed(1)} s: ${counts}${dropped}\n`;
}

export async function runInspect(
  cfg: InspectConfig,
  out: (s: string) => void = (s) => process.stdout.write(s),
  err: (s: string) => void = (s) => process.stderr.write(s),
): Promise<number> {
  const ring = await loadKeyring(cfg);
  const live = cfg.interface !== undefined ? await LiveSource.open(cfg.interface) : undefined;
  const file = cfg.read !== undefined ? readPcapFile(cfg.read) : undefined;
  const started = Date.now();
  const verdicts = Object.fromEntries(VERDICTS.map((v) => [v, 0])) as Record<Verdict, number>;
  let syns = 0;
  let pcapFd: number | undefined;
  const json = cfg.output === 'json';
  const summary = (final: boolean): Summary => {
    const s: Summary = { type: 'summary', final, syns, seconds: (Date.now() - started) / 1000, verdicts: { ...verdicts } };
    if (live) s.droppedByKernel = live.dropped();
    return s;
  };
  const printSummary = (final: boolean): void => {
    const s = summary(final);
    if (json) out(JSON.stringify(s) + '\n');
    else out(formatSummary(s));
  };
  try {
    if (cfg.pcapOut) {
      pcapFd = openSync(cfg.pcapOut, 'w', 0o600);
      writeSync(pcapFd, pcapHeader(file ? file.linkType : LINKTYPE_LINUX_SLL, file ? 262144 : SNAPLEN + 16));
    }
    const keys = ring
      ? `policy ${ring.policy} (${ring.mode}, option ${ring.kind}/0x${ring.exid.toString(16)}, keys: ${ring.keys.map((k) => k.label).join(', ')}${ring.mode === 'Keyed' ? `, clock-skew grace ${ring.clockSkewSeconds} s` : ''})`
      : 'no policy: showing whether SYNs carry an experimental option, not whether it is valid';
    err(`${live ? `watching ${cfg.interface}` : `reading ${cfg.read}`}; ${keys}\n`);
    if (!json) out(row(COLUMNS));
    const take = (c: Captured): boolean => {
      const r = synRecord(c, ring);
      if (!r) return true;
      syns++;
      verdicts[r.verdict]++;
      out(json ? JSON.stringify(r) + '\n' : formatSyn(r));
      if (pcapFd !== undefined) writeSync(pcapFd, pcapRecord(c.record));
      return cfg.count === undefined || syns < cfg.count;
    };
    if (file || !live) {
      for (const c of file?.frames ?? []) if (!take(c)) break;
      printSummary(true);
      return 0;
    }
    return await new Promise<number>((resolve) => {
      let stopped = false;
      let nextSummary = cfg.summaryEveryMs > 0 ? started + cfg.summaryEveryMs : Infinity;
      const stop = (code: number): void => {
        if (stopped) return;
        stopped = true;
        clearInterval(timer);
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        printSummary(true);
        resolve(code);
      };
      const onSignal = (): void => stop(0);
      const timer = setInterval(() => {
        try {
          for (const c of live.read()) {
            if (!take(c)) return stop(0);
          }
        } catch (e) {
          err(`netoken: ${(e as Error).message}\n`);
          return stop(1);
        }
        const now = Date.now();
        if (cfg.durationMs !== undefined && now - started >= cfg.durationMs) return stop(0);
        if (now >= nextSummary) {
          printSummary(false);
          nextSummary += cfg.summaryEveryMs;
        }
      }, POLL_MS);
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
    });
  } finally {
    live?.close();
    if (pcapFd !== undefined) closeSync(pcapFd);
  }
}
