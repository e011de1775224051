// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The egress marker wrapped for bench/packet.ts: the same nt_mark() that
 * bpf/marker.bpf.c runs (inlined from bpf/lib/mark.h), with the frame put back after
 * every repetition (see restore.h). Shares its pinned maps with marker.bpf.o.
 */
#include "lib/mark.h"
#include "restore.h"

SEC("tc")
int nt_bench_mark_restore(struct __sk_buff *skb)
{
	__u8 *saved = nt_bench_slot();
	int err;

	err = nt_bench_save(skb, saved);
	if (err)
		return err;
	return nt_bench_finish(skb, saved, NT_OPT_LEN, nt_mark(skb, NT_L2_ETH));
}

SEC("tc")
int nt_bench_restore_only(struct __sk_buff *skb)
{
	return nt_bench_grow_restore(skb, NT_OPT_LEN, NT_PASS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
