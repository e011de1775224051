// SPDX-License-Identifier: Apache-2.0
/*
 * Two tun devices (IFF_TUN: frames start with the IP header, no link-layer header), each
 * in its own network namespace, joined by this process: what one stack sends out of its
 * device comes in at the other. Every packet relayed is written to a pcap file
 * (LINKTYPE_RAW) as the sending stack handed it over, after its tc egress hook.
 *
 *   tun-pair NETNS_A DEV_A NETNS_B DEV_B PCAP
 *
 * NETNS_* are paths such as /var/run/netns/NAME. Prints "ready" once both devices exist,
 * then relays until its standard input closes or a signal ends it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <unistd.h>

static void die(const char *what)
{
	fprintf(stderr, "tun-pair: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* A tun device named @dev in the network namespace at @ns_path. */
static int open_tun(const char *ns_path, const char *dev)
{
	struct ifreq ifr;
	int nsfd, fd;

	nsfd = open(ns_path, O_RDONLY | O_CLOEXEC);
	if (nsfd < 0)
		die(ns_path);
	if (setns(nsfd, CLONE_NEWNET))
		die("setns");
	close(nsfd);
	/* The device is made in the namespace the file was opened in. */
	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		die("/dev/net/tun");
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
	strncpy(ifr.ifr_name, dev, IFNAMSIZ - 1);
	if (ioctl(fd, TUNSETIFF, &ifr))
		die("TUNSETIFF");
	return fd;
}

static void pcap_header(FILE *f)
{
	const uint32_t h[6] = { 0xa1b2c3d4, 0x00040002, 0, 0, 65535, 101 /* LINKTYPE_RAW */ };

	fwrite(h, sizeof(h), 1, f);
	fflush(f);
}

static void pcap_record(FILE *f, const unsigned char *p, uint32_t len)
{
	struct timeval tv;
	uint32_t h[4];

	gettimeofday(&tv, NULL);
	h[0] = (uint32_t)tv.tv_sec;
	h[1] = (uint32_t)tv.tv_usec;
	h[2] = len;
	h[3] = len;
	fwrite(h, sizeof(h), 1, f);
	fwrite(p, len, 1, f);
	fflush(f);
}

int main(int argc, char **argv)
{
	static unsigned char buf[65536];
	struct pollfd pfd[3];
	FILE *pcap;
	int a, b;

	if (argc != 6) {
		fprintf(stderr, "usage: tun-pair NETNS_A DEV_A NETNS_B DEV_B PCAP\n");
		return 2;
	}
	pcap = fopen(argv[5], "wb");
	if (!pcap)
		die(argv[5]);
	pcap_header(pcap);
	a = open_tun(argv[1], argv[2]);
	b = open_tun(argv[3], argv[4]);
	printf("ready\n");
	fflush(stdout);

	pfd[0] = (struct pollfd){ .fd = a, .events = POLLIN };
	pfd[1] = (struct pollfd){ .fd = b, .events = POLLIN };
	pfd[2] = (struct pollfd){ .fd = 0, .events = POLLIN };
	for (;;) {
		if (poll(pfd, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		if (pfd[2].revents) {
			/* Standard input readable means it closed: the test is done with us. */
			if (read(0, buf, sizeof(buf)) <= 0)
				return 0;
		}
		for (int i = 0; i < 2; i++) {
			ssize_t n;

			if (!(pfd[i].revents & POLLIN))
				continue;
			n = read(pfd[i].fd, buf, sizeof(buf));
			if (n < 0) {
				if (errno == EAGAIN || errno == EINTR)
					continue;
				die("read");
			}
			pcap_record(pcap, buf, (uint32_t)n);
			/* A full queue on the other side drops the packet, as a link would. */
			if (write(pfd[1 - i].fd, buf, (size_t)n) < 0 && errno != EIO && errno != ENOBUFS)
				die("write");
		}
	}
}
