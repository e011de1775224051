// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * netoken egress marker (tc / TCX egress): appends the token option to every
 * outgoing TCP SYN a policy covers. Everything else passes untouched and
 * returns TC_ACT_UNSPEC (TCX_NEXT) so programs after this one still run.
 */
#include "lib/mark.h"

SEC("tc")
int nt_mark_egress(struct __sk_buff *skb)
{
	return nt_mark(skb);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
