// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * netoken egress marker (tc / TCX egress): appends the token option to every
 * outgoing TCP SYN a policy covers. Everything else passes untouched and
 * returns TC_ACT_UNSPEC (TCX_NEXT) so programs after this one still run.
 * Plus the probe the agent reads the kernel's clocks with (struct nt_clock).
 */
#include "lib/mark.h"

SEC("tc")
int nt_mark_egress(struct __sk_buff *skb)
{
	return nt_mark(skb);
}

/*
 * Never attached: run with BPF_PROG_TEST_RUN on a frame of at least 24 bytes.
 * Writes, in host byte order, CLOCK_TAI (0 where the kernel lacks the helper)
 * and CLOCK_BOOTTIME in ns, and 1 or 0 for "the kernel has CLOCK_TAI".
 */
SEC("xdp")
int nt_clock_probe(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 out[3] = {};

	out[2] = nt_have_tai();
	if (out[2])
		out[0] = bpf_ktime_get_tai_ns();
	out[1] = bpf_ktime_get_boot_ns();
	if (data + sizeof(out) > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(data, out, sizeof(out));
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
