/**
 * IP addresses and CIDR prefixes as bytes, for LPM trie keys and exempt lists.
 */
import { isIPv4, isIPv6 } from 'node:net';

export interface Cidr {
  family: 4 | 6;
  /** network address, 4 or 16 bytes, host bits zero */
  addr: Buffer;
  prefixLen: number;
  /** canonical text form, e.g. 10.0.0.0/8 or 2001:db8::/32 */
  text: string;
}

/** Parse an IPv4 or IPv6 address into 4 or 16 bytes; null if it is not one. */
export function parseIp(text: string): Buffer | null {
  if (isIPv4(text)) return Buffer.from(text.split('.').map((p) => Number(p)));
  if (!isIPv6(text)) return null;
  let s = text;
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hex groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4 && v4[1]) {
    const b = v4[1].split('.').map(Number);
    s =
      s.slice(0, -v4[1].length) +
      (((b[0] ?? 0) << 8) | (b[1] ?? 0)).toString(16) +
      ':' +
      (((b[2] ?? 0) << 8) | (b[3] ?? 0)).toString(16);
  }
  const [head, tail] = s.includes('::') ? s.split('::') : [s, undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  if (groups.length !== 8) return null;
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

export function formatIp(addr: Buffer): string {
  if (addr.length === 4) return Array.from(addr).join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(addr.readUInt16BE(i).toString(16));
  // Compress the longest run of zero groups (RFC 5952).
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

/** Parse "a.b.c.d/n" or "x::/n" (a bare address means a host prefix); throws an Error saying what is wrong. */
export function parseCidr(text: string): Cidr {
  const [ip, len, extra] = text.split('/');
  if (ip === undefined || extra !== undefined)
    throw new Error(`"${text}" is not a CIDR (want e.g. 203.0.113.0/24 or 2001:db8::/32)`);
  const addr = parseIp(ip);
  if (!addr) throw new Error(`"${text}" is not a CIDR: "${ip}" is not an IPv4 or IPv6 address`);
  const family = addr.length === 4 ? 4 : 6;
  const max = family === 4 ? 32 : 128;
  let prefixLen = max;
  if (len !== undefined) {
    if (!/^\d{1,3}$/.test(len) || Number(len) > max) {
      throw new Error(`"${text}" is not a CIDR: prefix length must be 0..${max}`);
    }
    prefixLen = Number(len);
  }
  for (let bit = prefixLen; bit < max; bit++) {
    if ((addr[bit >> 3]! >> (7 - (bit & 7))) & 1) {
      const masked = maskAddr(addr, prefixLen);
      throw new Error(`"${text}" has bits set past its /${prefixLen} prefix; did you mean ${formatIp(masked)}/${prefixLen}?`);
    }
  }
  return { family, addr, prefixLen, text: `${formatIp(addr)}/${prefixLen}` };
}

function maskAddr(addr: Buffer, prefixLen: number): Buffer {
  const out = Buffer.from(addr);
  for (let bit = prefixLen; bit < out.length * 8; bit++) out[bit >> 3]! &= ~(1 << (7 - (bit & 7)));
  return out;
}

/** True when addr (4 or 16 bytes) lies inside cidr. */
export function cidrContains(cidr: Cidr, addr: Buffer): boolean {
  if (addr.length !== cidr.addr.length) return false;
  return maskAddr(addr, cidr.prefixLen).equals(cidr.addr);
}
