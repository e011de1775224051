/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Appending an option after the existing TCP options of a payload-less SYN,
 * with the IP length and both checksums kept right.
 *
 * The packet grows at its tail (bpf_skb_change_tail): for a SYN without data
 * the tail is the end of the option area, so nothing has to move and
 * csum_start of a CHECKSUM_PARTIAL skb stays valid. The TCP checksum is then
 * updated three times through bpf_l4_csum_replace:
 *   1. the 12 new bytes (a diff from bpf_csum_diff),
 *   2. the data-offset word,
 *   3. the TCP length in the pseudo-header (BPF_F_PSEUDO_HDR).
 * For a CHECKSUM_PARTIAL skb the check field holds only the pseudo-header
 * sum: the kernel ignores 1 and 2 and applies 3 to it, and the device sums
 * the segment, new bytes included. For a fully checksummed skb all three
 * apply. Either way the result is correct.
 */
#ifndef NT_LIB_INSERT_H
#define NT_LIB_INSERT_H

#include "common.h"
#include "ipv4.h"
#include "ipv6.h"
#include "tcp.h"
#include "syn.h"
#include "csum.h"

enum nt_insert_result {
	NT_INS_OK = 0,
	NT_INS_ENCAP, /* skb->encapsulation: the kernel refuses to grow it; unchanged */
	NT_INS_GROW,  /* growing failed otherwise; unchanged */
	NT_INS_WRITE, /* a write failed after growing: the packet must not leave */
};

/**
 * nt_tcp_append_option() - grow @skb by NT_OPT_LEN and write @opt as the last TCP option.
 * The caller has checked that the SYN carries no data, that the lengths agree
 * with skb->len and that the option space has room. Returns enum nt_insert_result.
 */
static __always_inline int nt_tcp_append_option(struct __sk_buff *skb,
						const struct nt_syn_layout *l,
						const __u8 opt[NT_OPT_LEN])
{
	__u32 csum_off = l->l4_off + NT_TCP_CHECK_OFF;
	__u32 opt_off = l->l4_off + l->tcp_len;
	__u16 new_doff_word;
	__be16 old_word, new_word;
	__s64 diff;
	long err;

	err = bpf_skb_change_tail(skb, skb->len + NT_OPT_LEN, 0);
	if (err == -NT_ENOTSUPP)
		return NT_INS_ENCAP;
	if (err)
		return NT_INS_GROW;

	/* From here on the packet has changed: every failure drops it. */
	if (bpf_skb_store_bytes(skb, opt_off, opt, NT_OPT_LEN, 0))
		return NT_INS_WRITE;
	diff = bpf_csum_diff(NULL, 0, (__be32 *)opt, NT_OPT_LEN, 0);
	if (diff < 0)
		return NT_INS_WRITE;
	if (bpf_l4_csum_replace(skb, csum_off, 0, diff, 0))
		return NT_INS_WRITE;

	/* Data offset counts 32-bit words: 12 bytes add 3. */
	old_word = l->doff_word;
	new_doff_word = bpf_ntohs(old_word) + ((NT_OPT_LEN / 4) << 12);
	new_word = bpf_htons(new_doff_word);
	if (bpf_skb_store_bytes(skb, l->l4_off + NT_TCP_DOFF_WORD_OFF, &new_word, sizeof(new_word), 0))
		return NT_INS_WRITE;
	if (bpf_l4_csum_replace(skb, csum_off, old_word, new_word, sizeof(new_word)))
		return NT_INS_WRITE;

	if (l->family == 4) {
		__be16 old_len = bpf_htons(l->ip_len);
		__be16 new_len = bpf_htons(l->ip_len + NT_OPT_LEN);
		__be16 old_tcp = bpf_htons(l->tcp_len);
		__be16 new_tcp = bpf_htons(l->tcp_len + NT_OPT_LEN);

		/* The IPv4 pseudo-header carries the TCP length as 16 bits. */
		if (bpf_l4_csum_replace(skb, csum_off, old_tcp, new_tcp,
					BPF_F_PSEUDO_HDR | sizeof(new_tcp)))
			return NT_INS_WRITE;
		if (bpf_skb_store_bytes(skb, l->l3_off + NT_IPV4_TOT_LEN_OFF, &new_len,
					sizeof(new_len), 0))
			return NT_INS_WRITE;
		if (bpf_l3_csum_replace(skb, l->l3_off + NT_IPV4_CHECK_OFF, old_len, new_len,
					sizeof(new_len)))
			return NT_INS_WRITE;
	} else {
		__be16 new_len = bpf_htons(l->ip_len + NT_OPT_LEN);
		/* The IPv6 pseudo-header carries the upper-layer length as 32 bits. */
		__be32 old_tcp = bpf_htonl(l->tcp_len);
		__be32 new_tcp = bpf_htonl(l->tcp_len + NT_OPT_LEN);

		if (bpf_l4_csum_replace(skb, csum_off, old_tcp, new_tcp,
					BPF_F_PSEUDO_HDR | sizeof(new_tcp)))
			return NT_INS_WRITE;
		if (bpf_skb_store_bytes(skb, l->l3_off + NT_IPV6_PAYLOAD_LEN_OFF, &new_len,
					sizeof(new_len), 0))
			return NT_INS_WRITE;
	}
	return NT_INS_OK;
}

/*
 * Bounds the direct path needs the verifier to see. A header nt_parse_syn_direct()
 * accepted is always inside them: Ethernet, two VLAN tags and a 60-byte IPv4
 * header end at byte 82; a TCP header is at most 60 bytes.
 */
#define NT_DIRECT_MAX_L4_OFF 128
#define NT_TCP_MAX_HDR_LEN   60

/*
 * @x & 0xff, done where the compiler cannot see it: for an offset already
 * checked to be smaller, clang would drop a plain mask, and the verifier,
 * which does not always tie the earlier check to the register used, needs it.
 */
static __always_inline __u64 nt_verifier_bound(__u64 x)
{
	asm volatile("%0 &= 0xff" : "+r"(x));
	return x;
}

/**
 * nt_tcp_append_option_direct() - nt_tcp_append_option() with the header
 * fields written in place: one helper call besides the growing, instead of eight.
 * Only for programs that may write the packet directly (a tc program that does
 * is uncloned by the kernel on entry, so the marker's entry program tail-calls
 * the one that does this, for SYNs only).
 *
 * Whether the skb is CHECKSUM_PARTIAL decides how the TCP checksum changes
 * (see above), and a tc program cannot read skb->ip_summed. The pseudo-header
 * length goes through bpf_l4_csum_replace() as before; the kernel applies it as
 * a plain sum to a partial checksum and as an RFC 1624 update to a full one,
 * and the two results differ for any length change. Reading the field back
 * tells which it was: a full checksum then gets the option bytes and the
 * data-offset word added here, a partial one nothing (the device sums them).
 * Returns enum nt_insert_result.
 */
static __always_inline int nt_tcp_append_option_direct(struct __sk_buff *skb,
						       const struct nt_syn *s,
						       const __u8 opt[NT_OPT_LEN])
{
	const struct nt_syn_layout *l = &s->layout;
	__u32 l3_off = l->l3_off, l4_off = l->l4_off, tcp_len = l->tcp_len;
	__u16 c0 = s->tcp.check, c1, new_doff_word;
	__u32 delta;
	void *data, *data_end;
	__u8 *l3, *l4, *at;
	int partial;
	long err;

	if (l3_off > NT_DIRECT_MAX_L4_OFF || l4_off > NT_DIRECT_MAX_L4_OFF ||
	    tcp_len > NT_TCP_MAX_HDR_LEN)
		return NT_INS_GROW;

	err = bpf_skb_change_tail(skb, skb->len + NT_OPT_LEN, 0);
	if (err == -NT_ENOTSUPP)
		return NT_INS_ENCAP;
	if (err)
		return NT_INS_GROW;

	/* From here on the packet has changed: every failure drops it. */
	if (l->family == 4) {
		/* The IPv4 pseudo-header carries the TCP length as 16 bits. */
		__be16 from = bpf_htons(tcp_len), to = bpf_htons(tcp_len + NT_OPT_LEN);

		err = bpf_l4_csum_replace(skb, l4_off + NT_TCP_CHECK_OFF, from, to,
					  BPF_F_PSEUDO_HDR | sizeof(to));
		delta = nt_csum_add((__u16)~from, to);
	} else {
		/* The IPv6 pseudo-header carries the upper-layer length as 32 bits. */
		__be32 from = bpf_htonl(tcp_len), to = bpf_htonl(tcp_len + NT_OPT_LEN);

		err = bpf_l4_csum_replace(skb, l4_off + NT_TCP_CHECK_OFF, from, to,
					  BPF_F_PSEUDO_HDR | sizeof(to));
		delta = nt_csum_add(~from, to);
	}
	if (err)
		return NT_INS_WRITE;

	/* The helper moved the packet: find the headers again. */
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	l3 = data + nt_verifier_bound(l3_off);
	l4 = data + nt_verifier_bound(l4_off);
	at = l4 + nt_verifier_bound(tcp_len);
	if ((void *)(l3 + sizeof(struct iphdr)) > data_end ||
	    (void *)(l4 + sizeof(struct tcphdr)) > data_end ||
	    (void *)(at + NT_OPT_LEN) > data_end)
		return NT_INS_WRITE;

	__builtin_memcpy(&c1, l4 + NT_TCP_CHECK_OFF, sizeof(c1));
	if (nt_csum_norm(c1) == nt_csum_norm(nt_csum_fold16(nt_csum_add(c0, delta))))
		partial = 1;
	else if (nt_csum_norm(c1) == nt_csum_norm(nt_csum_update(c0, delta)))
		partial = 0;
	else
		return NT_INS_WRITE;

	__builtin_memcpy(at, opt, NT_OPT_LEN);
	/* Data offset counts 32-bit words: 12 bytes add 3. */
	new_doff_word = bpf_htons(bpf_ntohs(l->doff_word) + ((NT_OPT_LEN / 4) << 12));
	__builtin_memcpy(l4 + NT_TCP_DOFF_WORD_OFF, &new_doff_word, sizeof(new_doff_word));
	if (!partial) {
		__u16 c2 = nt_csum_update(c1, nt_csum_words12(opt) + (__u16)~l->doff_word +
					      new_doff_word);

		__builtin_memcpy(l4 + NT_TCP_CHECK_OFF, &c2, sizeof(c2));
	}

	if (l->family == 4) {
		__be16 old_len = bpf_htons(l->ip_len), new_len = bpf_htons(l->ip_len + NT_OPT_LEN);
		__u16 hc;

		__builtin_memcpy(&hc, l3 + NT_IPV4_CHECK_OFF, sizeof(hc));
		hc = nt_csum_update(hc, (__u16)~old_len + (__u32)new_len);
		__builtin_memcpy(l3 + NT_IPV4_TOT_LEN_OFF, &new_len, sizeof(new_len));
		__builtin_memcpy(l3 + NT_IPV4_CHECK_OFF, &hc, sizeof(hc));
	} else {
		__be16 new_len = bpf_htons(l->ip_len + NT_OPT_LEN);

		__builtin_memcpy(l3 + NT_IPV6_PAYLOAD_LEN_OFF, &new_len, sizeof(new_len));
	}
	return NT_INS_OK;
}

#endif /* NT_LIB_INSERT_H */
