/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Internet checksum arithmetic (RFC 1071, RFC 1624) on 16-bit words as they
 * are in the packet. A one's complement sum does not depend on byte order, so
 * words are read and written raw, never swapped.
 */
#ifndef NT_LIB_CSUM_H
#define NT_LIB_CSUM_H

#include "common.h"

/* a + b with the end-around carry. */
static __always_inline __u32 nt_csum_add(__u32 a, __u32 b)
{
	__u32 r = a + b;

	return r + (r < a);
}

/* Fold a 32-bit sum to 16 bits (not complemented). */
static __always_inline __u16 nt_csum_fold16(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* One's complement zero has two forms; compare through this. */
static __always_inline __u16 nt_csum_norm(__u16 x)
{
	return x == 0xffff ? 0 : x;
}

/**
 * nt_csum_update() - RFC 1624 eqn. 3: the checksum field @check after the
 * covered data changed by @diff (a sum of new words and complemented old ones).
 */
static __always_inline __u16 nt_csum_update(__u16 check, __u32 diff)
{
	return (__u16)~nt_csum_fold16(nt_csum_add((__u16)~check, diff));
}

/* The sum of the 16-bit words of a 12-byte buffer. */
static __always_inline __u32 nt_csum_words12(const __u8 b[12])
{
	__u32 s = 0;

#pragma unroll
	for (int i = 0; i < 12; i += 2) {
		__u16 w;

		__builtin_memcpy(&w, &b[i], 2);
		s += w;
	}
	return s;
}

#endif /* NT_LIB_CSUM_H */
