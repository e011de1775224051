// SPDX-License-Identifier: Apache-2.0
/*
 * Traffic for bench/connections.ts, small enough that it is not the bottleneck the way
 * a node client would be. Every result is one JSON line on stdout.
 *
 *   netbench serve ADDR CONN_PORT SINK_PORT
 *       CONN_PORT: accept and close at once (two threads). SINK_PORT: read and discard
 *       until EOF, then close. Prints {"listening":true} once both listen.
 *   netbench connect ADDR PORT SECONDS THREADS
 *       THREADS threads each open connections one after the other until SECONDS pass:
 *       socket, connect (a full handshake), close with SO_LINGER 0 (an RST, so that no
 *       TIME_WAIT socket holds the port). Prints {"connections","errors","seconds",...}.
 *   netbench send ADDR PORT SECONDS
 *       One connection, 128 KiB writes until SECONDS pass, then a half close and a wait
 *       for the receiver's EOF, so every byte counted has arrived. Prints {"bytes","seconds"}.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (128 * 1024)
#define MAX_THREADS 64

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "netbench: %s: %s\n", what, strerror(errno));
	exit(1);
}

static struct sockaddr_in parse_addr(const char *ip, const char *port)
{
	struct sockaddr_in sa;
	char *end;
	long p = strtol(port, &end, 10);

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	if (*end || p <= 0 || p > 65535 || inet_pton(AF_INET, ip, &sa.sin_addr) != 1) {
		fprintf(stderr, "netbench: bad address %s:%s\n", ip, port);
		exit(2);
	}
	sa.sin_port = htons((uint16_t)p);
	return sa;
}

static int listen_on(struct sockaddr_in sa)
{
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		die("socket");
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)))
		die("SO_REUSEADDR");
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)))
		die("bind");
	if (listen(fd, 4096))
		die("listen");
	return fd;
}

static void *accept_close(void *arg)
{
	int lfd = *(int *)arg;

	for (;;) {
		int fd = accept(lfd, NULL, NULL);

		if (fd >= 0)
			close(fd);
		/* ECONNABORTED and friends: the client already reset it; keep accepting. */
	}
	return NULL;
}

static void *sink(void *arg)
{
	int lfd = *(int *)arg;
	char *buf = malloc(CHUNK);

	if (!buf)
		die("malloc");
	for (;;) {
		int fd = accept(lfd, NULL, NULL);

		if (fd < 0)
			continue;
		while (read(fd, buf, CHUNK) > 0)
			;
		close(fd);
	}
	return NULL;
}

static int serve(const char *ip, const char *conn_port, const char *sink_port)
{
	static int conn_fd, sink_fd;
	pthread_t t[3];

	conn_fd = listen_on(parse_addr(ip, conn_port));
	sink_fd = listen_on(parse_addr(ip, sink_port));
	if (pthread_create(&t[0], NULL, accept_close, &conn_fd) ||
	    pthread_create(&t[1], NULL, accept_close, &conn_fd) ||
	    pthread_create(&t[2], NULL, sink, &sink_fd)) {
		fprintf(stderr, "netbench: pthread_create failed\n");
		return 1;
	}
	printf("{\"listening\":true}\n");
	fflush(stdout);
	pthread_join(t[0], NULL);
	return 0;
}

struct conn_job {
	struct sockaddr_in sa;
	double deadline;
	uint64_t connections;
	uint64_t errors;
	int first_errno;
};

static void *connect_loop(void *arg)
{
	struct conn_job *job = arg;
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	while (now() < job->deadline) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		if (fd < 0) {
			job->errors++;
			if (!job->first_errno)
				job->first_errno = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		if (connect(fd, (struct sockaddr *)&job->sa, sizeof(job->sa)) == 0) {
			job->connections++;
		} else {
			job->errors++;
			if (!job->first_errno)
				job->first_errno = errno;
		}
		close(fd);
	}
	return NULL;
}

static int connect_many(const char *ip, const char *port, double seconds, int threads)
{
	struct conn_job jobs[MAX_THREADS];
	pthread_t t[MAX_THREADS];
	uint64_t connections = 0, errors = 0;
	int first_errno = 0;
	double start, elapsed;

	if (threads < 1 || threads > MAX_THREADS || !(seconds > 0)) {
		fprintf(stderr, "netbench: threads must be 1..%d and seconds > 0\n", MAX_THREADS);
		return 2;
	}
	start = now();
	for (int i = 0; i < threads; i++) {
		jobs[i] = (struct conn_job){ .sa = parse_addr(ip, port), .deadline = start + seconds };
		if (pthread_create(&t[i], NULL, connect_loop, &jobs[i])) {
			fprintf(stderr, "netbench: pthread_create failed\n");
			return 1;
		}
	}
	for (int i = 0; i < threads; i++) {
		pthread_join(t[i], NULL);
		connections += jobs[i].connections;
		errors += jobs[i].errors;
		if (!first_errno)
			first_errno = jobs[i].first_errno;
	}
	elapsed = now() - start;
	printf("{\"connections\":%llu,\"errors\":%llu,\"seconds\":%.6f,\"threads\":%d,\"firstError\":\"%s\"}\n",
	       (unsigned long long)connections, (unsigned long long)errors, elapsed, threads,
	       first_errno ? strerror(first_errno) : "");
	return 0;
}

static int send_bulk(const char *ip, const char *port, double seconds)
{
	struct sockaddr_in sa = parse_addr(ip, port);
	char *buf = calloc(1, CHUNK);
	uint64_t bytes = 0;
	double start, deadline;
	int fd;

	if (!buf)
		die("calloc");
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		die("socket");
	start = now();
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
		die("connect");
	deadline = start + seconds;
	while (now() < deadline) {
		ssize_t n = write(fd, buf, CHUNK);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("write");
		}
		bytes += (uint64_t)n;
	}
	if (shutdown(fd, SHUT_WR))
		die("shutdown");
	/* The receiver closes after reading everything: its EOF means every byte arrived. */
	while (read(fd, buf, CHUNK) > 0)
		;
	printf("{\"bytes\":%llu,\"seconds\":%.6f}\n", (unsigned long long)bytes, now() - start);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && strcmp(argv[1], "serve") == 0)
		return serve(argv[2], argv[3], argv[4]);
	if (argc == 6 && strcmp(argv[1], "connect") == 0)
		return connect_many(argv[2], argv[3], atof(argv[4]), atoi(argv[5]));
	if (argc == 5 && strcmp(argv[1], "send") == 0)
		return send_bulk(argv[2], argv[3], atof(argv[4]));
	fprintf(stderr,
		"usage: netbench serve ADDR CONN_PORT SINK_PORT\n"
		"       netbench connect ADDR PORT SECONDS THREADS\n"
		"       netbench send ADDR PORT SECONDS\n");
	return 2;
}
