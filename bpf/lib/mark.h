/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The egress marker: find outgoing SYNs that a policy covers and append the
 * token option. Shared by marker.bpf.c and the test wrapper test_encap.bpf.c.
 *
 * Two steps (see syn.h): nt_classify() lets every packet that is not a TCP
 * SYN through; nt_mark_syn() makes a SYN's headers linear, reads them in
 * place, finds the policy (dest.h), runs every check and only then changes
 * the packet, writing it in place too.
 */
#ifndef NT_LIB_MARK_H
#define NT_LIB_MARK_H

#include "common.h"
#include "maps.h"
#include "counters.h"
#include "syn.h"
#include "dest.h"
#include "token.h"
#include "kskb.h"
#include "insert.h"

/**
 * nt_syn_check() - every check that must pass before the packet is touched.
 * @buf: the stack copy of the options, if nt_parse_syn() made one
 * @at:  out: where the option goes (see nt_tcp_append_option())
 * Returns NT_C_MARKED when the option can be written, else the skip reason.
 */
static __always_inline __u32 nt_syn_check(struct __sk_buff *skb, const struct nt_syn *s,
					  const struct nt_policy *policy, const __u8 buf[NT_TCP_OPT_BUF],
					  __u32 *at)
{

	struct nt_opts_scan scan;
	__u32 optlen;

	/* Not marked (yet): the extension headers would have to be checked too. */
	if (s->ipv6_ext)
		return NT_C_SKIP_IPV6_EXT;
	if (s->first_frag)
		return NT_C_SKIP_FRAGMENT;
	/*
	 * Growing a GSO skb makes the kernel drop its GSO state (skb_gso_reset),
	 * and the super-packet would leave as one oversized frame. A SYN is never
	 * one; this only guards against what else may look like one.
	 */
	if (skb->gso_segs > 1 || skb->gso_size)
		return NT_C_SKIP_GSO;
	if (s->cut || s->tcp_len < sizeof(struct tcphdr))
		return NT_C_SKIP_MALFORMED;

	/* The IP length must be exactly the headers: more means data (TFO). */
	if (s->family == 4) {
		if (s->ip_len > s->ip_hlen + s->tcp_len)
			return NT_C_SKIP_PAYLOAD;
		if (s->ip_len < s->ip_hlen + s->tcp_len)
			return NT_C_SKIP_MALFORMED;
		if (skb->len != s->l3_off + s->ip_len)
			return NT_C_SKIP_MALFORMED;
	} else {
		/* payload_len counts the extension headers too */
		__u32 headers = s->ip_hlen - sizeof(struct ipv6hdr) + s->tcp_len;

		if (s->ip_len > headers)
			return NT_C_SKIP_PAYLOAD;
		if (s->ip_len < headers)
			return NT_C_SKIP_MALFORMED;
		if (skb->len != s->l3_off + sizeof(struct ipv6hdr) + s->ip_len)
			return NT_C_SKIP_MALFORMED;
	}

	optlen = s->tcp_len - sizeof(struct tcphdr);
	nt_syn_scan(s, (void *)(long)skb->data, (void *)(long)skb->data_end, buf, policy->opt_kind, policy->exid, &scan);
	if (scan.flags & NT_OPTS_BAD)
		return NT_C_SKIP_MALFORMED;
	if (scan.ours_at != NT_OPT_NONE)
		return NT_C_SKIP_PRESENT;
	if (scan.flags & NT_OPTS_AO)
		return NT_C_SKIP_TCP_AO;
	if (optlen + NT_OPT_LEN > NT_TCP_MAX_OPT_LEN)
		return NT_C_SKIP_NO_ROOM;
	/* After the last option, or in place of an EOL (scan.end is where it stands). */
	*at = scan.end;

	/* Whether 12 more bytes still fit the device. */
	if (nt_skb_over_mtu(skb, NT_OPT_LEN))
		return NT_C_SKIP_MTU;
	return NT_C_MARKED;
}

/**
 * nt_mark_parsed() - find the policy of a parsed SYN, check it, append the option.
 * @buf: the stack copy of its options, if there is one (see nt_syn_check());
 *       used as scratch space once they have been looked at
 * Returns the tc action.
 */
static __always_inline int nt_mark_parsed(struct __sk_buff *skb, const struct nt_syn *s,
					     struct nt_opt_buf *buf)
{
	struct nt_dst_entry *dst;
	struct nt_policy *policy;
	__u8 value[NT_OPT_VALUE_LEN];
	__u8 opt[NT_OPT_LEN] __attribute__((aligned(4)));
	__u32 ifindex = skb->ifindex;
	__u32 policy_id, slot, reason, at = 0;

	dst = nt_dst_lookup(ifindex, s);
	if (!dst)
		return NT_PASS;
	policy_id = dst->found ? nt_rule_policy(&dst->rule, bpf_ntohs(s->flow.dport)) : 0;
	policy = policy_id ? bpf_map_lookup_elem(&nt_policies, &policy_id) : NULL;
	if (!policy || policy->mode == NT_MODE_NONE) {
		nt_count(dst->if_slot, NT_C_SKIP_NO_POLICY);
		return NT_PASS;
	}
	slot = dst->rule.counter_slot;

	reason = nt_syn_check(skb, s, policy, buf->b, &at);
	if (reason != NT_C_MARKED) {
		nt_count(slot, reason);
		return NT_PASS;
	}
	switch (nt_token_value(policy, &s->flow, value)) {
	case NT_TOKEN_OK:
		break;
	case NT_TOKEN_NO_CLOCK:
		nt_count(slot, NT_C_SKIP_NO_CLOCK);
		return NT_PASS;
	default:
		nt_count(dst->if_slot, NT_C_SKIP_NO_POLICY);
		return NT_PASS;
	}
	nt_token_option(opt, policy->opt_kind, policy->exid, value);

	switch (nt_tcp_append_option(skb, s, at, opt, buf)) {
	case NT_INS_OK:
		nt_count(slot, NT_C_MARKED);
		return NT_PASS;
	case NT_INS_ENCAP:
		nt_count(slot, NT_C_SKIP_ENCAP);
		return NT_PASS;
	case NT_INS_GROW:
		nt_count(slot, NT_C_ERR_GROW);
		return NT_PASS;
	default:
		nt_count(slot, NT_C_ERR_WRITE);
		return NT_DROP;
	}
}

/*
 * What nt_mark_syn() makes linear when a SYN's headers are not: enough
 * for Ethernet, two VLAN tags, and IP and TCP headers of the largest size (142).
 */
#define NT_PULL_LEN 160

/**
 * nt_mark_syn() - a possible SYN, read and written in place. Headers not all
 * in the linear area (rare for a SYN) are made linear first. Only for a
 * program that may write the packet directly (see nt_tcp_append_option()).
 * @l2: NT_L2_ETH or NT_L2_NONE (a constant). Returns the tc action.
 */
static __always_inline int nt_mark_syn(struct __sk_buff *skb, const int l2)
{
	struct nt_syn s;
	/* Only written (and read) when the options cannot be read in place. */
	struct nt_opt_buf buf __attribute__((aligned(8)));

	/* A fully linear skb is the rule for a SYN; else make its headers linear first. */
	if ((long)skb->data_end - (long)skb->data < (long)skb->len)
		bpf_skb_pull_data(skb, skb->len < NT_PULL_LEN ? skb->len : NT_PULL_LEN);
	switch (nt_parse_syn(skb, NT_CTX_SKB, l2, skb->protocol, (void *)(long)skb->data,
			     (void *)(long)skb->data_end, skb->len, &s, buf.b)) {
	case NT_PARSE_SYN:
		return nt_mark_parsed(skb, &s, &buf);
	case NT_PARSE_UNREADABLE:
		/* Cannot see whether it is a SYN, let alone which policy: count under none. */
		nt_count_iface(skb->ifindex, NT_C_UNREADABLE);
		return NT_PASS;
	default:
		return NT_PASS;
	}
}

/**
 * nt_mark_entry() - the attached marker program: the fast path, then a tail
 * call through @jump (a one-slot program array) into the program that runs
 * nt_mark_syn(). Should the call not be made, the SYN is counted and passes.
 */
static __always_inline int nt_mark_entry(struct __sk_buff *skb, const int l2, void *jump)
{
	__be16 dport = 0;

	if (nt_classify((void *)(long)skb->data, (void *)(long)skb->data_end, l2, skb->protocol,
			&dport) == NT_CLASS_PASS)
		return NT_PASS;
	bpf_tail_call_static(skb, jump, 0);
	nt_count_iface(skb->ifindex, NT_C_ERR_TAIL_CALL);
	return NT_PASS;
}

/**
 * nt_mark() - the whole marker in one program: the fast path, then
 * nt_mark_syn() for SYNs. The program writes the packet directly, so the
 * kernel unclones every cloned skb on entry; marker.bpf.c therefore splits
 * it in two (see there). The test and benchmark wrappers, whose skbs are never
 * clones, run it whole. Returns NT_PASS, or NT_DROP after a failed write.
 */
static __always_inline int nt_mark(struct __sk_buff *skb, const int l2)
{
	__be16 dport = 0;

	if (nt_classify((void *)(long)skb->data, (void *)(long)skb->data_end, l2, skb->protocol,
			&dport) == NT_CLASS_PASS)
		return NT_PASS;
	return nt_mark_syn(skb, l2);
}

#endif /* NT_LIB_MARK_H */
