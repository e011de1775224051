/**
 * Fuzz cases for the egress marker: SYNs of every shape the marker has to read (IPv4 with
 * and without IP options, IPv6 with extension headers, VLAN and QinQ, fragments, every kind
 * of TCP option list, data, CHECKSUM_PARTIAL-style checksums), other traffic, and mutations
 * of all of them (bit flips, byte sets, truncation, trailing bytes, length fields that lie).
 * A case depends only on (seed, index), see rng.ts.
 */
import {
  buildFrame,
  ipv4HeaderChecksum,
  tcpChecksum,
  ETH_P_8021AD,
  ETH_P_8021Q,
  ETH_P_ARP,
  ETH_P_IP,
  ETH_P_IPV6,
  IPPROTO_ICMP,
  IPPROTO_ICMPV6,
  IPPROTO_UDP,
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  TCP_URG,
  type ChecksumMode,
  type Ipv6ExtHeader,
  type VlanTag,
} from '../src/lib/packet.js';
import { Rng } from './rng.js';
import { PORTS, POLICIES, V4_POOLS, V6_POOLS } from './world.js';

export interface FuzzCase {
  seed: number;
  index: number;
  frame: Buffer;
  /** index into the run's device list (0 is always the loopback device) */
  device: number;
  /** __sk_buff gso_segs / gso_size given to the test run (0: none) */
  gsoSegs: number;
  gsoSize: number;
  /** how the case was made, for the person reading a failure */
  recipe: string[];
  /** a sequence of frames sent one after the other (fragments.ts); `frame` is the first */
  frames?: Buffer[];
}

/** Where the generator put the headers (before any mutation). */
export interface Layout {
  l3: number;
  family: 4 | 6 | null;
  /** upper-layer header offset, when there is an IP header */
  l4: number | null;
}

const TCP_ECE = 0x40;
const TCP_CWR = 0x80;

/** Build case `index` of the run with `seed`. `devices` is how many devices the run has (1 or more). */
export function generateCase(seed: number, index: number, devices: number): FuzzCase {
  const rng = Rng.forCase(seed, index);
  const recipe: string[] = [];

  // The same draws whatever `devices` is, so that a seed means the same packets everywhere.
  const devDraw = rng.int(6);
  const device = devDraw < 4 || devDraw - 3 >= devices ? 0 : devDraw - 3;
  let gsoSegs = 0;
  let gsoSize = 0;
  if (rng.chance(0.06)) {
    gsoSegs = rng.pick([0, 1, 2, 45, rng.u32() & 0xffff]);
    gsoSize = rng.pick([0, 1448, 536, rng.u32() & 0xffff]);
    recipe.push(`gso_segs=${gsoSegs} gso_size=${gsoSize}`);
  }

  const built = rng.chance(0.85) ? genSyn(rng, recipe) : genOther(rng, recipe);
  let frame = built.frame;
  if (rng.chance(0.25)) frame = mutate(rng, frame, built.layout, recipe);
  const min = testRunMinimum(frame);
  if (frame.length < min) {
    frame = Buffer.concat([frame, Buffer.alloc(min - frame.length)]);
    recipe.push(`zero-padded to ${min} bytes (test_run's minimum)`);
  }
  return { seed, index, frame, device, gsoSegs, gsoSize, recipe };
}

/**
 * BPF_PROG_TEST_RUN refuses (EINVAL) frames shorter than an Ethernet header, and frames
 * whose EtherType is IPv4 or IPv6 but that cannot hold the fixed IP header. Truncated IP
 * headers still reach the program behind a VLAN tag.
 */
export function testRunMinimum(frame: Buffer): number {
  if (frame.length < 14) return 14;
  const type = frame.readUInt16BE(12);
  return type === ETH_P_IP ? 14 + 20 : type === ETH_P_IPV6 ? 14 + 40 : 14;
}

// ---------------------------------------------------------------------------------------
// Addresses, ports, tags

function v4Addr(rng: Rng): string {
  const pool = rng.weighted(V4_POOLS);
  const parts = pool.split('.').filter((p) => p !== '');
  if (parts.length === 4) return pool;
  while (parts.length < 4) parts.push(String(rng.int(256)));
  return parts.join('.');
}

function v6Addr(rng: Rng): string {
  const pool = rng.weighted(V6_POOLS);
  if (pool.includes('::') && !pool.endsWith('::')) return pool;
  if (pool.endsWith('::')) return pool + rng.int(0x10000).toString(16);
  const groups = pool.split(':').filter((g) => g !== '');
  while (groups.length < 8) groups.push(rng.int(0x10000).toString(16));
  return groups.join(':');
}

function port(rng: Rng): number {
  return rng.chance(0.8) ? rng.weighted(PORTS) : rng.int(0x10000);
}

export function vlanTags(rng: Rng, recipe: string[]): VlanTag[] {
  const shape = rng.weighted<string>([
    [55, 'none'],
    [18, '802.1Q'],
    [7, '802.1ad'],
    [12, 'QinQ'],
    [3, '802.1Q x2'],
    [2, '3 tags'],
  ]);
  if (shape === 'none') return [];
  recipe.push(`vlan ${shape}`);
  const tag = (tpid: number): VlanTag => ({ id: rng.int(4096), tpid, pcp: rng.int(8) });
  switch (shape) {
    case '802.1Q':
      return [tag(ETH_P_8021Q)];
    case '802.1ad':
      return [tag(ETH_P_8021AD)];
    case 'QinQ':
      return [tag(ETH_P_8021AD), tag(ETH_P_8021Q)];
    case '802.1Q x2':
      return [tag(ETH_P_8021Q), tag(ETH_P_8021Q)];
    default:
      return [tag(ETH_P_8021AD), tag(ETH_P_8021Q), tag(ETH_P_8021Q)];
  }
}

// ---------------------------------------------------------------------------------------
// TCP options

/** One option of a kind a real stack sends, or one of the experimental kinds. */
export function someOption(rng: Rng): Buffer {
  const ours = rng.pick(POLICIES);
  switch (rng.int(14)) {
    case 0:
      return Buffer.from([2, 4, rng.int(256), rng.int(256)]);
    case 1:
      return Buffer.from([3, 3, rng.int(15)]);
    case 2:
      return Buffer.from([4, 2]);
    case 3:
      return Buffer.concat([Buffer.from([8, 10]), rng.bytes(8)]);
    case 4: {
      const n = rng.range(1, 4);
      return Buffer.concat([Buffer.from([5, 2 + 8 * n]), rng.bytes(8 * n)]);
    }
    case 5:
      return Buffer.concat([Buffer.from([19, 18]), rng.bytes(16)]);
    case 6: {
      const n = rng.pick([0, 4, 8, 16]);
      return Buffer.concat([Buffer.from([34, 2 + n]), rng.bytes(n)]);
    }
    case 7:
      return Buffer.concat([Buffer.from([28, 4]), rng.bytes(2)]);
    case 8: {
      const n = rng.range(2, 22);
      return Buffer.concat([Buffer.from([30, 2 + n]), rng.bytes(n)]);
    }
    case 9: {
      const n = rng.range(2, 14);
      return Buffer.concat([Buffer.from([29, 2 + n]), rng.bytes(n)]);
    }
    case 10:
      // The option of some policy, exactly as the marker writes it.
      return tokenLike(ours.kind, ours.exid, 12, rng);
    case 11:
      // A policy's kind with another ExID: not ours.
      return tokenLike(ours.kind, (ours.exid + rng.range(1, 0xfffe)) & 0xffff, 12, rng);
    case 12:
      return tokenLike(rng.pick([253, 254]), rng.int(0x10000), rng.range(4, 16), rng);
    default: {
      const n = rng.range(0, 10);
      return Buffer.concat([Buffer.from([rng.range(2, 255), 2 + n]), rng.bytes(n)]);
    }
  }
}

export function tokenLike(kind: number, exid: number, len: number, rng: Rng): Buffer {
  const o = Buffer.concat([Buffer.from([kind, len, exid >> 8, exid & 0xff]), rng.bytes(Math.max(0, len - 4))]);
  return o.subarray(0, Math.max(len, 2));
}

/** Valid options up to `budget` bytes, NOP- or EOL-padded to a multiple of 4. Returns the list and where each option starts. */
export function validOptions(rng: Rng, budget: number): { bytes: Buffer; starts: number[] } {
  const parts: Buffer[] = [];
  const starts: number[] = [];
  let len = 0;
  for (let tries = 0; tries < 12 && len < budget; tries++) {
    const o = rng.chance(0.15) ? Buffer.from([1]) : someOption(rng);
    if (len + o.length > budget) continue;
    starts.push(len);
    parts.push(o);
    len += o.length;
  }
  const padByte = rng.chance(0.8) ? 1 : 0;
  const padded = (4 - (len % 4)) % 4;
  if (len + padded <= 40) {
    for (let i = 0; i < padded; i++) {
      starts.push(len + i);
      parts.push(Buffer.from([padByte]));
    }
  }
  return { bytes: Buffer.concat(parts), starts };
}

const LINUX_SYN = (rng: Rng): Buffer =>
  Buffer.concat([Buffer.from('020405b40402080a', 'hex'), rng.bytes(8), Buffer.from('01030307', 'hex')]);

function tcpOptions(rng: Rng, recipe: string[]): Buffer {
  const strategy = rng.weighted<string>([
    [12, 'none'],
    [18, 'stack'],
    [28, 'valid'],
    [8, 'ours'],
    [24, 'adversarial'],
    [5, 'full'],
    [5, 'random'],
  ]);
  let opts: Buffer;
  let what: string = strategy;
  switch (strategy) {
    case 'none':
      opts = Buffer.alloc(0);
      break;
    case 'stack': {
      const ts = rng.bytes(8);
      const pick = rng.int(6);
      what = `stack ${['linux', 'windows', 'mss', 'macos', 'linux+mptcp', 'linux+md5'][pick] ?? ''}`;
      opts = [
        () => LINUX_SYN(rng),
        () => Buffer.from('020405b4010303080101 0402'.replace(/ /g, ''), 'hex'),
        () => Buffer.from('020405b4', 'hex'),
        // macOS pads with EOL: never marked.
        () =>
          Buffer.concat([Buffer.from('020405b40103030601010 80a'.replace(/ /g, ''), 'hex'), ts, Buffer.from('04020000', 'hex')]),
        () => Buffer.concat([LINUX_SYN(rng), Buffer.from('1e0c8101', 'hex'), rng.bytes(8)]),
        () => Buffer.concat([Buffer.from('0101', 'hex'), Buffer.from([19, 18]), rng.bytes(16), Buffer.from('020405b4', 'hex')]),
      ][pick]!();
      break;
    }
    case 'valid':
      opts = validOptions(rng, rng.range(0, 40)).bytes;
      break;
    case 'ours': {
      // One or more options of some policy, in a list that otherwise fits.
      const copies = rng.pick([1, 1, 2, 3]);
      const p = rng.pick(POLICIES);
      const parts: Buffer[] = [validOptions(rng, rng.range(0, 16)).bytes];
      for (let i = 0; i < copies; i++)
        parts.splice(rng.int(parts.length + 1), 0, tokenLike(p.kind, p.exid, rng.pick([12, 12, 4, 8, 20]), rng));
      opts = Buffer.concat(parts);
      what = `ours x${copies} (kind ${p.kind} exid 0x${p.exid.toString(16)})`;
      break;
    }
    case 'adversarial': {
      const base = validOptions(rng, rng.range(2, 40));
      opts = Buffer.from(base.bytes);
      const attack = rng.weighted<string>([
        [3, 'zero length'],
        [3, 'length 1'],
        [3, 'length past end'],
        [2, 'length 255'],
        [3, 'no length byte'],
        [4, 'EOL in the middle'],
        [2, 'EOL at the end'],
        [3, 'our kind, short'],
        [2, 'odd length, no padding'],
      ]);
      what = `adversarial: ${attack}`;
      const longStarts = base.starts.filter((s) => (opts[s] ?? 0) > 1 && s + 1 < opts.length);
      const at = longStarts.length > 0 ? rng.pick(longStarts) : -1;
      switch (attack) {
        case 'zero length':
          if (at >= 0) opts[at + 1] = 0;
          else opts = Buffer.concat([opts, Buffer.from([2, 0, 5, 0xb4])]);
          break;
        case 'length 1':
          if (at >= 0) opts[at + 1] = 1;
          else opts = Buffer.concat([opts, Buffer.from([3, 1, 1, 1])]);
          break;
        case 'length past end':
          if (at >= 0) opts[at + 1] = opts.length - at + rng.range(1, 24);
          else opts = Buffer.concat([opts, Buffer.from([8, 10, 0, 0])]);
          break;
        case 'length 255':
          if (at >= 0) opts[at + 1] = 255;
          break;
        case 'no length byte':
          // The last byte starts an option that has no room for its length.
          opts = Buffer.concat([opts.subarray(0, Math.min(opts.length, 39)), Buffer.from([rng.pick([2, 3, 8, 253, 254])])]);
          while (opts.length % 4 !== 0) opts = Buffer.concat([Buffer.from([1]), opts]);
          break;
        case 'EOL in the middle': {
          const s = base.starts.length > 0 ? rng.pick(base.starts) : 0;
          opts[s] = 0;
          break;
        }
        case 'EOL at the end':
          opts = Buffer.concat([opts.subarray(0, Math.min(opts.length, 36)), Buffer.from([0, 0, 0, 0])]).subarray(0, 40);
          break;
        case 'our kind, short': {
          const p = rng.pick(POLICIES);
          opts = Buffer.concat([Buffer.from([p.kind, rng.pick([2, 3]), p.exid >> 8, p.exid & 0xff]), opts]).subarray(0, 40);
          break;
        }
        default:
          opts = opts.subarray(0, Math.max(0, opts.length - rng.range(1, 3)));
          break;
      }
      break;
    }
    case 'full': {
      // Right at the edge: 28 bytes leave exactly room for ours, 29..40 do not.
      const len = rng.pick([28, 28, 29, 32, 36, 40]);
      const fill = rng.int(3);
      what = `full ${len} (${['NOP', 'MSS', 'one option'][fill] ?? ''})`;
      if (fill === 0) opts = Buffer.alloc(len, 1);
      else if (fill === 1)
        opts = Buffer.concat([
          ...Array.from({ length: len >> 2 }, () => Buffer.from('020405b4', 'hex')),
          Buffer.alloc(len & 3, 1),
        ]);
      else opts = Buffer.concat([Buffer.from([rng.range(2, 255), len]), rng.bytes(len - 2)]);
      break;
    }
    default:
      opts = rng.bytes(rng.range(1, 40));
      break;
  }
  if (opts.length > 40) opts = opts.subarray(0, 40);
  recipe.push(`tcp options ${what} (${opts.length} bytes)`);
  return opts;
}

// ---------------------------------------------------------------------------------------
// IP options and IPv6 extension headers

export function ipv4Options(rng: Rng): Buffer {
  const parts: Buffer[] = [];
  let len = 0;
  const target = rng.range(1, 40);
  while (len < target) {
    const o = rng.weighted<() => Buffer>([
      [3, () => Buffer.from([1])],
      [1, () => Buffer.from([0])],
      [
        2,
        () => {
          const n = rng.range(1, 9);
          return Buffer.concat([Buffer.from([7, 3 + 4 * n, 4]), Buffer.alloc(4 * n)]);
        },
      ],
      [1, () => Buffer.from([148, 4, 0, 0])],
      [
        1,
        () => {
          const n = rng.range(0, 8);
          return Buffer.concat([Buffer.from([rng.range(2, 255), 2 + n]), rng.bytes(n)]);
        },
      ],
    ])();
    if (len + o.length > 40) break;
    parts.push(o);
    len += o.length;
  }
  return Buffer.concat(parts);
}

export interface Ipv4Extras {
  ipOptions?: Buffer;
  mf: boolean;
  fragOffset: number;
}

/**
 * Maybe IPv4 options and maybe fragment fields, each with its own chance: `options` and
 * `fragment` pick whether to add them, `mf` is the chance of more-fragments and
 * `firstFragment` the chance of offset 0. Written down in `recipe`.
 */
export function ipv4Extras(
  rng: Rng,
  recipe: string[],
  chance: { options: number; fragment: number; mf: number; firstFragment: number },
): Ipv4Extras {
  const out: Ipv4Extras = { mf: false, fragOffset: 0 };
  if (rng.chance(chance.options)) {
    out.ipOptions = ipv4Options(rng);
    recipe.push(`ip options ${out.ipOptions.length} bytes`);
  }
  if (rng.chance(chance.fragment)) {
    out.mf = rng.chance(chance.mf);
    out.fragOffset = rng.chance(chance.firstFragment) ? 0 : rng.range(1, 0x1fff);
    recipe.push(`fragment mf=${out.mf} offset=${out.fragOffset}`);
  }
  return out;
}

const EXT_TYPES = [0, 43, 44, 60, 51, 135, 139, 140, 253, 254];

export function ipv6Ext(rng: Rng, recipe: string[]): Ipv6ExtHeader[] {
  const n = rng.weighted<number>([
    [6, 1],
    [3, 2],
    [1, 3],
    [1, 6],
    [1, 7],
    [1, 9],
  ]);
  const out: Ipv6ExtHeader[] = [];
  for (let i = 0; i < n; i++) {
    const type = rng.pick(EXT_TYPES);
    if (type === 44) {
      // offset (13 bits) | res | M, then the identification
      const offset = rng.chance(0.6) ? 0 : rng.range(1, 0x1fff);
      const word = (offset << 3) | (rng.chance(0.5) ? 1 : 0);
      out.push({ type, body: Buffer.from([word >> 8, word & 0xff, ...rng.bytes(4)]) });
    } else {
      out.push({ type, body: rng.bytes(6 + 8 * rng.pick([0, 0, 1, 2])) });
    }
  }
  recipe.push(`ipv6 ext [${out.map((e) => e.type).join(',')}]`);
  return out;
}

/** Bytes taken by buildFrame's encoding of these extension headers. */
export function extLength(ext: readonly Ipv6ExtHeader[]): number {
  return ext.reduce((s, e) => s + Math.ceil((2 + (e.body?.length ?? 6)) / 8) * 8, 0);
}

// ---------------------------------------------------------------------------------------
// Frames

function genSyn(rng: Rng, recipe: string[]): { frame: Buffer; layout: Layout } {
  const family: 4 | 6 = rng.chance(0.5) ? 4 : 6;
  const vlan = vlanTags(rng, recipe);
  const src = family === 4 ? v4Addr(rng) : v6Addr(rng);
  const dst = family === 4 ? v4Addr(rng) : v6Addr(rng);
  const flags = rng.weighted<number>([
    [70, TCP_SYN],
    [8, TCP_SYN | TCP_ECE | TCP_CWR],
    [2, TCP_SYN | TCP_FIN],
    [2, TCP_SYN | TCP_PSH | TCP_URG],
    [6, TCP_SYN | TCP_ACK],
    [4, TCP_ACK],
    [2, TCP_RST],
    [6, rng.int(256)],
  ]);
  const options = tcpOptions(rng, recipe);
  const checksum = rng.weighted<ChecksumMode>([
    [70, 'full'],
    [22, 'partial'],
    [8, rng.int(0x10000)],
  ]);
  const payload = rng.chance(0.08) ? rng.bytes(rng.range(1, 48)) : undefined;
  recipe.push(
    `ipv${family} ${src} -> ${dst}`,
    `tcp flags 0x${flags.toString(16)} checksum ${String(checksum)}${payload ? ` payload ${payload.length}` : ''}`,
  );

  let ipv4: Ipv4Extras = { mf: false, fragOffset: 0 };
  let ipChecksum: ChecksumMode = 'full';
  let ext: Ipv6ExtHeader[] = [];
  if (family === 4) {
    ipv4 = ipv4Extras(rng, recipe, { options: 0.15, fragment: 0.06, mf: 0.6, firstFragment: 0.5 });
    if (rng.chance(0.04)) {
      ipChecksum = rng.int(0x10000);
      recipe.push('random ip checksum');
    }
  } else if (rng.chance(0.15)) {
    ext = ipv6Ext(rng, recipe);
  }
  const { ipOptions, mf, fragOffset } = ipv4;

  const frame = buildFrame({
    vlan,
    src,
    dst,
    ttl: rng.range(1, 255),
    ipId: rng.int(0x10000),
    df: rng.chance(0.8),
    mf,
    fragOffset,
    ipOptions,
    ipChecksum,
    ipv6Ext: ext,
    tcp: {
      sport: rng.int(0x10000),
      dport: port(rng),
      seq: rng.u32(),
      ack: rng.chance(0.8) ? 0 : rng.u32(),
      flags,
      window: rng.int(0x10000),
      options,
      checksum,
    },
    payload,
  });
  const l3 = 14 + 4 * vlan.length;
  const padded = (b: Buffer | undefined): number => (b ? Math.ceil(b.length / 4) * 4 : 0);
  const l4 = family === 4 ? l3 + 20 + padded(ipOptions) : l3 + 40 + extLength(ext);
  return { frame, layout: { l3, family, l4 } };
}

export function genOther(rng: Rng, recipe: string[]): { frame: Buffer; layout: Layout } {
  const vlan = vlanTags(rng, recipe);
  const l3 = 14 + 4 * vlan.length;
  const what = rng.weighted<string>([
    [3, 'udp4'],
    [2, 'udp6'],
    [2, 'icmp'],
    [2, 'icmpv6'],
    [2, 'arp'],
    [2, 'later fragment'],
    [2, 'ipv6 esp'],
    [2, 'ipv6 no next header'],
    [2, 'random protocol'],
    [3, 'random bytes'],
  ]);
  recipe.push(`other: ${what}`);
  const s4 = { src: v4Addr(rng), dst: v4Addr(rng) };
  const s6 = { src: v6Addr(rng), dst: v6Addr(rng) };
  const body = rng.bytes(rng.range(0, 64));
  let frame: Buffer;
  let layout: Layout = { l3, family: null, l4: null };
  switch (what) {
    case 'udp4':
      frame = buildFrame({ vlan, ...s4, protocol: IPPROTO_UDP, payload: body });
      layout = { l3, family: 4, l4: l3 + 20 };
      break;
    case 'udp6':
      frame = buildFrame({ vlan, ...s6, protocol: IPPROTO_UDP, payload: body });
      layout = { l3, family: 6, l4: l3 + 40 };
      break;
    case 'icmp':
      frame = buildFrame({ vlan, ...s4, protocol: IPPROTO_ICMP, payload: body });
      layout = { l3, family: 4, l4: l3 + 20 };
      break;
    case 'icmpv6':
      frame = buildFrame({ vlan, ...s6, protocol: IPPROTO_ICMPV6, payload: body, ipv6Ext: rng.chance(0.5) ? [{ type: 0 }] : [] });
      layout = { l3, family: 6, l4: null };
      break;
    case 'arp':
      frame = buildFrame({ vlan, etherType: ETH_P_ARP, payload: rng.bytes(28) });
      break;
    case 'later fragment': {
      // A later fragment whose bytes happen to look like a SYN header.
      const syn = Buffer.concat([Buffer.from('9c4001bb0000000100000000500200000000', 'hex'), rng.bytes(rng.range(0, 20))]);
      frame = buildFrame({ vlan, ...s4, fragOffset: rng.range(1, 0x1fff), mf: rng.chance(0.5), protocol: 6, payload: syn });
      layout = { l3, family: 4, l4: l3 + 20 };
      break;
    }
    case 'ipv6 esp':
      frame = buildFrame({ vlan, ...s6, protocol: 50, payload: body, ipv6Ext: rng.chance(0.5) ? [{ type: 60 }] : [] });
      layout = { l3, family: 6, l4: null };
      break;
    case 'ipv6 no next header':
      frame = buildFrame({ vlan, ...s6, protocol: 59, payload: body, ipv6Ext: rng.chance(0.5) ? [{ type: 0 }] : [] });
      layout = { l3, family: 6, l4: null };
      break;
    case 'random protocol':
      if (rng.chance(0.5)) {
        frame = buildFrame({ vlan, ...s4, protocol: rng.int(256), payload: body });
        layout = { l3, family: 4, l4: l3 + 20 };
      } else {
        frame = buildFrame({ vlan, ...s6, protocol: rng.int(256), payload: body });
        layout = { l3, family: 6, l4: null };
      }
      break;
    default: {
      const type = rng.pick([ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD, rng.int(0x10000), 0x05dc]);
      frame = buildFrame({ vlan, etherType: type, payload: rng.bytes(rng.range(0, 100)) });
      break;
    }
  }
  return { frame, layout };
}

// ---------------------------------------------------------------------------------------
// Mutations

const INTERESTING = [
  0x00, 0x01, 0x02, 0x04, 0x05, 0x0c, 0x0f, 0x10, 0x12, 0x14, 0x28, 0x3f, 0x40, 0x45, 0x4f, 0x50, 0x60, 0x7f, 0x80, 0xf0, 0xfd,
  0xfe, 0xff,
];

export function mutate(rng: Rng, input: Buffer, layout: Layout, recipe: string[]): Buffer {
  let f = Buffer.from(input);
  const n = rng.weighted<number>([
    [6, 1],
    [3, 2],
    [1, 4],
  ]);
  const steps: string[] = [];
  const { l3, l4, family } = layout;
  const setAt = (off: number, v: number, what: string): void => {
    if (off >= 0 && off < f.length) {
      f[off] = v & 0xff;
      steps.push(`${what}@${off}=0x${(v & 0xff).toString(16)}`);
    }
  };
  const set16 = (off: number, v: number, what: string): void => {
    if (off >= 0 && off + 2 <= f.length) {
      f.writeUInt16BE(v & 0xffff, off);
      steps.push(`${what}@${off}=${v & 0xffff}`);
    }
  };
  for (let i = 0; i < n; i++) {
    const kind = rng.weighted<string>([
      [4, 'bit flip'],
      [3, 'byte set'],
      [4, 'header byte set'],
      [3, 'ip length'],
      [2, 'ihl/version'],
      [3, 'doff'],
      [1, 'flags'],
      [3, 'option byte'],
      [3, 'truncate'],
      [2, 'trailing bytes'],
      [1, 'ethertype'],
      [1, 'next header'],
    ]);
    switch (kind) {
      case 'bit flip': {
        const off = rng.int(f.length);
        setAt(off, (f[off] ?? 0) ^ (1 << rng.int(8)), 'flip');
        break;
      }
      case 'byte set':
        setAt(rng.int(f.length), rng.pick(INTERESTING), 'set');
        break;
      case 'header byte set': {
        const end = Math.min(f.length, (l4 ?? l3) + 60);
        setAt(rng.range(Math.min(l3, end - 1), end - 1), rng.chance(0.5) ? rng.pick(INTERESTING) : rng.int(256), 'hdr');
        break;
      }
      case 'ip length': {
        if (family === null) break;
        const fieldOff = family === 4 ? l3 + 2 : l3 + 4;
        const cur = fieldOff + 2 <= f.length ? f.readUInt16BE(fieldOff) : 0;
        const v = rng.chance(0.7)
          ? cur + rng.pick([-12, -4, -2, -1, 1, 2, 4, 12, 20])
          : rng.pick([0, 1, 20, 40, 0xffff, rng.int(0x10000)]);
        set16(fieldOff, v, family === 4 ? 'tot_len' : 'payload_len');
        break;
      }
      case 'ihl/version':
        if (family === 4) setAt(l3, rng.chance(0.7) ? 0x40 | rng.int(16) : (rng.int(16) << 4) | ((f[l3] ?? 0) & 0x0f), 'ver/ihl');
        else if (family === 6) setAt(l3, (rng.int(16) << 4) | ((f[l3] ?? 0) & 0x0f), 'version');
        break;
      case 'doff':
        if (l4 !== null) setAt(l4 + 12, (rng.int(16) << 4) | ((f[l4 + 12] ?? 0) & 0x0f), 'doff');
        break;
      case 'flags':
        if (l4 !== null) setAt(l4 + 13, rng.chance(0.5) ? rng.int(256) : TCP_SYN, 'flags');
        break;
      case 'option byte':
        if (l4 !== null && f.length > l4 + 20)
          setAt(rng.range(l4 + 20, f.length - 1), rng.chance(0.6) ? rng.pick(INTERESTING) : rng.int(256), 'opt');
        break;
      case 'truncate': {
        const marks = [
          l3,
          l3 + 19,
          l3 + 20,
          l3 + 39,
          l4 ?? l3,
          (l4 ?? l3) + 13,
          (l4 ?? l3) + 14,
          (l4 ?? l3) + 19,
          (l4 ?? l3) + 20,
          f.length - 1,
          f.length - 12,
          rng.range(14, f.length),
        ];
        const to = Math.max(14, Math.min(f.length, rng.pick(marks)));
        if (to < f.length) {
          f = f.subarray(0, to);
          steps.push(`truncate to ${to}`);
        }
        break;
      }
      case 'trailing bytes': {
        const extra = rng.chance(0.5) ? Buffer.alloc(rng.range(1, 16)) : rng.bytes(rng.range(1, 16));
        f = Buffer.concat([f, extra]);
        steps.push(`append ${extra.length}`);
        break;
      }
      case 'ethertype':
        set16(l3 - 2, rng.pick([ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD, rng.int(0x10000)]), 'ethertype');
        break;
      default:
        if (family === 6) setAt(l3 + 6, rng.pick([6, 0, 43, 44, 50, 51, 59, 60, 17, rng.int(256)]), 'nexthdr');
        else if (family === 4) setAt(l3 + 9, rng.pick([6, 17, 1, rng.int(256)]), 'protocol');
        break;
    }
  }
  // Half the time, make the checksums right for the mutated bytes, so that the lies reach
  // the marker looking like a sound packet.
  if (rng.chance(0.5)) {
    refreshChecksums(f, layout);
    steps.push('checksums recomputed');
  }
  recipe.push(`mutate: ${steps.join(', ') || 'nothing applied'}`);
  return Buffer.from(f);
}

/** Recompute the IPv4 header and TCP checksums of a (possibly inconsistent) frame, where the fields are readable. */
export function refreshChecksums(f: Buffer, layout: Layout): void {
  const { l3, family } = layout;
  if (family === 4 && l3 + 20 <= f.length) {
    const ihl = ((f[l3] ?? 0) & 0x0f) * 4;
    if (ihl >= 20 && l3 + ihl <= f.length) {
      f.writeUInt16BE(ipv4HeaderChecksum(f.subarray(l3, l3 + ihl)), l3 + 10);
      const l4 = l3 + ihl;
      const end = Math.min(f.length, l3 + f.readUInt16BE(l3 + 2));
      if ((f[l3 + 9] ?? 0) === 6 && l4 + 18 <= end) {
        f.writeUInt16BE(tcpChecksum(f.subarray(l3 + 12, l3 + 16), f.subarray(l3 + 16, l3 + 20), f.subarray(l4, end)), l4 + 16);
      }
    }
  } else if (family === 6 && layout.l4 !== null && l3 + 40 <= f.length) {
    const l4 = layout.l4;
    const end = Math.min(f.length, l3 + 40 + f.readUInt16BE(l3 + 4));
    if (l4 + 18 <= end)
      f.writeUInt16BE(tcpChecksum(f.subarray(l3 + 8, l3 + 24), f.subarray(l3 + 24, l3 + 40), f.subarray(l4, end)), l4 + 16);
  }
}
