// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test-only view of the keyed-token clock (lib/keyed.h), for test/packet/clock.test.ts:
 * writes unix ns as both clock paths compute it from nt_clock, so that the path a
 * kernel older than 6.1 takes is checked on this one too.
 */
#include "lib/keyed.h"

#define NT_TEST_BAD_INPUT 100

/* Frame of at least 32 bytes; out: [0] the path nt_unix_ns() takes, [1] TAI (0 without it), [2] boottime, [3] 1 if TAI. */
SEC("xdp")
int nt_test_clock(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 out[4] = {};
	__u32 zero = 0;
	struct nt_clock *c;

	c = bpf_map_lookup_elem(&nt_clock, &zero);
	if (!c)
		return NT_TEST_BAD_INPUT;
	out[0] = nt_unix_ns(c);
	out[3] = nt_have_tai();
	if (out[3])
		out[1] = nt_unix_ns_tai(c);
	out[2] = nt_unix_ns_boot(c);
	if (data + sizeof(out) > data_end)
		return NT_TEST_BAD_INPUT;
	__builtin_memcpy(data, out, sizeof(out));
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
