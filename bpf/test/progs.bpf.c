// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test fixture for the native addon: one map of each kind the addon handles
 * specially, and minimal tc / XDP programs to attach and test-run.
 * Nothing here is used by netoken itself.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define TC_ACT_UNSPEC (-1) /* same value as TCX_NEXT: let the next program decide */

struct lpm4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} hash_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} array_map SEC(".maps");

/* value_size 4 on purpose: user space sees each CPU's slot rounded up to 8 bytes. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} percpu_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm4_key);
	__type(value, __u32);
} lpm_map SEC(".maps");

/* Does nothing: the packet goes on to whatever runs after us. */
SEC("tc")
int tc_noop(struct __sk_buff *skb)
{
	return TC_ACT_UNSPEC;
}

/* Counts every packet in percpu_counts[0] and records its length in hash_map[1]. */
SEC("tc")
int tc_count(struct __sk_buff *skb)
{
	__u32 zero = 0, one = 1;
	__u64 len = skb->len;
	__u32 *count = bpf_map_lookup_elem(&percpu_counts, &zero);

	if (count)
		*count += 1;
	bpf_map_update_elem(&hash_map, &one, &len, BPF_ANY);
	return TC_ACT_UNSPEC;
}

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
