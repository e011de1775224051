/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * netoken ABI: the map keys, map values and counter indices shared by the BPF
 * programs (bpf/<prog>.bpf.c), the native addon (native/) and, by hand-kept mirror,
 * the TypeScript encoder (src/lib/abi.ts). Change all three together; the
 * layout tests in src/lib/abi.test.ts compare sizes against the BTF of the
 * built object.
 *
 * All structs are fixed-layout: explicit padding, no implicit holes.
 */
#ifndef NETOKEN_ABI_H
#define NETOKEN_ABI_H

#ifdef __BPF__
#include <linux/types.h>
#else
#include <linux/types.h>
#endif

/* Wire format (DESIGN.md): kind | len=12 | ExID (2, network order) | value (8). */
#define NT_OPT_LEN          12
#define NT_OPT_VALUE_LEN    8
#define NT_OPT_KIND_DEFAULT 253
#define NT_OPT_EXID_DEFAULT 0x4e54 /* "NT" */

/* TCP option space: 40 bytes after the 20-byte fixed header. */
#define NT_TCP_MAX_OPT_LEN  40

#define NT_MAX_PORTS        16   /* ports per destination entry; 0 used = every port */
#define NT_MAX_POLICIES     1024 /* policy slots; slot 0 means "no policy" */
#define NT_MAX_PREFIXES     131072
#define NT_MAX_STATS        16384

/*
 * Egress destination tries. The interface is part of the key so that one
 * program instance serves every interface while each interface sees only the
 * policies that select it: prefixlen = 32 (ifindex) + address prefix length.
 * ifindex is stored big-endian so the trie matches it bit by bit first.
 */
struct nt_lpm4_key {
	__u32 prefixlen;
	__u32 ifindex_be;
	__u8 addr[4];
};

struct nt_lpm6_key {
	__u32 prefixlen;
	__u32 ifindex_be;
	__u8 addr[16];
};

/* Value of both egress tries: which policy marks, and for which ports. */
struct nt_egress_rule {
	__u32 policy_id;            /* index into nt_policies, never 0 */
	__u16 nports;               /* 0 = every destination port */
	__u16 _pad;
	__u16 ports[NT_MAX_PORTS];  /* host byte order */
};

enum nt_token_mode {
	NT_MODE_NONE   = 0, /* slot unused */
	NT_MODE_STATIC = 1, /* value = token[8] as stored */
	NT_MODE_KEYED  = 2, /* value = SipHash-2-4(key, bound fields || epoch) */
};

/* Fields a keyed token is bound to (nt_policy.bind). */
enum nt_bind {
	NT_BIND_SADDR = 1 << 0,
	NT_BIND_DADDR = 1 << 1,
	NT_BIND_SPORT = 1 << 2,
	NT_BIND_DPORT = 1 << 3,
	NT_BIND_SEQ   = 1 << 4,
};
#define NT_BIND_DEFAULT (NT_BIND_SADDR | NT_BIND_DADDR | NT_BIND_SPORT | NT_BIND_DPORT | NT_BIND_SEQ)

/* nt_policy.flags */
enum nt_policy_flags {
	NT_PF_HAS_PREVIOUS = 1 << 0, /* key_previous / token_previous is valid */
};

/* One policy slot (array map nt_policies, index = policy id). */
struct nt_policy {
	__u8 mode;            /* enum nt_token_mode */
	__u8 opt_kind;        /* 253 or 254 */
	__u16 exid;           /* host byte order */
	__u32 flags;          /* enum nt_policy_flags */
	__u32 epoch_seconds;  /* keyed only, > 0 */
	__u32 bind;           /* keyed only, enum nt_bind bits */
	__u8 token[8];        /* static: the value put on the wire, in wire order */
	__u8 token_previous[8];
	__u8 key[16];         /* keyed: SipHash-2-4 key (k0 = bytes 0..7 LE, k1 = 8..15 LE) */
	__u8 key_previous[16];
};

/* Per-CPU counters (PERCPU_HASH nt_stats): one u64 per (ifindex, policy, counter). */
struct nt_stat_key {
	__u32 ifindex;
	__u32 policy_id; /* 0 when no policy matched */
	__u32 counter;   /* enum nt_counter */
};

enum nt_counter {
	/* egress marker */
	NT_C_MARKED = 0,         /* SYN left with our option */
	NT_C_SKIP_NO_POLICY,     /* SYN whose destination/port no policy on this interface covers */
	NT_C_SKIP_PAYLOAD,       /* SYN carrying data (TFO): appending would land after the payload */
	NT_C_SKIP_NO_ROOM,       /* existing options + 12 bytes exceed the 40-byte option space */
	NT_C_SKIP_EOL,           /* an End-of-Option-List precedes the end of the option space */
	NT_C_SKIP_MALFORMED,     /* truncated header, bad option length, lengths that disagree */
	NT_C_SKIP_PRESENT,       /* our kind + ExID is already in the SYN */
	NT_C_SKIP_GSO,           /* GSO skb: growing it would break segmentation */
	NT_C_SKIP_ENCAP,         /* encapsulated skb: the kernel refuses to grow it */
	NT_C_SKIP_MTU,           /* the grown packet would exceed the device MTU */
	NT_C_SKIP_IPV6_EXT,      /* IPv6 extension header before TCP */
	NT_C_SKIP_FRAGMENT,      /* IPv4 fragment */
	NT_C_ERR_GROW,           /* bpf_skb_change_tail failed for another reason (packet unchanged) */
	NT_C_ERR_WRITE,          /* a write failed after growing: packet dropped rather than sent malformed */
	/* ingress verifier (reserved for the verifier) */
	NT_C_V_VALID,
	NT_C_V_MISSING,
	NT_C_V_INVALID,
	NT_C_V_MALFORMED,
	NT_C_V_DROPPED,
	NT_C_V_EXEMPT,
	NT_C_V_REPLAY,
	NT_C__MAX,
};

#endif /* NETOKEN_ABI_H */
