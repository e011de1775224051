// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test-only programs around the egress marker.
 *
 * nt_test_encap: it first turns the skb into an
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
	return nt_mark(skb, NT_L2_ETH);
}

/* A jump table left empty: the tail call of nt_test_mark_no_jump always fails. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} nt_test_empty_jump SEC(".maps");

/*
 * nt_test_mark_no_jump: the marker's attached program with its jump table
 * empty, as if the tail call into the SYN program could not be made.
 */
SEC("tc")
int nt_test_mark_no_jump(struct __sk_buff *skb)
{
	return nt_mark_entry(skb, NT_L2_ETH, &nt_test_empty_jump);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
