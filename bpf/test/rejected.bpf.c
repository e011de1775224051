// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test fixture: a program the verifier must reject (packet read without a
 * bounds check), so the tests can see the verifier's message in err.log.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("tc")
int tc_unchecked_read(struct __sk_buff *skb)
{
	__u8 *data = (__u8 *)(long)skb->data;

	return data[20]; /* no check against skb->data_end: rejected on purpose */
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
