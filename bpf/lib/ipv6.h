/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* IPv6 fixed header and the extension headers that hide the TCP header. */
#ifndef NT_LIB_IPV6_H
#define NT_LIB_IPV6_H

#include <linux/ipv6.h>
#include "common.h"
#include "ctx.h"

#define NT_IPV6_PAYLOAD_LEN_OFF offsetof(struct ipv6hdr, payload_len)

/*
 * Next-header values that are IPv6 extension headers (IANA "IPv6 Extension
 * Header Types"): hop-by-hop, routing, fragment, ESP, AH, destination options,
 * mobility, HIP, shim6 and the two experimental values.
 */
static __always_inline int nt_ipv6_is_ext(__u8 nexthdr)
{
	switch (nexthdr) {
	case 0:   /* hop-by-hop options */
	case 43:  /* routing */
	case 44:  /* fragment */
	case 50:  /* ESP */
	case 51:  /* AH */
	case 60:  /* destination options */
	case 135: /* mobility */
	case 139: /* HIP */
	case 140: /* shim6 */
	case 253: /* experimental */
	case 254: /* experimental */
		return 1;
	default:
		return 0;
	}
}

#define NT_IPV6_NEXTHDR_FRAGMENT 44
#define NT_IPV6_NEXTHDR_ESP      50
#define NT_IPV6_NEXTHDR_AH       51
#define NT_IPV6_NEXTHDR_NONE     59

/* Extension headers walked before giving up (the packet is then counted, not read). */
#define NT_IPV6_EXT_MAX 6

enum nt_ipv6_walk {
	NT_IPV6_UPPER = 0, /* reached the upper-layer header: w->nexthdr, w->hlen set */
	NT_IPV6_NO_L4,     /* nothing to read: a later fragment, ESP, no next header */
	NT_IPV6_OPAQUE,    /* too many headers, or unreadable: cannot tell what follows */
};

/* What nt_ipv6_walk_ext() found. */
struct nt_ipv6_ext {
	__u32 hlen;      /* bytes from the IPv6 header to the upper-layer header */
	__u32 frag_data; /* for a first fragment: bytes from the IPv6 header to its fragmentable part */
	__u8 nexthdr;    /* in: the fixed header's next header; out: the upper-layer protocol */
	__u8 first_frag; /* a fragment header with offset 0 and More Fragments set */
	__u8 _pad[2];
};

/**
 * nt_ipv6_walk_ext() - skip the extension headers after the fixed header.
 * Returns enum nt_ipv6_walk. ESP hides everything after it; every other
 * extension header has a length field (RFC 6564 format, AH in 4-byte units).
 * A fragment header with offset 0 and M = 0 (an atomic fragment, RFC 6946)
 * is a whole packet; with M = 1 it is a first fragment.
 */
static __always_inline int nt_ipv6_walk_ext(void *ctx, const int xdp, __u32 l3_off,
					    struct nt_ipv6_ext *w)
{
	__u32 off = sizeof(struct ipv6hdr);
	__u8 nh = w->nexthdr;

#pragma unroll
	for (int i = 0; i < NT_IPV6_EXT_MAX; i++) {
		/* next header, length, and for a fragment header the offset and M flag */
		__u8 h[4];

		if (!nt_ipv6_is_ext(nh))
			break;
		if (nh == NT_IPV6_NEXTHDR_ESP)
			return NT_IPV6_NO_L4;
		if (nt_load(ctx, xdp, l3_off + off, h, sizeof(h)))
			return NT_IPV6_OPAQUE;
		if (nh == NT_IPV6_NEXTHDR_FRAGMENT) {
			/* Only the first fragment (offset 0) holds the upper-layer header. */
			if ((h[2] << 8 | h[3]) & 0xfff8)
				return NT_IPV6_NO_L4;
			off += 8;
			if (h[3] & 1) {
				w->first_frag = 1;
				w->frag_data = off;
			}
		} else if (nh == NT_IPV6_NEXTHDR_AH) {
			off += ((__u32)h[1] + 2) * 4;
		} else {
			off += ((__u32)h[1] + 1) * 8;
		}
		nh = h[0];
	}
	if (nt_ipv6_is_ext(nh))
		return NT_IPV6_OPAQUE;
	if (nh == NT_IPV6_NEXTHDR_NONE)
		return NT_IPV6_NO_L4;
	w->nexthdr = nh;
	w->hlen = off;
	return NT_IPV6_UPPER;
}

#endif /* NT_LIB_IPV6_H */
