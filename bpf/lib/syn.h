/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Finding opening TCP SYNs, for the egress marker and the ingress verifier.
 * One parser in two steps, both by direct packet access:
 *  - nt_classify(): no helper calls, no map lookups. Every packet that is not
 *    a TCP SYN leaves here.
 *  - nt_parse_syn(): the headers and options of a possible SYN. The caller
 *    makes the headers linear first where it can (tc: bpf_skb_pull_data();
 *    XDP sees the whole frame). Only IPv6 extension headers, whose offsets
 *    the packet itself decides, are read with helper loads.
 */
#ifndef NT_LIB_SYN_H
#define NT_LIB_SYN_H

#include "common.h"
#include "ctx.h"
#include "eth.h"
#include "ipv4.h"
#include "ipv6.h"
#include "tcp.h"

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
	NT_CLASS_SLOW,     /* a SYN, or cannot tell with what is in the linear area */
};

/* What nt_parse_syn() found. */
enum nt_parse {
	NT_PARSE_PASS = 0,    /* not an opening TCP SYN, or unreadable: pass, uncounted */
	NT_PARSE_SYN,         /* a SYN: struct nt_syn is filled in */
	NT_PARSE_IPV6_OPAQUE, /* IPv6 extension headers we cannot see past: count and pass */
	/*
	 * With @frag_strict only: an IPv4 first fragment whose TCP header does not
	 * all lie inside it (but its ports do). Reassembly may still make a SYN of
	 * it. s->flow holds the addresses and ports.
	 */
	NT_PARSE_FRAG_CUT,
};

/* Where a SYN's headers are, and the fields the marker and the verifier need. */
struct nt_syn {
	__u32 l3_off;
	__u32 l4_off;
	__u32 ip_len;     /* IPv4 tot_len or IPv6 payload_len, host order */
	__u32 ip_hlen;    /* IPv4 ihl * 4; IPv6 40 + extension headers */
	__u32 tcp_len;    /* TCP header length = doff * 4 */
	__u16 doff_word;  /* 16-bit word at TCP byte 12, as in the packet */
	__u16 check;      /* the TCP checksum field, as in the packet */
	__u8 family;      /* 4 or 6 */
	__u8 first_frag;  /* IPv4 first fragment (MF set, offset 0) */
	__u8 ipv6_ext;    /* IPv6 extension headers before TCP */
	__u8 opts_cut;    /* the option area runs past what may be read */
	struct nt_flow flow;
};

/*
 * Bounds the verifier needs on offsets read in place. Ethernet, two VLAN tags
 * and a 60-byte IPv4 header end at byte 82; a TCP header is at most 60 bytes.
 */
#define NT_MAX_L3_OFF       22
#define NT_DIRECT_MAX_L4_OFF 128
#define NT_TCP_MAX_HDR_LEN  60

/*
 * @x & 0xff, done where the compiler cannot see it. Verifier workaround: for
 * an offset already checked to be smaller, clang drops a plain mask, and the
 * verifier does not always tie the earlier check to the register it uses.
 */
static __always_inline __u64 nt_bound_off(__u64 x)
{
	asm volatile("%0 &= 0xff" : "+r"(x));
	return x;
}

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

	switch (nt_l2_parse(data, data_end, &proto, &off)) {
	case NT_L2_IP:
		break;
	case NT_L2_SHORT:
		return NT_CLASS_SLOW;
	default:
		return NT_CLASS_PASS;
	}

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
	} else {
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
	}
	if ((void *)(tcp + NT_TCP_FLAGS_OFF + 1) > data_end)
		return NT_CLASS_SLOW;
	if (!nt_tcp_is_syn(tcp[NT_TCP_FLAGS_OFF]))
		return NT_CLASS_PASS;
	*dport = ((struct tcphdr *)tcp)->dest;
	return NT_CLASS_SLOW;
}

/**
 * nt_parse_ip() - the IP header of a possible SYN, read in place.
 * Fills the addresses, family, lengths and s->l4_off. Returns NT_PARSE_SYN
 * when a TCP header should follow at s->l4_off, else enum nt_parse.
 */
static __always_inline int nt_parse_ip(void *ctx, const int xdp, void *data, void *data_end,
				       struct nt_syn *s)
{
	__be16 proto;
	__u32 l3_off;

	if (nt_l2_parse(data, data_end, &proto, &l3_off) != NT_L2_IP)
		return NT_PARSE_PASS;
	l3_off = nt_bound_off(l3_off);
	if (l3_off > NT_MAX_L3_OFF)
		return NT_PARSE_PASS;
	s->l3_off = l3_off;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = data + l3_off;

		if ((void *)(iph + 1) > data_end)
			return NT_PARSE_PASS;
		if (iph->version != 4 || iph->protocol != IPPROTO_TCP || nt_ipv4_is_later_fragment(iph))
			return NT_PARSE_PASS;
		s->ip_hlen = nt_ipv4_hlen(iph);
		if (s->ip_hlen < sizeof(*iph))
			return NT_PARSE_PASS;
		s->family = 4;
		s->ip_len = bpf_ntohs(iph->tot_len);
		s->first_frag = nt_ipv4_is_first_fragment(iph);
		__builtin_memcpy(s->flow.saddr, &iph->saddr, 4);
		__builtin_memcpy(s->flow.daddr, &iph->daddr, 4);
	} else {
		struct ipv6hdr *ip6h = data + l3_off;
		__u8 nexthdr;

		if ((void *)(ip6h + 1) > data_end)
			return NT_PARSE_PASS;
		if (ip6h->version != 6)
			return NT_PARSE_PASS;
		nexthdr = ip6h->nexthdr;
		s->ip_hlen = sizeof(*ip6h);
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
		s->family = 6;
		s->ip_len = bpf_ntohs(ip6h->payload_len);
		__builtin_memcpy(s->flow.saddr, &ip6h->saddr, 16);
		__builtin_memcpy(s->flow.daddr, &ip6h->daddr, 16);
	}
	s->l4_off = l3_off + s->ip_hlen;
	return NT_PARSE_SYN;
}

/**
 * nt_read() - copy @len (a constant) packet bytes at @off into @to: in place
 * when @direct and the bytes are in the linear area, else with nt_load().
 * Returns 0, or -1 when the packet holds no such bytes.
 */
static __always_inline int nt_read(void *ctx, const int xdp, void *data, void *data_end,
				   int direct, __u32 off, void *to, const __u32 len)
{
	if (direct) {
		__u8 *p = data + nt_bound_off(off);

		if ((void *)(p + len) > data_end)
			return -1;
		__builtin_memcpy(to, p, len);
		return 0;
	}
	return nt_load(ctx, xdp, off, to, len) ? -1 : 0;
}

/**
 * nt_parse_syn() - read the headers and options of a possible SYN.
 * @pkt_len:     the packet's length (what nt_load() could reach)
 * @frag_strict: read an IPv4 first fragment only up to its IP length (the
 *               verifier: bytes after it are not the datagram's); without
 *               it the marker reads the frame as if they were
 * @opts:        NT_TCP_OPT_BUF bytes zeroed by the caller; on NT_PARSE_SYN
 *               it holds the option area unless s->opts_cut
 * Returns enum nt_parse; on NT_PARSE_SYN, @s describes the packet.
 */
static __always_inline int nt_parse_syn(void *ctx, const int xdp, void *data, void *data_end,
					__u32 pkt_len, const int frag_strict, struct nt_syn *s,
					__u8 opts[NT_TCP_OPT_BUF])
{
	struct tcphdr th;
	__u32 l4_off, avail, optlen;
	int r, direct;

	r = nt_parse_ip(ctx, xdp, data, data_end, s);
	if (r != NT_PARSE_SYN)
		return r;
	l4_off = s->l4_off;
	/* Offsets a walk of extension headers decided are read through helpers. */
	direct = !s->ipv6_ext && l4_off <= NT_DIRECT_MAX_L4_OFF;
	/* What may be read: the packet, or for a strict first fragment its IP length. */
	avail = pkt_len;
	if (frag_strict && s->first_frag)
		avail = s->l3_off + s->ip_len;

	if (l4_off + sizeof(th) > avail ||
	    nt_read(ctx, xdp, data, data_end, direct, l4_off, &th, sizeof(th))) {
		__u8 head[NT_TCP_FLAGS_OFF + 1];

		if (!(frag_strict && s->first_frag))
			return NT_PARSE_PASS;
		/* Flags in the fragment: only a SYN matters. Else the ports, if there. */
		if (l4_off + sizeof(head) <= avail &&
		    !nt_read(ctx, xdp, data, data_end, direct, l4_off, head, sizeof(head))) {
			if (!nt_tcp_is_syn(head[NT_TCP_FLAGS_OFF]))
				return NT_PARSE_PASS;
		} else if (l4_off + 4 > avail ||
			   nt_read(ctx, xdp, data, data_end, direct, l4_off, head, 4)) {
			/* Not even the ports: a first fragment must hold 8 bytes, the stack drops it. */
			return NT_PARSE_PASS;
		}
		__builtin_memcpy(&s->flow.sport, &head[0], 2);
		__builtin_memcpy(&s->flow.dport, &head[2], 2);
		s->flow.family = s->family;
		return NT_PARSE_FRAG_CUT;
	}
	if (!nt_tcp_is_syn(((__u8 *)&th)[NT_TCP_FLAGS_OFF]))
		return NT_PARSE_PASS;

	s->tcp_len = (__u32)th.doff * 4;
	__builtin_memcpy(&s->doff_word, (__u8 *)&th + NT_TCP_DOFF_WORD_OFF, 2);
	s->check = th.check;
	s->flow.family = s->family;
	s->flow.sport = th.source;
	s->flow.dport = th.dest;
	s->flow.seq = th.seq;

	/* 0..40 since 5 <= doff <= 15; the mask bounds the helper load below for the verifier. */
	optlen = (s->tcp_len > sizeof(th) ? s->tcp_len - sizeof(th) : 0) & NT_TCP_OPT_BUF_MASK;
	if (l4_off + sizeof(th) + optlen > avail) {
		s->opts_cut = 1;
		return NT_PARSE_SYN;
	}
	if (!direct) {
		if (optlen > 0) {
			/*
			 * Verifier workaround: clang tests a copy of the length, so the
			 * verifier would not know the one passed is not zero. 1..64 by
			 * construction, and optlen itself is 4..40.
			 */
			__u32 n = optlen - 1;

			asm volatile("%0 &= 63\n\t%0 += 1" : "+r"(n));
			if (nt_load(ctx, xdp, l4_off + sizeof(th), opts, n))
				s->opts_cut = 1;
		}
		return NT_PARSE_SYN;
	}
	/* The option area, a multiple of 4 bytes, copied a word at a time. */
	{
		__u8 *o = data + nt_bound_off(l4_off) + sizeof(th);

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
	}
	/*
	 * Keep @opts a buffer in memory: with every index constant, clang would
	 * otherwise turn its 40 bytes into 40 spilled scalars and run out of stack.
	 */
	asm volatile("" : : "r"(opts) : "memory");
	return NT_PARSE_SYN;
}

#endif /* NT_LIB_SYN_H */
