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

/* IPv4 destinations per interface: (ifindex, prefix) -> rule. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NT_MAX_PREFIXES);
	__type(key, struct nt_lpm4_key);
	__type(value, struct nt_egress_rule);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_egress4 SEC(".maps");

/* IPv6 destinations per interface: (ifindex, prefix) -> rule. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NT_MAX_PREFIXES);
	__type(key, struct nt_lpm6_key);
	__type(value, struct nt_egress_rule);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_egress6 SEC(".maps");

/* Policy slots by id; slot 0 stays NT_MODE_NONE. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NT_MAX_POLICIES);
	__type(key, __u32);
	__type(value, struct nt_policy);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_policies SEC(".maps");

/* Per-CPU counters: slot -> one u64 per enum nt_counter (abi.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NT_MAX_COUNTER_SLOTS);
	__type(key, __u32);
	__type(value, struct nt_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_counters SEC(".maps");

/* Who each counter slot counts for: written by the agent, read by whoever shows the counters. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NT_MAX_COUNTER_SLOTS);
	__type(key, __u32);
	__type(value, struct nt_counter_owner);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_counter_slots SEC(".maps");

/* Interfaces the agent knows, by ifindex: where their own counters are. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NT_MAX_COUNTER_SLOTS);
	__type(key, __u32);
	__type(value, struct nt_iface);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_ifaces SEC(".maps");

/* Settings the agent changes at run time: one entry (key 0). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nt_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_config SEC(".maps");

/* The wall clock for keyed epochs: written by the agent, one entry (key 0). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nt_clock);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nt_clock SEC(".maps");

#endif /* NT_LIB_MAPS_H */
