/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The 8-byte token value and the 12-byte option that carries it. */
#ifndef NT_LIB_TOKEN_H
#define NT_LIB_TOKEN_H

#include "common.h"

/* The SYN fields a keyed token can be bound to (enum nt_bind), in wire order. */
struct nt_flow {
	__u8 saddr[16]; /* IPv4: first 4 bytes */
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__be32 seq;
	__u8 family;    /* 4 or 6 */
	__u8 _pad[3];
};

/**
 * nt_token_value() - the 8 value bytes of the option for this SYN.
 * Returns 0 with @value filled in wire order, or -1 when the policy's mode
 * cannot produce a value (the SYN then passes unmarked).
 */
static __always_inline int nt_token_value(const struct nt_policy *policy,
					  const struct nt_flow *flow,
					  __u8 value[NT_OPT_VALUE_LEN])
{
	(void)flow;
	switch (policy->mode) {
	case NT_MODE_STATIC:
		__builtin_memcpy(value, policy->token, NT_OPT_VALUE_LEN);
		return 0;
	case NT_MODE_KEYED:
		/*
		 * Slot for keyed tokens: SipHash-2-4(policy->key, the fields of
		 * @flow selected by policy->bind || epoch), epoch = now /
		 * policy->epoch_seconds. Not implemented yet: keyed SYNs pass.
		 */
		return -1;
	default:
		return -1;
	}
}

/* Option bytes: kind | NT_OPT_LEN | ExID (big-endian) | value[8]. */
static __always_inline void nt_token_option(__u8 opt[NT_OPT_LEN], __u8 kind, __u16 exid,
					    const __u8 value[NT_OPT_VALUE_LEN])
{
	opt[0] = kind;
	opt[1] = NT_OPT_LEN;
	opt[2] = exid >> 8;
	opt[3] = exid & 0xff;
	__builtin_memcpy(&opt[4], value, NT_OPT_VALUE_LEN);
}

#endif /* NT_LIB_TOKEN_H */
