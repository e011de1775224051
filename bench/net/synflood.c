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
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FRAME 256
#define BATCH 64
#define ETH_LEN 14

static void die(const char *what)
{
	fprintf(stderr, "synflood: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void fail(const char *msg)
{
	fprintf(stderr, "synflood: %s\n", msg);
	exit(1);
}

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

static size_t parse_hex(const char *hex, uint8_t *out, size_t max)
{
	size_t n = strlen(hex);

	if (n % 2 || n / 2 > max)
		fail("the frame must be an even number of hex digits, at most 256 bytes");
	for (size_t i = 0; i < n / 2; i++) {
		unsigned int b;

		if (sscanf(hex + 2 * i, "%2x", &b) != 1)
			fail("bad hex in the frame");
		out[i] = (uint8_t)b;
	}
	return n / 2;
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

static uint32_t sum16(const uint8_t *p, size_t len, uint32_t sum)
{
	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)p[i] << 8 | p[i + 1];
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	return sum;
}

/* Where the TCP header starts and how long the segment is; checks the frame is Ethernet + IPv4 + TCP. */
struct layout {
	size_t l4;
	size_t seg;
};

static struct layout parse_frame(const uint8_t *f, size_t len)
{
	struct layout l;
	size_t ihl, tot;

	if (len < ETH_LEN + 20 + 20 || f[12] != 0x08 || f[13] != 0x00 || (f[ETH_LEN] >> 4) != 4 || f[ETH_LEN + 9] != 6)
		fail("the frame must be Ethernet + IPv4 + TCP");
	ihl = (size_t)(f[ETH_LEN] & 0xf) * 4;
	tot = (size_t)f[ETH_LEN + 2] << 8 | f[ETH_LEN + 3];
	if (ihl < 20 || ETH_LEN + tot > len || tot < ihl + 20)
		fail("the frame's IPv4 header does not fit it");
	l.l4 = ETH_LEN + ihl;
	l.seg = tot - ihl;
	return l;
}

/* New source port (1024..65535) and sequence number, then the TCP checksum over the pseudo-header and segment. */
static void randomize(uint8_t *f, struct layout l)
{
	uint64_t r = rng();
	uint16_t sport = (uint16_t)(1024 + (r >> 32) % 64512);
	uint32_t seq = (uint32_t)r;
	uint32_t sum;

	f[l.l4 + 0] = (uint8_t)(sport >> 8);
	f[l.l4 + 1] = (uint8_t)sport;
	f[l.l4 + 4] = (uint8_t)(seq >> 24);
	f[l.l4 + 5] = (uint8_t)(seq >> 16);
	f[l.l4 + 6] = (uint8_t)(seq >> 8);
	f[l.l4 + 7] = (uint8_t)seq;
	f[l.l4 + 16] = 0;
	f[l.l4 + 17] = 0;
	sum = sum16(f + ETH_LEN + 12, 8, 0) + 6 + (uint32_t)l.seg;
	sum = sum16(f + l.l4, l.seg, sum);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	sum = (uint16_t)~sum;
	f[l.l4 + 16] = (uint8_t)(sum >> 8);
	f[l.l4 + 17] = (uint8_t)sum;
}

int main(int argc, char **argv)
{
	static uint8_t frames[BATCH][MAX_FRAME];
	struct sockaddr_ll addr = { 0 };
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	unsigned long long sent = 0, refused = 0;
	struct layout l;
	double seconds, start, deadline, end, cpu0;
	size_t len;
	int fd, one = 1;

	if (argc != 4) {
		fprintf(stderr, "usage: synflood IFNAME FRAME_HEX SECONDS\n");
		return 2;
	}
	len = parse_hex(argv[2], frames[0], MAX_FRAME);
	l = parse_frame(frames[0], len);
	seconds = atof(argv[3]);
	if (!(seconds > 0))
		fail("SECONDS must be positive");
	rng_state = ((uint64_t)getpid() << 32) ^ (uint64_t)(now() * 1e9) ^ 0x9e3779b97f4a7c15ULL;
	if (!rng_state)
		rng_state = 1;

	fd = socket(AF_PACKET, SOCK_RAW, 0);
	if (fd < 0)
		die("socket(AF_PACKET)");
	if (setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)))
		die("PACKET_QDISC_BYPASS");
	addr.sll_family = AF_PACKET;
	addr.sll_ifindex = (int)if_nametoindex(argv[1]);
	if (!addr.sll_ifindex)
		die(argv[1]);
	addr.sll_halen = ETH_ALEN;
	memcpy(addr.sll_addr, frames[0], ETH_ALEN);

	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BATCH; i++) {
		if (i > 0)
			memcpy(frames[i], frames[0], len);
		iov[i].iov_base = frames[i];
		iov[i].iov_len = len;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		msgs[i].msg_hdr.msg_name = &addr;
		msgs[i].msg_hdr.msg_namelen = sizeof(addr);
	}

	cpu0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
	start = now();
	deadline = start + seconds;
	do {
		int r;

		for (int i = 0; i < BATCH; i++)
			randomize(frames[i], l);
		r = sendmmsg(fd, msgs, BATCH, 0);
		if (r < 0) {
			if (errno != ENOBUFS && errno != EAGAIN && errno != EINTR)
				die("sendmmsg");
			/* The first frame of the batch was refused: count it and go on with new ones. */
			refused++;
			continue;
		}
		sent += (unsigned long long)r;
		/* sendmmsg stops at the first frame the device refused: it is dropped, not resent. */
		if (r < BATCH)
			refused++;
	} while (now() < deadline);
	end = now();
	printf("{\"sent\":%llu,\"refused\":%llu,\"seconds\":%.6f,\"cpuSeconds\":%.6f}\n", sent, refused, end - start,
	       clock_s(CLOCK_THREAD_CPUTIME_ID) - cpu0);
	close(fd);
	return 0;
}
