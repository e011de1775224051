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

/*
 * The layout of the pinned maps as a whole. Raised whenever a map is removed,
 * changes its key or value in a way an older program would misread, or is
 * added with contents the new programs need before they run: an agent finding
 * the maps of an older layout pinned loads the new objects beside them and
 * moves over (src/agent/layout.ts). A map whose empty state the programs read
 * as "as before" is added without a new layout: libbpf creates it beside the
 * older pins, and the agent fills it before its programs reach a hook
 * (nt_port_index). Layout 1 had per-CPU hash counters keyed by (ifindex,
 * policy, counter).
 */
#define NT_LAYOUT_VERSION   2

#ifdef __BPF__
#include <linux/types.h>
#else
#include <linux/types.h>
#endif

/* Wire format (docs/wire-format.md): kind | len=12 | ExID (2, network order) | value (8). */
#define NT_OPT_LEN          12
#define NT_OPT_VALUE_LEN    8
#define NT_OPT_KIND_DEFAULT 253
#define NT_OPT_EXID_DEFAULT 0x4e54 /* "NT" */

/* TCP option space: 40 bytes after the 20-byte fixed header. */
#define NT_TCP_MAX_OPT_LEN  40

#define NT_MAX_PORTS        16   /* ports per destination entry; 0 used = every port */
#define NT_MAX_POLICIES     1024 /* policy slots; slot 0 means "no policy" */
#define NT_MAX_PREFIXES     131072
#define NT_MAX_PORT_RULES   65536  /* (ifindex, port) entries of nt_ingress_ports */
#define NT_MAX_EXEMPT       65536  /* prefixes in each of nt_exempt4 / nt_exempt6 */
#define NT_MAX_REPLAY       65536  /* flows remembered by the replay limit (LRU) */

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
	__u16 counter_slot;         /* nt_counters slot of (this interface, this policy) */
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
	__u16 flags;          /* enum nt_policy_flags */
	/*
	 * keyed only: the verifier also accepts the epoch of (now - skew) and of
	 * (now + skew), so clocks that many seconds apart refuse nothing; at most
	 * epoch_seconds. (The high half of what was a 32-bit flags field, always
	 * zero before: a slot written by an older agent reads as no skew.)
	 */
	__u16 skew_seconds;
	__u32 epoch_seconds;  /* keyed only, > 0 */
	__u32 bind;           /* keyed only, enum nt_bind bits */
	__u8 token[8];        /* static: the value put on the wire, in wire order */
	/*
	 * The second token / key verifiers accept (NT_PF_HAS_PREVIOUS): during a key rotation the
	 * next one, published before markers sign with it, or the previous one, being retired.
	 * The marker never uses it.
	 */
	__u8 token_previous[8];
	__u8 key[16];         /* keyed: SipHash-2-4 key (k0 = bytes 0..7 LE, k1 = 8..15 LE) */
	__u8 key_previous[16];
};

/*
 * Keyed tokens (NT_MODE_KEYED): value = SipHash-2-4(key, msg), where msg is
 * always NT_KEYED_MSG_LEN bytes, every integer in network byte order:
 *
 *   bytes  0..15  source address       IPv6 as is; IPv4 as ::ffff:a.b.c.d
 *   bytes 16..31  destination address  same
 *   bytes 32..33  source port
 *   bytes 34..35  destination port
 *   bytes 36..39  the SYN's sequence number
 *   bytes 40..47  epoch = floor(unix seconds / epoch_seconds), 64-bit
 *
 * A field the policy does not bind (nt_policy.bind) is all zero bytes; the
 * fixed layout keeps every store at a constant offset and makes an IPv4 flow
 * unable to collide with an IPv6 one. The key is k0 = key[0..7], k1 =
 * key[8..15], both little-endian (the reference implementation's byte key);
 * the 8 value bytes on the wire are the 64-bit result in little-endian order
 * (the reference implementation's out[8]). src/lib/siphash.ts builds the same.
 */
#define NT_KEYED_MSG_LEN    48
#define NT_KEYED_FLOW_LEN   40   /* bytes before the epoch */

/*
 * Wall clock for keyed epochs (array nt_clock, one entry). BPF has no
 * CLOCK_REALTIME. From Linux 6.1 it has CLOCK_TAI (bpf_ktime_get_tai_ns),
 * which follows clock steps exactly as REALTIME does and differs from it by
 * whole seconds (the TAI-UTC offset: 0 when nothing set it, 37 s with NTP's
 * leap file); the agent measures that offset once and it stays right until a
 * leap second. Older kernels use CLOCK_BOOTTIME plus an offset the agent
 * measures again every minute (a clock step is followed only then). The
 * program picks at load time whether the kernel has the TAI helper:
 *   unix ns = bpf_ktime_get_tai_ns() - tai_offset_ns        (6.1+)
 *   unix ns = bpf_ktime_get_boot_ns() + boot_offset_ns      (older)
 */
struct nt_clock {
	__s64 tai_offset_ns;   /* CLOCK_TAI - CLOCK_REALTIME, whole seconds */
	__s64 boot_offset_ns;  /* CLOCK_REALTIME - CLOCK_BOOTTIME */
	__u32 flags;           /* NT_CLOCK_VALID once the agent has written it */
	__u32 _pad;
};
#define NT_CLOCK_VALID 1

/*
 * Ingress: the local ports a policy protects on an interface (hash
 * nt_ingress_ports). Port 0 means every port; an exact port wins over it.
 */
struct nt_port_key {
	__u32 ifindex;
	__u16 port;  /* host byte order; 0 = every port */
	__u16 scope; /* enum nt_port_scope */
};

enum nt_port_scope {
	NT_SCOPE_PORT = 0,      /* the rule protecting ifindex/port */
	NT_SCOPE_ENFORCING = 1, /* port 0: some policy enforces on ifindex (its rule); for what has no visible port */
};

enum nt_ingress_action {
	NT_ACTION_MONITOR = 0, /* count only */
	NT_ACTION_ENFORCE = 1, /* also drop SYNs that are not valid (unless exempt) */
};

/* nt_ingress_rule.flags */
enum nt_ingress_flags {
	NT_IR_EXEMPT4 = 1 << 0, /* the policy has IPv4 exempt sources (nt_exempt4 is looked up) */
	NT_IR_EXEMPT6 = 1 << 1, /* the same for IPv6 */
};

struct nt_ingress_rule {
	__u32 policy_id;     /* index into nt_policies, never 0 */
	__u32 action;        /* enum nt_ingress_action */
	__u32 replay_limit;  /* valid SYNs accepted per (flow, seq) per second; 0 = no limit */
	__u16 counter_slot;  /* nt_counters slot of (this interface, this policy) */
	__u16 flags;         /* enum nt_ingress_flags */
};

/*
 * Ingress port index (array nt_port_index, index = local port in host order, 0 standing for
 * the "every port" rules): an inlined array lookup that answers, for a port whose rules
 * only one interface has, what the hash lookup in nt_ingress_ports would. The agent derives
 * every entry from nt_ingress_ports (src/lib/abi.ts, portIndexEntries). An entry it has not
 * written is all zero, NT_PI_HASH: the verifier asks nt_ingress_ports as it would without
 * the index, so the index can only save a lookup, never change an answer.
 */
enum nt_port_index_state {
	NT_PI_HASH = 0, /* ask nt_ingress_ports (not indexed, or several interfaces have a rule for the port) */
	NT_PI_NONE = 1, /* no interface has a rule for the port */
	NT_PI_ONE  = 2, /* only interface .ifindex has one: .rule, as nt_ingress_ports holds it */
};

struct nt_port_index {
	struct nt_ingress_rule rule;
	__u32 ifindex;
	/*
	 * enum nt_port_index_state. The agent changes an entry in steps that each change only
	 * this field's lowest byte, or only the other fields while it is NT_PI_HASH, so that a
	 * program reading the entry during a write never pairs a state with another rule.
	 */
	__u32 state;
};

#define NT_MAX_PORT_INDEX   65536 /* every port */

/*
 * Exempt sources per policy (LPM tries nt_exempt4 / nt_exempt6):
 * prefixlen = 32 (policy id) + source prefix length; the id is big-endian so
 * the trie matches it first. Value: unused (1).
 */
struct nt_src4_key {
	__u32 prefixlen;
	__u32 policy_id_be;
	__u8 addr[4];
};

struct nt_src6_key {
	__u32 prefixlen;
	__u32 policy_id_be;
	__u8 addr[16];
};

/* Replay limit (LRU hash nt_replay): valid SYNs seen per flow and sequence number. */
struct nt_replay_key {
	__u32 policy_id;
	__u8 family;      /* 4 or 6 */
	__u8 _pad[3];
	__u8 saddr[16];   /* IPv4: first 4 bytes, rest zero */
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__be32 seq;
};

struct nt_replay_val {
	__u64 window_start_ns; /* bpf_ktime_get_ns() when the current one-second window began */
	__u64 count;           /* valid SYNs in the window (atomic: CPUs share the entry) */
};

/*
 * Counters (Katran's pattern): a per-CPU array nt_counters of
 * NT_MAX_COUNTER_SLOTS slots, each NT_COUNTER_CELLS u64 indexed by enum
 * nt_counter. The agent gives each (interface, policy) pair it writes rules
 * for a slot, and each hooked interface one of its own (policy 0, found
 * through nt_ifaces), and puts the slot in the rule: counting is an inlined
 * array access that cannot miss or fill up. Slot 0 is never given out
 * (counts under it are lost: a rule written without a slot). Which pair a slot
 * counts for is kept in nt_counter_slots, for whoever reads the counters.
 */
#define NT_MAX_COUNTER_SLOTS 1024
#define NT_COUNTER_CELLS     32 /* enum nt_counter, with room for counters to come */

struct nt_counters {
	__u64 cells[NT_COUNTER_CELLS];
};

/* Value of nt_counter_slots (read by user space only): what a slot counts for. */
struct nt_counter_owner {
	__u32 ifindex;   /* 0 = the slot is free */
	__u32 policy_id; /* 0 = the interface's own counters */
	__u32 flags;     /* enum nt_owner_flags */
};

enum nt_owner_flags {
	/*
	 * Counts carried over from the maps of an older layout: no rule names
	 * this slot, so the programs never write it; the pair's totals are its
	 * counting slot plus this one.
	 */
	NT_OWNER_CARRIED = 1 << 0,
};

/* Value of nt_ifaces, by ifindex: an interface the agent hooks (or writes rules for). */
struct nt_iface {
	__u16 counter_slot; /* its own counters (policy 0): unreadable, skipped_no_policy, error_tail_call */
	__u16 _pad;
	__u32 _pad2;
};

/* The one entry of nt_config. */
struct nt_config {
	/*
	 * Raised by the agent after every change of the egress tries or of
	 * nt_ifaces: destination cache entries of another generation are
	 * stale. 0: the cache is not used.
	 */
	__u32 egress_gen;
	/* Read by the agent only: the older layout whose counters were carried into these (0: none). */
	__u32 carried_layout;
};

enum nt_counter {
	/* egress marker */
	NT_C_MARKED = 0,         /* SYN left with our option */
	NT_C_SKIP_NO_POLICY,     /* SYN whose destination/port no policy on this interface covers */
	NT_C_SKIP_PAYLOAD,       /* SYN carrying data (TFO): appending would land after the payload */
	NT_C_SKIP_NO_ROOM,       /* existing options + 12 bytes exceed the 40-byte option space */
	NT_C_SKIP_EOL,           /* no longer counted: an EOL-padded option list is marked (the padding is rewritten) */
	NT_C_SKIP_MALFORMED,     /* truncated header, bad option length, lengths that disagree */
	NT_C_SKIP_PRESENT,       /* our kind + ExID is already in the SYN */
	NT_C_SKIP_GSO,           /* GSO skb: growing it would break segmentation */
	NT_C_SKIP_ENCAP,         /* encapsulated skb: the kernel refuses to grow it */
	NT_C_SKIP_MTU,           /* the grown packet would exceed the device MTU */
	NT_C_SKIP_IPV6_EXT,      /* IPv6 extension header before TCP */
	NT_C_SKIP_FRAGMENT,      /* the first fragment of a fragmented datagram */
	NT_C_ERR_GROW,           /* bpf_skb_change_tail failed for another reason (packet unchanged) */
	NT_C_ERR_WRITE,          /* a write failed after growing: packet dropped rather than sent malformed */
	/*
	 * ingress verifier: every SYN to a protected port counts exactly one of
	 * VALID, MISSING, INVALID, MALFORMED, REPLAY; those that are not VALID
	 * also count DROPPED (Enforce) or EXEMPT (their source is exempt, any
	 * action). Monitor drops nothing and counts no DROPPED.
	 */
	NT_C_V_VALID,            /* our option with a value the policy accepts */
	NT_C_V_MISSING,          /* no option of our kind + ExID */
	NT_C_V_INVALID,          /* our option, wrong length or value (wrong key, other flow, old epoch) */
	NT_C_V_MALFORMED,        /* bad data offset, truncated or malformed option list */
	NT_C_V_DROPPED,          /* dropped by Enforce */
	NT_C_V_EXEMPT,           /* not valid, passed because the source is exempt */
	NT_C_V_REPLAY,           /* valid, but the same flow and sequence number over the replay limit */
	/* egress marker, added later */
	NT_C_SKIP_NO_CLOCK,      /* keyed policy, but the agent has not written nt_clock yet */
	NT_C_ERR_TAIL_CALL,      /* the SYN program could not be reached: passed unmarked */
	/*
	 * Both programs, under no policy (0): an IP frame whose headers cannot be
	 * read (a header cut short or malformed, more VLAN tags or IPv6 extension
	 * headers than are looked through). The stack may still find a SYN in it:
	 * where a policy enforces on the interface the verifier drops it (counted
	 * as that policy's VERIFY_DROPPED too).
	 */
	NT_C_UNREADABLE,
	NT_C_SKIP_TCP_AO,        /* the SYN carries TCP-AO (kind 29), whose MAC covers the options */
	NT_C__MAX,
};

#ifdef __cplusplus
static_assert(NT_C__MAX <= NT_COUNTER_CELLS, "enum nt_counter outgrew struct nt_counters: raise NT_COUNTER_CELLS (and NT_LAYOUT_VERSION)");
#else
_Static_assert(NT_C__MAX <= NT_COUNTER_CELLS, "enum nt_counter outgrew struct nt_counters: raise NT_COUNTER_CELLS (and NT_LAYOUT_VERSION)");
#endif

#endif /* NETOKEN_ABI_H */
