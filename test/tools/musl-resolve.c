// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* A static musl client for the DNS conformance scenarios: musl's resolver
 * (not glibc's) resolves argv[1]. musl sends every query on one unconnected
 * socket to all nameservers of /etc/resolv.conf at once (sendto; an AF_INET6
 * socket with v4-mapped addresses when one nameserver is IPv6) and drops a
 * reply whose source is not one of them, so an answer proves the reply
 * source was restored. Prints the addresses, one per line; exit 2 if none. */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
	struct addrinfo hints, *res, *ai;
	char buf[INET6_ADDRSTRLEN];
	int err;

	if (argc != 2) {
		fprintf(stderr, "usage: %s NAME\n", argv[0]);
		return 1;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_INET;
	hints.ai_socktype = SOCK_STREAM;
	err = getaddrinfo(argv[1], NULL, &hints, &res);
	if (err) {
		fprintf(stderr, "%s: %s\n", argv[1], gai_strerror(err));
		return 2;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		const struct sockaddr_in *sin = (const void *)ai->ai_addr;

		printf("%s\n", inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf)));
	}
	freeaddrinfo(res);
	return 0;
}
