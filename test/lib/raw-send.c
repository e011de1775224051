// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Sends Ethernet frames on one interface through an AF_PACKET socket, for tests and
 * benchmarks that need SYNs no TCP stack would send (replayed, forged, flooded).
 * Built at test time by test/lib/raw-send.ts; run inside a network namespace.
 *
 *   raw-send send  <ifname> <frame hex> [count]   the frame exactly as given, count times (default 1)
 *   raw-send flood <ifname> <frame hex> <count>   count copies of an Ethernet + IPv4 + TCP frame, each
 *                                                 with its own source port and sequence number and a
 *                                                 correct TCP checksum; bypasses the qdisc (and tc egress)
 *
 * Prints one JSON line: {"sent":N,"seconds":S}. Exits 1 with a message on stderr on any error.
 */
#define _GNU_SOURCE /* sendmmsg */
#include <time.h>
#include <unistd.h>

#define RAW_PROG "raw-send"
#define RAW_MAX_FRAME 2048
#define RAW_BATCH 64
#include "raw-frame.h"

int main(int argc, char **argv)
{
	static struct raw_batch b;
	struct raw_layout l = { 0 };
	struct timespec t0, t1;
	unsigned long count, sent = 0;
	int flood;

	if (argc < 4 || (strcmp(argv[1], "send") && strcmp(argv[1], "flood"))) {
		fprintf(stderr, "usage: raw-send send|flood <ifname> <frame hex> [count]\n");
		return 2;
	}
	flood = !strcmp(argv[1], "flood");
	count = argc > 4 ? strtoul(argv[4], NULL, 10) : 1;
	b.len = raw_parse_hex(argv[3], b.frames[0], RAW_MAX_FRAME);
	if (b.len < RAW_ETH_LEN)
		raw_fail("a frame has at least 14 bytes");
	if (flood)
		l = raw_tcp4_layout(b.frames[0], b.len);
	raw_batch_open(&b, argv[2], flood);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (sent < count) {
		unsigned int n = count - sent < RAW_BATCH ? (unsigned int)(count - sent) : RAW_BATCH;
		int r;

		if (flood) {
			for (unsigned int i = 0; i < n; i++) {
				unsigned long k = sent + i;

				raw_set_flow(b.frames[i], l, (uint16_t)(1024 + k % 64000), (uint32_t)(k * 2654435761u));
			}
		}
		r = sendmmsg(b.fd, b.msgs, n, 0);
		if (r < 0) {
			if (errno == ENOBUFS || errno == EAGAIN)
				continue;
			raw_die("sendmmsg");
		}
		sent += (unsigned long)r;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("{\"sent\":%lu,\"seconds\":%.6f}\n", sent,
	       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	close(b.fd);
	return 0;
}
