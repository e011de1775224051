/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The ingress verifier: for opening SYNs to a port a policy protects on this
 * interface, find our option and check its value; count the verdict and, under
 * Enforce, drop what is not valid unless the source is exempt. Shared by the
 * XDP and the tc entry points of verifier.bpf.c. Nothing here writes to the packet.
 *
 * Cost: every packet that is not a SYN leaves nt_classify() on direct packet
 * access; the rule of a SYN's port is found with array lookups where nt_port_index
 * knows it, else with one or two hash lookups.
 */
#ifndef NT_LIB_VERIFY_H
#define NT_LIB_VERIFY_H

#include "common.h"
#include "maps.h"
#include "ingress_maps.h"
#include "counters.h"
#include "syn.h"
#include "keyed.h"

enum nt_verdict {
	NT_V_PASS = 0,
	NT_V_DROP,
};

/* What nt_port_index says about a port on an interface. */
enum nt_indexed {
	NT_IDX_ASK,  /* it cannot tell: ask nt_ingress_ports */
	NT_IDX_NONE, /* the interface has no rule for the port */
	NT_IDX_RULE, /* *rule is the interface's rule for the port */
};

/** nt_port_indexed() - the rule nt_port_index holds for @port (0: "every port") on @ifindex, if it can tell. */
static __always_inline int nt_port_indexed(__u32 ifindex, __u32 port, struct nt_ingress_rule **rule)
{
	struct nt_port_index *pi = bpf_map_lookup_elem(&nt_port_index, &port);

	if (!pi || pi->state == NT_PI_HASH)
		return NT_IDX_ASK;
	if (pi->state == NT_PI_ONE && pi->ifindex == ifindex) {
		*rule = &pi->rule;
		return NT_IDX_RULE;
	}
	return NT_IDX_NONE;
}

/**
 * nt_ingress_rule() - the rule protecting @dport on @ifindex (exact port first, then
 * "every port"), or NULL. nt_port_index answers without a hash lookup where only one
 * interface has rules for the port; nt_ingress_ports where it cannot tell.
 */
static __always_inline struct nt_ingress_rule *nt_ingress_rule(__u32 ifindex, __be16 dport)
{
	struct nt_port_key key = {
		.ifindex = ifindex,
		.port = bpf_ntohs(dport),
	};
	struct nt_ingress_rule *rule = NULL;

	switch (nt_port_indexed(ifindex, key.port, &rule)) {
	case NT_IDX_RULE:
		return rule;
	case NT_IDX_ASK:
		rule = bpf_map_lookup_elem(&nt_ingress_ports, &key);
		if (rule)
			return rule;
		break;
	default:
		break;
	}
	switch (nt_port_indexed(ifindex, 0, &rule)) {
	case NT_IDX_RULE:
		return rule;
	case NT_IDX_NONE:
		return NULL;
	default:
		key.port = 0;
		return bpf_map_lookup_elem(&nt_ingress_ports, &key);
	}
}

/** nt_static_ok() - is @got (the 8 value bytes as they are in memory) the token, or the previous one? */
static __always_inline int nt_static_ok(const struct nt_policy *policy, __u64 got)
{
	__u64 want;

	__builtin_memcpy(&want, policy->token, sizeof(want));
	if (got == want)
		return 1;
	if (!(policy->flags & NT_PF_HAS_PREVIOUS))
		return 0;
	__builtin_memcpy(&want, policy->token_previous, sizeof(want));
	return got == want;
}

/** nt_keyed_match() - is @got the value of the message whose flow bytes led to @prefix, in one of the epochs @e? */
static __always_inline int nt_keyed_match(const struct nt_sip *prefix, const struct nt_epochs *e, __u64 got)
{
	if (nt_keyed_value(prefix, e->cur) == got)
		return 1;
	if (e->lo != e->cur && nt_keyed_value(prefix, e->lo) == got)
		return 1;
	return e->hi != e->cur && nt_keyed_value(prefix, e->hi) == got;
}

/**
 * nt_keyed_ok() - is @got the keyed value of @flow, with the current or the
 * previous key, for the current epoch or one a clock skew_seconds apart is in?
 * False without a clock.
 */
static __always_inline int nt_keyed_ok(const struct nt_policy *policy, const struct nt_flow *flow,
				       __u64 got)
{
	struct nt_keyed_flow msg;
	struct nt_sip prefix;
	struct nt_epochs e;

	if (nt_keyed_epochs(policy->epoch_seconds, policy->skew_seconds, &e))
		return 0;
	nt_keyed_flow_bytes(&msg, flow, policy->bind);
	nt_keyed_prefix(&prefix, policy->key, &msg);
	if (nt_keyed_match(&prefix, &e, got))
		return 1;
	if (!(policy->flags & NT_PF_HAS_PREVIOUS))
		return 0;
	nt_keyed_prefix(&prefix, policy->key_previous, &msg);
	return nt_keyed_match(&prefix, &e, got);
}

/**
 * nt_syn_verdict() - look at the option area of SYN @s.
 * @data, @data_end, @buf: where its options are (nt_syn_scan())
 * Returns NT_C_V_VALID, NT_C_V_MISSING, NT_C_V_INVALID or NT_C_V_MALFORMED.
 */
static __always_inline __u32 nt_syn_verdict(const struct nt_syn *s, const struct nt_policy *policy,
					    void *data, void *data_end, const __u8 *buf)
{
	struct nt_opts_scan scan;
	__u64 mem;

	/* Cut (reassembly completes it from bytes not seen here) or a bad data offset. */
	if (s->cut || s->tcp_len < sizeof(struct tcphdr))
		return NT_C_V_MALFORMED;
	nt_syn_scan(s, data, data_end, buf, policy->opt_kind, policy->exid, &scan);
	if (scan.ours_at == NT_OPT_NONE)
		return (scan.flags & NT_OPTS_BAD) ? NT_C_V_MALFORMED : NT_C_V_MISSING;
	if (scan.ours_len != NT_OPT_LEN)
		return NT_C_V_INVALID;
	/* The walk put the whole option inside the area: ours_at + 12 <= 40. */
	if (nt_syn_opt_value(s, data, data_end, buf, scan.ours_at, &mem))
		return NT_C_V_MALFORMED;
	switch (policy->mode) {
	case NT_MODE_STATIC:
		return nt_static_ok(policy, mem) ? NT_C_V_VALID : NT_C_V_INVALID;
	case NT_MODE_KEYED:
		return nt_keyed_ok(policy, &s->flow, nt_cpu_le64(mem)) ? NT_C_V_VALID : NT_C_V_INVALID;
	default:
		return NT_C_V_INVALID;
	}
}

/*
 * nt_syn_verdict() for each kind of context, as global functions: the kernel's
 * verifier checks a global function once, on its own, and its callers see only
 * that it returns a counter. Inlined, each of the many ways the option walk
 * can end would be checked again through all the code that follows, past the
 * verifier's limit.
 */
__attribute__((noinline)) __u32 nt_verdict_xdp(struct xdp_md *ctx, const struct nt_syn *s,
					       const struct nt_policy *policy, const struct nt_opt_buf *buf)
{
	if (!ctx || !s || !policy || !buf)
		return NT_C_V_MALFORMED;
	return nt_syn_verdict(s, policy, (void *)(long)ctx->data, (void *)(long)ctx->data_end, buf->b);
}

__attribute__((noinline)) __u32 nt_verdict_skb(struct __sk_buff *skb, const struct nt_syn *s,
					       const struct nt_policy *policy, const struct nt_opt_buf *buf)
{
	if (!skb || !s || !policy || !buf)
		return NT_C_V_MALFORMED;
	return nt_syn_verdict(s, policy, (void *)(long)skb->data, (void *)(long)skb->data_end, buf->b);
}

/**
 * nt_replay_over() - count a valid SYN against the replay limit of @rule.
 * Returns true when the same (policy, flow, sequence number) has already been
 * accepted replay_limit times in the current one-second window. Racing CPUs
 * may refuse one more than needed, never accept more than the limit (except
 * at a window reset, which is not atomic).
 */
static __always_inline int nt_replay_over(const struct nt_ingress_rule *rule, __u32 policy_id,
					  const struct nt_flow *f)
{
	struct nt_replay_key key = {};
	struct nt_replay_val init, *v;
	__u64 now = bpf_ktime_get_ns();
	__u32 limit = rule->replay_limit;

	key.policy_id = policy_id;
	key.family = f->family;
	__builtin_memcpy(key.saddr, f->saddr, 16);
	__builtin_memcpy(key.daddr, f->daddr, 16);
	key.sport = f->sport;
	key.dport = f->dport;
	key.seq = f->seq;

	v = bpf_map_lookup_elem(&nt_replay, &key);
	if (!v) {
		init.window_start_ns = now;
		init.count = 1;
		if (bpf_map_update_elem(&nt_replay, &key, &init, BPF_NOEXIST) == 0)
			return limit < 1;
		/* Another CPU inserted it first: count against its entry. */
		v = bpf_map_lookup_elem(&nt_replay, &key);
		if (!v)
			return 0;
	}
	if (now - v->window_start_ns >= NT_NSEC_PER_SEC) {
		v->window_start_ns = now;
		v->count = 1;
		return limit < 1;
	}
	__sync_fetch_and_add(&v->count, 1);
	return *(volatile __u64 *)&v->count > limit;
}

/** nt_exempt() - is the source of @f in the exemptSources of @rule's policy? Asks the tries only where it has some. */
static __always_inline int nt_exempt(const struct nt_ingress_rule *rule, __u32 policy_id, const struct nt_flow *f)
{
	if (!(rule->flags & (f->family == 4 ? NT_IR_EXEMPT4 : NT_IR_EXEMPT6)))
		return 0;
	if (f->family == 4) {
		struct nt_src4_key key = {
			.prefixlen = 32 + 32,
			.policy_id_be = bpf_htonl(policy_id),
		};

		__builtin_memcpy(key.addr, f->saddr, 4);
		return bpf_map_lookup_elem(&nt_exempt4, &key) != NULL;
	} else {
		struct nt_src6_key key = {
			.prefixlen = 32 + 128,
			.policy_id_be = bpf_htonl(policy_id),
		};

		__builtin_memcpy(key.addr, f->saddr, 16);
		return bpf_map_lookup_elem(&nt_exempt6, &key) != NULL;
	}
}

/**
 * nt_verify_unreadable() - an IP frame the parser cannot read: the stack may
 * still find a SYN in it, and nothing tells its port. Counted per interface;
 * where some policy enforces on the interface it is dropped (and counted
 * dropped under that policy). Returns enum nt_verdict.
 */
static __always_inline int nt_verify_unreadable(__u32 ifindex)
{
	struct nt_port_key key = { .ifindex = ifindex, .scope = NT_SCOPE_ENFORCING };
	struct nt_ingress_rule *rule;

	nt_count_iface(ifindex, NT_C_UNREADABLE);
	rule = bpf_map_lookup_elem(&nt_ingress_ports, &key);
	if (!rule || rule->action != NT_ACTION_ENFORCE)
		return NT_V_PASS;
	nt_count(rule->counter_slot, NT_C_V_DROPPED);
	return NT_V_DROP;
}

/**
 * nt_verify_syn() - slow path for a possible SYN: its headers and options,
 * read in place from [@data, @data_end) (made linear by the tc caller).
 * @l2, @skb_proto: as for nt_l2_parse(); @pkt_len: the packet's length.
 * @rule: the rule of its port when the caller has looked it up, else NULL.
 * Returns enum nt_verdict.
 */
static __always_inline int nt_verify_syn(void *ctx, const int xdp, const int l2, __be16 skb_proto,
					 __u32 ifindex, void *data, void *data_end, __u32 pkt_len,
					 struct nt_ingress_rule *rule)
{
	struct nt_syn s;
	/* Only written when the options cannot be read in place. */
	struct nt_opt_buf buf __attribute__((aligned(8)));
	struct nt_policy *policy;
	struct nt_counters *c;
	__u32 policy_id, verdict;

	switch (nt_parse_syn(ctx, xdp, l2, skb_proto, data, data_end, pkt_len, &s, buf.b)) {
	case NT_PARSE_SYN:
		break;
	case NT_PARSE_UNREADABLE:
		return nt_verify_unreadable(ifindex);
	default:
		return NT_V_PASS;
	}

	if (!rule)
		rule = nt_ingress_rule(ifindex, s.flow.dport);
	if (!rule)
		return NT_V_PASS;
	policy_id = rule->policy_id;
	policy = bpf_map_lookup_elem(&nt_policies, &policy_id);
	if (!policy || policy->mode == NT_MODE_NONE)
		return NT_V_PASS;

	/* What an unmarked flood sends (no options, or a Linux SYN's) is told apart without the walk. */
	if (nt_syn_no_token(&s, data, data_end, buf.b, policy->opt_kind))
		verdict = NT_C_V_MISSING;
	else if (xdp)
		verdict = nt_verdict_xdp(ctx, &s, policy, &buf);
	else
		verdict = nt_verdict_skb(ctx, &s, policy, &buf);
	if (verdict == NT_C_V_VALID && rule->replay_limit && nt_replay_over(rule, policy_id, &s.flow))
		verdict = NT_C_V_REPLAY;
	/* One lookup of the slot's counters for the verdict and what follows from it. */
	c = nt_counters_at(rule->counter_slot);
	nt_count_in(c, verdict);
	if (verdict == NT_C_V_VALID)
		return NT_V_PASS;
	if (nt_exempt(rule, policy_id, &s.flow)) {
		nt_count_in(c, NT_C_V_EXEMPT);
		return NT_V_PASS;
	}
	if (rule->action != NT_ACTION_ENFORCE)
		return NT_V_PASS;
	nt_count_in(c, NT_C_V_DROPPED);
	return NT_V_DROP;
}

/*
 * What the tc entry point makes linear when a possible SYN's headers are not:
 * Ethernet, two VLAN tags, and IP and TCP headers of the largest size (142).
 */
#define NT_VERIFY_PULL_LEN 160

/**
 * nt_verify() - the verifier for one received packet.
 * @l2, @skb_proto: as for nt_l2_parse() (XDP: NT_L2_ETH)
 * @data, @data_end: the linear area; for tc, @ctx is the skb and the headers
 * of a possible SYN are made linear here first. Returns enum nt_verdict.
 */
static __always_inline int nt_verify(void *ctx, const int xdp, const int l2, __be16 skb_proto,
				     __u32 ifindex, void *data, void *data_end)
{
	struct nt_ingress_rule *rule = NULL;
	__be16 dport = 0;
	__u32 pkt_len;

	if (nt_classify(data, data_end, l2, skb_proto, &dport) == NT_CLASS_PASS)
		return NT_V_PASS;
	if (dport) {
		/* A SYN seen whole: its port's rule, found once for both steps. */
		rule = nt_ingress_rule(ifindex, dport);
		if (!rule)
			return NT_V_PASS;
	}
	if (xdp) {
		pkt_len = data_end - data;
	} else {
		struct __sk_buff *skb = ctx;

		pkt_len = skb->len;
		if ((long)data_end - (long)data < (long)pkt_len) {
			bpf_skb_pull_data(skb, pkt_len < NT_VERIFY_PULL_LEN ? pkt_len : NT_VERIFY_PULL_LEN);
			data = (void *)(long)skb->data;
			data_end = (void *)(long)skb->data_end;
		}
	}
	return nt_verify_syn(ctx, xdp, l2, skb_proto, ifindex, data, data_end, pkt_len, rule);
}

#endif /* NT_LIB_VERIFY_H */
