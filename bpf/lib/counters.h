/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-CPU packet counters keyed by (ifindex, policy, reason). */
#ifndef NT_LIB_COUNTERS_H
#define NT_LIB_COUNTERS_H

#include "common.h"
#include "maps.h"

/**
 * nt_count() - add one to counter @counter of (@ifindex, @policy_id).
 *
 * The map is per-CPU, so a plain increment is race-free. A missing key is
 * created with BPF_NOEXIST; losing that race to another CPU (-EEXIST) only
 * means the key now exists, so the increment is retried once. A full map
 * loses the count, never the packet.
 */
static __always_inline void nt_count(__u32 ifindex, __u32 policy_id, __u32 counter)
{
	struct nt_stat_key key = {
		.ifindex = ifindex,
		.policy_id = policy_id,
		.counter = counter,
	};
	__u64 one = 1;
	__u64 *val;

	val = bpf_map_lookup_elem(&nt_stats, &key);
	if (val) {
		*val += 1;
		return;
	}
	if (bpf_map_update_elem(&nt_stats, &key, &one, BPF_NOEXIST) == 0)
		return;
	val = bpf_map_lookup_elem(&nt_stats, &key);
	if (val)
		*val += 1;
}

#endif /* NT_LIB_COUNTERS_H */
