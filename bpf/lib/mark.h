/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The egress marker: find outgoing SYNs that a policy covers and append the
 * token option. Shared by marker.bpf.c and the test wrapper test_encap.bpf.c.
 *
 * Two paths (see syn.h):
 *  - nt_mark(): direct packet access, no helper calls, no map lookups. Every
 *    packet that is not a TCP SYN leaves here.
 *  - nt_mark_syn(): the rare path for SYNs. It re-reads the headers, looks up
 *    the policy, runs every check and only then changes the packet.
 */
#ifndef NT_LIB_MARK_H
#define NT_LIB_MARK_H

#include "common.h"
#include "maps.h"
#include "counters.h"
#include "syn.h"
#include "token.h"
#include "insert.h"

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

	switch (nt_parse_syn(skb, NT_CTX_SKB, &s)) {
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
	switch (nt_token_value(policy, &s.flow, value)) {
	case NT_TOKEN_OK:
		break;
	case NT_TOKEN_NO_CLOCK:
		nt_count(ifindex, policy_id, NT_C_SKIP_NO_CLOCK);
		return NT_PASS;
	default:
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
	__be16 dport = 0;

	if (nt_classify((void *)(long)skb->data, (void *)(long)skb->data_end, &dport) == NT_CLASS_PASS)
		return NT_PASS;
	return nt_mark_syn(skb);
}

#endif /* NT_LIB_MARK_H */
