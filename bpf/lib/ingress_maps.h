/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The maps only the ingress verifier uses (it shares nt_policies, the counter
 * maps, nt_ifaces and nt_clock with the marker, maps.h). Pinned by name like those.
 * Layouts: abi.h.
 */
#ifndef NT_LIB_INGRESS_MAPS_H
#define NT_LIB_INGRESS_MAPS_H

#include "common.h"

/* Protected local ports: (ifindex, port or 0) -> which policy verifies, and how. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NT_MAX_PORT_RULES);
	__type(key, struct nt_port_key);
	__type(value, struct nt_ingress_rule);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_ingress_ports SEC(".maps");

/* Sources a policy never drops: (policy, IPv4 prefix) -> 1. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NT_MAX_EXEMPT);
	__type(key, struct nt_src4_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_exempt4 SEC(".maps");

/* Sources a policy never drops: (policy, IPv6 prefix) -> 1. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NT_MAX_EXEMPT);
	__type(key, struct nt_src6_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_exempt6 SEC(".maps");

/*
 * Replay limit: valid SYNs per (policy, flow, sequence number) in the current
 * second. LRU, so a flood of distinct valid flows only ages out old entries.
 * BPF_F_NO_COMMON_LRU gives each CPU its own LRU list (no global lock when a
 * new flow is inserted); the values stay shared and are counted atomically,
 * so the limit holds however the replays are spread over CPUs.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, NT_MAX_REPLAY);
	__type(key, struct nt_replay_key);
	__type(value, struct nt_replay_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_replay SEC(".maps");

#endif /* NT_LIB_INGRESS_MAPS_H */
