/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Appending an option after the existing TCP options of a payload-less SYN,
 * with the IP length and both checksums kept right, writing the packet in place.
 * An option list that ends in an EOL (what BSD and macOS stacks send: the EOL
 * pads the list to a multiple of 4) gets the option in the EOL's place, and
 * the EOL and its padding move behind it.
 *
 * The packet grows at its tail (bpf_skb_change_tail): for a SYN without data
 * the tail is the end of the option area, so nothing has to move and
 * csum_start of a CHECKSUM_PARTIAL skb stays valid. For a CHECKSUM_PARTIAL
 * skb the TCP check field holds only the pseudo-header sum: the device sums
 * the segment, new bytes included, so only the pseudo-header length changes.
 * A fully checksummed skb needs the new option bytes and the data-offset word
 * added too.
 */
#ifndef NT_LIB_INSERT_H
#define NT_LIB_INSERT_H

#include "common.h"
#include "ipv4.h"
#include "ipv6.h"
#include "tcp.h"
#include "syn.h"
#include "csum.h"
#include "kskb.h"

enum nt_insert_result {
	NT_INS_OK = 0,
	NT_INS_ENCAP, /* skb->encapsulation: the kernel refuses to grow it; unchanged */
	NT_INS_GROW,  /* growing failed otherwise; unchanged */
	NT_INS_WRITE, /* a write failed after growing: the packet must not leave */
};

/* One's complement sum of the 16-bit words of a zero-padded option area (40 bytes, 2-byte aligned). */
static __always_inline __u32 nt_csum_opts(const __u8 *opts)
{
	const __u16 *w = __builtin_assume_aligned(opts, 2);
	__u32 sum = 0;

#pragma unroll
	for (__u32 i = 0; i < NT_TCP_MAX_OPT_LEN / 2; i++)
		sum += w[i];
	return sum;
}

/**
 * nt_write_over_eol() - write the option area of grown SYN @s with @opt over
 * the EOL at @at (@scratch: room to build it in): the area as it was up to
 * @at, then @opt, then zeros (the EOL and its padding, moved behind our
 * option) to the area's new end, 12 bytes past the old one. Returns the
 * checksum difference of the area (new words + complemented old ones), or -1
 * when a read or the write failed.
 *
 * Verifier workaround: a subprogram, so that the EOL's position is no longer
 * live in the caller (every position would otherwise be verified through the
 * rest of the program), and one helper write, because loops over a variable
 * position in the packet multiply the verifier's states past its limit.
 */
static __noinline __attribute__((unused)) __s64 nt_write_over_eol(struct __sk_buff *skb, const struct nt_syn *s,
								  __u32 at, const __u8 *opt, struct nt_opt_buf *scratch)
{
	__u8 *opts = scratch->b;
	__u32 pos = at & 31; /* at < optlen <= 28: the caller checked the room */
	__u32 m = s->tcp_len - sizeof(struct tcphdr) - 1;
	__u32 n = s->tcp_len - sizeof(struct tcphdr) + NT_OPT_LEN - 1;
	__u32 old_sum;

	/* The old area (4..28 bytes), still where it was: the packet grew behind it. Verifier workaround as below. */
	__builtin_memset(opts, 0, NT_TCP_OPT_BUF);
	asm volatile("%0 &= 63\n\t%0 += 1" : "+r"(m));
	if (bpf_skb_load_bytes(skb, s->l4_off + sizeof(struct tcphdr), opts, m))
		return -1;
	old_sum = nt_csum_opts(opts);
	/* The old sum first, into one register: else clang keeps all 20 old words in stack spills. */
	asm volatile("" : "+r"(old_sum) : : "memory");
	__builtin_memset(&opts[pos], 0, NT_TCP_MAX_OPT_LEN - NT_OPT_LEN);
	__builtin_memcpy(&opts[pos], opt, NT_OPT_LEN);
	/* The whole new area, 16..40 bytes. Verifier workaround: 1..64 by construction, as in nt_parse_syn(). */
	asm volatile("%0 &= 63\n\t%0 += 1" : "+r"(n));
	if (bpf_skb_store_bytes(skb, s->l4_off + sizeof(struct tcphdr), opts, n, 0))
		return -1;
	return nt_csum_add(nt_csum_opts(opts), (__u16)~nt_csum_fold16(old_sum));
}

/**
 * nt_tcp_append_option() - grow @skb by NT_OPT_LEN and write @opt into the TCP options.
 * @at: where @opt goes: the option area's length (after the last option), or
 *      the position of an EOL (over it and its padding, which follow our
 *      option: receivers ignore what is after an EOL)
 * @scratch: room for the EOL case (what it held before is not needed)
 * The caller has checked that the SYN carries no data, that the lengths agree
 * with skb->len and that the option space has room. Only for programs that
 * may write the packet directly (a tc program that does is uncloned by the
 * kernel on entry, so the marker's entry program tail-calls the one that does
 * this, for SYNs only).
 *
 * Whether the skb is CHECKSUM_PARTIAL decides how the TCP checksum changes
 * (see above). Where the program can read skb->ip_summed (kskb.h) it writes
 * the field itself: the pseudo-header length added as a plain sum to a partial
 * checksum, an RFC 1624 update of everything to a full one, exactly as
 * bpf_l4_csum_replace() would. Else, and for a CHECKSUM_COMPLETE skb (whose
 * skb->csum the helper keeps too), the pseudo-header length goes through
 * bpf_l4_csum_replace(), which applies it either way, and reading the field
 * back tells which it was: a full checksum then gets the option bytes and the
 * data-offset word added here, a partial one nothing (the device sums them).
 * Returns enum nt_insert_result.
 */
static __always_inline int nt_tcp_append_option(struct __sk_buff *skb, const struct nt_syn *s, __u32 at,
						const __u8 opt[NT_OPT_LEN], struct nt_opt_buf *scratch)
{
	__u32 l3_off = s->l3_off, l4_off = s->l4_off, tcp_len = s->tcp_len;
	__u32 optlen = tcp_len - sizeof(struct tcphdr);
	__u16 c0 = s->check, c1, new_doff_word;
	__u32 delta, opt_delta = 0;
	void *data, *data_end;
	__u8 *l3, *l4;
	int partial, summed = nt_skb_ip_summed(skb);
	/* ip_summed read, and not CHECKSUM_COMPLETE: the field is written here, not by the helper. */
	int known = summed != NT_CHECKSUM_UNKNOWN && summed != NT_CHECKSUM_COMPLETE;
	long err = 0;

	if (l3_off > NT_DIRECT_MAX_L4_OFF || l4_off > NT_DIRECT_MAX_L4_OFF ||
	    tcp_len > NT_TCP_MAX_HDR_LEN || at > optlen || optlen + NT_OPT_LEN > NT_TCP_MAX_OPT_LEN)
		return NT_INS_GROW;

	err = bpf_skb_change_tail(skb, skb->len + NT_OPT_LEN, 0);
	if (err == -NT_ENOTSUPP)
		return NT_INS_ENCAP;
	if (err)
		return NT_INS_GROW;

	/* From here on the packet has changed: every failure drops it. */
	if (s->family == 4) {
		/* The IPv4 pseudo-header carries the TCP length as 16 bits. */
		__be16 from = bpf_htons(tcp_len), to = bpf_htons(tcp_len + NT_OPT_LEN);

		delta = nt_csum_add((__u16)~from, to);
		if (!known)
			err = bpf_l4_csum_replace(skb, l4_off + NT_TCP_CHECK_OFF, from, to,
						  BPF_F_PSEUDO_HDR | sizeof(to));
	} else {
		/* The IPv6 pseudo-header carries the upper-layer length as 32 bits. */
		__be32 from = bpf_htonl(tcp_len), to = bpf_htonl(tcp_len + NT_OPT_LEN);

		delta = nt_csum_add(~from, to);
		if (!known)
			err = bpf_l4_csum_replace(skb, l4_off + NT_TCP_CHECK_OFF, from, to,
						  BPF_F_PSEUDO_HDR | sizeof(to));
	}
	if (err)
		return NT_INS_WRITE;
	if (at != optlen) {
		__s64 d = nt_write_over_eol(skb, s, at, opt, scratch);

		if (d < 0)
			return NT_INS_WRITE;
		opt_delta = (__u32)d;
	}

	/* The helpers moved the packet: find the headers again. */
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	l3 = data + nt_bound_off(l3_off);
	l4 = data + nt_bound_off(l4_off);
	if ((void *)(l3 + sizeof(struct iphdr)) > data_end ||
	    (void *)(l4 + sizeof(struct tcphdr)) > data_end)
		return NT_INS_WRITE;

	if (known) {
		/* What bpf_l4_csum_replace() would have made of the field. */
		partial = summed == NT_CHECKSUM_PARTIAL;
		c1 = partial ? nt_csum_fold16(nt_csum_add(c0, delta)) : nt_csum_update(c0, delta);
		if (partial)
			__builtin_memcpy(l4 + NT_TCP_CHECK_OFF, &c1, sizeof(c1));
	} else {
		__builtin_memcpy(&c1, l4 + NT_TCP_CHECK_OFF, sizeof(c1));
		if (nt_csum_norm(c1) == nt_csum_norm(nt_csum_fold16(nt_csum_add(c0, delta))))
			partial = 1;
		else if (nt_csum_norm(c1) == nt_csum_norm(nt_csum_update(c0, delta)))
			partial = 0;
		else
			return NT_INS_WRITE;
	}

	if (at == optlen) {
		/* The common case: after the last option, at the tail the packet grew by. */
		__u8 *tail = l4 + nt_bound_off(tcp_len);

		if ((void *)(tail + NT_OPT_LEN) > data_end)
			return NT_INS_WRITE;
		__builtin_memcpy(tail, opt, NT_OPT_LEN);
		opt_delta = nt_csum_words12(opt);
	}
	/* Data offset counts 32-bit words: 12 bytes add 3. */
	new_doff_word = bpf_htons(bpf_ntohs(s->doff_word) + ((NT_OPT_LEN / 4) << 12));
	__builtin_memcpy(l4 + NT_TCP_DOFF_WORD_OFF, &new_doff_word, sizeof(new_doff_word));
	if (!partial) {
		__u16 c2 = nt_csum_update(c1, nt_csum_add(opt_delta, (__u16)~s->doff_word + (__u32)new_doff_word));

		__builtin_memcpy(l4 + NT_TCP_CHECK_OFF, &c2, sizeof(c2));
	}

	if (s->family == 4) {
		__be16 old_len = bpf_htons(s->ip_len), new_len = bpf_htons(s->ip_len + NT_OPT_LEN);
		__u16 hc;

		__builtin_memcpy(&hc, l3 + NT_IPV4_CHECK_OFF, sizeof(hc));
		hc = nt_csum_update(hc, (__u16)~old_len + (__u32)new_len);
		__builtin_memcpy(l3 + NT_IPV4_TOT_LEN_OFF, &new_len, sizeof(new_len));
		__builtin_memcpy(l3 + NT_IPV4_CHECK_OFF, &hc, sizeof(hc));
	} else {
		__be16 new_len = bpf_htons(s->ip_len + NT_OPT_LEN);

		__builtin_memcpy(l3 + NT_IPV6_PAYLOAD_LEN_OFF, &new_len, sizeof(new_len));
	}
	return NT_INS_OK;
}

#endif /* NT_LIB_INSERT_H */
