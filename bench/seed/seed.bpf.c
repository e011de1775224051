// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Benchmark reference, never for a real network: the egress algorithm of the seed
 * write-up (seed/netoken-blog-zh.md, handle_tc / extend_options_token), ported step for
 * step so that bench/packet.ts can compare the marker's cost of marking a SYN with what
 * the seed paid. Its defects are kept on purpose, because fixing them would change
 * the cost being compared:
 *  - the token is a host-order u64 appended after whatever the segment carries
 *    (on x86 the wire bytes read as kind 0x66, length 8);
 *  - only the IPv4 header checksum is fixed: the TCP checksum is left stale (the
 *    difference is computed and then dropped, as in the seed);
 *  - tot_len and doff are rewritten before the packet is grown, with no check of
 *    payload, option space, EOL, VLAN or IPv6;
 *  - the token and the counter are shared globals updated without atomics.
 */
#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "../bpf/restore.h"

#define SEED_TOKEN_BASE   0x866ULL
#define SEED_TOKEN_LEN    8
#define SEED_IP_CSUM_OFF  (ETH_HLEN + offsetof(struct iphdr, check))

/* One u32 each, as in the seed: a packet counter and the "policy" bits OR-ed into the token. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} seed_metrics SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} seed_policy SEC(".maps");

/* A global rewritten on every SYN, as in the seed (racy across CPUs). */
__u64 seed_token = SEED_TOKEN_BASE;

/* token = base + (policy bits << 60), read from the one-slot policy map. */
static __always_inline void seed_update_token(void)
{
	__u32 zero = 0;
	__u32 *bits = bpf_map_lookup_elem(&seed_policy, &zero);

	if (bits)
		seed_token = SEED_TOKEN_BASE + ((__u64)*bits << 60);
}

/* Plain (non-atomic) increment, with an update when the lookup fails, as in the seed. */
static __always_inline void seed_update_metrics(void)
{
	__u32 zero = 0, one = 1;
	__u32 *count = bpf_map_lookup_elem(&seed_metrics, &zero);

	if (count)
		*count += 1;
	else
		bpf_map_update_elem(&seed_metrics, &zero, &one, BPF_ANY);
}

/* Rewrite the lengths in place, grow the tail by 8 and store the token there. 0 on success. */
static __always_inline int seed_extend(struct __sk_buff *skb, struct iphdr *iph, struct tcphdr *tcph,
				       __u64 token)
{
	__u32 old_len = skb->len;
	__u16 sz = SEED_TOKEN_LEN;

	iph->tot_len = bpf_htons(iph->ihl * 4 + tcph->doff * 4 + sz);
	tcph->doff = tcph->doff + sz / 4;

	if (bpf_skb_change_tail(skb, skb->len + sz, 0))
		return -1;
	if (bpf_skb_store_bytes(skb, old_len, &token, sizeof(token), 0))
		return -1;
	if (bpf_l3_csum_replace(skb, SEED_IP_CSUM_OFF, 0, bpf_htons(sz), 0))
		return -1;
	/* The seed computes the TCP checksum difference and never applies it. */
	bpf_csum_diff(NULL, 0, (__be32 *)&token, sizeof(token), 0);
	seed_update_metrics();
	return 0;
}

/* The seed's handle_tc: IPv4 TCP straight after a plain Ethernet header, SYN without ACK. */
static __always_inline int seed_handle(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = data + sizeof(*eth);
	struct tcphdr *tcph;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if ((void *)(iph + 1) > data_end || iph->protocol != IPPROTO_TCP)
		return TC_ACT_OK;
	tcph = data + sizeof(*eth) + iph->ihl * 4;
	if ((void *)(tcph + 1) > data_end)
		return TC_ACT_OK;
	if (tcph->syn != 1 || tcph->ack != 0)
		return TC_ACT_OK;
	seed_update_token();
	seed_extend(skb, iph, tcph, seed_token);
	return TC_ACT_OK;
}

/* The seed program itself, for one-shot runs. */
SEC("tc")
int seed_egress(struct __sk_buff *skb)
{
	return seed_handle(skb);
}

SEC("tc")
int seed_mark_restore(struct __sk_buff *skb)
{
	__u8 *saved = nt_bench_slot();
	int err;

	err = nt_bench_save(skb, saved);
	if (err)
		return err;
	return nt_bench_finish(skb, saved, SEED_TOKEN_LEN, seed_handle(skb));
}

SEC("tc")
int seed_restore_only(struct __sk_buff *skb)
{
	return nt_bench_grow_restore(skb, SEED_TOKEN_LEN, TC_ACT_OK);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
