/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* TCP header: the SYN test and the one walk over a SYN's options. */
#ifndef NT_LIB_TCP_H
#define NT_LIB_TCP_H

#include <linux/tcp.h>
#include "common.h"

/* Byte 13 of the TCP header holds the flags. */
#define NT_TCP_FLAGS_OFF 13
#define NT_TCP_FLAG_SYN  0x02
#define NT_TCP_FLAG_ACK  0x10

/* The 16-bit word at byte 12: data offset (4 bits), reserved, flags. */
#define NT_TCP_DOFF_WORD_OFF 12
#define NT_TCP_CHECK_OFF     offsetof(struct tcphdr, check)

#define NT_TCPOPT_EOL 0
#define NT_TCPOPT_NOP 1
#define NT_TCPOPT_AO  29 /* TCP-AO (RFC 5925): its MAC covers the options */

/*
 * The options Linux opens a connection with, in its order: MSS (2, len 4),
 * SACK-permitted (4, 2), timestamps (8, 10), NOP, window scale (3, 3). As
 * three big-endian words at bytes 0, 4 and 16, with what varies masked out.
 */
#define NT_LINUX_SYN_OPTS_LEN 20
#define NT_LINUX_SYN_W0       0x02040000 /* & 0xffff0000: MSS kind and length */
#define NT_LINUX_SYN_W1       0x0402080a /* SACK-permitted, timestamps kind and length */
#define NT_LINUX_SYN_W4       0x01030300 /* & 0xffffff00: NOP, window scale kind and length */

/*
 * Stack copy of the option area, for options that cannot be read in place
 * (behind IPv6 extension headers): larger than the 40 bytes TCP allows, so
 * that an index masked with NT_TCP_OPT_IDX_MASK plus the 4 bytes an option
 * start is looked at stays inside it.
 */
#define NT_TCP_OPT_BUF      72
#define NT_TCP_OPT_IDX_MASK 63

/* That copy as a type, so that a global function can take a pointer to it (BTF gives its size). */
struct nt_opt_buf {
	__u8 b[NT_TCP_OPT_BUF];
};

/* A connection-opening SYN: SYN set, ACK clear (a SYN-ACK is not ours to mark). */
static __always_inline int nt_tcp_is_syn(__u8 flags)
{
	return (flags & (NT_TCP_FLAG_SYN | NT_TCP_FLAG_ACK)) == NT_TCP_FLAG_SYN;
}

/* No option of ours was found (struct nt_opts_scan.ours_at). */
#define NT_OPT_NONE 0xff

/* struct nt_opts_scan.flags */
enum nt_opts_flags {
	NT_OPTS_EOL = 1 << 0, /* an End-of-Option-List ends the list at .end */
	NT_OPTS_BAD = 1 << 1, /* a length below 2, past the area, or no length byte at .end */
	NT_OPTS_AO  = 1 << 2, /* a TCP-AO option before the stop */
};

/* What one walk over a SYN's options found. */
struct nt_opts_scan {
	__u8 end;      /* where the walk stopped: the EOL or the bad option, else the area's length */
	__u8 ours_at;  /* the first option of our kind and ExID, or NT_OPT_NONE */
	__u8 ours_len; /* its length byte */
	__u8 flags;    /* enum nt_opts_flags */
};

/**
 * nt_tcp_linux_syn_opts() - do the NT_LINUX_SYN_OPTS_LEN bytes at @opts (4-byte
 * aligned, readable) hold the options a Linux SYN starts with, in its order?
 */
static __always_inline int nt_tcp_linux_syn_opts(const __u8 *opts)
{
	const __u32 *w = (const __u32 *)opts;

	return (bpf_ntohl(w[0]) & 0xffff0000) == NT_LINUX_SYN_W0 && bpf_ntohl(w[1]) == NT_LINUX_SYN_W1 &&
	       (bpf_ntohl(w[4]) & 0xffffff00) == NT_LINUX_SYN_W4;
}

/**
 * nt_tcp_opts_scan() - walk the options of a SYN, as the receiving stack does.
 * @opts:   the option area: in the packet, or a stack copy of NT_TCP_OPT_BUF bytes
 * @in_pkt: @opts is in the packet, before @end (data_end); a constant
 * @optlen: its length in bytes (doff * 4 - 20), at most 40; in the packet,
 *          the caller has checked that all of it lies before @end
 * @kind:   our option kind
 * @exid:   our ExID, host byte order
 *
 * The walk stops at the first option of our kind whose first two data bytes
 * are our ExID (whatever its length: the caller judges it), at an EOL (which
 * ends the list), or at an option whose length is below 2 or runs past the
 * area. The marker and the verifier read the same answer: nothing after the
 * stop is looked at. It goes from option to option, at most
 * NT_TCP_MAX_OPT_LEN steps (forty one-byte options); the five options a Linux
 * SYN starts with, when they are there, are passed in one step (the kernel's
 * own parser has such a fast path for timestamps): the walk would find
 * nothing in them, for any @kind of ours (253 or 254).
 */
static __always_inline void nt_tcp_opts_scan(const __u8 *opts, const int in_pkt, const void *end, __u32 optlen,
					     __u8 kind, __u16 exid, struct nt_opts_scan *r)
{
	__u32 idx = 0, start = 0;
	__u8 flags = 0;

	r->ours_at = NT_OPT_NONE;
	r->ours_len = 0;
	if (optlen >= NT_LINUX_SYN_OPTS_LEN && kind > 8 && (!in_pkt || (const void *)(opts + NT_LINUX_SYN_OPTS_LEN) <= end) &&
	    nt_tcp_linux_syn_opts(opts))
		start = NT_LINUX_SYN_OPTS_LEN;
	/*
	 * Verifier workaround: idx = start, computed so that the verifier sees a
	 * number it does not know (it does not fold optlen - optlen) instead of a
	 * constant. Each position the walk can stop at would otherwise be a state
	 * of its own, checked again through all the code after the walk.
	 */
	idx = optlen;
	asm volatile("%0 -= %1\n\t%0 += %2" : "+r"(idx) : "r"(optlen), "r"(start));
#pragma clang loop unroll(disable)
	for (int i = 0; i < NT_TCP_MAX_OPT_LEN; i++) {
		const __u8 *p;
		__u8 k, len;

		if (idx >= optlen)
			break;
		/*
		 * Verifier workaround: a mask it cannot see through (idx < 40 already).
		 * It bounds the offset, and it gives idx the same range on every path
		 * into the next step, so that the verifier can tell it has seen the
		 * state before instead of following each path on its own.
		 */
		asm volatile("%0 &= %1" : "+r"(idx) : "i"(NT_TCP_OPT_IDX_MASK));
		p = opts + idx;
		/* In the packet the area was checked whole; these tell the verifier. */
		if (in_pkt && (const void *)(p + 1) > end)
			goto bad;
		k = p[0];
		if (k == NT_TCPOPT_EOL) {
			r->end = idx;
			r->flags = flags | NT_OPTS_EOL;
			return;
		}
		if (k == NT_TCPOPT_NOP) {
			idx++;
			continue;
		}
		if (idx + 1 >= optlen)
			goto bad;
		if (in_pkt && (const void *)(p + 2) > end)
			goto bad;
		len = p[1];
		if (len < 2 || idx + len > optlen)
			goto bad;
		if (k == kind && len >= 4) {
			if (in_pkt && (const void *)(p + 4) > end)
				goto bad;
			if (p[2] == (__u8)(exid >> 8) && p[3] == (__u8)exid) {
				r->ours_at = idx;
				r->ours_len = len;
				r->end = optlen;
				r->flags = flags;
				return;
			}
		}
		if (k == NT_TCPOPT_AO)
			flags |= NT_OPTS_AO;
		idx += len;
	}
	r->end = optlen;
	r->flags = flags;
	return;
bad:
	r->end = idx;
	r->flags = flags | NT_OPTS_BAD;
}

#endif /* NT_LIB_TCP_H */
