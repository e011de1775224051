/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Which egress rule covers a SYN's destination on an interface: the longest
 * prefix in nt_egress4 / nt_egress6, behind a per-CPU cache of recent
 * destinations.
 *
 * A trie lookup walks one node per distinguishing bit: about 100 ns with
 * 100 000 prefixes. The cache is direct-mapped (the slot is a hash of the
 * interface and the address), per CPU (no CPU writes another's entries, and a
 * tc or XDP program is not interrupted by another on its CPU, so an entry is
 * never read half-written), and holds the trie's answer, the rule or "none",
 * together with the interface's own counter slot. An entry is valid for one
 * generation of nt_config.egress_gen, which the agent raises after every
 * change of the tries or of nt_ifaces: the generation is read before the
 * trie, so an entry filled from a trie older than its generation cannot be
 * stored under it. (The agent raises it once more a moment later, for a
 * CPU that read the new generation but the trie before it changed.)
 * Generation 0 turns the cache off: every SYN asks the trie.
 */
#ifndef NT_LIB_DEST_H
#define NT_LIB_DEST_H

#include "common.h"
#include "map_decl.h"
#include "maps.h"
#include "counters.h"
#include "syn.h"

#define NT_DST_CACHE_BITS 10
#define NT_DST_CACHE_SIZE (1 << NT_DST_CACHE_BITS)

/* One cached answer. */
struct nt_dst_entry {
	__u32 gen;      /* nt_config.egress_gen when filled; 0: empty */
	__u32 ifindex;
	__u32 addr[4];  /* the destination; IPv4 in addr[0], the rest zero */
	__u8 family;    /* 4 or 6 */
	__u8 found;     /* a prefix covers the destination: rule is its value */
	__u16 if_slot;  /* the interface's own counter slot (nt_ifaces) */
	struct nt_egress_rule rule;
};

/* Not pinned: a cache belongs to the programs of one load. */
NT_LOCAL_MAP(nt_dst_cache, BPF_MAP_TYPE_PERCPU_ARRAY, NT_DST_CACHE_SIZE, __u32,
	     struct nt_dst_entry);

/** nt_dst_trie() - the longest-prefix rule for the destination of SYN @s on @ifindex, or NULL. */
static __always_inline struct nt_egress_rule *nt_dst_trie(__u32 ifindex, const struct nt_syn *s)
{
	if (s->family == 4) {
		struct nt_lpm4_key key = {
			.prefixlen = 32 + 32,
			.ifindex_be = bpf_htonl(ifindex),
		};

		__builtin_memcpy(key.addr, s->flow.daddr, 4);
		return bpf_map_lookup_elem(&nt_egress4, &key);
	} else {
		struct nt_lpm6_key key = {
			.prefixlen = 32 + 128,
			.ifindex_be = bpf_htonl(ifindex),
		};

		__builtin_memcpy(key.addr, s->flow.daddr, 16);
		return bpf_map_lookup_elem(&nt_egress6, &key);
	}
}

/**
 * nt_dst_lookup() - the answer for SYN @s leaving through @ifindex: from this
 * CPU's cache when it holds the destination for the current generation, else
 * from the trie (and then kept). NULL only if the cache map cannot be read.
 */
static __always_inline struct nt_dst_entry *nt_dst_lookup(__u32 ifindex, const struct nt_syn *s)
{
	struct nt_egress_rule *rule;
	struct nt_dst_entry *e;
	struct nt_config *cfg;
	__u32 a[4], zero = 0, gen = 0, h;

	cfg = bpf_map_lookup_elem(&nt_config, &zero);
	if (cfg)
		gen = *(volatile __u32 *)&cfg->egress_gen;
	__builtin_memcpy(a, s->flow.daddr, sizeof(a));
	h = a[0] ^ a[1] ^ a[2] ^ a[3] ^ ifindex;
	h = (h * 0x9e3779b1U) >> (32 - NT_DST_CACHE_BITS);
	e = bpf_map_lookup_elem(&nt_dst_cache, &h);
	if (!e)
		return NULL;
	if (gen && e->gen == gen && e->ifindex == ifindex && e->family == s->family && e->addr[0] == a[0] &&
	    e->addr[1] == a[1] && e->addr[2] == a[2] && e->addr[3] == a[3])
		return e;

	rule = nt_dst_trie(ifindex, s);
	e->gen = gen;
	e->ifindex = ifindex;
	__builtin_memcpy(e->addr, a, sizeof(a));
	e->family = s->family;
	e->if_slot = nt_iface_slot(ifindex);
	e->found = rule != NULL;
	if (rule)
		__builtin_memcpy(&e->rule, rule, sizeof(*rule));
	return e;
}

/**
 * nt_rule_policy() - the policy of @rule for destination port @dport (host
 * order): its id when the rule covers every port or lists this one, else 0.
 */
static __always_inline __u32 nt_rule_policy(const struct nt_egress_rule *rule, __u16 dport)
{
	__u32 n = rule->nports;

	if (n == 0)
		return rule->policy_id;
	for (int i = 0; i < NT_MAX_PORTS; i++) {
		if (i >= n)
			break;
		if (rule->ports[i] == dport)
			return rule->policy_id;
	}
	return 0;
}

#endif /* NT_LIB_DEST_H */
