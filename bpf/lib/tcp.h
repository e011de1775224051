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
 * Stack copy of the option area: larger than the 40 bytes TCP allows, so that
 * reading a few bytes past any option start, or a length masked with
 * NT_TCP_OPT_BUF_MASK, stays inside it.
 */
#define NT_TCP_OPT_BUF     64
#define NT_TCP_OPT_BUF_MASK (NT_TCP_OPT_BUF - 1)

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
 * nt_tcp_opts_scan() - walk the options of a SYN, as the receiving stack does.
 * @opts:   the option area, copied into a zeroed NT_TCP_OPT_BUF-byte buffer
 * @optlen: its length in bytes (doff * 4 - 20), at most 40
 * @kind:   our option kind
 * @exid:   our ExID, host byte order
 *
 * The walk stops at the first option of our kind whose first two data bytes
 * are our ExID (whatever its length: the caller judges it), at an EOL (which
 * ends the list), or at an option whose length is below 2 or runs past the
 * area. The marker and the verifier read the same answer: nothing after the
 * stop is looked at.
 */
static __always_inline void nt_tcp_opts_scan(const __u8 *opts, __u32 optlen, __u8 kind, __u16 exid,
					     struct nt_opts_scan *r)
{
	__u32 next = 0; /* where the next option starts; NT_TCP_OPT_BUF once the walk has stopped */

	r->end = optlen;
	r->ours_at = NT_OPT_NONE;
	r->ours_len = 0;
	r->flags = 0;
	/*
	 * Verifier workaround: a loop over a variable index into the stack makes
	 * the verifier track every offset precisely and it gives up (state
	 * explosion). Visiting each of the 40 positions at a constant index, and
	 * looking only at the one where an option starts, keeps every stack read
	 * constant and the walk cheap to verify.
	 */
#pragma clang loop unroll(full)
	for (__u32 idx = 0; idx < NT_TCP_MAX_OPT_LEN; idx++) {
		__u8 k, len;

		/* No break: a constant trip count lets the compiler unroll fully. */
		if (idx >= optlen || idx != next)
			continue;
		k = opts[idx];
		if (k == NT_TCPOPT_EOL) {
			r->end = idx;
			r->flags |= NT_OPTS_EOL;
			next = NT_TCP_OPT_BUF;
			continue;
		}
		if (k == NT_TCPOPT_NOP) {
			next = idx + 1;
			continue;
		}
		len = opts[idx + 1];
		if (idx + 1 >= optlen || len < 2 || idx + len > optlen) {
			r->end = idx;
			r->flags |= NT_OPTS_BAD;
			next = NT_TCP_OPT_BUF;
			continue;
		}
		if (k == kind && len >= 4 && opts[idx + 2] == (__u8)(exid >> 8) &&
		    opts[idx + 3] == (__u8)exid) {
			r->ours_at = idx;
			r->ours_len = len;
			next = NT_TCP_OPT_BUF;
			continue;
		}
		if (k == NT_TCPOPT_AO)
			r->flags |= NT_OPTS_AO;
		next = idx + len;
	}
}

#endif /* NT_LIB_TCP_H */
