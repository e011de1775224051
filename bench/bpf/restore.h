/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Put the benchmark frame back after a program grew it.
 *
 * BPF_PROG_TEST_RUN runs the program `repeat` times on one skb and never resets it, so
 * a SYN would be marked only on the first repetition (the marker then sees its own option
 * and skips). The *_mark_restore programs save the frame, run the marking code, check
 * that it grew by the expected amount, and restore the frame, so that every repetition
 * marks again. The *_restore_only programs do the same growing and restoring without
 * marking: bench/packet.ts subtracts their time to get the marking cost alone. The marker
 * and the seed port use this same header, so their restore costs are alike.
 * The saved frame is kept in a per-CPU map rather than on the stack, which the
 * marker needs all of (its call chain is close to the verifier's 512 bytes).
 */
#ifndef NT_BENCH_RESTORE_H
#define NT_BENCH_RESTORE_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* Ethernet + IPv4 + TCP with Linux's 20 SYN option bytes: the frame bench/packet.ts sends. */
#define NT_BENCH_FRAME_LEN (14 + 20 + 20 + 20)

/* Return values telling bench/packet.ts that a repetition did not do what it measures. */
#define NT_BENCH_BAD_FRAME  100 /* not the 74-byte benchmark frame */
#define NT_BENCH_NOT_MARKED 101 /* the marking code left the frame's length unchanged */
#define NT_BENCH_RESTORE    102 /* could not put the frame back */

struct nt_bench_frame {
	__u8 b[NT_BENCH_FRAME_LEN];
};

/* Where the frame is kept while the program runs: one entry, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nt_bench_frame);
} nt_bench_saved SEC(".maps");

/* This CPU's place for the frame, or NULL (never). */
static __always_inline __u8 *nt_bench_slot(void)
{
	__u32 zero = 0;
	struct nt_bench_frame *f = bpf_map_lookup_elem(&nt_bench_saved, &zero);

	return f ? f->b : NULL;
}

/* Copy the frame to @saved. Returns 0 or NT_BENCH_BAD_FRAME. */
static __always_inline int nt_bench_save(struct __sk_buff *skb, __u8 *saved)
{
	if (!saved || skb->len != NT_BENCH_FRAME_LEN)
		return NT_BENCH_BAD_FRAME;
	if (bpf_skb_load_bytes(skb, 0, saved, NT_BENCH_FRAME_LEN))
		return NT_BENCH_BAD_FRAME;
	return 0;
}

/* Shrink the frame back to its length and rewrite every byte. Returns 0 or NT_BENCH_RESTORE. */
static __always_inline int nt_bench_restore(struct __sk_buff *skb, const __u8 *saved)
{
	if (bpf_skb_change_tail(skb, NT_BENCH_FRAME_LEN, 0))
		return NT_BENCH_RESTORE;
	if (bpf_skb_store_bytes(skb, 0, saved, NT_BENCH_FRAME_LEN, 0))
		return NT_BENCH_RESTORE;
	return 0;
}

/*
 * After the marking code ran: check that it grew the frame by @grow bytes, then restore.
 * Returns @act (the marking code's verdict) or an NT_BENCH_* error.
 */
static __always_inline int nt_bench_finish(struct __sk_buff *skb, const __u8 *saved, __u32 grow, int act)
{
	int err;

	if (skb->len != NT_BENCH_FRAME_LEN + grow)
		return NT_BENCH_NOT_MARKED;
	err = nt_bench_restore(skb, saved);
	return err ? err : act;
}

/* The restore-only twin of a mark-and-restore program: grow by @grow, restore. */
static __always_inline int nt_bench_grow_restore(struct __sk_buff *skb, __u32 grow, int act)
{
	__u8 *saved = nt_bench_slot();
	int err;

	err = nt_bench_save(skb, saved);
	if (err)
		return err;
	if (bpf_skb_change_tail(skb, NT_BENCH_FRAME_LEN + grow, 0))
		return NT_BENCH_RESTORE;
	return nt_bench_finish(skb, saved, grow, act);
}

#endif /* NT_BENCH_RESTORE_H */
