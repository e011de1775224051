/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Ethernet and 802.1Q / 802.1ad tags in front of the IP header. */
#ifndef NT_LIB_ETH_H
#define NT_LIB_ETH_H

#include "common.h"
#include "ctx.h"

/*
 * Tags we look through: one 802.1Q or 802.1ad tag, or an 802.1ad outer tag
 * followed by an 802.1Q inner tag (QinQ). Tags offloaded to skb->vlan_tci
 * are not in the packet and need nothing.
 */
#define NT_VLAN_MAX_DEPTH 2

struct nt_vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

/*
 * struct ethhdr is packed, which makes clang read h_proto a byte at a time;
 * this layout is the same 14 bytes with h_proto 2-byte aligned (skb->data is).
 */
struct nt_eth_hdr {
	__u8 dst[ETH_ALEN];
	__u8 src[ETH_ALEN];
	__be16 proto;
};

static __always_inline int nt_eth_is_vlan(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

/**
 * nt_eth_parse_direct() - find the L3 protocol and offset with direct packet access.
 * Returns 0 with *@proto and *@l3_off set, or -1 when the headers are not
 * all in the linear area (the caller falls back to nt_eth_parse_load()).
 */
static __always_inline int nt_eth_parse_direct(void *data, void *data_end,
					       __be16 *proto, __u32 *l3_off)
{
	struct nt_eth_hdr *eth = data;
	struct nt_vlan_hdr *vh;
	__u32 off = sizeof(*eth);
	__be16 p;

	if ((void *)(eth + 1) > data_end)
		return -1;
	p = eth->proto;
#pragma unroll
	for (int i = 0; i < NT_VLAN_MAX_DEPTH; i++) {
		if (!nt_eth_is_vlan(p))
			break;
		vh = data + off;
		if ((void *)(vh + 1) > data_end)
			return -1;
		p = vh->encap_proto;
		off += sizeof(*vh);
	}
	*proto = p;
	*l3_off = off;
	return 0;
}

/**
 * nt_eth_parse_load() - as nt_eth_parse_direct(), reading with nt_load() so
 * that it also works when the headers are not in the linear area.
 * Returns 0, or -1 when the packet is too short.
 */
static __always_inline int nt_eth_parse_load(void *ctx, const int xdp, __be16 *proto, __u32 *l3_off)
{
	struct nt_vlan_hdr vh;
	__u32 off = sizeof(struct nt_eth_hdr);
	__be16 p;

	if (nt_load(ctx, xdp, offsetof(struct nt_eth_hdr, proto), &p, sizeof(p)))
		return -1;
#pragma unroll
	for (int i = 0; i < NT_VLAN_MAX_DEPTH; i++) {
		if (!nt_eth_is_vlan(p))
			break;
		if (nt_load(ctx, xdp, off, &vh, sizeof(vh)))
			return -1;
		p = vh.encap_proto;
		off += sizeof(vh);
	}
	*proto = p;
	*l3_off = off;
	return 0;
}

#endif /* NT_LIB_ETH_H */
