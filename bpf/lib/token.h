/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The 8-byte token value the marker puts on a SYN, and the 12-byte option that carries it. */
#ifndef NT_LIB_TOKEN_H
#define NT_LIB_TOKEN_H

#include "common.h"
#include "keyed.h"

enum nt_token_result {
	NT_TOKEN_OK = 0,
	NT_TOKEN_NO_MODE,  /* the slot's mode cannot produce a value */
	NT_TOKEN_NO_CLOCK, /* keyed, but no wall clock yet */
};

/**
 * nt_token_value() - the 8 value bytes of the option for this SYN, in wire order.
 * Static: the policy's token. Keyed: SipHash-2-4 with the current key over
 * the bound fields of @flow and the current epoch (abi.h).
 * Returns enum nt_token_result; on anything but NT_TOKEN_OK the SYN passes unmarked.
 */
static __always_inline int nt_token_value(const struct nt_policy *policy,
					  const struct nt_flow *flow,
					  __u8 value[NT_OPT_VALUE_LEN])
{
	struct nt_keyed_flow msg;
	struct nt_sip prefix;
	__u64 epoch, h;

	switch (policy->mode) {
	case NT_MODE_STATIC:
		__builtin_memcpy(value, policy->token, NT_OPT_VALUE_LEN);
		return NT_TOKEN_OK;
	case NT_MODE_KEYED:
		if (nt_keyed_epoch(policy->epoch_seconds, &epoch))
			return NT_TOKEN_NO_CLOCK;
		nt_keyed_flow_bytes(&msg, flow, policy->bind);
		nt_keyed_prefix(&prefix, policy->key, &msg);
		h = nt_cpu_le64(nt_keyed_value(&prefix, epoch));
		__builtin_memcpy(value, &h, NT_OPT_VALUE_LEN);
		return NT_TOKEN_OK;
	default:
		return NT_TOKEN_NO_MODE;
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
