// SPDX-License-Identifier: Apache-2.0
/*
 * SYN flood generator for bench/flood.ts: sends copies of one Ethernet + IPv4 + TCP SYN
 * out of an interface through an AF_PACKET socket (qdisc bypassed, so tc egress and the
 * qdisc cost nothing), for a fixed time, each copy with a random source port and sequence
 * number and a correct TCP checksum. No token option: what a flood from outside the
 * fleet looks like. Run inside the client network namespace.
 *
 *   synflood IFNAME FRAME_HEX SECONDS
 *
 * Prints one JSON line: {"sent":N,"refused":R,"seconds":S,"cpuSeconds":C}. "refused" counts
 * frames the device would not take (a full queue), which are not in "sent". "cpuSeconds" is
 * this thread's CPU time, which includes the receive work the kernel did in softirq on its
 * behalf (a veth hands each frame to the peer on the sending CPU) where softirq time is
 * not accounted apart (no CONFIG_IRQ_TIME_ACCOUNTING). Exits 1 with a message on stderr on
 * any other error.
 */
#define _GNU_SOURCE /* sendmmsg */
#include <time.h>
#include <unistd.h>

#define RAW_PROG "synflood"
#define RAW_MAX_FRAME 256
#define RAW_BATCH 64
#include "../../test/lib/raw-frame.h"

static double clock_s(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now(void)
{
	return clock_s(CLOCK_MONOTONIC);
}

/* xorshift64*: cheap next to a send, and spreads source ports and sequence numbers evenly. */
static uint64_t rng_state;

static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dULL;
}

/* A new source port (1024..65535) and sequence number, with the TCP checksum to match. */
static void randomize(uint8_t *f, struct raw_layout l)
{
	uint64_t r = rng();

	raw_set_flow(f, l, (uint16_t)(1024 + (r >> 32) % 64512), (uint32_t)r);
}

int main(int argc, char **argv)
{
	static struct raw_batch b;
	unsigned long long sent = 0, refused = 0;
	struct raw_layout l;
	double seconds, start, deadline, end, cpu0;

	if (argc != 4) {
		fprintf(stderr, "usage: synflood IFNAME FRAME_HEX SECONDS\n");
		return 2;
	}
	b.len = raw_parse_hex(argv[2], b.frames[0], RAW_MAX_FRAME);
	l = raw_tcp4_layout(b.frames[0], b.len);
	seconds = atof(argv[3]);
	if (!(seconds > 0))
		raw_fail("SECONDS must be positive");
	rng_state = ((uint64_t)getpid() << 32) ^ (uint64_t)(now() * 1e9) ^ 0x9e3779b97f4a7c15ULL;
	if (!rng_state)
		rng_state = 1;
	raw_batch_open(&b, argv[1], 1);

	cpu0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
	start = now();
	deadline = start + seconds;
	do {
		int r;

		for (int i = 0; i < RAW_BATCH; i++)
			randomize(b.frames[i], l);
		r = sendmmsg(b.fd, b.msgs, RAW_BATCH, 0);
		if (r < 0) {
			if (errno != ENOBUFS && errno != EAGAIN && errno != EINTR)
				raw_die("sendmmsg");
			/* The first frame of the batch was refused: count it and go on with new ones. */
			refused++;
			continue;
		}
		sent += (unsigned long long)r;
		/* sendmmsg stops at the first frame the device refused: it is dropped, not resent. */
		if (r < RAW_BATCH)
			refused++;
	} while (now() < deadline);
	end = now();
	printf("{\"sent\":%llu,\"refused\":%llu,\"seconds\":%.6f,\"cpuSeconds\":%.6f}\n", sent, refused, end - start,
	       clock_s(CLOCK_THREAD_CPUTIME_ID) - cpu0);
	close(b.fd);
	return 0;
}
