// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * netoken ingress verifier: checks the token option of SYNs to protected
 * ports (lib/verify.h). Entry points with the same logic: XDP (where the
 * driver runs it without copying), tc/TCX ingress, and tc/TCX ingress on
 * devices without a link-layer header.
 */
#include "lib/verify.h"

SEC("xdp")
int nt_verify_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (nt_verify(ctx, NT_CTX_XDP, NT_L2_ETH, 0, ctx->ingress_ifindex, data, data_end) == NT_V_DROP)
		return XDP_DROP;
	return XDP_PASS;
}

/* Returns TC_ACT_UNSPEC (TCX_NEXT) so that programs after this one still run. */
SEC("tc")
int nt_verify_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (nt_verify(skb, NT_CTX_SKB, NT_L2_ETH, skb->protocol, skb->ifindex, data, data_end) == NT_V_DROP)
		return NT_DROP;
	return NT_PASS;
}

/* The same on a device without a link-layer header (tun, WireGuard, ipip, sit). */
SEC("tc")
int nt_verify_tc_l3(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (nt_verify(skb, NT_CTX_SKB, NT_L2_NONE, skb->protocol, skb->ifindex, data, data_end) == NT_V_DROP)
		return NT_DROP;
	return NT_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
