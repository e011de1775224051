/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* IPv4 header: where TCP starts, fragments, the total length field. */
#ifndef NT_LIB_IPV4_H
#define NT_LIB_IPV4_H

#include <linux/ip.h>
#include "common.h"

#define NT_IP_MF     0x2000
#define NT_IP_OFFSET 0x1fff

/* Offsets of the fields the marker rewrites, from the start of the IPv4 header. */
#define NT_IPV4_TOT_LEN_OFF offsetof(struct iphdr, tot_len)
#define NT_IPV4_CHECK_OFF   offsetof(struct iphdr, check)

/* A non-first fragment carries no TCP header: nothing to look at. */
static __always_inline int nt_ipv4_is_later_fragment(const struct iphdr *iph)
{
	return (iph->frag_off & bpf_htons(NT_IP_OFFSET)) != 0;
}

/* The first fragment of a fragmented datagram (offset 0, More Fragments set). */
static __always_inline int nt_ipv4_is_first_fragment(const struct iphdr *iph)
{
	return (iph->frag_off & bpf_htons(NT_IP_MF | NT_IP_OFFSET)) == bpf_htons(NT_IP_MF);
}

/* Header length in bytes; below 20 the header is invalid. */
static __always_inline __u32 nt_ipv4_hlen(const struct iphdr *iph)
{
	return (__u32)iph->ihl * 4;
}

#endif /* NT_LIB_IPV4_H */
