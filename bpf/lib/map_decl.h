/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * One form for every map declaration of the shipped programs (libbpf's BTF map
 * definitions). The loader and the agent find maps by name; each macro's first
 * argument is that name.
 */
#ifndef NT_LIB_MAP_DECL_H
#define NT_LIB_MAP_DECL_H

#include <bpf/bpf_helpers.h>

/* A map of @_type named @_name; @_pin is LIBBPF_PIN_BY_NAME or LIBBPF_PIN_NONE. */
#define NT_MAP(_name, _type, _flags, _max, _key, _value, _pin) \
	struct {                                               \
		__uint(type, _type);                           \
		__uint(map_flags, _flags);                     \
		__uint(max_entries, _max);                     \
		__type(key, _key);                             \
		__type(value, _value);                         \
		__uint(pinning, _pin);                         \
	} _name SEC(".maps")

/*
 * Pinned by name under the objects' pin root: the agent, both programs and a
 * restarted agent share one instance.
 */
#define NT_PINNED_MAP(_name, _type, _flags, _max, _key, _value) \
	NT_MAP(_name, _type, _flags, _max, _key, _value, LIBBPF_PIN_BY_NAME)

/* Not pinned: belongs to the programs of one load (per-CPU scratch, caches). */
#define NT_LOCAL_MAP(_name, _type, _max, _key, _value) \
	NT_MAP(_name, _type, 0, _max, _key, _value, LIBBPF_PIN_NONE)

/*
 * A one-slot program array that libbpf fills at load with @_prog (an
 * skb program), pinned like the other maps: the kernel empties a program array
 * when the last reference from user space goes, and the pin keeps it.
 */
#define NT_PINNED_JUMP(_name, _prog)                  \
	struct {                                       \
		__uint(type, BPF_MAP_TYPE_PROG_ARRAY); \
		__uint(max_entries, 1);                \
		__type(key, __u32);                    \
		__uint(pinning, LIBBPF_PIN_BY_NAME);   \
		__array(values, int(struct __sk_buff *)); \
	} _name SEC(".maps") = {                       \
		.values = { [0] = (void *)&_prog },    \
	}

#endif /* NT_LIB_MAP_DECL_H */
