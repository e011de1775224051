/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Finding opening TCP SYNs, for the egress marker and the ingress verifier:
 *  - nt_classify(): direct packet access, no helper calls, no map lookups.
 *    Every packet that is not a TCP SYN leaves here.
 *  - nt_parse_syn_direct(): a SYN whose headers are all in the linear area (every
 *    SYN the local stack sends): the same struct nt_syn, read in place.
 *  - nt_parse_syn(): SYNs whose headers are not all in the linear area, or IPv6
 *    with extension headers to walk. It re-reads the headers with nt_load().
 */
#ifndef NT_LIB_SYN_H
#define NT_LIB_SYN_H

#include "common.h"
#include "ctx.h"
#include "eth.h"
#include "ipv4.h"
#include "ipv6.h"
#include "tcp.h"

/* Where the SYN's headers are and what its length fields hold. */
struct nt_syn_layout {
	__u32 l3_off;
	__u32 l4_off;
	__u32 ip_len;     /* IPv4 tot_len or IPv6 payload_len, host order */
	__u32 tcp_len;    /* TCP header length = doff * 4 (no payload) */
	__u16 doff_word;  /* 16-bit word at TCP byte 12, as in the packet */
	__u8 family;      /* 4 or 6 */
	__u8 _pad;
};

/* The SYN fields a keyed token can be bound to (enum nt_bind), in wire order. */
struct nt_flow {
	__u8 saddr[16]; /* IPv4: first 4 bytes */
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__be32 seq;
	__u8 family;    /* 4 or 6 */
	__u8 _pad[3];
};

/* What the fast path found. */
enum nt_class {
	NT_CLASS_PASS = 0, /* certainly not a SYN we care about */
	NT_CLASS_SLOW,     /* a SYN, or cannot tell with direct access */
};

/* What the slow parse found. */
enum nt_parse {
	NT_PARSE_PASS = 0, /* not an opening TCP SYN, or unreadable: pass, uncounted */
	NT_PARSE_SYN,      /* a SYN: struct nt_syn is filled in */
	NT_PARSE_IPV6_OPAQUE, /* IPv6 extension headers we cannot see past: count and pass */
	NT_PARSE_SLOW,     /* nt_parse_syn_direct() only: headers not all linear, IPv6 extension headers, an IPv4 first fragment */
	/*
	 * nt_parse_syn() with @frag_strict only: an IPv4 first fragment whose TCP
	 * header does not all lie inside it (but its ports do). Reassembly may
	 * still make a SYN of it. s->flow holds the addresses and ports. Without
	 * @frag_strict such a fragment is read as if the bytes after it were its
	 * own: the marker only counts it as a fragment.
	 */
	NT_PARSE_FRAG_CUT,
};

struct nt_syn {
	struct nt_syn_layout layout;
	struct nt_flow flow;
	struct tcphdr tcp;
	__u32 ip_hlen;    /* IPv4 ihl * 4; IPv6 40 + extension headers */
	__u8 first_frag;  /* IPv4 first fragment (MF set, offset 0) */
	__u8 ipv6_ext;    /* IPv6 extension headers before TCP */
	__u8 opts_cut;    /* nt_parse_syn_direct(): the option area runs past the linear area */
	__u8 _pad;
};

/**
 * nt_classify() - fast path: is this possibly an opening TCP SYN?
 * Reads only [@data, @data_end) (the linear area); when a header is not there,
 * answers NT_CLASS_SLOW with *@dport 0. For a SYN it sees whole, *@dport is
 * its destination port in network byte order.
 */
static __always_inline int nt_classify(void *data, void *data_end, __be16 *dport)
{
	__u8 *tcp;
	__be16 proto;
	__u32 off;

	if (nt_eth_parse_direct(data, data_end, &proto, &off))
		return NT_CLASS_SLOW;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = data + off;
		__u32 hlen;

		if ((void *)(iph + 1) > data_end)
			return NT_CLASS_SLOW;
		if (iph->protocol != IPPROTO_TCP || nt_ipv4_is_later_fragment(iph))
			return NT_CLASS_PASS;
		/* Its TCP header may be cut short, with other bytes after it: look closer. */
		if (nt_ipv4_is_first_fragment(iph))
			return NT_CLASS_SLOW;
		hlen = nt_ipv4_hlen(iph);
		if (hlen < sizeof(*iph))
			return NT_CLASS_PASS;
		tcp = (__u8 *)iph + hlen;
		if ((void *)(tcp + NT_TCP_FLAGS_OFF + 1) > data_end)
			return NT_CLASS_SLOW;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = data + off;

		if ((void *)(ip6h + 1) > data_end)
			return NT_CLASS_SLOW;
		if (ip6h->nexthdr != IPPROTO_TCP) {
			/* Extension headers are walked on the slow path; ESP hides what follows. */
			if (nt_ipv6_is_ext(ip6h->nexthdr) && ip6h->nexthdr != NT_IPV6_NEXTHDR_ESP)
				return NT_CLASS_SLOW;
			return NT_CLASS_PASS;
		}
		tcp = (__u8 *)(ip6h + 1);
		if ((void *)(tcp + NT_TCP_FLAGS_OFF + 1) > data_end)
			return NT_CLASS_SLOW;
	} else {
		return NT_CLASS_PASS;
	}
	if (!nt_tcp_is_syn(tcp[NT_TCP_FLAGS_OFF]))
		return NT_CLASS_PASS;
	*dport = ((struct tcphdr *)tcp)->dest;
	return NT_CLASS_SLOW;
}

/**
 * nt_parse_syn() - read the headers of a possible SYN with nt_load().
 * Returns enum nt_parse; on NT_PARSE_SYN, @s describes the packet.
 */
static __always_inline int nt_parse_syn(void *ctx, const int xdp, struct nt_syn *s,
					const int frag_strict)
{
	__be16 proto;
	__u32 l3_off, l4_off;

	if (nt_eth_parse_load(ctx, xdp, &proto, &l3_off))
		return NT_PARSE_PASS;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr iph;

		if (nt_load(ctx, xdp, l3_off, &iph, sizeof(iph)))
			return NT_PARSE_PASS;
		if (iph.version != 4 || iph.protocol != IPPROTO_TCP || nt_ipv4_is_later_fragment(&iph))
			return NT_PARSE_PASS;
		s->ip_hlen = nt_ipv4_hlen(&iph);
		if (s->ip_hlen < sizeof(iph))
			return NT_PARSE_PASS;
		s->layout.family = 4;
		s->layout.ip_len = bpf_ntohs(iph.tot_len);
		s->first_frag = nt_ipv4_is_first_fragment(&iph);
		__builtin_memcpy(s->flow.saddr, &iph.saddr, 4);
		__builtin_memcpy(s->flow.daddr, &iph.daddr, 4);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6h;
		__u8 nexthdr;

		if (nt_load(ctx, xdp, l3_off, &ip6h, sizeof(ip6h)))
			return NT_PARSE_PASS;
		if (ip6h.version != 6)
			return NT_PARSE_PASS;
		nexthdr = ip6h.nexthdr;
		s->ip_hlen = sizeof(ip6h);
		if (nexthdr != IPPROTO_TCP) {
			switch (nt_ipv6_walk_ext(ctx, xdp, l3_off, &nexthdr, &s->ip_hlen)) {
			case NT_IPV6_UPPER:
				break;
			case NT_IPV6_OPAQUE:
				return NT_PARSE_IPV6_OPAQUE;
			default:
				return NT_PARSE_PASS;
			}
			if (nexthdr != IPPROTO_TCP)
				return NT_PARSE_PASS;
			s->ipv6_ext = 1;
		}
		s->layout.family = 6;
		s->layout.ip_len = bpf_ntohs(ip6h.payload_len);
		s->first_frag = 0;
		__builtin_memcpy(s->flow.saddr, &ip6h.saddr, 16);
		__builtin_memcpy(s->flow.daddr, &ip6h.daddr, 16);
	} else {
		return NT_PARSE_PASS;
	}

	l4_off = l3_off + s->ip_hlen;
	if (frag_strict && s->first_frag) {
		__u8 head[NT_TCP_FLAGS_OFF + 1];

		/* Only what the IP length covers counts: bytes after it are not the datagram's. */
		if (s->layout.ip_len < s->ip_hlen + sizeof(s->tcp) ||
		    nt_load(ctx, xdp, l4_off, &s->tcp, sizeof(s->tcp))) {
			/* Flags in the fragment: only a SYN matters. Else the ports, if there. */
			if (s->layout.ip_len >= s->ip_hlen + sizeof(head) &&
			    !nt_load(ctx, xdp, l4_off, head, sizeof(head))) {
				if (!nt_tcp_is_syn(head[NT_TCP_FLAGS_OFF]))
					return NT_PARSE_PASS;
			} else if (s->layout.ip_len < s->ip_hlen + 4 ||
				   nt_load(ctx, xdp, l4_off, head, 4)) {
				/* Not even the ports: a first fragment must hold 8 bytes, the stack drops it. */
				return NT_PARSE_PASS;
			}
			__builtin_memcpy(&s->flow.sport, &head[0], 2);
			__builtin_memcpy(&s->flow.dport, &head[2], 2);
			s->flow.family = 4;
			return NT_PARSE_FRAG_CUT;
		}
	} else if (nt_load(ctx, xdp, l4_off, &s->tcp, sizeof(s->tcp))) {
		return NT_PARSE_PASS;
	}
	if (!nt_tcp_is_syn(((__u8 *)&s->tcp)[NT_TCP_FLAGS_OFF]))
		return NT_PARSE_PASS;

	s->layout.l3_off = l3_off;
	s->layout.l4_off = l4_off;
	s->layout.tcp_len = (__u32)s->tcp.doff * 4;
	__builtin_memcpy(&s->layout.doff_word, (__u8 *)&s->tcp + NT_TCP_DOFF_WORD_OFF, 2);
	s->flow.family = s->layout.family;
	s->flow.sport = s->tcp.source;
	s->flow.dport = s->tcp.dest;
	s->flow.seq = s->tcp.seq;
	return NT_PARSE_SYN;
}

/**
 * nt_parse_syn_direct() - nt_parse_syn() by direct packet access, for a SYN
 * whose Ethernet, IP and TCP headers, options included, are in [@data, @data_end).
 * On NT_PARSE_SYN, @s describes the packet and @opts (NT_TCP_OPT_BUF bytes,
 * zeroed by the caller) holds its option area, or s->opts_cut says that the
 * area runs past the linear data (for a linear skb: past the packet). Returns
 * NT_PARSE_SLOW when the caller must use nt_parse_syn() instead: a header
 * before the options not in the linear area, IPv6 extension headers to walk,
 * or an IPv4 first fragment.
 */
static __always_inline int nt_parse_syn_direct(void *data, void *data_end, struct nt_syn *s,
					       __u8 opts[NT_TCP_OPT_BUF])
{
	struct tcphdr *th;
	__be16 proto;
	__u32 l3_off, optlen;
	__u8 *o;

	if (nt_eth_parse_direct(data, data_end, &proto, &l3_off))
		return NT_PARSE_SLOW;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = data + l3_off;

		if ((void *)(iph + 1) > data_end)
			return NT_PARSE_SLOW;
		if (iph->version != 4 || iph->protocol != IPPROTO_TCP || nt_ipv4_is_later_fragment(iph))
			return NT_PARSE_PASS;
		s->ip_hlen = nt_ipv4_hlen(iph);
		if (s->ip_hlen < sizeof(*iph))
			return NT_PARSE_PASS;
		s->layout.family = 4;
		s->layout.ip_len = bpf_ntohs(iph->tot_len);
		/* Rare, and its TCP header may be cut short: nt_parse_syn() looks closer. */
		if (nt_ipv4_is_first_fragment(iph))
			return NT_PARSE_SLOW;
		s->first_frag = 0;
		__builtin_memcpy(s->flow.saddr, &iph->saddr, 4);
		__builtin_memcpy(s->flow.daddr, &iph->daddr, 4);
		th = (void *)iph + s->ip_hlen;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = data + l3_off;

		if ((void *)(ip6h + 1) > data_end)
			return NT_PARSE_SLOW;
		if (ip6h->version != 6)
			return NT_PARSE_PASS;
		if (ip6h->nexthdr != IPPROTO_TCP)
			return NT_PARSE_SLOW;
		s->ip_hlen = sizeof(*ip6h);
		s->layout.family = 6;
		s->layout.ip_len = bpf_ntohs(ip6h->payload_len);
		s->first_frag = 0;
		__builtin_memcpy(s->flow.saddr, &ip6h->saddr, 16);
		__builtin_memcpy(s->flow.daddr, &ip6h->daddr, 16);
		th = (void *)(ip6h + 1);
	} else {
		return NT_PARSE_PASS;
	}

	if ((void *)(th + 1) > data_end)
		return NT_PARSE_SLOW;
	if (!nt_tcp_is_syn(((__u8 *)th)[NT_TCP_FLAGS_OFF]))
		return NT_PARSE_PASS;
	s->tcp = *th;

	s->layout.l3_off = l3_off;
	s->layout.l4_off = l3_off + s->ip_hlen;
	s->layout.tcp_len = (__u32)s->tcp.doff * 4;
	__builtin_memcpy(&s->layout.doff_word, (__u8 *)th + NT_TCP_DOFF_WORD_OFF, 2);
	s->flow.family = s->layout.family;
	s->flow.sport = s->tcp.source;
	s->flow.dport = s->tcp.dest;
	s->flow.seq = s->tcp.seq;

	/* The option area, a multiple of 4 bytes, copied a word at a time (doff < 5 leaves it empty). */
	optlen = s->layout.tcp_len > sizeof(*th) ? s->layout.tcp_len - sizeof(*th) : 0;
	o = (__u8 *)(th + 1);
#pragma clang loop unroll(full)
	for (__u32 i = 0; i < NT_TCP_MAX_OPT_LEN; i += 4) {
		if (i >= optlen || s->opts_cut)
			continue;
		if ((void *)(o + i + 4) > data_end) {
			s->opts_cut = 1;
			continue;
		}
		__builtin_memcpy(&opts[i], o + i, 4);
	}
	/*
	 * Keep @opts a buffer in memory: with every index constant, clang would
	 * otherwise turn its 40 bytes into 40 spilled scalars and run out of stack.
	 */
	asm volatile("" : : "r"(opts) : "memory");
	return NT_PARSE_SYN;
}

#endif /* NT_LIB_SYN_H */
