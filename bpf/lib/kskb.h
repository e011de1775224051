/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What a tc program's struct __sk_buff does not show, read from the kernel's
 * own struct sk_buff: how its TCP checksum is kept (ip_summed) and the device
 * it leaves through. bpf_cast_to_kern_ctx() (Linux 6.2+, a kfunc the
 * verifier turns into a register move) gives the kernel's skb; the fields are
 * found by CO-RE in the kernel's BTF. Saves two helper calls per marked SYN
 * (and the read-back that tells a partial checksum from a full one).
 *
 * A kernel without the kfunc refuses the whole object, so the marker is also
 * built with NT_NO_KERN_CTX (marker_compat.bpf.o), which asks helpers for the
 * same answers; the agent loads that build where the other is refused.
 */
#ifndef NT_LIB_KSKB_H
#define NT_LIB_KSKB_H

#include <bpf/bpf_core_read.h>
#include "common.h"

/* skb->ip_summed */
#define NT_CHECKSUM_NONE        0
#define NT_CHECKSUM_UNNECESSARY 1
#define NT_CHECKSUM_COMPLETE    2
#define NT_CHECKSUM_PARTIAL     3
#define NT_CHECKSUM_UNKNOWN     (-1) /* the program cannot read it */

#ifndef NT_NO_KERN_CTX
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

/* The fields read, by name: CO-RE finds them wherever this kernel has them. */
struct net_device___nt {
	unsigned int mtu;
	unsigned short hard_header_len;
} __attribute__((preserve_access_index));

struct sk_buff___nt {
	struct net_device___nt *dev;
	__u8 ip_summed:2;
} __attribute__((preserve_access_index));
#endif

/** nt_skb_ip_summed() - @skb's ip_summed (NT_CHECKSUM_*), or NT_CHECKSUM_UNKNOWN. */
static __always_inline int nt_skb_ip_summed(struct __sk_buff *skb)
{
#ifndef NT_NO_KERN_CTX
	struct sk_buff___nt *k = bpf_cast_to_kern_ctx(skb);

	return BPF_CORE_READ_BITFIELD(k, ip_summed);
#else
	return NT_CHECKSUM_UNKNOWN;
#endif
}

/**
 * nt_skb_over_mtu() - would @skb, grown by @grow bytes, exceed its device's
 * MTU (plus link-layer header), as bpf_check_mtu() tells? False when there is
 * no device to ask. The caller has turned GSO skbs away.
 */
static __always_inline int nt_skb_over_mtu(struct __sk_buff *skb, __u32 grow)
{
#ifndef NT_NO_KERN_CTX
	struct sk_buff___nt *k = bpf_cast_to_kern_ctx(skb);
	struct net_device___nt *dev = k->dev;

	if (!dev)
		return 0;
	return skb->len + grow > dev->mtu + dev->hard_header_len;
#else
	__u32 mtu_len = 0;

	/* A negative answer means it could not tell (no device): the SYN is small, go ahead. */
	return bpf_check_mtu(skb, 0, &mtu_len, grow, 0) > 0;
#endif
}

#endif /* NT_LIB_KSKB_H */
