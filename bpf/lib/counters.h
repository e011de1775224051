/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-CPU packet counters in slots the agent assigns (abi.h, struct
 * nt_counters): a rule carries the slot of its (interface, policy), nt_ifaces
 * the slot of an interface's own counters.
 */
#ifndef NT_LIB_COUNTERS_H
#define NT_LIB_COUNTERS_H

#include "common.h"
#include "maps.h"

/** nt_counters_at() - this CPU's counters of slot @slot, for a path that counts more than once in it (NULL: lost). */
static __always_inline struct nt_counters *nt_counters_at(__u32 slot)
{
	return bpf_map_lookup_elem(&nt_counters, &slot);
}

/** nt_count_in() - add one to counter @counter of @c (nt_counters_at()), if there is one. */
static __always_inline void nt_count_in(struct nt_counters *c, __u32 counter)
{
	if (c)
		c->cells[counter & (NT_COUNTER_CELLS - 1)] += 1;
}

/**
 * nt_count() - add one to counter @counter (enum nt_counter) of slot @slot.
 * An inlined per-CPU array access: a plain increment is race-free, and a
 * slot out of range (never given out) loses the count, never the packet.
 */
static __always_inline void nt_count(__u32 slot, __u32 counter)
{
	nt_count_in(nt_counters_at(slot), counter);
}

/** nt_iface_slot() - the counter slot of interface @ifindex itself (policy 0), or 0 when the agent gave it none. */
static __always_inline __u32 nt_iface_slot(__u32 ifindex)
{
	struct nt_iface *i = bpf_map_lookup_elem(&nt_ifaces, &ifindex);

	return i ? i->counter_slot : 0;
}

/** nt_count_iface() - count @counter under interface @ifindex itself (policy 0): for the rare paths. */
static __always_inline void nt_count_iface(__u32 ifindex, __u32 counter)
{
	nt_count(nt_iface_slot(ifindex), counter);
}

#endif /* NT_LIB_COUNTERS_H */
