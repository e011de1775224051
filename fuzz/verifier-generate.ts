/**
 * Fuzz cases for the ingress verifier: SYNs to the ports the fuzz world protects, carrying
 * tokens that are right (static, keyed, the previous token, key and epoch) and wrong (one
 * bit off, another key, epoch, flow or policy, byte order, zero), our option duplicated, of
 * the wrong length, behind an EOL or a malformed option, truncated, with data offsets that
 * lie; in IPv4 with options and fragments, IPv6 with extension headers, VLAN and QinQ;
 * non-SYNs carrying tokens, other traffic, and the marker fuzzer's mutations of all of it.
 * A case depends only on (seed, index), see rng.ts.
 */
import {
  buildFrame,
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  TCP_URG,
  type ChecksumMode,
  type Ipv6ExtHeader,
} from '../src/lib/packet.js';
import { TokenModeCode } from '../src/lib/abi.js';
import { keyedToken } from '../src/lib/siphash.js';
import {
  extLength,
  genOther,
  ipv4Extras,
  ipv6Ext,
  mutate,
  someOption,
  testRunMinimum,
  validOptions,
  vlanTags,
  type FuzzCase,
  type Ipv4Extras,
  type Layout,
} from './generate.js';
import { Rng } from './rng.js';
import { POLICIES, epochOf, policyById, type PolicyDef } from './world.js';
import { SRC_V4_POOLS, SRC_V6_POOLS, rulesFor, ruleFor } from './verifier-world.js';

const TCP_ECE = 0x40;
const TCP_CWR = 0x80;
const OPT_LEN = 12;
/** Byte 13 of a TCP header: the flags. */
const NT_TCP_FLAGS_OFF = 13;
const U64_MAX = (1n << 64n) - 1n;

/** Ports drawn besides those of the device's rules: other devices' ports, port 0, anything. */
const OTHER_PORTS = [443, 8443, 80, 22, 25, 53, 6379, 8080, 9, 110, 993, 0, 1, 65535];

function fromPool(rng: Rng, pools: ReadonlyArray<readonly [number, string]>, family: 4 | 6): string {
  const pool = rng.weighted(pools);
  if (family === 4) {
    const parts = pool.split('.').filter((p) => p !== '');
    if (parts.length === 4) return pool;
    while (parts.length < 4) parts.push(String(rng.int(256)));
    return parts.join('.');
  }
  if (pool.includes('::') && !pool.endsWith('::')) return pool;
  if (pool.endsWith('::')) return pool + rng.int(0x10000).toString(16);
  const groups = pool.split(':').filter((g) => g !== '');
  while (groups.length < 8) groups.push(rng.int(0x10000).toString(16));
  return groups.join(':');
}

function dstAddr(rng: Rng, family: 4 | 6): string {
  return family === 4
    ? `10.${rng.int(256)}.${rng.int(256)}.${rng.range(1, 254)}`
    : `2001:db8:${rng.int(0x10000).toString(16)}::${rng.range(1, 0xffff).toString(16)}`;
}

interface SynFields {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  seq: number;
}

function keyed(p: PolicyDef, key: Buffer, f: SynFields, epoch: bigint, bind = p.bind): Buffer {
  return keyedToken(key, f, bind, epoch & U64_MAX);
}

function flipBit(rng: Rng, b: Buffer): Buffer {
  const out = Buffer.from(b);
  const bit = rng.int(64);
  out[bit >> 3] = (out[bit >> 3] ?? 0) ^ (1 << (bit & 7));
  return out;
}

/** An 8-byte value for policy `p` on this SYN: one it accepts, or one of many near misses. */
function tokenValue(rng: Rng, p: PolicyDef, f: SynFields, recipe: string[]): Buffer {
  const isKeyed = p.mode === TokenModeCode.Keyed;
  // A keyed policy without an epoch length signs nothing: any epoch will do for its near misses.
  const e = isKeyed && p.epochSeconds !== 0 ? epochOf(p) : 1n;
  const good = (): Buffer => (isKeyed ? keyed(p, p.current, f, e) : p.current);
  const choice = rng.weighted<string>(
    isKeyed
      ? [
          [22, 'current key, this epoch'],
          [10, 'current key, previous epoch'],
          [6, 'previous key, this epoch'],
          [4, 'previous key, previous epoch'],
          [5, 'next epoch'],
          [3, 'previous key, next epoch'],
          [4, 'two epochs ago'],
          [2, 'two epochs on'],
          [5, 'another key'],
          [8, 'another flow'],
          [4, 'every field bound'],
          [10, 'one bit off'],
          [4, 'byte order reversed'],
          [3, 'zero'],
          [3, 'random'],
          [4, "another policy's token"],
        ]
      : [
          [30, 'current'],
          [10, 'previous'],
          [14, 'one bit off'],
          [5, 'byte order reversed'],
          [6, 'zero'],
          [6, 'random'],
          [8, "another policy's token"],
        ],
  );
  recipe.push(`token: ${choice} (policy ${p.id})`);
  switch (choice) {
    case 'current':
      return p.current;
    case 'previous':
      return p.previous ?? p.current;
    case 'current key, this epoch':
      return good();
    case 'current key, previous epoch':
      return keyed(p, p.current, f, e - 1n);
    case 'previous key, this epoch':
      return keyed(p, p.previous ?? p.current, f, e);
    case 'previous key, previous epoch':
      return keyed(p, p.previous ?? p.current, f, e - 1n);
    case 'next epoch':
      return keyed(p, p.current, f, e + 1n);
    case 'previous key, next epoch':
      return keyed(p, p.previous ?? p.current, f, e + 1n);
    case 'two epochs ago':
      return keyed(p, p.current, f, e - 2n);
    case 'two epochs on':
      return keyed(p, p.current, f, e + 2n);
    case 'another key':
      return keyed(p, rng.bytes(16), f, e);
    case 'another flow': {
      const which = rng.int(5);
      const g = { ...f };
      if (which === 0) g.sport = (f.sport + 1) & 0xffff;
      else if (which === 1) g.dport = (f.dport ^ 1) & 0xffff;
      else if (which === 2) g.seq = (f.seq + 1) >>> 0;
      else if (which === 3) g.src = f.src.includes(':') ? '2001:db8::dead' : '10.200.0.1';
      else g.dst = f.dst.includes(':') ? '2001:db8::beef' : '10.201.0.1';
      recipe.push(`  flow field changed: ${['sport', 'dport', 'seq', 'src', 'dst'][which] ?? ''}`);
      return keyed(p, p.current, g, e);
    }
    case 'every field bound':
      return keyed(p, p.current, f, e, 0x1f);
    case 'one bit off':
      return flipBit(rng, rng.chance(0.7) ? good() : p.previous ? (isKeyed ? keyed(p, p.previous, f, e) : p.previous) : good());
    case 'byte order reversed':
      return Buffer.from(good()).reverse();
    case 'zero':
      return Buffer.alloc(8);
    case 'random':
      return rng.bytes(8);
    default: {
      const o = rng.pick(POLICIES);
      return o.mode === TokenModeCode.Keyed && o.epochSeconds !== 0
        ? keyed(o, o.current, f, epochOf(o))
        : o.current.subarray(0, 8);
    }
  }
}

const opt = (kind: number, len: number, exid: number, value: Buffer): Buffer => {
  const head = Buffer.from([kind, len & 0xff, exid >> 8, exid & 0xff]);
  const body = Buffer.alloc(Math.max(0, len - 4));
  value.copy(body, 0, 0, Math.min(8, body.length));
  return Buffer.concat([head, body]).subarray(0, Math.max(2, len));
};

const STACK = (rng: Rng): Buffer =>
  Buffer.concat([Buffer.from('020405b40402080a', 'hex'), rng.bytes(8), Buffer.from('01030307', 'hex')]);

/** The option area: where our option goes and what surrounds it. */
function optionArea(rng: Rng, p: PolicyDef, value: () => Buffer, recipe: string[]): Buffer {
  const ours = (): Buffer => opt(p.kind, OPT_LEN, p.exid, value());
  const shape = rng.weighted<string>([
    [14, 'alone'],
    [12, 'after the stack options'],
    [5, 'before the stack options'],
    [4, 'behind NOPs'],
    [6, 'twice'],
    [2, 'three times'],
    [4, 'behind an EOL'],
    [3, 'followed by an EOL'],
    [5, 'behind a malformed option'],
    [3, 'followed by a malformed option'],
    [6, 'wrong length'],
    [3, 'another kind'],
    [3, 'another ExID'],
    [4, 'cut short'],
    [5, 'none'],
    [5, 'random options'],
    [3, 'random bytes'],
  ]);
  recipe.push(`options: ours ${shape}`);
  let area: Buffer;
  switch (shape) {
    case 'alone':
      area = ours();
      break;
    case 'after the stack options':
      area = Buffer.concat([rng.chance(0.7) ? STACK(rng) : validOptions(rng, 28).bytes, ours()]);
      break;
    case 'before the stack options':
      area = Buffer.concat([ours(), rng.chance(0.5) ? STACK(rng) : validOptions(rng, 28).bytes]);
      break;
    case 'behind NOPs':
      area = Buffer.concat([Buffer.alloc(rng.range(1, 16), 1), ours()]);
      break;
    case 'twice':
    case 'three times': {
      const n = shape === 'twice' ? 2 : 3;
      // Each copy draws its own value: right then wrong, wrong then right, both right, both wrong.
      area = Buffer.concat(Array.from({ length: n }, () => ours()));
      break;
    }
    case 'behind an EOL':
      area = Buffer.concat([
        rng.chance(0.5) ? Buffer.from('020405b4', 'hex') : Buffer.alloc(0),
        Buffer.from([0, 1, 1, 1].slice(0, rng.range(1, 4))),
        ours(),
      ]);
      break;
    case 'followed by an EOL':
      area = Buffer.concat([ours(), Buffer.from([0, 0, 0, 0])]);
      break;
    case 'behind a malformed option': {
      const bad = rng.pick([Buffer.from([2, 0]), Buffer.from([3, 1]), Buffer.from([8, 40, 0, 0]), Buffer.from([p.kind, 1])]);
      area = Buffer.concat([bad, ours()]);
      break;
    }
    case 'followed by a malformed option':
      area = Buffer.concat([ours(), rng.pick([Buffer.from([2, 0, 0, 0]), Buffer.from([5, 30, 0, 0]), Buffer.from([8])])]);
      break;
    case 'wrong length': {
      const len = rng.pick([2, 3, 4, 8, 10, 11, 13, 14, 16, 20]);
      recipe.push(`  length ${len}`);
      area = opt(p.kind, len, p.exid, value());
      break;
    }
    case 'another kind':
      area = opt(p.kind === 253 ? 254 : 253, OPT_LEN, p.exid, value());
      break;
    case 'another ExID':
      area = opt(p.kind, OPT_LEN, (p.exid + rng.range(1, 0xfffe)) & 0xffff, value());
      break;
    case 'cut short': {
      const full = Buffer.concat([rng.chance(0.5) ? STACK(rng) : Buffer.alloc(0), ours()]);
      area = full.subarray(0, full.length - rng.range(1, 11));
      break;
    }
    case 'none':
      area = rng.chance(0.5) ? Buffer.alloc(0) : STACK(rng);
      break;
    case 'random options': {
      const parts: Buffer[] = [];
      for (let i = rng.range(1, 5); i > 0; i--) parts.push(rng.chance(0.3) ? ours() : someOption(rng));
      area = Buffer.concat(parts);
      break;
    }
    default:
      area = rng.bytes(rng.range(1, 40));
      break;
  }
  return area.subarray(0, 40);
}

function genSyn(rng: Rng, position: number, recipe: string[]): { frame: Buffer; layout: Layout } {
  const family: 4 | 6 = rng.chance(0.5) ? 4 : 6;
  const vlan = vlanTags(rng, recipe);
  const rules = rulesFor(position);
  let dport: number;
  if (rules.length > 0 && rng.chance(0.85)) {
    const rule = rng.pick(rules);
    dport = rule.port !== 0 ? rule.port : rng.range(1024, 65535);
  } else {
    dport = rng.chance(0.8) ? rng.pick(OTHER_PORTS) : rng.int(0x10000);
  }
  const f: SynFields = {
    src: fromPool(rng, family === 4 ? SRC_V4_POOLS : SRC_V6_POOLS, family),
    dst: dstAddr(rng, family),
    sport: rng.int(0x10000),
    dport,
    seq: rng.u32(),
  };
  const kindOfCase = rng.weighted<string>([
    [86, 'SYN'],
    [14, 'not a SYN'],
  ]);
  const flags =
    kindOfCase === 'SYN'
      ? rng.weighted<number>([
          [80, TCP_SYN],
          [8, TCP_SYN | TCP_ECE | TCP_CWR],
          [3, TCP_SYN | TCP_FIN],
          [3, TCP_SYN | TCP_PSH | TCP_URG],
          [6, (rng.int(256) | TCP_SYN) & ~TCP_ACK],
        ])
      : rng.weighted<number>([
          [5, TCP_SYN | TCP_ACK],
          [4, TCP_ACK],
          [2, TCP_RST],
          [2, TCP_FIN | TCP_ACK],
          [3, rng.int(256) & ~TCP_SYN],
          [2, rng.int(256) | TCP_ACK],
        ]);
  // Mostly the token of the policy that protects the port; sometimes another policy's option.
  const rule = ruleFor(position, dport);
  const own = rule ? policyById(rule.policyId) : undefined;
  const p = own && rng.chance(0.85) ? own : rng.pick(POLICIES);
  recipe.push(
    `ipv${family} ${f.src}:${f.sport} -> ${f.dst}:${f.dport} seq ${f.seq} flags 0x${flags.toString(16)}${own ? ` (port of policy ${own.id})` : ''}`,
  );
  let area = optionArea(rng, p, () => tokenValue(rng, p, f, recipe), recipe);

  let doff: number | undefined;
  let payload: Buffer | undefined;
  const lie = rng.weighted<string>([
    [84, 'none'],
    [4, 'data'],
    [3, 'doff below 5'],
    [3, 'doff past the end'],
    [3, 'doff over the data'],
    [3, 'doff short of the options'],
  ]);
  const padded = Math.ceil(area.length / 4) * 4;
  switch (lie) {
    case 'data':
      payload = rng.bytes(rng.range(1, 40));
      break;
    case 'doff below 5':
      doff = rng.int(5);
      break;
    case 'doff past the end':
      doff = Math.min(15, 5 + padded / 4 + rng.range(1, 4));
      break;
    case 'doff over the data': {
      // Options end early; the header claims the bytes after them, which hold one of our options.
      const hidden = opt(p.kind, OPT_LEN, p.exid, tokenValue(rng, p, f, recipe));
      area = area.subarray(0, Math.max(0, Math.min(area.length, 28 - 4) & ~3));
      payload = Buffer.concat([hidden, rng.bytes(rng.range(0, 8))]);
      doff = Math.min(15, 5 + (area.length + hidden.length) / 4);
      break;
    }
    case 'doff short of the options':
      doff = Math.max(5, 5 + padded / 4 - rng.range(1, 3));
      break;
    default:
      break;
  }
  if (lie !== 'none') recipe.push(`tcp: ${lie}${doff !== undefined ? ` (doff ${doff})` : ''}`);

  let ipv4: Ipv4Extras = { mf: false, fragOffset: 0 };
  let ext: Ipv6ExtHeader[] = [];
  if (family === 4) {
    ipv4 = ipv4Extras(rng, recipe, { options: 0.12, fragment: 0.08, mf: 0.7, firstFragment: 0.6 });
  } else if (rng.chance(0.15)) {
    ext = ipv6Ext(rng, recipe);
  }
  const { ipOptions, mf, fragOffset } = ipv4;
  const checksum = rng.weighted<ChecksumMode>([
    [85, 'full'],
    [10, 'partial'],
    [5, rng.int(0x10000)],
  ]);
  // The first fragment of a SYN split by its sender: the TCP header or the options continue
  // in a fragment the verifier never sees together with this one. Any size: the stack keeps
  // a multiple of 8 of a fragment that is not the last.
  const split =
    lie === 'none' && rng.chance(0.07)
      ? rng.weighted<number>([
          [3, rng.pick(family === 4 ? [8, 16, 24, 32, 40] : [24, 32, 40])],
          [5, rng.range(1, 64)],
        ])
      : 0;
  const frame = buildFrame({
    vlan,
    src: f.src,
    dst: f.dst,
    ttl: rng.range(1, 255),
    ipId: rng.int(0x10000),
    mf,
    fragOffset,
    ipOptions,
    ipv6Ext: ext,
    tcp: {
      sport: f.sport,
      dport: f.dport,
      seq: f.seq,
      ack: flags & TCP_ACK ? rng.u32() : 0,
      flags,
      window: rng.int(0x10000),
      options: area,
      checksum,
      ...(doff !== undefined ? { doff } : {}),
    },
    payload,
  });
  const l3 = 14 + 4 * vlan.length;
  const ipOptLen = ipOptions ? Math.ceil(ipOptions.length / 4) * 4 : 0;
  const l4 = family === 4 ? l3 + 20 + ipOptLen : l3 + 40 + extLength(ext);
  if (split > 0 && frame.length - l4 > split) {
    recipe.push(`sent as fragments: the first holds ${split} of the ${frame.length - l4} TCP bytes`);
    const seg = Buffer.from(frame.subarray(l4, l4 + split));
    if (seg.length > NT_TCP_FLAGS_OFF && rng.chance(0.3)) {
      // Flags that say ACK in bytes reassembly may not keep: a later fragment can bring SYN.
      seg[NT_TCP_FLAGS_OFF] = rng.pick([TCP_ACK, TCP_ACK | TCP_PSH, 0]);
      recipe.push(`  its flags byte says 0x${(seg[NT_TCP_FLAGS_OFF] ?? 0).toString(16)}`);
    }
    const common = { vlan, src: f.src, dst: f.dst, ttl: 64, protocol: 6, payload: seg };
    if (family === 4)
      return {
        frame: buildFrame({ ...common, ipOptions, mf: true, fragOffset: 0, df: false, ipId: rng.int(0x10000) }),
        layout: { l3, family, l4 },
      };
    const fragHeader: Ipv6ExtHeader = { type: 44, body: Buffer.concat([Buffer.from([0, 1]), rng.bytes(4)]) };
    const withFrag = [...ext, fragHeader];
    return { frame: buildFrame({ ...common, ipv6Ext: withFrag }), layout: { l3, family, l4: l3 + 40 + extLength(withFrag) } };
  }
  return { frame, layout: { l3, family, l4 } };
}

/** Build verifier case `index` of the run with `seed`; `devices` is how many devices the run has (1 or more). */
export function generateVerifierCase(seed: number, index: number, devices: number): FuzzCase {
  const rng = Rng.forCase(seed, index);
  const recipe: string[] = [];
  // The same draws whatever `devices` is, so that a seed means the same packets everywhere.
  const draw = rng.int(4);
  const position = draw < 2 || draw - 1 >= devices ? 0 : draw - 1;
  const built = rng.chance(0.9) ? genSyn(rng, position, recipe) : genOther(rng, recipe);
  let frame = built.frame;
  if (rng.chance(0.2)) frame = mutate(rng, frame, built.layout, recipe);
  const min = testRunMinimum(frame);
  if (frame.length < min) {
    frame = Buffer.concat([frame, Buffer.alloc(min - frame.length)]);
    recipe.push(`zero-padded to ${min} bytes (test_run's minimum)`);
  }
  return { seed, index, frame, device: position, gsoSegs: 0, gsoSize: 0, recipe };
}
