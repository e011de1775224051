// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test-only entry points into lib/siphash.h and lib/keyed.h, driven with
 * BPF_PROG_TEST_RUN by test/packet/siphash.test.ts. Each reads its input from
 * the frame and writes the 8-byte result (wire order) over the frame's start.
 */
#include "lib/keyed.h"

/* Returned when the input frame is too short. */
#define NT_TEST_BAD_INPUT 100

/* Frame: key[16] | len (1) | 7 unused | message[64]. */
#define NT_TEST_SIP_FRAME (16 + 8 + 64)

SEC("xdp")
int nt_test_siphash(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 msg[NT_SIPHASH_MAX_WORDS];
	__u8 key[16], len;
	__u64 k0, k1, h;

	if (bpf_xdp_load_bytes(ctx, 0, key, sizeof(key)) ||
	    bpf_xdp_load_bytes(ctx, 16, &len, sizeof(len)) ||
	    bpf_xdp_load_bytes(ctx, 24, msg, sizeof(msg)))
		return NT_TEST_BAD_INPUT;
	nt_sip_key(key, &k0, &k1);
	h = nt_cpu_le64(nt_siphash24(k0, k1, msg, len > NT_SIPHASH_MAX_LEN ? NT_SIPHASH_MAX_LEN : len));
	if (data + sizeof(h) > data_end)
		return NT_TEST_BAD_INPUT;
	__builtin_memcpy(data, &h, sizeof(h));
	return XDP_PASS;
}

/* Frame: key[16] | message[48] (NT_KEYED_MSG_LEN): the keyed path, split at the epoch. */
SEC("xdp")
int nt_test_keyed(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct nt_keyed_flow flow;
	struct nt_sip prefix;
	__u8 key[16];
	__be64 epoch_be;
	__u64 h;

	if (bpf_xdp_load_bytes(ctx, 0, key, sizeof(key)) ||
	    bpf_xdp_load_bytes(ctx, 16, &flow, sizeof(flow)) ||
	    bpf_xdp_load_bytes(ctx, 16 + NT_KEYED_FLOW_LEN, &epoch_be, sizeof(epoch_be)))
		return NT_TEST_BAD_INPUT;
	nt_keyed_prefix(&prefix, key, &flow);
	h = nt_cpu_le64(nt_keyed_value(&prefix, bpf_be64_to_cpu(epoch_be)));
	if (data + sizeof(h) > data_end)
		return NT_TEST_BAD_INPUT;
	__builtin_memcpy(data, &h, sizeof(h));
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
