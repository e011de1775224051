// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * netoken egress marker (tc / TCX egress): appends the token option to every
 * outgoing TCP SYN a policy covers. Everything else passes untouched and
 * returns TC_ACT_UNSPEC (TCX_NEXT) so programs after this one still run.
 * Plus the probe the agent reads the kernel's clocks with (struct nt_clock).
 *
 * Two programs. A tc program that writes the packet directly gets a prologue
 * from the kernel that unclones every cloned skb, and nearly every TCP segment
 * leaves as a clone: the attached program, nt_mark_egress, therefore never
 * writes directly. It lets everything but SYNs through and tail-calls
 * nt_mark_syn_prog for them, which writes in place (a SYN's header is copied
 * at the first write anyway, whichever way it is written).
 */
#include "lib/mark.h"

SEC("tc")
int nt_mark_syn_prog(struct __sk_buff *skb)
{
	return nt_mark_syn_direct(skb);
}

/* Filled in by libbpf at load; private to each loaded object, never pinned. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, int(struct __sk_buff *));
} nt_mark_jump SEC(".maps") = {
	.values = { [0] = (void *)&nt_mark_syn_prog },
};

SEC("tc")
int nt_mark_egress(struct __sk_buff *skb)
{
	__be16 dport = 0;

	if (nt_classify((void *)(long)skb->data, (void *)(long)skb->data_end, &dport) == NT_CLASS_PASS)
		return NT_PASS;
	bpf_tail_call_static(skb, &nt_mark_jump, 0);
	/* Not reached while the jump table holds its one program; still correct if it did not. */
	return nt_mark_syn(skb);
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
