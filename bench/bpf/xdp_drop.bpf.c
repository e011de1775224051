// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The SYN flood's baseline (bench/flood.ts): drops every frame and does nothing else,
 * not even count. The receiving veth counts what XDP dropped (ethtool -S: xdp_drops), for
 * this program and for the verifier alike, so both are counted the same way.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int nt_bench_drop_xdp(struct xdp_md *ctx)
{
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
