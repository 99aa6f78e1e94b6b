// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * mw-sockcheck: the S4 behaviour gate's socket exerciser (sockgate.ts runs it).
 *
 *   mw-sockcheck <sock_pairs fd> <origin_by_sock fd> [-6] [-n] [-c cycles] [-m max_mb] [-o prefix]
 *
 * In a private netns (unshare, lo up) it makes loopback TCP pairs, enrols
 * both ends in sock_pairs (key: netns cookie + ends, as sockmap.h builds it)
 * with origin_by_sock storage so mwsc_sk_msg redirects between them, and
 * checks what applications rely on: byte-exact transfers both ways (1 B ..
 * 16 MB, write, writev > 17 iovecs, sendfile, splice in and out), FIONREAD
 * equal to readable bytes (redirected and native), one EPOLLET edge per
 * message, MSG_PEEK, half-close, order of bytes sent before the peer was
 * accepted and after, and bounded memory: a sender whose peer
 * reads nothing must stall after about what plain TCP's buffers hold. One
 * JSON line per check on stdout; exit 0 when all pass, 1 when one fails, 2
 * when setup fails. -n: do not enrol (plain TCP: the control run, every check
 * must pass). -o: only the checks whose name starts with prefix. Every wait
 * is bounded.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <linux/bpf.h>

#define WAIT_MS 5000
#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

static int pairs_fd, origin_fd, v6, enrol = 1, cycles = 1000, max_mb = 16, failed, rr_iters;
static const char *only = "";

/* -o: run the check called name? */
static int want(const char *name)
{
	return strncmp(name, only, strlen(only)) == 0;
}

static void report(const char *check, int ok, const char *detail)
{
	printf("{\"check\":\"%s\",\"ok\":%s,\"detail\":\"%s\"}\n", check, ok ? "true" : "false", detail);
	fflush(stdout);
	if (!ok)
		failed = 1;
}

static void die(const char *what)
{
	printf("{\"check\":\"setup\",\"ok\":false,\"detail\":\"%s: %s\"}\n", what, strerror(errno));
	exit(2);
}

static long bpf_sys(int cmd, union bpf_attr *a)
{
	return syscall(__NR_bpf, cmd, a, sizeof(*a));
}

static int map_update(int fd, const void *key, const void *val, uint64_t flags)
{
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.map_fd = fd;
	a.key = (uint64_t)(uintptr_t)key;
	a.value = (uint64_t)(uintptr_t)val;
	a.flags = flags;
	return bpf_sys(BPF_MAP_UPDATE_ELEM, &a) ? -errno : 0;
}

/* struct ip_addr of a socket address: v4-mapped for IPv4. */
static void ip_addr_of(const struct sockaddr_storage *ss, uint8_t out[16], uint16_t *port)
{
	memset(out, 0, 16);
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)ss;
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &s->sin_addr, 4);
		*port = s->sin_port;
	} else {
		const struct sockaddr_in6 *s = (const void *)ss;
		memcpy(out, &s->sin6_addr, 16);
		*port = s->sin6_port;
	}
}

/* Enrols fd as sock_ops would: origin_by_sock storage, then sock_pairs (BPF_NOEXIST). */
static void enrol_sock(int fd)
{
	uint8_t key[48] = { 0 }, origin[20] = { 0 };
	struct sockaddr_storage l, r;
	socklen_t len = sizeof(l);
	uint64_t cookie, val = (uint64_t)fd;
	uint16_t lport, rport;
	int err;

	if (!enrol)
		return;
	if (getsockname(fd, (void *)&l, &len) || (len = sizeof(r), getpeername(fd, (void *)&r, &len)))
		die("getsockname");
	len = sizeof(cookie);
	if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len))
		die("SO_NETNS_COOKIE");
	memcpy(key, &cookie, 8);
	ip_addr_of(&l, key + 8, &lport);
	ip_addr_of(&r, key + 24, &rport);
	memcpy(key + 40, &lport, 2);
	memcpy(key + 42, &rport, 2);
	origin[19] = 1 << 5; /* MW_ORIGIN_F_SOCKMAP */
	if ((err = map_update(origin_fd, &fd, origin, BPF_ANY))) {
		errno = -err;
		die("origin_by_sock update");
	}
	if ((err = map_update(pairs_fd, key, &val, BPF_NOEXIST))) {
		errno = -err;
		die("sock_pairs update");
	}
}

struct pair { int a, b; };

/* A listener on the loopback address of the family under test, any port; *ss, *len: its address. */
static int loopback_listener(struct sockaddr_storage *ss, socklen_t *len)
{
	int l;

	memset(ss, 0, sizeof(*ss));
	if (v6) {
		struct sockaddr_in6 *s = (void *)ss;
		s->sin6_family = AF_INET6;
		s->sin6_addr = in6addr_loopback;
		*len = sizeof(*s);
	} else {
		struct sockaddr_in *s = (void *)ss;
		s->sin_family = AF_INET;
		s->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		*len = sizeof(*s);
	}
	l = socket(ss->ss_family, SOCK_STREAM, 0);
	if (l < 0 || bind(l, (void *)ss, *len) || listen(l, 8) || getsockname(l, (void *)ss, len))
		die("listen");
	return l;
}

/* A connected loopback pair; `which` ends enrolled (bit 0: a, bit 1: b). */
static struct pair make_pair(int which)
{
	struct sockaddr_storage ss;
	socklen_t len;
	struct pair p;
	int l, one = 1;

	l = loopback_listener(&ss, &len);
	p.a = socket(ss.ss_family, SOCK_STREAM, 0);
	if (p.a < 0 || connect(p.a, (void *)&ss, len))
		die("connect");
	p.b = accept(l, NULL, NULL);
	if (p.b < 0)
		die("accept");
	close(l);
	setsockopt(p.a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(p.b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (which & 1)
		enrol_sock(p.a);
	if (which & 2)
		enrol_sock(p.b);
	return p;
}

static void close_pair(struct pair p)
{
	close(p.a);
	close(p.b);
}

/* Byte i of a stream with seed s: position-dependent, so loss, duplication
 * and reordering all show. */
static inline uint8_t pat(uint64_t i, uint8_t s)
{
	return (uint8_t)((i * 131u) ^ (i >> 11) ^ s);
}

static int wait_fd(int fd, short ev)
{
	struct pollfd p = { .fd = fd, .events = ev };

	return poll(&p, 1, WAIT_MS) == 1;
}

enum how { W_WRITE, W_WRITEV, W_SENDFILE, W_SPLICE };

struct sender { int fd; size_t n; uint8_t seed; enum how how; int err; };

static void *send_thread(void *arg)
{
	struct sender *s = arg;
	size_t chunk = 256 * 1024, off = 0;
	uint8_t *buf = malloc(chunk);

	if (s->how == W_SENDFILE) {
		int mf = memfd_create("mw-sockcheck", 0);
		off_t foff = 0;

		for (size_t i = 0; i < s->n; i += chunk) {
			size_t k = s->n - i < chunk ? s->n - i : chunk;
			for (size_t j = 0; j < k; j++)
				buf[j] = pat(i + j, s->seed);
			if (write(mf, buf, k) != (ssize_t)k)
				s->err = errno;
		}
		while ((size_t)foff < s->n && !s->err) {
			ssize_t r = sendfile(s->fd, mf, &foff, s->n - foff);
			if (r < 0 && (errno != EAGAIN || !wait_fd(s->fd, POLLOUT)))
				s->err = errno ? errno : ETIMEDOUT;
		}
		close(mf);
		free(buf);
		return NULL;
	}
	int pp[2] = { -1, -1 };
	if (s->how == W_SPLICE && pipe(pp))
		s->err = errno;
	while (off < s->n && !s->err) {
		size_t k = s->n - off < chunk ? s->n - off : chunk;
		ssize_t r;

		for (size_t j = 0; j < k; j++)
			buf[j] = pat(off + j, s->seed);
		if (s->how == W_WRITEV) {
			/* 32 iovecs of uneven sizes (> 17: more than one sk_msg's fragments). */
			struct iovec iov[32];
			size_t per = k / 32 ? k / 32 : 1, used = 0;
			int n = 0;
			for (; n < 32 && used < k; n++) {
				size_t len = n == 31 || used + per + (n & 3) > k ? k - used : per + (n & 3);
				iov[n].iov_base = buf + used;
				iov[n].iov_len = len;
				used += len;
			}
			r = writev(s->fd, iov, n);
		} else if (s->how == W_SPLICE) {
			if (k > 65536)
				k = 65536;
			if (write(pp[1], buf, k) != (ssize_t)k) {
				s->err = errno;
				break;
			}
			size_t left = k;
			while (left && !s->err) {
				r = splice(pp[0], NULL, s->fd, NULL, left, SPLICE_F_MOVE);
				if (r <= 0) { s->err = r ? errno : EPIPE; break; }
				left -= r;
			}
			off += k;
			continue;
		} else {
			r = write(s->fd, buf, k);
		}
		if (r < 0) {
			s->err = errno;
			break;
		}
		/* A short write resends from the first unsent byte. */
		off += r;
	}
	if (pp[0] >= 0) { close(pp[0]); close(pp[1]); }
	free(buf);
	return NULL;
}

/* Reads n bytes (splice_in: through a pipe with splice) and checks the pattern. */
static int recv_check(int fd, size_t n, uint8_t seed, int splice_in, char *why, size_t whylen)
{
	size_t got = 0, cap = 256 * 1024;
	uint8_t *buf = malloc(cap);
	int pp[2] = { -1, -1 }, ok = 1;

	if (splice_in && pipe(pp))
		return snprintf(why, whylen, "pipe"), 0;
	/* tcp_splice_read blocks by the socket's O_NONBLOCK, not SPLICE_F_NONBLOCK. */
	if (splice_in)
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	while (got < n) {
		ssize_t r;

		if (!wait_fd(fd, POLLIN)) {
			snprintf(why, whylen, "no data for %d ms after %zu of %zu bytes", WAIT_MS, got, n);
			ok = 0;
			break;
		}
		if (splice_in) {
			r = splice(fd, NULL, pp[1], NULL, cap > 65536 ? 65536 : cap, SPLICE_F_NONBLOCK);
			if (r > 0 && read(pp[0], buf, r) != r)
				r = -1;
		} else {
			r = recv(fd, buf, cap, MSG_DONTWAIT);
		}
		if (r < 0 && errno == EAGAIN) {
			if (splice_in) {
				/* poll said readable, splice found nothing: the bytes sit where splice cannot see them. */
				snprintf(why, whylen, "readable but splice() found no data after %zu of %zu bytes", got, n);
				ok = 0;
				break;
			}
			continue;
		}
		if (r <= 0) {
			snprintf(why, whylen, "read returned %zd (%s) after %zu of %zu bytes", r, strerror(errno), got, n);
			ok = 0;
			break;
		}
		for (ssize_t j = 0; j < r; j++) {
			if (buf[j] != pat(got + j, seed)) {
				snprintf(why, whylen, "byte %zu differs (lost or reordered bytes)", got + j);
				ok = 0;
				goto out;
			}
		}
		got += r;
	}
out:
	if (pp[0] >= 0) { close(pp[0]); close(pp[1]); }
	free(buf);
	return ok;
}

struct reader { int fd; size_t n; uint8_t seed; int splice_in; char *why; int ok; };

static void *recv_thread(void *x)
{
	struct reader *r = x;

	r->ok = recv_check(r->fd, r->n, r->seed, r->splice_in, r->why, 160);
	return NULL;
}

/* n bytes each way at once, both ends sending by `how`. */
static void check_transfer(const char *name, size_t n, enum how how, int splice_in)
{
	struct pair p = make_pair(3);
	struct sender ab = { p.a, n, 1, how, 0 }, ba = { p.b, n, 2, how, 0 };
	pthread_t t1, t2;
	char why[160] = "", w2[160] = "";
	int ok;

	pthread_create(&t1, NULL, send_thread, &ab);
	pthread_create(&t2, NULL, send_thread, &ba);
	/* Read b's side on a helper: both directions drain concurrently. */
	struct reader rb = { p.b, n, 1, splice_in, why, 0 };
	pthread_t t3;
	pthread_create(&t3, NULL, recv_thread, &rb);
	ok = recv_check(p.a, n, 2, splice_in, w2, sizeof(w2));
	pthread_join(t3, NULL);
	/* Unblock senders that can no longer make progress (a failed read). */
	if (!ok || !rb.ok)
		shutdown(p.a, SHUT_RDWR), shutdown(p.b, SHUT_RDWR);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	/* A sender's error after a failed read is our own shutdown: report the read. */
	if ((ab.err || ba.err) && ok && rb.ok)
		snprintf(why, sizeof(why), "send failed: %s", strerror(ab.err ? ab.err : ba.err));
	report(name, ok && rb.ok && !ab.err && !ba.err, why[0] ? why : w2);
	close_pair(p);
}

/* nginx-style reader: EPOLLET, read exactly FIONREAD bytes each edge.
 * which: the enrolled ends (3 = both: redirected bytes; 2 = receiver only:
 * native bytes into a sockmap socket, the 6.6.128/6.12.75/6.18.14 window). */
static void check_fionread(const char *name, int which, size_t n)
{
	struct pair p = make_pair(which);
	struct sender s = { p.a, n, 3, W_WRITE, 0 };
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET }, out;
	int ep = epoll_create1(0), avail = 0, ok = 1;
	uint8_t *buf = malloc(n);
	size_t got = 0;
	pthread_t t;
	char why[160] = "";

	epoll_ctl(ep, EPOLL_CTL_ADD, p.b, &ev);
	pthread_create(&t, NULL, send_thread, &s);
	while (got < n) {
		if (avail == 0 && epoll_wait(ep, &out, 1, WAIT_MS) != 1) {
			snprintf(why, sizeof(why), "no edge for %d ms after %zu of %zu bytes", WAIT_MS, got, n);
			ok = 0;
			break;
		}
		if (ioctl(p.b, FIONREAD, &avail) || avail <= 0) {
			int peek = recv(p.b, buf, 1, MSG_PEEK | MSG_DONTWAIT);
			if (peek > 0) {
				snprintf(why, sizeof(why), "FIONREAD %d while data is readable (after %zu of %zu bytes)", avail, got, n);
				ok = 0;
				break;
			}
			avail = 0;
			continue;
		}
		ssize_t r = recv(p.b, buf + got, avail, MSG_DONTWAIT);
		if (r != avail) {
			snprintf(why, sizeof(why), "FIONREAD said %d, read got %zd", avail, r);
			ok = 0;
			break;
		}
		got += r;
		/* Edge-triggered: drain what arrived meanwhile before waiting again. */
		if (ioctl(p.b, FIONREAD, &avail))
			avail = 0;
	}
	for (size_t j = 0; ok && j < got; j++)
		if (buf[j] != pat(j, 3)) {
			snprintf(why, sizeof(why), "byte %zu differs", j);
			ok = 0;
		}
	if (!ok)
		shutdown(p.b, SHUT_RDWR);
	pthread_join(t, NULL);
	report(name, ok, why);
	free(buf);
	close(ep);
	close_pair(p);
}

/* Request/response cycles, EPOLLET on both ends: every message must raise an edge. */
static void check_epoll_edges(void)
{
	struct pair p = make_pair(3);
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET }, out;
	int ea = epoll_create1(0), eb = epoll_create1(0), ok = 1;
	char msg[100], rbuf[4096], why[160] = "";

	memset(msg, 'x', sizeof(msg));
	ev.data.fd = p.a;
	epoll_ctl(ea, EPOLL_CTL_ADD, p.a, &ev);
	ev.data.fd = p.b;
	epoll_ctl(eb, EPOLL_CTL_ADD, p.b, &ev);
	for (int i = 0; i < cycles && ok; i++) {
		int side;
		for (side = 0; side < 2 && ok; side++) {
			int from = side ? p.b : p.a, to = side ? p.a : p.b, ep = side ? ea : eb;
			size_t got = 0;
			if (write(from, msg, sizeof(msg)) != sizeof(msg)) {
				snprintf(why, sizeof(why), "write: %s", strerror(errno));
				ok = 0;
				break;
			}
			while (got < sizeof(msg)) {
				if (epoll_wait(ep, &out, 1, WAIT_MS) != 1) {
					snprintf(why, sizeof(why), "cycle %d: no EPOLLET edge for %d ms", i, WAIT_MS);
					ok = 0;
					break;
				}
				ssize_t r;
				while ((r = recv(to, rbuf, sizeof(rbuf), MSG_DONTWAIT)) > 0)
					got += r;
			}
		}
	}
	char name[64];
	snprintf(name, sizeof(name), "epoll-edge-%d", cycles);
	report(name, ok, why);
	close(ea);
	close(eb);
	close_pair(p);
}

static void check_peek(void)
{
	struct pair p = make_pair(3);
	char buf[32] = "", why[160] = "";
	int ok = 1;

	if (write(p.a, "hello world", 11) != 11 || !wait_fd(p.b, POLLIN))
		ok = 0, snprintf(why, sizeof(why), "no data");
	if (ok && (recv(p.b, buf, 5, MSG_PEEK) != 5 || memcmp(buf, "hello", 5)))
		ok = 0, snprintf(why, sizeof(why), "MSG_PEEK did not return the first 5 bytes");
	if (ok && (recv(p.b, buf, 11, MSG_WAITALL) != 11 || memcmp(buf, "hello world", 11)))
		ok = 0, snprintf(why, sizeof(why), "read after MSG_PEEK did not return all 11 bytes");
	report("msg-peek", ok, why);
	close_pair(p);
}

/* a sends and shuts down writing; b reads all then EOF, answers, closes; a reads the answer then EOF. */
static void check_half_close(void)
{
	struct pair p = make_pair(3);
	char buf[64], why[160] = "";
	int ok = 1;
	ssize_t r;

	if (write(p.a, "request", 7) != 7 || shutdown(p.a, SHUT_WR))
		ok = 0, snprintf(why, sizeof(why), "write/shutdown");
	if (ok && (!wait_fd(p.b, POLLIN) || recv(p.b, buf, 7, MSG_WAITALL) != 7 || memcmp(buf, "request", 7)))
		ok = 0, snprintf(why, sizeof(why), "data before FIN not delivered");
	if (ok && (!wait_fd(p.b, POLLIN) || (r = recv(p.b, buf, sizeof(buf), 0)) != 0))
		ok = 0, snprintf(why, sizeof(why), "no EOF after the peer's SHUT_WR");
	if (ok && (write(p.b, "reply", 5) != 5))
		ok = 0, snprintf(why, sizeof(why), "write after peer's half-close: %s", strerror(errno));
	close(p.b);
	if (ok && (!wait_fd(p.a, POLLIN) || recv(p.a, buf, 5, MSG_WAITALL) != 5 || memcmp(buf, "reply", 5)))
		ok = 0, snprintf(why, sizeof(why), "reply after half-close not delivered");
	if (ok && (!wait_fd(p.a, POLLIN) || recv(p.a, buf, sizeof(buf), 0) != 0))
		ok = 0, snprintf(why, sizeof(why), "no EOF after the peer's close");
	report("half-close", ok, why);
	close(p.a);
}

/* Writes n bytes of pattern seed 5 starting at stream offset off, in 7-byte writes (pipelined small sends). */
static int small_writes(int fd, size_t off, size_t n)
{
	uint8_t b[7];

	for (size_t i = 0; i < n; i += sizeof(b)) {
		size_t k = n - i < sizeof(b) ? n - i : sizeof(b), done = 0;
		for (size_t j = 0; j < k; j++)
			b[j] = pat(off + i + j, 5);
		while (done < k) {
			ssize_t r = write(fd, b + done, k - done);
			if (r < 0 && errno == EAGAIN && wait_fd(fd, POLLOUT))
				continue;
			if (r <= 0)
				return errno ? errno : EPIPE;
			done += r;
		}
	}
	return 0;
}

/*
 * Send before accept, then pipelined small writes: the client (enrolled)
 * writes before its peer is accepted and enrolled, so those bytes miss and
 * go through TCP; it goes on writing once the peer is enrolled. The reader
 * serves the redirect queue before the TCP queue, so without the order guard
 * (a socket that sent natively once stays native) later redirected bytes
 * would overtake the early ones.
 */
static void check_send_before_accept(void)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char why[160] = "";
	size_t early = 32 * 1024, late = 256 * 1024;
	struct pair p;
	int l, one = 1, err;

	l = loopback_listener(&ss, &len);
	p.a = socket(ss.ss_family, SOCK_STREAM, 0);
	if (p.a < 0 || connect(p.a, (void *)&ss, len))
		die("connect");
	setsockopt(p.a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	enrol_sock(p.a);
	err = small_writes(p.a, 0, early); /* the peer is not accepted yet */
	p.b = accept(l, NULL, NULL);
	if (p.b < 0)
		die("accept");
	close(l);
	enrol_sock(p.b);
	struct reader rd = { p.b, early + late, 5, 0, why, 0 };
	pthread_t t;
	pthread_create(&t, NULL, recv_thread, &rd);
	if (!err)
		err = small_writes(p.a, early, late);
	if (err)
		shutdown(p.b, SHUT_RDWR);
	pthread_join(t, NULL);
	if (err && rd.ok)
		snprintf(why, sizeof(why), "write: %s", strerror(err));
	report("send-before-accept-order", rd.ok && !err, why);
	close_pair(p);
}

/* Bytes a non-blocking writer gets into fd while its peer reads nothing:
 * writes until fd is not writable for STALL_MS, or cap bytes went in. */
#define STALL_MS 300
static size_t push_until_stall(int fd, size_t cap, int *err)
{
	size_t chunk = 256 * 1024, off = 0;
	uint8_t *buf = malloc(chunk);
	struct pollfd pfd = { .fd = fd, .events = POLLOUT };

	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	*err = 0;
	while (off < cap) {
		size_t k = cap - off < chunk ? cap - off : chunk;
		ssize_t r;

		for (size_t j = 0; j < k; j++)
			buf[j] = pat(off + j, 4);
		r = send(fd, buf, k, MSG_DONTWAIT);
		if (r > 0) {
			off += r;
			continue;
		}
		if (r < 0 && errno != EAGAIN) {
			*err = errno; /* e.g. ENOMEM: the global TCP memory limit, not the socket's */
			break;
		}
		if (poll(&pfd, 1, STALL_MS) != 1)
			break; /* stalled: the peer's buffers are full */
	}
	free(buf);
	return off;
}

/*
 * Slow reader: a sender into a socket whose reader is paused must stall
 * within what plain TCP's buffers hold (the sender's send buffer plus the
 * reader's receive buffer), then the reader gets every byte in order. The
 * bound comes from a plain TCP pair measured the same way in the same run:
 * accepted <= 2 x plain + 4 MiB. Redirected bytes are charged to the reader
 * only against the global TCP memory limits, not its sk_rcvbuf (tcp_bpf.c
 * bpf_tcp_ingress), so on such a kernel the sender never stalls.
 */
static void check_slow_reader(void)
{
	struct pair ctl = make_pair(0), p;
	size_t tcp, bound, cap, got;
	char why[160] = "", rwhy[160] = "";
	int err, ok;

	tcp = push_until_stall(ctl.a, (size_t)256 << 20, &err);
	close_pair(ctl);
	bound = 2 * tcp + ((size_t)4 << 20);
	cap = 2 * bound; /* what an unbounded queue gets before we stop feeding it */
	p = make_pair(3);
	got = push_until_stall(p.a, cap, &err);
	ok = got <= bound;
	if (!ok)
		snprintf(why, sizeof(why), "accepted=%zu tcp=%zu bound=%zu: the sender did not stall while nobody read%s",
			 got, tcp, bound, got >= cap ? " (stopped feeding at 2x the bound)" : "");
	else if (err)
		ok = 0, snprintf(why, sizeof(why), "accepted=%zu tcp=%zu bound=%zu: send failed: %s", got, tcp, bound, strerror(err));
	else
		snprintf(why, sizeof(why), "accepted=%zu tcp=%zu bound=%zu", got, tcp, bound);
	/* Then the paused reader reads: every accepted byte, in order. */
	if (!recv_check(p.b, got, 4, 0, rwhy, sizeof(rwhy))) {
		ok = 0;
		snprintf(why + strlen(why), sizeof(why) - strlen(why), "; drain: %s", rwhy);
	}
	report("slow-reader-bound", ok, why);
	close_pair(p);
}

static void *echo_thread(void *x)
{
	int fd = *(int *)x;
	char b[64];
	ssize_t r;

	while ((r = read(fd, b, sizeof(b))) > 0)
		if (write(fd, b, r) != r)
			break;
	return NULL;
}

/* -R n: request/response latency of one pair, 64-byte messages, an echo
 * thread on the other end (the leg micro-benchmark); detail = ns per round trip. */
static void rr_latency(void)
{
	struct pair p = make_pair(3);
	struct timespec t0, t1;
	char b[64], detail[64];
	pthread_t t;

	memset(b, 'r', sizeof(b));
	pthread_create(&t, NULL, echo_thread, &p.b);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < rr_iters; i++) {
		size_t got = 0;
		if (write(p.a, b, sizeof(b)) != sizeof(b))
			break;
		while (got < sizeof(b)) {
			ssize_t r = read(p.a, b, sizeof(b) - got);
			if (r <= 0)
				break;
			got += r;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	shutdown(p.a, SHUT_WR);
	pthread_join(t, NULL);
	snprintf(detail, sizeof(detail), "%.0f", ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / rr_iters);
	report("rr-latency-ns", 1, detail);
	close_pair(p);
}

static void lo_up(void)
{
	struct ifreq ifr;
	int s = socket(AF_INET, SOCK_DGRAM, 0);

	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "lo");
	if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr))
		die("lo flags");
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr))
		die("lo up");
	close(s);
}

int main(int argc, char **argv)
{
	static const size_t sizes[] = { 1, 1000, 65543, 1 << 20, 4 << 20, 16 << 20 };
	char name[64];
	int opt;

	if (argc < 3)
		return fprintf(stderr, "usage: %s <sock_pairs fd> <origin_by_sock fd> [-6] [-n] [-c cycles] [-m max_mb] [-o prefix]\n", argv[0]), 2;
	pairs_fd = atoi(argv[1]);
	origin_fd = atoi(argv[2]);
	optind = 3;
	while ((opt = getopt(argc, argv, "6nc:m:R:o:")) != -1) {
		if (opt == '6') v6 = 1;
		else if (opt == 'n') enrol = 0;
		else if (opt == 'c') cycles = atoi(optarg);
		else if (opt == 'm') max_mb = atoi(optarg);
		else if (opt == 'R') rr_iters = atoi(optarg);
		else if (opt == 'o') only = optarg;
	}
	signal(SIGPIPE, SIG_IGN);
	alarm(120); /* a hung kernel path ends the gate, never the agent */
	if (unshare(CLONE_NEWNET))
		die("unshare");
	lo_up();
	if (rr_iters > 0) {
		rr_latency();
		return 0;
	}
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		if (sizes[i] > (size_t)max_mb << 20)
			continue;
		snprintf(name, sizeof(name), "write-%zu", sizes[i]);
		if (want(name))
			check_transfer(name, sizes[i], W_WRITE, 0);
	}
	if (want("writev-32iov-4MiB"))
		check_transfer("writev-32iov-4MiB", 4 << 20, W_WRITEV, 0);
	if (want("sendfile-4MiB"))
		check_transfer("sendfile-4MiB", 4 << 20, W_SENDFILE, 0);
	if (want("splice-in-4MiB"))
		check_transfer("splice-in-4MiB", 4 << 20, W_SPLICE, 0);
	if (want("splice-out-1MiB"))
		check_transfer("splice-out-1MiB", 1 << 20, W_WRITE, 1);
	if (want("fionread-redirected-2MiB"))
		check_fionread("fionread-redirected-2MiB", 3, 2 << 20);
	if (want("fionread-native-2MiB"))
		check_fionread("fionread-native-2MiB", 2, 2 << 20);
	if (want("epoll-edge-"))
		check_epoll_edges();
	if (want("msg-peek"))
		check_peek();
	if (want("half-close"))
		check_half_close();
	if (want("send-before-accept-order"))
		check_send_before_accept();
	if (want("slow-reader-bound"))
		check_slow_reader();
	return failed ? 1 : 0;
}
