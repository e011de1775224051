// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test fixture: a map pinned by name, to check that reopening the object with
 * the same pin root reuses the live map instead of creating an empty one.
 * Always open it with a pinRoot: without one libbpf pins under /sys/fs/bpf.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, __u32);
	__type(value, __u64);
} kept_state SEC(".maps");

SEC("tc")
int tc_touch(struct __sk_buff *skb)
{
	__u32 key = 0;
	__u64 one = 1;

	bpf_map_update_elem(&kept_state, &key, &one, BPF_NOEXIST);
	return -1; /* TC_ACT_UNSPEC */
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
