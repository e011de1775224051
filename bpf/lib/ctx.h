/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * One parser for two program types: tc programs get a struct __sk_buff, XDP
 * programs a struct xdp_md. Helpers that read the packet take the context as
 * void * plus @xdp, a constant at every call site: after inlining, clang keeps
 * only the helper the program type may call.
 */
#ifndef NT_LIB_CTX_H
#define NT_LIB_CTX_H

#include "common.h"

#define NT_CTX_SKB 0
#define NT_CTX_XDP 1

/** nt_load() - copy @len packet bytes at @off into @to; 0 or a negative errno. */
static __always_inline long nt_load(void *ctx, const int xdp, __u32 off, void *to, __u32 len)
{
	if (xdp)
		return bpf_xdp_load_bytes(ctx, off, to, len);
	return bpf_skb_load_bytes(ctx, off, to, len);
}

#endif /* NT_LIB_CTX_H */
