/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Keyed tokens: the SipHash message of a SYN (layout in abi.h), the epoch
 * from the wall clock the agent provides, and the value for one key and epoch.
 * Shared by the marker (one value per SYN) and the verifier (up to two keys
 * times two epochs per SYN: the 40 flow bytes are hashed once per key).
 */
#ifndef NT_LIB_KEYED_H
#define NT_LIB_KEYED_H

#include <bpf/bpf_core_read.h>
#include "common.h"
#include "map_decl.h"
#include "maps.h"
#include "siphash.h"
#include "syn.h"

#define NT_NSEC_PER_SEC 1000000000ULL
#define NT_KEYED_FLOW_WORDS (NT_KEYED_FLOW_LEN / 8)

/* The first NT_KEYED_FLOW_LEN bytes of the message, as words. */
struct nt_keyed_flow {
	__u64 w[NT_KEYED_FLOW_WORDS];
};

/** nt_keyed_flow_bytes() - the bound fields of @f at their fixed offsets, the rest zero. */
static __always_inline void nt_keyed_flow_bytes(struct nt_keyed_flow *out, const struct nt_flow *f,
						__u32 bind)
{
	__u8 *m = (__u8 *)out->w;

	__builtin_memset(out, 0, sizeof(*out));
	if (bind & NT_BIND_SADDR) {
		if (f->family == 4) {
			m[10] = 0xff;
			m[11] = 0xff;
			__builtin_memcpy(m + 12, f->saddr, 4);
		} else {
			__builtin_memcpy(m, f->saddr, 16);
		}
	}
	if (bind & NT_BIND_DADDR) {
		if (f->family == 4) {
			m[26] = 0xff;
			m[27] = 0xff;
			__builtin_memcpy(m + 28, f->daddr, 4);
		} else {
			__builtin_memcpy(m + 16, f->daddr, 16);
		}
	}
	if (bind & NT_BIND_SPORT)
		__builtin_memcpy(m + 32, &f->sport, 2);
	if (bind & NT_BIND_DPORT)
		__builtin_memcpy(m + 34, &f->dport, 2);
	if (bind & NT_BIND_SEQ)
		__builtin_memcpy(m + 36, &f->seq, 4);
}

/**
 * nt_have_tai() - does the kernel have bpf_ktime_get_tai_ns() (6.1+)? Resolved by
 * libbpf at load time against the kernel's BTF: on older kernels the branch
 * that calls it is dead code the verifier never walks.
 */
static __always_inline int nt_have_tai(void)
{
	return bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_ktime_get_tai_ns);
}

/* Unix time from CLOCK_TAI: only call where nt_have_tai(). */
static __always_inline __u64 nt_unix_ns_tai(const struct nt_clock *c)
{
	return bpf_ktime_get_tai_ns() - (__u64)c->tai_offset_ns;
}

/* Unix time from CLOCK_BOOTTIME: as right as the agent's last measurement. */
static __always_inline __u64 nt_unix_ns_boot(const struct nt_clock *c)
{
	return bpf_ktime_get_boot_ns() + (__u64)c->boot_offset_ns;
}

/** nt_unix_ns() - nanoseconds since the unix epoch, from the clock @c the agent wrote (abi.h). */
static __always_inline __u64 nt_unix_ns(const struct nt_clock *c)
{
	if (nt_have_tai())
		return nt_unix_ns_tai(c);
	return nt_unix_ns_boot(c);
}

/*
 * This CPU's last reading of the wall clock: reading CLOCK_TAI (or BOOTTIME)
 * and dividing costs more than the SipHash of a keyed token, and SYNs come in
 * bursts. A reading serves until the kernel's coarse clock ticks (1 to 10 ms)
 * or the agent rewrites nt_clock: an epoch begins at most one tick late.
 * Not pinned: it belongs to the programs of one load.
 */
struct nt_clock_reading {
	__u64 tick_ns;        /* bpf_ktime_get_coarse_ns() when it was made; 0: none */
	__s64 tai_offset_ns;  /* nt_clock as it was then */
	__s64 boot_offset_ns;
	__u64 unix_s;
};

NT_LOCAL_MAP(nt_clock_readings, BPF_MAP_TYPE_PERCPU_ARRAY, 1, __u32,
	     struct nt_clock_reading);

/**
 * nt_keyed_unix_s() - seconds since the unix epoch, from the clock the agent wrote.
 * Returns 0 with *@secs set, or -1 when the agent has not written the clock.
 */
static __always_inline int nt_keyed_unix_s(__u64 *secs)
{
	struct nt_clock_reading *r;
	__u32 zero = 0;
	struct nt_clock *c;
	__u64 tick;

	c = bpf_map_lookup_elem(&nt_clock, &zero);
	if (!c || !(c->flags & NT_CLOCK_VALID))
		return -1;
	tick = bpf_ktime_get_coarse_ns();
	r = bpf_map_lookup_elem(&nt_clock_readings, &zero);
	if (r && r->tick_ns == tick && r->tai_offset_ns == c->tai_offset_ns && r->boot_offset_ns == c->boot_offset_ns) {
		*secs = r->unix_s;
		return 0;
	}
	*secs = nt_unix_ns(c) / NT_NSEC_PER_SEC;
	if (r) {
		r->tick_ns = tick;
		r->tai_offset_ns = c->tai_offset_ns;
		r->boot_offset_ns = c->boot_offset_ns;
		r->unix_s = *secs;
	}
	return 0;
}

/**
 * nt_keyed_epoch() - the current epoch for @epoch_seconds.
 * Returns 0 with *@epoch set, or -1 when the agent has not written the clock
 * (or the policy has no epoch length).
 */
static __always_inline int nt_keyed_epoch(__u32 epoch_seconds, __u64 *epoch)
{
	__u64 now;

	if (epoch_seconds == 0 || nt_keyed_unix_s(&now))
		return -1;
	*epoch = now / epoch_seconds;
	return 0;
}

/* The epochs a verifier accepts now (nt_keyed_epochs()). */
struct nt_epochs {
	__u64 cur;
	__u64 lo; /* the epoch of (now - skew): cur, or cur - 1 near the start of an epoch */
	__u64 hi; /* the epoch of (now + skew): cur, or cur + 1 near its end */
};

/**
 * nt_keyed_epochs() - the current epoch, and the neighbours a clock @skew
 * seconds apart may still be in (@skew is capped at @epoch_seconds).
 * Returns 0, or -1 without a clock or an epoch length.
 */
static __always_inline int nt_keyed_epochs(__u32 epoch_seconds, __u32 skew, struct nt_epochs *e)
{
	__u64 now;

	if (epoch_seconds == 0 || nt_keyed_unix_s(&now))
		return -1;
	if (skew > epoch_seconds)
		skew = epoch_seconds;
	e->cur = now / epoch_seconds;
	e->lo = (now >= skew ? now - skew : 0) / epoch_seconds;
	e->hi = (now + skew) / epoch_seconds;
	return 0;
}

/**
 * nt_keyed_prefix() - SipHash state after the flow bytes, for @key.
 * A subprogram, not inlined: the verifier calls it for up to two keys.
 */
static __noinline __attribute__((unused)) void nt_keyed_prefix(struct nt_sip *s, const __u8 *key, const struct nt_keyed_flow *flow)
{
	__u64 k0, k1;

	nt_sip_key(key, &k0, &k1);
	nt_sip_init(s, k0, k1);
#pragma clang loop unroll(full)
	for (int i = 0; i < NT_KEYED_FLOW_WORDS; i++)
		nt_sip_block(s, nt_cpu_le64(flow->w[i]));
}

/**
 * nt_keyed_value() - the token for the message whose flow bytes led to
 * @prefix, with @epoch as its last 8 bytes (big-endian).
 * A subprogram, not inlined: the verifier calls it for up to four (key, epoch) pairs.
 */
static __noinline __attribute__((unused)) __u64 nt_keyed_value(const struct nt_sip *prefix, __u64 epoch)
{
	struct nt_sip s = *prefix;

	nt_sip_block(&s, nt_cpu_le64(bpf_cpu_to_be64(epoch)));
	return nt_sip_final(&s, (__u64)NT_KEYED_MSG_LEN << 56);
}

#endif /* NT_LIB_KEYED_H */
