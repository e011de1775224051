// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * netoken ingress verifier: checks the token option of SYNs to protected
 * ports (lib/verify.h). Two entry points with the same logic: XDP (native or
 * generic, where the agent can attach it) and tc/TCX ingress.
 */
#include "lib/verify.h"

SEC("xdp")
int nt_verify_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (nt_verify(ctx, NT_CTX_XDP, ctx->ingress_ifindex, data, data_end) == NT_V_DROP)
		return XDP_DROP;
	return XDP_PASS;
}

/* Returns TC_ACT_UNSPEC (TCX_NEXT) so that programs after this one still run. */
SEC("tc")
int nt_verify_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (nt_verify(skb, NT_CTX_SKB, skb->ifindex, data, data_end) == NT_V_DROP)
		return NT_DROP;
	return NT_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
