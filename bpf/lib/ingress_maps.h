/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The maps only the ingress verifier uses (it shares nt_policies, the counter
 * maps, nt_ifaces and nt_clock with the marker, maps.h). Pinned by name like those.
 * Layouts: abi.h.
 */
#ifndef NT_LIB_INGRESS_MAPS_H
#define NT_LIB_INGRESS_MAPS_H

#include "common.h"
#include "map_decl.h"

/* Protected local ports: (ifindex, port or 0) -> which policy verifies, and how. */
NT_PINNED_MAP(nt_ingress_ports, BPF_MAP_TYPE_HASH, 0, NT_MAX_PORT_RULES,
	      struct nt_port_key, struct nt_ingress_rule);

/* The rule of a port only one interface protects, by port: nt_ingress_ports without the hash lookup. */
NT_PINNED_MAP(nt_port_index, BPF_MAP_TYPE_ARRAY, 0, NT_MAX_PORT_INDEX,
	      __u32, struct nt_port_index);

/* Sources a policy never drops: (policy, IPv4 prefix) -> 1. */
NT_PINNED_MAP(nt_exempt4, BPF_MAP_TYPE_LPM_TRIE, BPF_F_NO_PREALLOC, NT_MAX_EXEMPT,
	      struct nt_src4_key, __u32);

/* Sources a policy never drops: (policy, IPv6 prefix) -> 1. */
NT_PINNED_MAP(nt_exempt6, BPF_MAP_TYPE_LPM_TRIE, BPF_F_NO_PREALLOC, NT_MAX_EXEMPT,
	      struct nt_src6_key, __u32);

/*
 * Replay limit: valid SYNs per (policy, flow, sequence number) in the current
 * second. LRU, so a flood of distinct valid flows only ages out old entries.
 * BPF_F_NO_COMMON_LRU gives each CPU its own LRU list (no global lock when a
 * new flow is inserted); the values stay shared and are counted atomically,
 * so the limit holds however the replays are spread over CPUs.
 */
NT_PINNED_MAP(nt_replay, BPF_MAP_TYPE_LRU_HASH, BPF_F_NO_COMMON_LRU, NT_MAX_REPLAY,
	      struct nt_replay_key, struct nt_replay_val);

#endif /* NT_LIB_INGRESS_MAPS_H */
