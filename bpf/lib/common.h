/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Includes and small definitions every netoken BPF program needs. Plain uapi
 * headers, no vmlinux.h. The one CO-RE relocation (keyed.h: does the kernel
 * have bpf_ktime_get_tai_ns?) needs the kernel's BTF; with it the marker loads
 * from 5.15 on, the verifier (bpf_xdp_load_bytes) from 5.18 on.
 */
#ifndef NT_LIB_COMMON_H
#define NT_LIB_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi.h"

/* TC_ACT_UNSPEC is TCX_NEXT under TCX: let the next program (or the stack) decide. */
#define NT_PASS TC_ACT_UNSPEC
#define NT_DROP TC_ACT_SHOT

/* ENOTSUPP is kernel-internal (524): bpf_skb_change_tail returns it for skb->encapsulation. */
#define NT_ENOTSUPP 524

#endif /* NT_LIB_COMMON_H */
