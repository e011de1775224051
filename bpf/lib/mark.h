/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The egress marker: find outgoing SYNs that a policy covers and append the
 * token option. Shared by marker.bpf.c and the test wrapper test_encap.bpf.c.
 *
 * Two paths:
 *  - nt_mark(): direct packet access, no helper calls, no map lookups. Every
 *    packet that is not a TCP SYN leaves here.
 *  - nt_mark_syn(): the rare path for SYNs (and for packets whose headers are
 *    not all in the linear area, or IPv6 with extension headers to walk). It re-reads
 *    the headers with bpf_skb_load_bytes(), looks up the policy, runs every
 *    check and only then changes the packet.
 */
#ifndef NT_LIB_MARK_H
#define NT_LIB_MARK_H

#include "common.h"
#include "maps.h"
#include "counters.h"
#include "eth.h"
#include "ipv4.h"
#include "ipv6.h"
#include "tcp.h"
#include "token.h"
#include "insert.h"

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
};

struct nt_syn {
	struct nt_syn_layout layout;
	struct nt_flow flow;
	struct tcphdr tcp;
	__u32 ip_hlen;    /* IPv4 ihl * 4; IPv6 40 + extension headers */
	__u8 first_frag;  /* IPv4 first fragment (MF set, offset 0) */
	__u8 ipv6_ext;    /* IPv6 extension headers before TCP */
	__u8 _pad[2];
};

/**
 * nt_classify() - fast path: is this possibly an opening TCP SYN?
 * Reads only the linear area; when a header is not there, answers NT_CLASS_SLOW.
 */
static __always_inline int nt_classify(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
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
	return nt_tcp_is_syn(tcp[NT_TCP_FLAGS_OFF]) ? NT_CLASS_SLOW : NT_CLASS_PASS;
}

/**
 * nt_parse_syn() - read the headers of a possible SYN with bpf_skb_load_bytes().
 * Returns enum nt_parse; on NT_PARSE_SYN, @s describes the packet.
 */
static __always_inline int nt_parse_syn(struct __sk_buff *skb, struct nt_syn *s)
{
	__be16 proto;
	__u32 l3_off, l4_off;

	if (nt_eth_parse_skb(skb, &proto, &l3_off))
		return NT_PARSE_PASS;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr iph;

		if (bpf_skb_load_bytes(skb, l3_off, &iph, sizeof(iph)))
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

		if (bpf_skb_load_bytes(skb, l3_off, &ip6h, sizeof(ip6h)))
			return NT_PARSE_PASS;
		if (ip6h.version != 6)
			return NT_PARSE_PASS;
		nexthdr = ip6h.nexthdr;
		s->ip_hlen = sizeof(ip6h);
		if (nexthdr != IPPROTO_TCP) {
			switch (nt_ipv6_walk_ext(skb, l3_off, &nexthdr, &s->ip_hlen)) {
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
	if (bpf_skb_load_bytes(skb, l4_off, &s->tcp, sizeof(s->tcp)))
		return NT_PARSE_PASS;
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
 * nt_lookup_policy() - the policy id covering this SYN's destination and port
 * on @ifindex (longest prefix wins), or 0 when none does.
 */
static __always_inline __u32 nt_lookup_policy(__u32 ifindex, const struct nt_syn *s)
{
	struct nt_egress_rule *rule;
	__u16 dport = bpf_ntohs(s->flow.dport);

	if (s->layout.family == 4) {
		struct nt_lpm4_key key = {
			.prefixlen = 32 + 32,
			.ifindex_be = bpf_htonl(ifindex),
		};

		__builtin_memcpy(key.addr, s->flow.daddr, 4);
		rule = bpf_map_lookup_elem(&nt_egress4, &key);
	} else {
		struct nt_lpm6_key key = {
			.prefixlen = 32 + 128,
			.ifindex_be = bpf_htonl(ifindex),
		};

		__builtin_memcpy(key.addr, s->flow.daddr, 16);
		rule = bpf_map_lookup_elem(&nt_egress6, &key);
	}
	if (!rule)
		return 0;
	if (rule->nports == 0)
		return rule->policy_id;
	for (int i = 0; i < NT_MAX_PORTS; i++) {
		if (i >= rule->nports)
			break;
		if (rule->ports[i] == dport)
			return rule->policy_id;
	}
	return 0;
}

/**
 * nt_syn_check() - every check that must pass before the packet is touched.
 * Returns NT_C_MARKED when the option can be appended, else the skip reason.
 */
static __always_inline __u32 nt_syn_check(struct __sk_buff *skb, const struct nt_syn *s,
					  const struct nt_policy *policy)
{
	__u8 opts[NT_TCP_OPT_BUF] = {};
	__u32 optlen, reason, mtu_len = 0;
	long ret;

	if (s->first_frag)
		return NT_C_SKIP_FRAGMENT;
	/* Not marked (yet): the extension headers would have to be checked too. */
	if (s->ipv6_ext)
		return NT_C_SKIP_IPV6_EXT;
	/* GSO would re-segment a grown skb with stale offsets. */
	if (skb->gso_segs > 1 || skb->gso_size)
		return NT_C_SKIP_GSO;
	if (s->layout.tcp_len < sizeof(struct tcphdr))
		return NT_C_SKIP_MALFORMED;

	/* The IP length must be exactly the headers: more means data (TFO). */
	if (s->layout.family == 4) {
		if (s->layout.ip_len > s->ip_hlen + s->layout.tcp_len)
			return NT_C_SKIP_PAYLOAD;
		if (s->layout.ip_len < s->ip_hlen + s->layout.tcp_len)
			return NT_C_SKIP_MALFORMED;
		if (skb->len != s->layout.l3_off + s->layout.ip_len)
			return NT_C_SKIP_MALFORMED;
	} else {
		/* payload_len counts the extension headers too */
		__u32 headers = s->ip_hlen - sizeof(struct ipv6hdr) + s->layout.tcp_len;

		if (s->layout.ip_len > headers)
			return NT_C_SKIP_PAYLOAD;
		if (s->layout.ip_len < headers)
			return NT_C_SKIP_MALFORMED;
		if (skb->len != s->layout.l3_off + sizeof(struct ipv6hdr) + s->layout.ip_len)
			return NT_C_SKIP_MALFORMED;
	}

	/*
	 * 0..40 since 5 <= doff <= 15. Verifier workaround: the mask bounds the
	 * variable-size read below by the buffer size in the register it uses.
	 */
	optlen = (s->layout.tcp_len - sizeof(struct tcphdr)) & NT_TCP_OPT_BUF_MASK;
	if (optlen > 0 &&
	    bpf_skb_load_bytes(skb, s->layout.l4_off + sizeof(struct tcphdr), opts, optlen))
		return NT_C_SKIP_MALFORMED;
	reason = nt_tcp_opts_check(opts, optlen, policy->opt_kind, policy->exid);
	if (reason != NT_C_MARKED)
		return reason;

	/*
	 * Ask the device whether 12 more bytes still fit. A negative answer
	 * means it could not tell (no device): the SYN is small, go ahead.
	 */
	ret = bpf_check_mtu(skb, 0, &mtu_len, NT_OPT_LEN, 0);
	if (ret > 0)
		return NT_C_SKIP_MTU;
	return NT_C_MARKED;
}

/**
 * nt_mark_syn() - slow path for a possible SYN: check, then append the option.
 * Returns the tc action.
 */
static __always_inline int nt_mark_syn(struct __sk_buff *skb)
{
	struct nt_syn s = {};
	struct nt_policy *policy;
	__u8 value[NT_OPT_VALUE_LEN];
	__u8 opt[NT_OPT_LEN] __attribute__((aligned(4)));
	__u32 ifindex = skb->ifindex;
	__u32 policy_id, reason;

	switch (nt_parse_syn(skb, &s)) {
	case NT_PARSE_SYN:
		break;
	case NT_PARSE_IPV6_OPAQUE:
		/* Cannot see whether it is a SYN, let alone which policy: count under none. */
		nt_count(ifindex, 0, NT_C_SKIP_IPV6_EXT);
		return NT_PASS;
	default:
		return NT_PASS;
	}

	policy_id = nt_lookup_policy(ifindex, &s);
	policy = policy_id ? bpf_map_lookup_elem(&nt_policies, &policy_id) : NULL;
	if (!policy || policy->mode == NT_MODE_NONE) {
		nt_count(ifindex, 0, NT_C_SKIP_NO_POLICY);
		return NT_PASS;
	}

	reason = nt_syn_check(skb, &s, policy);
	if (reason != NT_C_MARKED) {
		nt_count(ifindex, policy_id, reason);
		return NT_PASS;
	}
	if (nt_token_value(policy, &s.flow, value)) {
		nt_count(ifindex, policy_id, NT_C_SKIP_NO_POLICY);
		return NT_PASS;
	}
	nt_token_option(opt, policy->opt_kind, policy->exid, value);

	switch (nt_tcp_append_option(skb, &s.layout, opt)) {
	case NT_INS_OK:
		nt_count(ifindex, policy_id, NT_C_MARKED);
		return NT_PASS;
	case NT_INS_ENCAP:
		nt_count(ifindex, policy_id, NT_C_SKIP_ENCAP);
		return NT_PASS;
	case NT_INS_GROW:
		nt_count(ifindex, policy_id, NT_C_ERR_GROW);
		return NT_PASS;
	default:
		nt_count(ifindex, policy_id, NT_C_ERR_WRITE);
		return NT_DROP;
	}
}

/** nt_mark() - the egress marker. Returns NT_PASS, or NT_DROP after a failed write. */
static __always_inline int nt_mark(struct __sk_buff *skb)
{
	if (nt_classify(skb) == NT_CLASS_PASS)
		return NT_PASS;
	return nt_mark_syn(skb);
}

#endif /* NT_LIB_MARK_H */
