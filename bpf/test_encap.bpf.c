// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test-only wrapper around the egress marker: it first turns the skb into an
 * encapsulated one the way a tunnel program does (bpf_skb_adjust_room with an
 * ENCAP flag sets skb->encapsulation), removes the room again so the bytes
 * are the original packet, and then runs the same marker logic as
 * marker.bpf.c. BPF_PROG_TEST_RUN cannot set skb->encapsulation otherwise.
 */
#include "lib/mark.h"

/* Outer IPv4 header room; any size >= 20 works, the bytes are removed again. */
#define NT_TEST_ENCAP_ROOM 20

/* Distinct return values for a failed setup, so that a test can tell it from the marker's verdicts. */
#define NT_TEST_ENCAP_GROW_FAILED   100
#define NT_TEST_ENCAP_SHRINK_FAILED 101

SEC("tc")
int nt_test_encap(struct __sk_buff *skb)
{
	if (bpf_skb_adjust_room(skb, NT_TEST_ENCAP_ROOM, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_ENCAP_L3_IPV4))
		return NT_TEST_ENCAP_GROW_FAILED;
	if (bpf_skb_adjust_room(skb, -NT_TEST_ENCAP_ROOM, BPF_ADJ_ROOM_MAC, 0))
		return NT_TEST_ENCAP_SHRINK_FAILED;
	return nt_mark(skb);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
