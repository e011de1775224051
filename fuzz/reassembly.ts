/**
 * IP reassembly as the Linux stack does it, for the fragment-sequence fuzzer: what reaches a
 * socket once the fragments the verifier let through are put back together. Written from
 * net/ipv4/ip_fragment.c (ip_frag_queue), net/ipv6/reassembly.c (ipv6_frag_rcv,
 * ip6_frag_queue) and net/ipv4/inet_fragment.c (inet_frag_queue_insert):
 *
 *  - A fragment covers [offset, end) of the datagram's data. One that is not the last is cut
 *    to a multiple of 8 bytes (IPv4); an IPv6 one whose length is not a multiple of 8 is
 *    dropped. The last fragment fixes the length; one that disagrees with it, or data past
 *    it, kills the whole queue, as does a fragment left empty by the cut.
 *  - A fragment that lies inside a run of fragments already queued is dropped (a duplicate);
 *    one that overlaps queued data otherwise kills the queue (RFC 5722 for IPv6; Linux does
 *    the same for IPv4). The first to arrive of any byte is the one that is kept.
 *  - IPv6: a first fragment that does not hold the whole TCP header is dropped (RFC 8200
 *    4.5); an atomic fragment (offset 0, M clear) is a whole packet (RFC 6946).
 *  - Once the first and last fragments are in and nothing is missing, the datagram is
 *    complete; the queue is gone after that, as after a kill.
 */
import { ETH_P_IP, ETH_P_IPV6 } from '../src/lib/packet.js';

/** A datagram put back together: its family, addresses and the upper-layer bytes (here: a TCP segment). */
export interface Reassembled {
  family: 4 | 6;
  saddr: Buffer;
  daddr: Buffer;
  /** the IP protocol (IPv6: the next header after the fragment header) */
  protocol: number;
  data: Buffer;
}

/** One fragment as the stack reads it: null when it is not a fragment of a TCP datagram this model follows. */
interface Piece {
  family: 4 | 6;
  key: string;
  saddr: Buffer;
  daddr: Buffer;
  protocol: number;
  offset: number;
  /** bytes of data after the IP (and fragment) header, as the IP length counts them */
  data: Buffer;
  more: boolean;
}

/** A whole packet (not a fragment), or a fragment, or something the stack drops before reassembly. */
type Parsed = { whole: Reassembled } | { piece: Piece } | { dropped: string } | { other: string };

/**
 * A fragment with its queue key: the stack queues fragments by addresses and id, and IPv4
 * also by protocol (ip4_frag_match); IPv6 has no protocol in its key (ip6_frag_match).
 */
function piece(p: Omit<Piece, 'key'>, id: number): Piece {
  const key =
    `${p.family}/${p.saddr.toString('hex')}/${p.daddr.toString('hex')}/${id}` + (p.family === 4 ? `/${p.protocol}` : '');
  return { ...p, key };
}

function parse(frame: Buffer): Parsed {
  let l3 = 14;
  let proto = frame.readUInt16BE(12);
  while ((proto === 0x8100 || proto === 0x88a8) && l3 + 4 <= frame.length) {
    proto = frame.readUInt16BE(l3 + 2);
    l3 += 4;
  }
  if (proto === ETH_P_IP) {
    if (l3 + 20 > frame.length) return { dropped: 'truncated IPv4 header' };
    const ihl = ((frame[l3] ?? 0) & 0x0f) * 4;
    const totLen = frame.readUInt16BE(l3 + 2);
    if ((frame[l3] ?? 0) >> 4 !== 4 || ihl < 20 || totLen < ihl || l3 + totLen > frame.length)
      return { dropped: 'bad IPv4 header' };
    const saddr = frame.subarray(l3 + 12, l3 + 16);
    const daddr = frame.subarray(l3 + 16, l3 + 20);
    const protocol = frame[l3 + 9] ?? 0;
    const fragWord = frame.readUInt16BE(l3 + 6);
    const offset = (fragWord & 0x1fff) * 8;
    const more = (fragWord & 0x2000) !== 0;
    const data = frame.subarray(l3 + ihl, l3 + totLen);
    if (offset === 0 && !more) return { whole: { family: 4, saddr, daddr, protocol, data } };
    const id = frame.readUInt16BE(l3 + 4);
    return { piece: piece({ family: 4, saddr, daddr, protocol, offset, data, more }, id) };
  }
  if (proto === ETH_P_IPV6) {
    if (l3 + 40 > frame.length) return { dropped: 'truncated IPv6 header' };
    const plen = frame.readUInt16BE(l3 + 4);
    if (l3 + 40 + plen > frame.length) return { dropped: 'IPv6 payload length past the frame' };
    const saddr = frame.subarray(l3 + 8, l3 + 24);
    const daddr = frame.subarray(l3 + 24, l3 + 40);
    const end = l3 + 40 + plen;
    const nh = frame[l3 + 6] ?? 0;
    // The sequences this model follows put the fragment header, if any, right after the fixed header.
    if (nh !== 44)
      return nh === 6
        ? { whole: { family: 6, saddr, daddr, protocol: 6, data: frame.subarray(l3 + 40, end) } }
        : { other: `next header ${nh}` };
    if (l3 + 48 > end) return { dropped: 'truncated fragment header' };
    const protocol = frame[l3 + 40] ?? 0;
    const word = frame.readUInt16BE(l3 + 42);
    const offset = word & 0xfff8;
    const more = (word & 1) !== 0;
    const data = frame.subarray(l3 + 48, end);
    if (offset === 0 && !more) return { whole: { family: 6, saddr, daddr, protocol, data } };
    // RFC 8200 4.5 (ipv6frag_thdr_truncated): a first fragment must hold the whole TCP header.
    if (offset === 0 && protocol === 6 && data.length < 20)
      return { dropped: 'an IPv6 first fragment without the whole TCP header' };
    const id = frame.readUInt32BE(l3 + 44);
    return { piece: piece({ family: 6, saddr, daddr, protocol, offset, data, more }, id) };
  }
  return { other: `EtherType 0x${proto.toString(16)}` };
}

interface Queue {
  /** runs of fragments appended in order: [offset, end), sorted by offset; the last one holds the tail fragment */
  runs: Array<{ offset: number; end: number }>;
  /** the kept bytes of each fragment, by offset */
  frags: Array<{ offset: number; data: Buffer }>;
  len: number;
  firstIn: boolean;
  lastIn: boolean;
  meat: number;
  first?: Piece;
}

/** What happened to one fragment. */
export type QueueEvent =
  | { event: 'whole'; datagram: Reassembled }
  | { event: 'queued' }
  | { event: 'complete'; datagram: Reassembled }
  | { event: 'dropped'; why: string }
  | { event: 'killed'; why: string }
  | { event: 'ignored'; why: string };

/** The stack's fragment queues for the frames it is given, one at a time. */
export class Reassembler {
  private readonly queues = new Map<string, Queue>();

  /** Feed one received frame; returns what the stack does with it. */
  push(frame: Buffer): QueueEvent {
    const p = parse(frame);
    if ('whole' in p) return { event: 'whole', datagram: p.whole };
    if ('dropped' in p) return { event: 'dropped', why: p.dropped };
    if ('other' in p) return { event: 'ignored', why: p.other };
    return this.queue(p.piece);
  }

  private queue(f: Piece): QueueEvent {
    let q = this.queues.get(f.key);
    if (!q) {
      q = { runs: [], frags: [], len: 0, firstIn: false, lastIn: false, meat: 0 };
      this.queues.set(f.key, q);
    }
    const kill = (why: string): QueueEvent => {
      this.queues.delete(f.key);
      return { event: 'killed', why };
    };
    let end = f.offset + f.data.length;
    if (!f.more) {
      if (end < q.len || (q.lastIn && end !== q.len)) return kill('a last fragment that disagrees with the length');
      q.lastIn = true;
      q.len = end;
    } else {
      if (end & 7) {
        if (f.family === 6) return { event: 'dropped', why: 'an IPv6 fragment whose length is not a multiple of 8' };
        end &= ~7;
      }
      if (end > q.len) {
        if (q.lastIn) return kill('data past the last fragment');
        q.len = end;
      }
    }
    if (end === f.offset) return kill('a fragment left empty');
    const inserted = insert(q, f.offset, end);
    if (inserted === 'dup') return { event: 'dropped', why: `a duplicate of [${f.offset}, ${end})` };
    if (inserted === 'overlap') return kill(`[${f.offset}, ${end}) overlaps queued data`);
    q.frags.push({ offset: f.offset, data: f.data.subarray(0, end - f.offset) });
    if (f.offset === 0) {
      q.firstIn = true;
      q.first = f;
    }
    q.meat += end - f.offset;
    if (q.firstIn && q.lastIn && q.meat === q.len) {
      this.queues.delete(f.key);
      const data = Buffer.alloc(q.len);
      for (const fr of q.frags) fr.data.copy(data, fr.offset);
      const first = q.first as Piece;
      return {
        event: 'complete',
        datagram: { family: first.family, saddr: first.saddr, daddr: first.daddr, protocol: first.protocol, data },
      };
    }
    return { event: 'queued' };
  }
}

/** inet_frag_queue_insert(): 'ok', or a duplicate (dropped), or an overlap (the queue is killed). */
function insert(q: Queue, offset: number, end: number): 'ok' | 'dup' | 'overlap' {
  const last = q.runs[q.runs.length - 1];
  if (!last) {
    q.runs.push({ offset, end });
    return 'ok';
  }
  if (last.end < end) {
    // The common case: it goes to the end.
    if (offset < last.end) return 'overlap';
    if (offset === last.end) last.end = end;
    else q.runs.push({ offset, end });
    return 'ok';
  }
  for (const r of q.runs) {
    if (end <= r.offset || offset >= r.end) continue;
    return offset >= r.offset && end <= r.end ? 'dup' : 'overlap';
  }
  q.runs.push({ offset, end });
  q.runs.sort((a, b) => a.offset - b.offset);
  return 'ok';
}
