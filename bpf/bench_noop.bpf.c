// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Benchmark baseline: a tc program that does nothing (bench/packet.ts). */
#include "lib/common.h"

SEC("tc")
int nt_bench_noop(struct __sk_buff *skb)
{
	return NT_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
