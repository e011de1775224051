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
#include <arpa/inet.h>
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

#define MAX_FRAME 2048
#define BATCH 64

static void die(const char *what)
{
	fprintf(stderr, "raw-send: %s: %s\n", what, strerror(errno));
	exit(1);
}

static size_t parse_hex(const char *hex, uint8_t *out, size_t max)
{
	size_t n = strlen(hex);

	if (n % 2 || n / 2 > max) {
		fprintf(stderr, "raw-send: the frame must be an even number of hex digits, at most %zu bytes\n", max);
		exit(1);
	}
	for (size_t i = 0; i < n / 2; i++) {
		unsigned int b;

		if (sscanf(hex + 2 * i, "%2x", &b) != 1) {
			fprintf(stderr, "raw-send: bad hex at offset %zu\n", 2 * i);
			exit(1);
		}
		out[i] = (uint8_t)b;
	}
	return n / 2;
}

static uint32_t sum16(const uint8_t *p, size_t len, uint32_t sum)
{
	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)p[i] << 8 | p[i + 1];
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	return sum;
}

static uint16_t fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

/* The TCP checksum of an Ethernet + IPv4 + TCP frame, recomputed in place. */
static void tcp_checksum_v4(uint8_t *f, size_t len)
{
	size_t l3 = 14, ihl = (size_t)(f[l3] & 0xf) * 4, l4 = l3 + ihl;
	size_t tot = (size_t)f[l3 + 2] << 8 | f[l3 + 3];
	size_t seg = tot - ihl;
	uint32_t sum;

	if (l3 + tot > len || seg < 20) {
		fprintf(stderr, "raw-send: flood needs an Ethernet + IPv4 + TCP frame\n");
		exit(1);
	}
	f[l4 + 16] = 0;
	f[l4 + 17] = 0;
	sum = sum16(f + l3 + 12, 8, 0) + 6 + (uint32_t)seg;
	sum = sum16(f + l4, seg, sum);
	sum = (uint16_t)~fold(sum);
	f[l4 + 16] = (uint8_t)(sum >> 8);
	f[l4 + 17] = (uint8_t)sum;
}

int main(int argc, char **argv)
{
	static uint8_t frames[BATCH][MAX_FRAME];
	struct sockaddr_ll addr = { 0 };
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	struct timespec t0, t1;
	unsigned long count, sent = 0;
	size_t len;
	int fd, flood;

	if (argc < 4 || (strcmp(argv[1], "send") && strcmp(argv[1], "flood"))) {
		fprintf(stderr, "usage: raw-send send|flood <ifname> <frame hex> [count]\n");
		return 2;
	}
	flood = !strcmp(argv[1], "flood");
	count = argc > 4 ? strtoul(argv[4], NULL, 10) : 1;
	len = parse_hex(argv[3], frames[0], MAX_FRAME);
	if (len < 14) {
		fprintf(stderr, "raw-send: a frame has at least 14 bytes\n");
		return 1;
	}
	fd = socket(AF_PACKET, SOCK_RAW, 0);
	if (fd < 0)
		die("socket(AF_PACKET)");
	addr.sll_family = AF_PACKET;
	addr.sll_ifindex = (int)if_nametoindex(argv[2]);
	if (!addr.sll_ifindex)
		die(argv[2]);
	addr.sll_halen = ETH_ALEN;
	memcpy(addr.sll_addr, frames[0], ETH_ALEN);
	if (flood) {
		int one = 1;

		if (setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)))
			die("PACKET_QDISC_BYPASS");
	}
	for (int i = 1; i < BATCH; i++)
		memcpy(frames[i], frames[0], len);
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BATCH; i++) {
		iov[i].iov_base = frames[i];
		iov[i].iov_len = len;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		msgs[i].msg_hdr.msg_name = &addr;
		msgs[i].msg_hdr.msg_namelen = sizeof(addr);
	}

	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (sent < count) {
		unsigned int n = count - sent < BATCH ? (unsigned int)(count - sent) : BATCH;
		int r;

		if (flood) {
			for (unsigned int i = 0; i < n; i++) {
				uint8_t *f = frames[i];
				size_t l4 = 14 + (size_t)(f[14] & 0xf) * 4;
				unsigned long k = sent + i;
				uint16_t sport = (uint16_t)(1024 + k % 64000);
				uint32_t seq = (uint32_t)(k * 2654435761u);

				f[l4] = (uint8_t)(sport >> 8);
				f[l4 + 1] = (uint8_t)sport;
				f[l4 + 4] = (uint8_t)(seq >> 24);
				f[l4 + 5] = (uint8_t)(seq >> 16);
				f[l4 + 6] = (uint8_t)(seq >> 8);
				f[l4 + 7] = (uint8_t)seq;
				tcp_checksum_v4(f, len);
			}
		}
		r = sendmmsg(fd, msgs, n, 0);
		if (r < 0) {
			if (errno == ENOBUFS || errno == EAGAIN)
				continue;
			die("sendmmsg");
		}
		sent += (unsigned long)r;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("{\"sent\":%lu,\"seconds\":%.6f}\n", sent,
	       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	close(fd);
	return 0;
}
