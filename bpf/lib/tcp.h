/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* TCP header: the SYN test and the walk over the existing options. */
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

/**
 * nt_tcp_opts_check() - may a 12-byte option be appended after these options?
 * @opts:   the option area, copied into a zeroed NT_TCP_OPT_BUF-byte buffer
 * @optlen: its length in bytes (doff * 4 - 20), at most 40
 * @kind:   our option kind
 * @exid:   our ExID, host byte order
 *
 * Returns NT_C_MARKED when the option fits, else the NT_C_SKIP_* reason:
 * an EOL anywhere in the area would make receivers ignore what we append;
 * a length below 2 or past the area is malformed; our kind with our ExID is
 * already present; or the area has no room left for NT_OPT_LEN bytes.
 */
static __always_inline __u32 nt_tcp_opts_check(const __u8 *opts, __u32 optlen,
					       __u8 kind, __u16 exid)
{
	__u32 next = 0; /* where the next option starts */

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
		if (k == NT_TCPOPT_EOL)
			return NT_C_SKIP_EOL;
		if (k == NT_TCPOPT_NOP) {
			next = idx + 1;
			continue;
		}
		if (idx + 1 >= optlen)
			return NT_C_SKIP_MALFORMED;
		len = opts[idx + 1];
		if (len < 2 || idx + len > optlen)
			return NT_C_SKIP_MALFORMED;
		if (k == kind && len >= 4 && opts[idx + 2] == (__u8)(exid >> 8) &&
		    opts[idx + 3] == (__u8)exid)
			return NT_C_SKIP_PRESENT;
		next = idx + len;
	}
	if (optlen + NT_OPT_LEN > NT_TCP_MAX_OPT_LEN)
		return NT_C_SKIP_NO_ROOM;
	return NT_C_MARKED;
}

enum nt_opt_find {
	NT_OPT_ABSENT = 0, /* no option of our kind + ExID before the end (or an EOL) */
	NT_OPT_FOUND,      /* *@at, *@len: where ours starts and its length byte */
	NT_OPT_BAD,        /* a length below 2 or past the area, before ours was found */
};

/**
 * nt_tcp_opts_find() - where is our option (kind @kind, ExID @exid) in a SYN?
 * @opts, @optlen as for nt_tcp_opts_check(). The first option of our kind
 * whose first two data bytes are our ExID counts, whatever its length: the
 * caller decides whether the length is right. An EOL ends the list, as it
 * does for the receiving stack.
 */
static __always_inline int nt_tcp_opts_find(const __u8 *opts, __u32 optlen, __u8 kind, __u16 exid,
					    __u32 *at, __u8 *len)
{
	__u32 next = 0;

	/* Verifier workaround: constant indices, as in nt_tcp_opts_check(). */
#pragma clang loop unroll(full)
	for (__u32 idx = 0; idx < NT_TCP_MAX_OPT_LEN; idx++) {
		__u8 k, l;

		if (idx >= optlen || idx != next)
			continue;
		k = opts[idx];
		if (k == NT_TCPOPT_EOL)
			return NT_OPT_ABSENT;
		if (k == NT_TCPOPT_NOP) {
			next = idx + 1;
			continue;
		}
		if (idx + 1 >= optlen)
			return NT_OPT_BAD;
		l = opts[idx + 1];
		if (l < 2 || idx + l > optlen)
			return NT_OPT_BAD;
		if (k == kind && l >= 4 && opts[idx + 2] == (__u8)(exid >> 8) &&
		    opts[idx + 3] == (__u8)exid) {
			*at = idx;
			*len = l;
			return NT_OPT_FOUND;
		}
		next = idx + l;
	}
	return NT_OPT_ABSENT;
}

#endif /* NT_LIB_TCP_H */
