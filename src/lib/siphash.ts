/**
 * SipHash-2-4 and keyed token values, the TypeScript twin of bpf/lib/siphash.h and
 * bpf/lib/keyed.h (message layout: bpf/abi.h). Tests and tools use it to compute what
 * the marker puts on a SYN and what the verifier accepts; the agent never needs it.
 */
import { parseIp } from './cidr.js';
import { BindBit } from './abi.js';

const MASK = (1n << 64n) - 1n;

/** Bytes of the keyed message: flow fields (40) and the epoch (8). */
export const KEYED_MSG_LEN = 48;

function rotl(x: bigint, b: bigint): bigint {
  return ((x << b) | (x >> (64n - b))) & MASK;
}

/**
 * SipHash-2-4 of `msg` under a 16-byte key (k0 = bytes 0..7, k1 = bytes 8..15, both
 * little-endian), as the reference implementation computes it. Returns the 64-bit value;
 * its wire form is sipHash24Bytes().
 */
export function sipHash24(key: Buffer, msg: Buffer): bigint {
  if (key.length !== 16) throw new RangeError(`a SipHash key has 16 bytes, got ${key.length}`);
  const k0 = key.readBigUInt64LE(0);
  const k1 = key.readBigUInt64LE(8);
  let v0 = 0x736f6d6570736575n ^ k0;
  let v1 = 0x646f72616e646f6dn ^ k1;
  let v2 = 0x6c7967656e657261n ^ k0;
  let v3 = 0x7465646279746573n ^ k1;
  const round = (): void => {
    v0 = (v0 + v1) & MASK;
    v1 = rotl(v1, 13n);
    v1 ^= v0;
    v0 = rotl(v0, 32n);
    v2 = (v2 + v3) & MASK;
    v3 = rotl(v3, 16n);
    v3 ^= v2;
    v0 = (v0 + v3) & MASK;
    v3 = rotl(v3, 21n);
    v3 ^= v0;
    v2 = (v2 + v1) & MASK;
    v1 = rotl(v1, 17n);
    v1 ^= v2;
    v2 = rotl(v2, 32n);
  };
  const block = (m: bigint): void => {
    v3 ^= m;
    round();
    round();
    v0 ^= m;
  };
  const whole = msg.length - (msg.length % 8);
  for (let off = 0; off < whole; off += 8) block(msg.readBigUInt64LE(off));
  let last = BigInt(msg.length & 0xff) << 56n;
  for (let i = 0; i < msg.length % 8; i++) last |= BigInt(msg[whole + i] ?? 0) << BigInt(8 * i);
  block(last);
  v2 ^= 0xffn;
  round();
  round();
  round();
  round();
  return (v0 ^ v1 ^ v2 ^ v3) & MASK;
}

/** SipHash-2-4 as its 8 output bytes (little-endian), the reference implementation's out[8]. */
export function sipHash24Bytes(key: Buffer, msg: Buffer): Buffer {
  const out = Buffer.alloc(8);
  out.writeBigUInt64LE(sipHash24(key, msg));
  return out;
}

/** The SYN fields a keyed token can be bound to. Addresses as text (IPv4 or IPv6, both the same family). */
export interface KeyedFlow {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  seq: number;
}

function address16(text: string, what: string): Buffer {
  const b = parseIp(text);
  if (!b) throw new Error(`${what} "${text}" is not an IP address`);
  if (b.length === 16) return b;
  // IPv4 as ::ffff:a.b.c.d
  return Buffer.concat([Buffer.alloc(10), Buffer.from([0xff, 0xff]), b]);
}

/**
 * The 48-byte SipHash message of a SYN: bound fields at fixed offsets (unbound ones zero),
 * then the epoch as a 64-bit big-endian number. `bind` is a mask of BindBit values.
 */
export function keyedMessage(flow: KeyedFlow, bind: number, epoch: bigint | number): Buffer {
  const m = Buffer.alloc(KEYED_MSG_LEN);
  if (bind & BindBit.SourceAddress) address16(flow.src, 'source address').copy(m, 0);
  if (bind & BindBit.DestinationAddress) address16(flow.dst, 'destination address').copy(m, 16);
  if (bind & BindBit.SourcePort) m.writeUInt16BE(flow.sport, 32);
  if (bind & BindBit.DestinationPort) m.writeUInt16BE(flow.dport, 34);
  if (bind & BindBit.Sequence) m.writeUInt32BE(flow.seq >>> 0, 36);
  m.writeBigUInt64BE(BigInt(epoch), 40);
  return m;
}

/** The 8 value bytes a keyed policy puts on (and accepts from) this SYN in this epoch. */
export function keyedToken(key: Buffer, flow: KeyedFlow, bind: number, epoch: bigint | number): Buffer {
  return sipHash24Bytes(key, keyedMessage(flow, bind, epoch));
}

/** The epoch at unix time `unixMs` (milliseconds): floor(unix seconds / epochSeconds). */
export function epochAt(unixMs: number, epochSeconds: number): bigint {
  if (!Number.isInteger(epochSeconds) || epochSeconds <= 0)
    throw new RangeError(`epochSeconds must be a positive integer, got ${epochSeconds}`);
  return BigInt(Math.floor(unixMs / 1000)) / BigInt(epochSeconds);
}

/** Every bind field: the default of a Keyed policy. */
export const BIND_ALL =
  BindBit.SourceAddress | BindBit.DestinationAddress | BindBit.SourcePort | BindBit.DestinationPort | BindBit.Sequence;
