/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The maps of the egress marker, of which the ingress verifier shares
 * nt_policies, the counter maps, nt_ifaces and nt_clock. All are pinned by
 * name so that the agent, both programs and a restarted agent share one
 * instance of each under the objects' pin root (one directory per layout
 * version, NT_LAYOUT_VERSION). Layouts: abi.h.
 */
#ifndef NT_LIB_MAPS_H
#define NT_LIB_MAPS_H

#include "common.h"
#include "map_decl.h"

/* IPv4 destinations per interface: (ifindex, prefix) -> rule. */
NT_PINNED_MAP(nt_egress4, BPF_MAP_TYPE_LPM_TRIE, BPF_F_NO_PREALLOC, NT_MAX_PREFIXES,
	      struct nt_lpm4_key, struct nt_egress_rule);

/* IPv6 destinations per interface: (ifindex, prefix) -> rule. */
NT_PINNED_MAP(nt_egress6, BPF_MAP_TYPE_LPM_TRIE, BPF_F_NO_PREALLOC, NT_MAX_PREFIXES,
	      struct nt_lpm6_key, struct nt_egress_rule);

/* Policy slots by id; slot 0 stays NT_MODE_NONE. */
NT_PINNED_MAP(nt_policies, BPF_MAP_TYPE_ARRAY, 0, NT_MAX_POLICIES,
	      __u32, struct nt_policy);

/* Per-CPU counters: slot -> one u64 per enum nt_counter (abi.h). */
NT_PINNED_MAP(nt_counters, BPF_MAP_TYPE_PERCPU_ARRAY, 0, NT_MAX_COUNTER_SLOTS,
	      __u32, struct nt_counters);

/* Who each counter slot counts for: written by the agent, read by whoever shows the counters. */
NT_PINNED_MAP(nt_counter_slots, BPF_MAP_TYPE_ARRAY, 0, NT_MAX_COUNTER_SLOTS,
	      __u32, struct nt_counter_owner);

/* Interfaces the agent knows, by ifindex: where their own counters are. */
NT_PINNED_MAP(nt_ifaces, BPF_MAP_TYPE_HASH, 0, NT_MAX_COUNTER_SLOTS,
	      __u32, struct nt_iface);

/* Settings the agent changes at run time: one entry (key 0). */
NT_PINNED_MAP(nt_config, BPF_MAP_TYPE_ARRAY, 0, 1,
	      __u32, struct nt_config);

/* The wall clock for keyed epochs: written by the agent, one entry (key 0). */
NT_PINNED_MAP(nt_clock, BPF_MAP_TYPE_ARRAY, 0, 1,
	      __u32, struct nt_clock);

#endif /* NT_LIB_MAPS_H */
