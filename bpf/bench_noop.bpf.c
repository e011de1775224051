// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Benchmark baselines: a tc and an XDP program that do nothing (bench/packet.ts, bench/verifier.ts). */
#include "lib/common.h"

SEC("tc")
int nt_bench_noop(struct __sk_buff *skb)
{
	return NT_PASS;
}

SEC("xdp")
int nt_bench_noop_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
