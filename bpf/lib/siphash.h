/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast short-input PRF"),
 * the one implementation behind keyed tokens in the marker and the verifier.
 * test/packet/siphash.test.ts runs it (through test_siphash.bpf.c) against
 * the reference test vectors and against src/lib/siphash.ts.
 *
 * The message is read as 64-bit little-endian words from a u64 array, so
 * every load is an aligned stack load at a constant offset.
 */
#ifndef NT_LIB_SIPHASH_H
#define NT_LIB_SIPHASH_H

#include "common.h"

/* Longest message nt_siphash24() takes: 7 whole words and a 7-byte tail. */
#define NT_SIPHASH_MAX_LEN   63
#define NT_SIPHASH_MAX_WORDS 8

struct nt_sip {
	__u64 v0, v1, v2, v3;
};

#define NT_ROTL64(x, b) (((x) << (b)) | ((x) >> (64 - (b))))

/* @x as little-endian: a no-op on little-endian hosts; its own inverse. */
static __always_inline __u64 nt_cpu_le64(__u64 x)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	return __builtin_bswap64(x);
#else
	return x;
#endif
}

static __always_inline void nt_sipround(struct nt_sip *s)
{
	s->v0 += s->v1;
	s->v1 = NT_ROTL64(s->v1, 13);
	s->v1 ^= s->v0;
	s->v0 = NT_ROTL64(s->v0, 32);
	s->v2 += s->v3;
	s->v3 = NT_ROTL64(s->v3, 16);
	s->v3 ^= s->v2;
	s->v0 += s->v3;
	s->v3 = NT_ROTL64(s->v3, 21);
	s->v3 ^= s->v0;
	s->v2 += s->v1;
	s->v1 = NT_ROTL64(s->v1, 17);
	s->v1 ^= s->v2;
	s->v2 = NT_ROTL64(s->v2, 32);
}

/* Key schedule: k0, k1 are the key's two little-endian halves. */
static __always_inline void nt_sip_init(struct nt_sip *s, __u64 k0, __u64 k1)
{
	s->v0 = 0x736f6d6570736575ULL ^ k0;
	s->v1 = 0x646f72616e646f6dULL ^ k1;
	s->v2 = 0x6c7967656e657261ULL ^ k0;
	s->v3 = 0x7465646279746573ULL ^ k1;
}

/* One message word, two compression rounds. */
static __always_inline void nt_sip_block(struct nt_sip *s, __u64 m)
{
	s->v3 ^= m;
	nt_sipround(s);
	nt_sipround(s);
	s->v0 ^= m;
}

/* @last: the tail bytes (little-endian) with the message length in the top byte. */
static __always_inline __u64 nt_sip_final(struct nt_sip *s, __u64 last)
{
	nt_sip_block(s, last);
	s->v2 ^= 0xff;
	nt_sipround(s);
	nt_sipround(s);
	nt_sipround(s);
	nt_sipround(s);
	return s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}

/* The two key halves from 16 key bytes (any alignment). */
static __always_inline void nt_sip_key(const __u8 key[16], __u64 *k0, __u64 *k1)
{
	__u64 a, b;

	__builtin_memcpy(&a, key, 8);
	__builtin_memcpy(&b, key + 8, 8);
	*k0 = nt_cpu_le64(a);
	*k1 = nt_cpu_le64(b);
}

/**
 * nt_siphash24() - SipHash-2-4 of the first @len bytes of @msg, @len <= 63.
 * @msg holds NT_SIPHASH_MAX_WORDS words; bytes past @len are ignored.
 * Returns the 64-bit result (put on the wire little-endian).
 */
static __always_inline __u64 nt_siphash24(__u64 k0, __u64 k1,
					  const __u64 msg[NT_SIPHASH_MAX_WORDS], __u32 len)
{
	struct nt_sip s;
	__u32 nblocks = len / 8;
	__u32 tail = len % 8;
	__u64 last = (__u64)len << 56;

	nt_sip_init(&s, k0, k1);
	/* Constant trip count and index: the verifier sees fixed stack offsets. */
#pragma clang loop unroll(full)
	for (__u32 i = 0; i < NT_SIPHASH_MAX_WORDS; i++) {
		__u64 w = nt_cpu_le64(msg[i]);

		if (i < nblocks)
			nt_sip_block(&s, w);
		else if (i == nblocks && tail)
			last |= w & ((1ULL << (tail * 8)) - 1);
	}
	return nt_sip_final(&s, last);
}

#endif /* NT_LIB_SIPHASH_H */
