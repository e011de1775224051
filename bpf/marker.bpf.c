// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * netoken egress marker (tc / TCX egress): appends the token option to every
 * outgoing TCP SYN a policy covers. Everything else passes untouched and
 * returns TC_ACT_UNSPEC (TCX_NEXT) so programs after this one still run.
 * Plus the probe the agent reads the kernel's clocks with (struct nt_clock).
 *
 * Two programs. A tc program that writes the packet directly gets a prologue
 * from the kernel that unclones every cloned skb on entry (copying its
 * header), and nearly every TCP segment leaves as a clone: the attached
 * program, nt_mark_egress, therefore never writes. It lets everything but
 * SYNs through and tail-calls nt_mark_syn_prog for them, which writes in
 * place. Every SYN that reaches nt_mark_syn_prog pays the copy, marked or
 * not; SYNs are few.
 */
#include "lib/mark.h"

SEC("tc")
int nt_mark_syn_prog(struct __sk_buff *skb)
{
	return nt_mark_syn(skb, NT_L2_ETH);
}

SEC("tc")
int nt_mark_syn_prog_l3(struct __sk_buff *skb)
{
	return nt_mark_syn(skb, NT_L2_NONE);
}

/*
 * Filled in by libbpf at load with this object's SYN program, one per link-layer
 * form. Pinned like the other maps: the pin is what keeps marking while no
 * agent runs (map_decl.h).
 */
NT_PINNED_JUMP(nt_mark_jump, nt_mark_syn_prog);
NT_PINNED_JUMP(nt_mark_jump_l3, nt_mark_syn_prog_l3);

/* The marker on a device whose frames start with an Ethernet header. */
SEC("tc")
int nt_mark_egress(struct __sk_buff *skb)
{
	return nt_mark_entry(skb, NT_L2_ETH, &nt_mark_jump);
}

/* The marker on a device without a link-layer header (tun, WireGuard, ipip, sit). */
SEC("tc")
int nt_mark_egress_l3(struct __sk_buff *skb)
{
	return nt_mark_entry(skb, NT_L2_NONE, &nt_mark_jump_l3);
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
