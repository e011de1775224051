// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Benchmark wrappers (bench/packet.ts). BPF_PROG_TEST_RUN runs one skb many
 * times, so a SYN is marked only once; these programs put the original frame
 * back after every run so that each repetition marks again. The restore costs
 * time of its own: nt_bench_restore_only measures it without the marker.
 */
#include "lib/mark.h"

/* The benchmark frame: Ethernet + IPv4 + TCP with Linux's 20 SYN option bytes. */
#define NT_BENCH_FRAME_LEN (14 + 20 + 20 + 20)

/* Return values that tell the benchmark its frame was not what it expected. */
#define NT_BENCH_BAD_FRAME  100
#define NT_BENCH_NOT_MARKED 101
#define NT_BENCH_RESTORE    102

static __always_inline int nt_bench_restore(struct __sk_buff *skb, const __u8 *saved)
{
	if (bpf_skb_change_tail(skb, NT_BENCH_FRAME_LEN, 0))
		return NT_BENCH_RESTORE;
	if (bpf_skb_store_bytes(skb, 0, saved, NT_BENCH_FRAME_LEN, 0))
		return NT_BENCH_RESTORE;
	return 0;
}

SEC("tc")
int nt_bench_mark_restore(struct __sk_buff *skb)
{
	__u8 saved[NT_BENCH_FRAME_LEN];
	int act, err;

	if (skb->len != NT_BENCH_FRAME_LEN || bpf_skb_load_bytes(skb, 0, saved, sizeof(saved)))
		return NT_BENCH_BAD_FRAME;
	act = nt_mark(skb);
	if (skb->len != NT_BENCH_FRAME_LEN + NT_OPT_LEN)
		return NT_BENCH_NOT_MARKED;
	err = nt_bench_restore(skb, saved);
	return err ? err : act;
}

SEC("tc")
int nt_bench_restore_only(struct __sk_buff *skb)
{
	__u8 saved[NT_BENCH_FRAME_LEN];
	int err;

	if (skb->len != NT_BENCH_FRAME_LEN || bpf_skb_load_bytes(skb, 0, saved, sizeof(saved)))
		return NT_BENCH_BAD_FRAME;
	if (bpf_skb_change_tail(skb, NT_BENCH_FRAME_LEN + NT_OPT_LEN, 0))
		return NT_BENCH_RESTORE;
	err = nt_bench_restore(skb, saved);
	return err ? err : NT_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
