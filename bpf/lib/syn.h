/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Finding opening TCP SYNs, for the egress marker and the ingress verifier.
 * One parser in two steps, both by direct packet access:
 *  - nt_classify(): no helper calls, no map lookups. Every packet that is not
 *    a TCP SYN, and is not broken in a way worth counting, leaves here.
 *  - nt_parse_syn(): the headers of a possible SYN, and where its options
 *    are. The caller makes the headers linear first where it can (tc:
 *    bpf_skb_pull_data(); XDP sees the whole frame), and the options are then
 *    read in place (nt_syn_opts()). Only behind IPv6 extension headers, whose
 *    offsets the packet itself decides, are the headers and options read with
 *    helper loads, the options into a stack copy.
 *
 * Fragments. Only a first fragment holds a TCP header, and the stack keeps of
 * it only what reassembly keeps: a fragment that is not the last is cut to a
 * multiple of 8 bytes of data (Linux ip_frag_queue / ip6_frag_queue), bytes a
 * later fragment would overlap make the whole datagram go, and a fragment that
 * lies inside one already queued is dropped. So what the first fragment holds,
 * up to its cut length, is what the reassembled segment starts with, and
 * anything after that comes from other fragments. The parser reads a first
 * fragment only up to that length: a SYN whose header or options go on past
 * it is "cut", and a first fragment too short to show the flags may be a SYN.
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
	__u8 saddr[16]; /* IPv4: first 4 bytes, the rest zero */
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
	NT_CLASS_SLOW,     /* a SYN, something to count, or cannot tell with what is in the linear area */
};

/* What nt_parse_syn() found. */
enum nt_parse {
	NT_PARSE_PASS = 0,   /* not an opening TCP SYN (nor what reassembly could make one) */
	NT_PARSE_SYN,        /* a SYN, or (s->cut) what reassembly may make one: struct nt_syn is filled in */
	NT_PARSE_UNREADABLE, /* an IP frame whose headers cannot be read (NT_C_UNREADABLE) */
};

/* Where a SYN's headers are, and the fields the marker and the verifier need. */
struct nt_syn {
	__u32 l3_off;
	__u32 l4_off;
	__u32 l4_end;     /* where the TCP bytes the stack keeps of this packet end (IP length, or a first fragment's cut) */
	__u32 ip_len;     /* IPv4 tot_len or IPv6 payload_len, host order */
	__u32 ip_hlen;    /* IPv4 ihl * 4; IPv6 40 + extension headers */
	__u32 tcp_len;    /* TCP header length = doff * 4; 0 when it is not known (s->cut) */
	__u16 doff_word;  /* 16-bit word at TCP byte 12, as in the packet */
	__u16 check;      /* the TCP checksum field, as in the packet */
	__u8 family;      /* 4 or 6 */
	__u8 first_frag;  /* the first fragment of a fragmented datagram */
	__u8 ipv6_ext;    /* IPv6 extension headers before TCP */
	/*
	 * The TCP header, options included, does not all lie before l4_end (or
	 * shows no flags): its option area is not read, and only the addresses
	 * and ports in s->flow are known for sure.
	 */
	__u8 cut;
	/* The options lie in the linear area, at l4_off + 20 (else in the caller's stack copy). */
	__u8 direct;
	__u8 _pad[3];
	struct nt_flow flow;
};

/*
 * Bounds the verifier needs on offsets read in place. Ethernet, two VLAN tags
 * and a 60-byte IPv4 header end at byte 82; a TCP header is at most 60 bytes.
 */
#define NT_MAX_L3_OFF        22
#define NT_DIRECT_MAX_L4_OFF 128
#define NT_TCP_MAX_HDR_LEN   60

/* What nt_classify()'s fast path reads: up to the TCP flags behind plain IPv4 or IPv6. */
#define NT_FAST_V4_LEN (sizeof(struct nt_eth_hdr) + sizeof(struct iphdr) + NT_TCP_FLAGS_OFF + 1)
#define NT_FAST_V6_LEN (sizeof(struct nt_eth_hdr) + sizeof(struct ipv6hdr) + NT_TCP_FLAGS_OFF + 1)

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
 * @l2, @skb_proto: as for nt_l2_parse()
 * Reads only [@data, @data_end) (the linear area). Answers NT_CLASS_SLOW for
 * a SYN, for a frame to count as unreadable, and when a header is not in the
 * linear area (then with *@dport 0). For a SYN it sees whole, *@dport is its
 * destination port in network byte order.
 */
static __always_inline int nt_classify(void *data, void *data_end, const int l2, __be16 skb_proto,
				       __be16 *dport)
{
	__u8 *tcp;
	__be16 proto;
	__u32 off;

	/*
	 * The common frame first, in as few steps as it takes: Ethernet, then IPv4
	 * without options and not a fragment, or IPv6 with TCP next, then TCP.
	 * Anything else takes the general path below, which answers the same for these.
	 */
	if (l2 == NT_L2_ETH && data + NT_FAST_V4_LEN <= data_end) {
		struct nt_eth_hdr *eth = data;
		/*
		 * Two words say it all for IPv4: EtherType, version and header length
		 * (bytes 12..14), and fragment offset, More Fragments and protocol
		 * (bytes 20..23 of the frame), each read and compared at once.
		 */
		__u32 w12 = *(__u32 *)(data + 12), w20 = *(__u32 *)(data + 20);

		if ((w12 & bpf_htonl(0xffffff00)) == bpf_htonl(ETH_P_IP << 16 | 0x45 << 8) &&
		    (w20 & bpf_htonl((NT_IP_MF | NT_IP_OFFSET) << 16 | 0xff)) == bpf_htonl(IPPROTO_TCP)) {
			__u8 *t = data + sizeof(*eth) + sizeof(struct iphdr);

			if (!nt_tcp_is_syn(t[NT_TCP_FLAGS_OFF]))
				return NT_CLASS_PASS;
			*dport = ((struct tcphdr *)t)->dest;
			return NT_CLASS_SLOW;
		} else if (eth->proto == bpf_htons(ETH_P_IPV6) && data + NT_FAST_V6_LEN <= data_end) {
			struct ipv6hdr *ip6h = data + sizeof(*eth);
			__u8 *t = (__u8 *)(ip6h + 1);

			if ((*(__u8 *)ip6h >> 4) == 6 && ip6h->nexthdr == IPPROTO_TCP) {
				if (!nt_tcp_is_syn(t[NT_TCP_FLAGS_OFF]))
					return NT_CLASS_PASS;
				*dport = ((struct tcphdr *)t)->dest;
				return NT_CLASS_SLOW;
			}
		}
	}

	switch (nt_l2_parse(data, data_end, l2, skb_proto, &proto, &off)) {
	case NT_L2_IP:
		break;
	case NT_L2_OTHER:
		return NT_CLASS_PASS;
	default:
		return NT_CLASS_SLOW;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = data + off;

		if ((void *)(iph + 1) > data_end)
			return NT_CLASS_SLOW;
		/* A broken header is counted on the slow path. */
		if (iph->version != 4 || iph->ihl < 5)
			return NT_CLASS_SLOW;
		if (iph->protocol != IPPROTO_TCP || nt_ipv4_is_later_fragment(iph))
			return NT_CLASS_PASS;
		/* Its TCP header may be cut short, with other bytes after it: look closer. */
		if (nt_ipv4_is_first_fragment(iph))
			return NT_CLASS_SLOW;
		tcp = (__u8 *)iph + nt_ipv4_hlen(iph);
	} else {
		struct ipv6hdr *ip6h = data + off;

		if ((void *)(ip6h + 1) > data_end)
			return NT_CLASS_SLOW;
		if (ip6h->version != 6)
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
 * Fills the addresses, family, lengths, s->l4_off and s->l4_end. Returns
 * NT_PARSE_SYN when a TCP header should follow at s->l4_off, else enum nt_parse.
 */
static __always_inline int nt_parse_ip(void *ctx, const int xdp, const int l2, __be16 skb_proto,
				       void *data, void *data_end, __u32 pkt_len, struct nt_syn *s)
{
	__be16 proto;
	__u32 l3_off, ip_end;

	switch (nt_l2_parse(data, data_end, l2, skb_proto, &proto, &l3_off)) {
	case NT_L2_IP:
		break;
	case NT_L2_OTHER:
		return NT_PARSE_PASS;
	default:
		return NT_PARSE_UNREADABLE;
	}
	l3_off = nt_bound_off(l3_off);
	if (l3_off > NT_MAX_L3_OFF)
		return NT_PARSE_UNREADABLE;
	s->l3_off = l3_off;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = data + l3_off;

		if ((void *)(iph + 1) > data_end)
			return NT_PARSE_UNREADABLE;
		if (iph->version != 4 || iph->ihl < 5)
			return NT_PARSE_UNREADABLE;
		if (iph->protocol != IPPROTO_TCP || nt_ipv4_is_later_fragment(iph))
			return NT_PARSE_PASS;
		s->family = 4;
		s->ip_hlen = nt_ipv4_hlen(iph);
		s->ip_len = bpf_ntohs(iph->tot_len);
		/* The stack drops a packet whose length field disagrees with its header or size. */
		if (s->ip_len < s->ip_hlen || l3_off + s->ip_len > pkt_len)
			return NT_PARSE_UNREADABLE;
		ip_end = l3_off + s->ip_len;
		s->l4_off = l3_off + s->ip_hlen;
		s->l4_end = ip_end;
		if (nt_ipv4_is_first_fragment(iph)) {
			s->first_frag = 1;
			s->l4_end = s->l4_off + ((ip_end - s->l4_off) & ~7U);
		}
		__builtin_memcpy(s->flow.saddr, &iph->saddr, 4);
		__builtin_memset(s->flow.saddr + 4, 0, 12);
		__builtin_memcpy(s->flow.daddr, &iph->daddr, 4);
		__builtin_memset(s->flow.daddr + 4, 0, 12);
	} else {
		struct ipv6hdr *ip6h = data + l3_off;
		struct nt_ipv6_ext w = {};

		if ((void *)(ip6h + 1) > data_end)
			return NT_PARSE_UNREADABLE;
		if (ip6h->version != 6)
			return NT_PARSE_UNREADABLE;
		s->family = 6;
		s->ip_len = bpf_ntohs(ip6h->payload_len);
		if (l3_off + sizeof(*ip6h) + s->ip_len > pkt_len)
			return NT_PARSE_UNREADABLE;
		ip_end = l3_off + sizeof(*ip6h) + s->ip_len;
		w.nexthdr = ip6h->nexthdr;
		w.hlen = sizeof(*ip6h);
		if (w.nexthdr != IPPROTO_TCP) {
			switch (nt_ipv6_walk_ext(ctx, xdp, l3_off, &w)) {
			case NT_IPV6_UPPER:
				break;
			case NT_IPV6_OPAQUE:
				return NT_PARSE_UNREADABLE;
			default:
				return NT_PARSE_PASS;
			}
			if (w.nexthdr != IPPROTO_TCP)
				return NT_PARSE_PASS;
			s->ipv6_ext = 1;
		}
		s->ip_hlen = w.hlen;
		s->l4_off = l3_off + w.hlen;
		s->l4_end = ip_end;
		if (w.first_frag) {
			__u32 frag_data = l3_off + w.frag_data;

			/* RFC 8200 4.5: the first fragment holds the TCP header, or the stack drops it. */
			if (s->l4_off + sizeof(struct tcphdr) > ip_end || frag_data > ip_end)
				return NT_PARSE_UNREADABLE;
			s->first_frag = 1;
			s->l4_end = frag_data + ((ip_end - frag_data) & ~7U);
		}
		__builtin_memcpy(s->flow.saddr, &ip6h->saddr, 16);
		__builtin_memcpy(s->flow.daddr, &ip6h->daddr, 16);
	}
	return NT_PARSE_SYN;
}

/**
 * nt_read() - copy @len (a constant) packet bytes at @off into @to (4-byte
 * aligned): in place when @direct and the bytes are in the linear area, else
 * with nt_load(). Returns 0, or -1 when the packet holds no such bytes.
 */
static __always_inline int nt_read(void *ctx, const int xdp, void *data, void *data_end,
				   int direct, __u32 off, void *to, const __u32 len)
{
	if (direct) {
		/* Word loads: packet access need not be aligned on the architectures BPF JITs well. */
		const __u32 *p = data + nt_bound_off(off);

		if ((void *)p + len > data_end)
			return -1;
		__builtin_memcpy(to, p, len);
		return 0;
	}
	return nt_load(ctx, xdp, off, to, len) ? -1 : 0;
}

/** nt_syn_flow_ports() - the ports and the sequence number of @s->flow, from the first 8 bytes of its TCP header @th. */
static __always_inline void nt_syn_flow_ports(struct nt_syn *s, const __u8 *th)
{
	__builtin_memcpy(&s->flow.sport, &th[0], 2);
	__builtin_memcpy(&s->flow.dport, &th[2], 2);
	__builtin_memcpy(&s->flow.seq, &th[4], 4);
}

/**
 * nt_parse_syn() - read the headers of a possible SYN, and find its options.
 * @l2, @skb_proto: as for nt_l2_parse()
 * @pkt_len:        the packet's length (the skb's, or the XDP frame's)
 * @buf:            NT_TCP_OPT_BUF bytes of the caller's stack: where the
 *                  options are copied (zero-filled past them) when they cannot
 *                  be read in place
 * Returns enum nt_parse; on NT_PARSE_SYN, @s describes the packet, and
 * nt_syn_opts() finds the option area unless s->cut.
 */
static __always_inline int nt_parse_syn(void *ctx, const int xdp, const int l2, __be16 skb_proto,
					void *data, void *data_end, __u32 pkt_len, struct nt_syn *s,
					__u8 buf[NT_TCP_OPT_BUF])
{
	__u8 th[sizeof(struct tcphdr)] __attribute__((aligned(4)));
	__u32 l4_off, l4_end, optlen;
	int r, direct;

	s->tcp_len = 0;
	s->first_frag = 0;
	s->ipv6_ext = 0;
	s->cut = 0;
	s->direct = 0;
	r = nt_parse_ip(ctx, xdp, l2, skb_proto, data, data_end, pkt_len, s);
	if (r != NT_PARSE_SYN)
		return r;
	l4_off = s->l4_off;
	l4_end = s->l4_end;
	/* Offsets a walk of extension headers decided are read through helpers. */
	direct = !s->ipv6_ext && l4_off <= NT_DIRECT_MAX_L4_OFF;

	s->flow.family = s->family;
	if (l4_off + sizeof(th) <= l4_end) {
		/* The whole fixed header is here: one read for the ports, the sequence number and the rest. */
		if (nt_read(ctx, xdp, data, data_end, direct, l4_off, th, sizeof(th)))
			return NT_PARSE_UNREADABLE;
		nt_syn_flow_ports(s, th);
	} else {
		/* The ports and the sequence number. */
		if (l4_off + 8 > l4_end)
			return NT_PARSE_UNREADABLE; /* the stack drops it, or (a first fragment) its whole datagram */
		if (nt_read(ctx, xdp, data, data_end, direct, l4_off, th, 8))
			return NT_PARSE_UNREADABLE;
		nt_syn_flow_ports(s, th);
		/*
		 * Bytes 8..19 of the header are not all here: a first fragment cut at 8
		 * or 16, or a header cut short. With the flags here, only a SYN matters;
		 * without them, only a first fragment can still become one.
		 */
		if (l4_off + NT_TCP_FLAGS_OFF + 1 <= l4_end) {
			if (nt_read(ctx, xdp, data, data_end, direct, l4_off, th, NT_TCP_FLAGS_OFF + 1))
				return NT_PARSE_UNREADABLE;
			if (!nt_tcp_is_syn(th[NT_TCP_FLAGS_OFF]))
				return NT_PARSE_PASS;
		} else if (!s->first_frag) {
			return NT_PARSE_UNREADABLE;
		}
		s->cut = 1;
		return NT_PARSE_SYN;
	}
	if (!nt_tcp_is_syn(th[NT_TCP_FLAGS_OFF]))
		return NT_PARSE_PASS;

	s->tcp_len = (__u32)(th[NT_TCP_DOFF_WORD_OFF] >> 4) * 4;
	__builtin_memcpy(&s->doff_word, &th[NT_TCP_DOFF_WORD_OFF], 2);
	__builtin_memcpy(&s->check, &th[NT_TCP_CHECK_OFF], 2);
	if (s->tcp_len < sizeof(th))
		return NT_PARSE_SYN; /* a malformed header: the caller counts it */
	if (l4_off + s->tcp_len > l4_end) {
		s->cut = 1;
		return NT_PARSE_SYN;
	}

	/* 0..40 bytes of options. */
	optlen = s->tcp_len - sizeof(th);
	if (direct) {
		/* Within the packet but not the linear area: the caller did not pull enough. */
		if (data + nt_bound_off(l4_off) + sizeof(th) + optlen > data_end)
			return NT_PARSE_UNREADABLE;
		s->direct = 1;
		return NT_PARSE_SYN;
	}
	__builtin_memset(buf, 0, NT_TCP_OPT_BUF);
	if (optlen == 0)
		return NT_PARSE_SYN;
	{
		/*
		 * Verifier workaround: clang tests a copy of the length, so the
		 * verifier would not know the one passed is not zero. 1..64 by
		 * construction, and optlen itself is 4..40.
		 */
		__u32 n = optlen - 1;

		asm volatile("%0 &= 63\n\t%0 += 1" : "+r"(n));
		if (nt_load(ctx, xdp, l4_off + sizeof(th), buf, n))
			return NT_PARSE_UNREADABLE;
	}
	return NT_PARSE_SYN;
}

/**
 * nt_syn_scan() - nt_tcp_opts_scan() over the options of SYN @s
 * (nt_parse_syn(), not cut): in the packet [@data, @data_end) when s->direct,
 * else in the stack copy @buf.
 */
static __always_inline void nt_syn_scan(const struct nt_syn *s, void *data, void *data_end, const __u8 *buf,
					__u8 kind, __u16 exid, struct nt_opts_scan *r)
{
	__u32 optlen = s->tcp_len - sizeof(struct tcphdr);

	if (s->direct)
		nt_tcp_opts_scan(data + nt_bound_off(s->l4_off) + sizeof(struct tcphdr), 1, data_end, optlen,
				 kind, exid, r);
	else
		nt_tcp_opts_scan(buf, 0, NULL, optlen, kind, exid, r);
}

/**
 * nt_syn_no_token() - is SYN @s (nt_parse_syn()) plainly without an option of
 * @kind, so that nt_syn_scan() would find none and nothing wrong? True when it
 * has no options, or exactly the five a Linux SYN opens with (which the walk
 * passes in one step, for any @kind of ours). False says nothing: walk them.
 */
static __always_inline int nt_syn_no_token(const struct nt_syn *s, void *data, void *data_end, const __u8 *buf,
					   __u8 kind)
{
	const __u8 *opts = buf;

	if (s->cut)
		return 0;
	if (s->tcp_len == sizeof(struct tcphdr))
		return 1;
	if (s->tcp_len != sizeof(struct tcphdr) + NT_LINUX_SYN_OPTS_LEN || kind <= 8)
		return 0;
	if (s->direct) {
		opts = data + nt_bound_off(s->l4_off) + sizeof(struct tcphdr);
		if ((void *)(opts + NT_LINUX_SYN_OPTS_LEN) > data_end)
			return 0;
	}
	return nt_tcp_linux_syn_opts(opts);
}

/**
 * nt_syn_opt_value() - the 8 bytes after kind, length and ExID of the option
 * that starts @at bytes into the option area of SYN @s, where nt_syn_scan()
 * found a 12-byte option (so they lie inside the area), as they are in memory.
 * Returns 0, or -1 (never, for such an option) when they cannot be read.
 */
static __always_inline int nt_syn_opt_value(const struct nt_syn *s, void *data, void *data_end, const __u8 *buf,
					    __u32 at, __u64 *value)
{
	if (s->direct) {
		const __u64 *v = data + nt_bound_off(s->l4_off) + sizeof(struct tcphdr) + (at & 31) + 4;

		if ((void *)(v + 1) > data_end)
			return -1;
		*value = *v;
		return 0;
	}
	/* A stack copy at a variable offset: the verifier takes only byte loads there. */
	__builtin_memcpy(value, &buf[(at & 31) + 4], sizeof(*value));
	return 0;
}

#endif /* NT_LIB_SYN_H */
