/**
 * The whole surface of the native addon (native/, built by cmake-js into
 * build/Release/netoken_native.node). This module only declares and loads it;
 * friendlier wrappers live in src/native/bpf.ts. Nothing else imports the addon.
 *
 * Every failing libbpf or syscall call throws a NativeError (see errors.ts):
 * an Error with `code` (e.g. 'EPERM'), `errno` (positive number) and `syscall`
 * (the libbpf function or syscall that failed, e.g. 'bpf_tc_attach'); a failed
 * object load also carries `log`, the tail of libbpf's (and the verifier's) log.
 * Bad arguments (wrong type, a key of the wrong size) throw TypeError/RangeError.
 * Calls on a closed handle throw a NativeError with code 'EBADF'.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { PACKAGE_ROOT } from '../lib/package.js';

export type Direction = 'ingress' | 'egress';

export interface ProgramInfo {
  /** as the kernel stores it: at most 15 characters */
  name: string;
  /** enum bpf_prog_type */
  type: number;
  id: number;
  /** 8-byte program tag as hex */
  tag: string;
}

export interface MapInfo {
  /** as the kernel stores it: at most 15 characters */
  name: string;
  /** enum bpf_map_type */
  type: number;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

export interface LinkInfo {
  id: number;
  progId: number;
  /** enum bpf_link_type */
  type: number;
  /** for TCX links; 0 otherwise */
  ifindex: number;
  /** enum bpf_attach_type (46 = BPF_TCX_INGRESS, 47 = BPF_TCX_EGRESS) */
  attachType: number;
}

export interface TestRunOptions {
  /** packet bytes, starting with the Ethernet header */
  data: Buffer;
  /** default 1 */
  repeat?: number;
  /** optional struct __sk_buff / xdp_md passed as ctx_in (and read back as ctxOut) */
  ctxIn?: Buffer;
  /** room for the output packet; default data.length + 256 */
  dataSizeOut?: number;
}

export interface TestRunResult {
  /** the program's return value as a signed 32-bit number (TC_ACT_UNSPEC = -1) */
  retval: number;
  /** output packet, exactly as long as the kernel reports (ENOSPC if dataSizeOut is too small) */
  data: Buffer;
  /** average ns per run, as the kernel reports it (whole nanoseconds) */
  duration: number;
  /**
   * CPU time the calling thread spent in the call, in ns (CLOCK_THREAD_CPUTIME_ID): the
   * runs plus the call's fixed cost. Divided by the repetitions, a finer mean than
   * `duration` when there are many.
   */
  cpuNs: number;
  /** ctx_out when ctxIn was given */
  ctxOut: Buffer | null;
}

export interface CreateMapOptions {
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags?: number;
  name?: string;
}

export interface TcFilterSpec {
  ifindex: number;
  direction: Direction;
  handle: number;
  priority: number;
}

export interface OpenOptions {
  /**
   * maps declared with LIBBPF_PIN_BY_NAME are pinned under (and reused from) this bpffs
   * directory; without it libbpf uses /sys/fs/bpf. A pinned map whose type, sizes or
   * flags differ from the object's declaration makes the load fail with EINVAL.
   */
  pinRoot?: string;
}

/**
 * A handle owning one BPF map fd. close() is idempotent; the fd is also closed when garbage-collected.
 * Keys are keySize bytes; values are valueSize bytes, except for per-CPU maps (PERCPU_HASH,
 * PERCPU_ARRAY, LRU_PERCPU_HASH) where they are numPossibleCpus() slots of valueSize rounded up to 8.
 */
export interface NativeMap {
  /** -1 once closed */
  readonly fd: number;
  readonly info: MapInfo;
  lookup(key: Buffer): Buffer | null;
  /** flags: BPF_ANY (0), BPF_NOEXIST (1), BPF_EXIST (2) */
  update(key: Buffer, value: Buffer, flags?: number): void;
  /** false when the key was absent */
  delete(key: Buffer): boolean;
  /** every key, by bpf_map_get_next_key (at most maxEntries of them) */
  keys(): Buffer[];
  pin(path: string): void;
  close(): void;
}

/** A handle owning one BPF program fd. */
export interface NativeProgram {
  /** -1 once closed */
  readonly fd: number;
  readonly info: ProgramInfo;
  pin(path: string): void;
  testRun(opts: TestRunOptions): TestRunResult;
  close(): void;
}

/** A handle owning one bpf_link fd (closing it does not detach a pinned link; closing the last fd of an unpinned one does). */
export interface NativeLink {
  /** -1 once closed */
  readonly fd: number;
  info(): LinkInfo;
  /** atomically replace the program behind the link (bpf_link_update) */
  update(prog: NativeProgram): void;
  pin(path: string): void;
  /** BPF_LINK_DETACH: the hook goes away even if pinned */
  detach(): void;
  close(): void;
}

/** An opened and loaded BPF ELF object. */
export interface NativeObject {
  readonly path: string;
  programNames(): string[];
  mapNames(): string[];
  /** a new handle (dup'd fd) on the named program; lives on after the object is closed */
  program(name: string): NativeProgram;
  map(name: string): NativeMap;
  close(): void;
}

export interface XdpQueryResult {
  /** 0 none, 1 drv, 2 skb (generic), 3 hw, 4 multi (XDP_ATTACHED_*) */
  attachMode: number;
  progId: number;
  drvProgId: number;
  skbProgId: number;
  hwProgId: number;
}

/** One frame a SynCapture received, without its link-layer header (what a Linux cooked capture keeps). */
export interface CapturedFrame {
  /** the frame from the network header on, at most snaplen bytes */
  data: Buffer;
  /** the frame's length on the wire (without the link-layer header) */
  length: number;
  /** EtherType of the network header (0x0800 IPv4, 0x86dd IPv6) */
  protocol: number;
  ifindex: number;
  /** sll_pkttype: 0 to this host, 1 broadcast, 2 multicast, 3 to another host, 4 sent by this host */
  pktType: number;
  /** ARPHRD_* of the device (1 Ethernet, 65534 none, e.g. tun) */
  hatype: number;
  /** link-layer source address, when the device has one */
  addr: Buffer;
  /** kernel receive time (CLOCK_REALTIME) */
  tsSec: number;
  tsNsec: number;
}

/**
 * An AF_PACKET socket that receives TCP SYNs (without ACK) of one interface, or of all of
 * them, in both directions; a classic-BPF filter drops everything else in the kernel.
 */
export interface NativeSynCapture {
  /** -1 once closed */
  readonly fd: number;
  /** the frames waiting now, oldest first, at most max (default 256); never blocks */
  recv(max?: number): CapturedFrame[];
  /** frames the filter kept and frames the kernel dropped for want of buffer, since open */
  stats(): { packets: number; drops: number };
  close(): void;
}

export interface NativeBinding {
  libbpfVersion(): string;
  numPossibleCpus(): number;
  /** malloc_trim(0): hands the C heap freed but held by the allocator back to the system */
  trimMemory(): boolean;

  openObject(path: string, opts?: OpenOptions): NativeObject;
  mapFromPin(path: string): NativeMap;
  mapFromId(id: number): NativeMap;
  createMap(opts: CreateMapOptions): NativeMap;
  programFromPin(path: string): NativeProgram;
  programFromId(id: number): NativeProgram;
  linkFromPin(path: string): NativeLink;
  linkFromId(id: number): NativeLink;

  /** TCX link (kernel 6.6+): bpf_link_create(prog, ifindex, BPF_TCX_INGRESS/EGRESS) */
  createTcxLink(prog: NativeProgram, ifindex: number, direction: Direction): NativeLink;
  /** program ids attached by TCX at (ifindex, direction), in run order (BPF_PROG_QUERY) */
  tcxQuery(ifindex: number, direction: Direction): number[];

  /** create the clsact qdisc; created=false when it existed already (EEXIST) */
  tcHookCreate(ifindex: number): { created: boolean };
  /** remove the clsact qdisc (and every filter on it): only call for one we created */
  tcHookDestroy(ifindex: number): void;
  tcAttach(spec: TcFilterSpec & { progFd: number; replace: boolean }): { progId: number };
  /** ENOENT when no such filter (also when there is no clsact qdisc at all) */
  tcDetach(spec: TcFilterSpec): void;
  /** program id of the filter at (handle, priority), or null when there is none (or no clsact qdisc) */
  tcQuery(spec: TcFilterSpec): number | null;

  /** flags: XDP_FLAGS_* (SKB_MODE 2, DRV_MODE 4, UPDATE_IF_NOEXIST 1, REPLACE 16) */
  xdpAttach(ifindex: number, progFd: number, flags: number): void;
  xdpDetach(ifindex: number, flags: number): void;
  /** ENODEV when the interface does not exist */
  xdpQuery(ifindex: number): XdpQueryResult;

  /** statfs magic check for BPF_FS_MAGIC; false for a path that does not exist */
  isBpffs(path: string): boolean;
  /** mount -t bpf bpf PATH with mode=0700 (creates PATH if missing); mounts again if one is there */
  mountBpffs(path: string): void;
  /**
   * An exclusive flock on the directory PATH: the fd holding it (close it to let go; the kernel
   * lets go when the process exits), or -1 when another open file of any process holds it.
   */
  lockDir(path: string): number;

  /** capture SYNs on ifindex (0: every interface); needs CAP_NET_RAW; snaplen 64..65535, default 256 */
  openSynCapture(ifindex: number, opts?: { snaplen?: number }): NativeSynCapture;
}

const addonPath = path.join(PACKAGE_ROOT, 'build/Release/netoken_native.node');

let cached: NativeBinding | undefined;

/** Load the addon once; a missing build says how to make it. */
export function binding(): NativeBinding {
  if (cached) return cached;
  if (!existsSync(addonPath)) {
    throw new Error(
      `native addon not built (${path.relative(process.cwd(), addonPath)} missing): run \`npm run build\` ` +
        '(needs libbpf-dev libelf-dev zlib1g-dev cmake g++; see scripts/install-deps.sh)',
    );
  }
  const require = createRequire(import.meta.url);
  try {
    cached = require(addonPath) as NativeBinding;
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    if (/libbpf\.so/.test(msg)) {
      throw new Error(`native addon cannot load libbpf (${msg}): apt-get install libbpf1`);
    }
    throw err;
  }
  return cached;
}
