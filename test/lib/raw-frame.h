/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What the two AF_PACKET senders share (test/lib/raw-send.c for tests, bench/net/synflood.c
 * for the flood benchmark): a frame given in hex, the layout of an Ethernet + IPv4 + TCP
 * frame, a new source port and sequence number with a correct TCP checksum, and one batch of
 * sendmmsg() messages over copies of the frame.
 *
 * Define RAW_PROG (the program's name, for messages) and RAW_MAX_FRAME (bytes) and RAW_BATCH
 * (frames per sendmmsg) before including this.
 */
#ifndef NT_TEST_RAW_FRAME_H
#define NT_TEST_RAW_FRAME_H

#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define RAW_ETH_LEN 14

/* Exits 1 with "RAW_PROG: what: strerror(errno)". */
static void raw_die(const char *what)
{
	fprintf(stderr, RAW_PROG ": %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Exits 1 with "RAW_PROG: msg". */
static void raw_fail(const char *msg)
{
	fprintf(stderr, RAW_PROG ": %s\n", msg);
	exit(1);
}

/* The bytes of @hex into @out; exits on odd length, more than @max bytes or a bad digit. */
static size_t raw_parse_hex(const char *hex, uint8_t *out, size_t max)
{
	size_t n = strlen(hex);

	if (n % 2 || n / 2 > max) {
		fprintf(stderr, RAW_PROG ": the frame must be an even number of hex digits, at most %zu bytes\n", max);
		exit(1);
	}
	for (size_t i = 0; i < n / 2; i++) {
		unsigned int b;

		if (sscanf(hex + 2 * i, "%2x", &b) != 1) {
			fprintf(stderr, RAW_PROG ": bad hex at offset %zu\n", 2 * i);
			exit(1);
		}
		out[i] = (uint8_t)b;
	}
	return n / 2;
}

/* The one's-complement sum of @len bytes at @p as big-endian 16-bit words, added to @sum. */
static uint32_t raw_sum16(const uint8_t *p, size_t len, uint32_t sum)
{
	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)p[i] << 8 | p[i + 1];
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	return sum;
}

/* Where the TCP header starts and how long the segment is. */
struct raw_layout {
	size_t l4;
	size_t seg;
};

/* The layout of an Ethernet + IPv4 + TCP frame; exits when @f is not one or its IPv4 header does not fit it. */
static struct raw_layout raw_tcp4_layout(const uint8_t *f, size_t len)
{
	struct raw_layout l;
	size_t ihl, tot;

	if (len < RAW_ETH_LEN + 20 + 20 || f[12] != 0x08 || f[13] != 0x00 || (f[RAW_ETH_LEN] >> 4) != 4 ||
	    f[RAW_ETH_LEN + 9] != 6)
		raw_fail("the frame must be Ethernet + IPv4 + TCP");
	ihl = (size_t)(f[RAW_ETH_LEN] & 0xf) * 4;
	tot = (size_t)f[RAW_ETH_LEN + 2] << 8 | f[RAW_ETH_LEN + 3];
	if (ihl < 20 || RAW_ETH_LEN + tot > len || tot < ihl + 20)
		raw_fail("the frame's IPv4 header does not fit it");
	l.l4 = RAW_ETH_LEN + ihl;
	l.seg = tot - ihl;
	return l;
}

/* Writes @sport and @seq into the TCP header of @f, then its checksum over the pseudo-header and segment. */
static void raw_set_flow(uint8_t *f, struct raw_layout l, uint16_t sport, uint32_t seq)
{
	uint32_t sum;

	f[l.l4 + 0] = (uint8_t)(sport >> 8);
	f[l.l4 + 1] = (uint8_t)sport;
	f[l.l4 + 4] = (uint8_t)(seq >> 24);
	f[l.l4 + 5] = (uint8_t)(seq >> 16);
	f[l.l4 + 6] = (uint8_t)(seq >> 8);
	f[l.l4 + 7] = (uint8_t)seq;
	f[l.l4 + 16] = 0;
	f[l.l4 + 17] = 0;
	sum = raw_sum16(f + RAW_ETH_LEN + 12, 8, 0) + 6 + (uint32_t)l.seg;
	sum = raw_sum16(f + l.l4, l.seg, sum);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	sum = (uint16_t)~sum;
	f[l.l4 + 16] = (uint8_t)(sum >> 8);
	f[l.l4 + 17] = (uint8_t)sum;
}

/* One batch of sends: RAW_BATCH copies of a frame, each its own message to one interface. */
struct raw_batch {
	uint8_t frames[RAW_BATCH][RAW_MAX_FRAME];
	struct sockaddr_ll addr;
	struct mmsghdr msgs[RAW_BATCH];
	struct iovec iov[RAW_BATCH];
	size_t len;
	int fd;
};

/*
 * Opens the AF_PACKET socket on @ifname (bypassing the qdisc, and so tc egress, when
 * @qdisc_bypass) and fills every frame of @b with its first @b->len bytes, which the caller
 * has written. Exits on any error.
 */
static void raw_batch_open(struct raw_batch *b, const char *ifname, int qdisc_bypass)
{
	int one = 1;

	b->fd = socket(AF_PACKET, SOCK_RAW, 0);
	if (b->fd < 0)
		raw_die("socket(AF_PACKET)");
	if (qdisc_bypass && setsockopt(b->fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)))
		raw_die("PACKET_QDISC_BYPASS");
	memset(&b->addr, 0, sizeof(b->addr));
	b->addr.sll_family = AF_PACKET;
	b->addr.sll_ifindex = (int)if_nametoindex(ifname);
	if (!b->addr.sll_ifindex)
		raw_die(ifname);
	b->addr.sll_halen = ETH_ALEN;
	memcpy(b->addr.sll_addr, b->frames[0], ETH_ALEN);
	memset(b->msgs, 0, sizeof(b->msgs));
	for (int i = 0; i < RAW_BATCH; i++) {
		if (i > 0)
			memcpy(b->frames[i], b->frames[0], b->len);
		b->iov[i].iov_base = b->frames[i];
		b->iov[i].iov_len = b->len;
		b->msgs[i].msg_hdr.msg_iov = &b->iov[i];
		b->msgs[i].msg_hdr.msg_iovlen = 1;
		b->msgs[i].msg_hdr.msg_name = &b->addr;
		b->msgs[i].msg_hdr.msg_namelen = sizeof(b->addr);
	}
}

#endif /* NT_TEST_RAW_FRAME_H */
