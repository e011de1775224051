/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What comes before the IP header: an Ethernet header with up to two
 * 802.1Q / 802.1ad tags, or nothing at all on devices without a link-layer
 * header (tun, WireGuard, ipip, sit). Programs for the second kind are built
 * with @l2 = NT_L2_NONE, and the skb's protocol names the IP version.
 */
#ifndef NT_LIB_ETH_H
#define NT_LIB_ETH_H

#include "common.h"

/* How frames start on the device a program runs on: a constant at every call site. */
#define NT_L2_ETH  0 /* an Ethernet header */
#define NT_L2_NONE 1 /* the IP header (no link-layer header) */

/*
 * Tags we look through: one 802.1Q or 802.1ad tag, or an 802.1ad outer tag
 * followed by an 802.1Q inner tag (QinQ). Tags offloaded to skb->vlan_tci
 * are not in the packet and need nothing. A third tag makes the frame
 * unreadable: the stack may still deliver it through stacked VLAN devices.
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

enum nt_l2_result {
	NT_L2_IP = 0,        /* *proto is ETH_P_IP or ETH_P_IPV6, the IP header at *l3_off */
	NT_L2_OTHER,         /* not IP (ARP, LLDP, ...): not ours to look at */
	NT_L2_TOO_DEEP,      /* more VLAN tags than we look through */
	NT_L2_SHORT,         /* the headers do not all lie in [data, data_end) */
};

static __always_inline int nt_eth_is_vlan(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

static __always_inline int nt_proto_is_ip(__be16 proto)
{
	return proto == bpf_htons(ETH_P_IP) || proto == bpf_htons(ETH_P_IPV6);
}

/**
 * nt_l2_parse() - find the IP header, by direct packet access.
 * @l2:        NT_L2_ETH or NT_L2_NONE (a constant)
 * @skb_proto: the skb's protocol (network order); read only with NT_L2_NONE
 * Returns enum nt_l2_result; *@proto and *@l3_off are set for NT_L2_IP.
 */
static __always_inline int nt_l2_parse(void *data, void *data_end, const int l2, __be16 skb_proto,
				       __be16 *proto, __u32 *l3_off)
{
	struct nt_eth_hdr *eth = data;
	struct nt_vlan_hdr *vh;
	__u32 off = sizeof(*eth);
	__be16 p;

	if (l2 == NT_L2_NONE) {
		*proto = skb_proto;
		*l3_off = 0;
		return nt_proto_is_ip(skb_proto) ? NT_L2_IP : NT_L2_OTHER;
	}
	if ((void *)(eth + 1) > data_end)
		return NT_L2_SHORT;
	p = eth->proto;
#pragma unroll
	for (int i = 0; i < NT_VLAN_MAX_DEPTH; i++) {
		if (!nt_eth_is_vlan(p))
			break;
		vh = data + off;
		if ((void *)(vh + 1) > data_end)
			return NT_L2_SHORT;
		p = vh->encap_proto;
		off += sizeof(*vh);
	}
	if (nt_eth_is_vlan(p))
		return NT_L2_TOO_DEEP;
	if (!nt_proto_is_ip(p))
		return NT_L2_OTHER;
	*proto = p;
	*l3_off = off;
	return NT_L2_IP;
}

#endif /* NT_LIB_ETH_H */
