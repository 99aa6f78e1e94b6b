// SPDX-License-Identifier: Apache-2.0
// meshwarp-cni: the executable the container runtime runs (a static binary, ~1 ms to start).
// It holds no CNI logic. It forwards the invocation as it came (every CNI_* variable and
// stdin, byte for byte) to the node agent's POST /v1/cni/exec, where the plugin's own code
// (src/cni/plugin.ts: validation, skip rules, failure policy, prevResult pass-through) runs
// in the agent's process, and prints the answer: stderr lines, stdout, exit code.
//
// Whenever the agent cannot run it (no socket, nothing listening, an agent without the
// endpoint, 5xx, a broken or unreadable answer), it execs the full plugin next to it
// (meshwarp-cni-node: Node.js + the same plugin code) with the same environment and stdin,
// which then talks to the agent itself and applies the failure policy exactly as before.
// When the agent accepted the request but gave no answer within the configured timeoutMs,
// the full plugin is told so (MESHWARP_CNI_AGENT_UNAVAILABLE) and applies the policy at
// once, so a hung agent costs timeoutMs, as it always did.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_STDIN (1024 * 1024)
#define MAX_REPLY (4 * 1024 * 1024)
#define DEFAULT_SOCKET "/run/meshwarp/agent.sock"
#define DEFAULT_TIMEOUT_MS 5000
#define FULL_PLUGIN "meshwarp-cni-node"
/* Beyond timeoutMs: the agent's own request to itself is bounded by timeoutMs already. */
#define TIMEOUT_MARGIN_MS 250

extern char **environ;

/* The installer's marker: uninstall removes a meshwarp-cni that carries it even without its state. */
__attribute__((used)) static const char install_mark[] = "# meshwarp-cni: installed by `meshwarp cni install`";

static char *in_buf;
static size_t in_len;
static char **saved_argv;

/* Execs the full plugin with our stdin (a memfd holding what we read) and environment. */
static void __attribute__((noreturn)) fallback(const char *unavailable) {
	char self[PATH_MAX], path[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0) goto fail;
	self[n] = 0;
	char *slash = strrchr(self, '/');
	if (!slash) goto fail;
	*slash = 0;
	if (snprintf(path, sizeof(path), "%s/%s", self, FULL_PLUGIN) >= (int)sizeof(path)) goto fail;
	int fd = memfd_create("meshwarp-cni-stdin", MFD_CLOEXEC);
	if (fd < 0) goto fail;
	size_t off = 0;
	while (off < in_len) {
		ssize_t w = write(fd, in_buf + off, in_len - off);
		if (w < 0 && errno == EINTR) continue;
		if (w <= 0) goto fail;
		off += (size_t)w;
	}
	if (lseek(fd, 0, SEEK_SET) != 0 || dup2(fd, 0) != 0) goto fail;
	if (unavailable) setenv("MESHWARP_CNI_AGENT_UNAVAILABLE", unavailable, 1);
	saved_argv[0] = path;
	execv(path, saved_argv);
fail:
	/* Nothing left that could apply the policy: the runtime retries the sandbox. */
	printf("{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"meshwarp-cni: cannot run %s next to it: %s\"}\n", FULL_PLUGIN, strerror(errno));
	exit(1);
}

/* The string value of the first "key" in the config (plain characters only), else NULL. */
static const char *scan_string(const char *key, char *out, size_t cap) {
	const char *p = memmem(in_buf, in_len, key, strlen(key)), *end = in_buf + in_len;
	if (!p) return NULL;
	p += strlen(key);
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
	if (p >= end || *p++ != ':') return NULL;
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
	if (p >= end || *p++ != '"') return NULL;
	size_t n = 0;
	while (p < end && *p != '"') {
		if (*p == '\\' || n + 1 >= cap) return NULL;
		out[n++] = *p++;
	}
	if (p >= end) return NULL;
	out[n] = 0;
	return out;
}

static long scan_number(const char *key, long dflt) {
	const char *p = memmem(in_buf, in_len, key, strlen(key)), *end = in_buf + in_len;
	if (!p) return dflt;
	p += strlen(key);
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
	if (p >= end || *p++ != ':') return dflt;
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
	long v = 0;
	int digits = 0;
	while (p < end && *p >= '0' && *p <= '9' && digits < 7) v = v * 10 + (*p++ - '0'), digits++;
	return digits && v >= 1 && v <= 60000 ? v : dflt;
}

static long now_ms(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void write_all(int fd, const char *p, size_t n) {
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR) continue;
		if (w <= 0) return;
		p += w, n -= (size_t)w;
	}
}

int main(int argc, char **argv) {
	(void)argc;
	saved_argv = argv;
	in_buf = malloc(MAX_STDIN + 1);
	if (!in_buf) fallback(NULL);
	for (;;) {
		ssize_t r = read(0, in_buf + in_len, MAX_STDIN + 1 - in_len);
		if (r < 0 && errno == EINTR) continue;
		if (r < 0) fallback(NULL); /* the full plugin reports the read error (code 5) */
		if (r == 0) break;
		in_len += (size_t)r;
		if (in_len > MAX_STDIN) fallback(NULL); /* it reports "larger than 1 MiB" (code 6) */
	}

	char sockpath[sizeof(((struct sockaddr_un *)0)->sun_path)];
	/* A first guess at meshwarp.socket; the agent checks it against the parsed config. */
	if (!scan_string("\"socket\"", sockpath, sizeof(sockpath))) strcpy(sockpath, DEFAULT_SOCKET);
	for (char *c = sockpath; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f) fallback(NULL); /* not a header value */
	long timeout_ms = scan_number("\"timeoutMs\"", DEFAULT_TIMEOUT_MS) + TIMEOUT_MARGIN_MS;

	/* Body: NAME=VALUE\0 for each CNI_* variable, an empty entry, then stdin as read. */
	size_t env_len = 0;
	for (char **e = environ; *e; e++)
		if (!strncmp(*e, "CNI_", 4)) env_len += strlen(*e) + 1;
	/* The socket we used goes along: the agent runs the request only if the config names it. */
	char head[512];
	size_t body_len = env_len + 1 + in_len;
	int head_len = snprintf(head, sizeof(head),
		"POST /v1/cni/exec HTTP/1.1\r\nHost: meshwarp-agent\r\nContent-Type: application/octet-stream\r\n"
		"X-Meshwarp-Socket: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", sockpath, body_len);
	char *req = malloc((size_t)head_len + body_len);
	if (!req) fallback(NULL);
	memcpy(req, head, (size_t)head_len);
	size_t off = (size_t)head_len;
	for (char **e = environ; *e; e++)
		if (!strncmp(*e, "CNI_", 4)) {
			size_t l = strlen(*e) + 1;
			memcpy(req + off, *e, l);
			off += l;
		}
	req[off++] = 0;
	memcpy(req + off, in_buf, in_len);
	off += in_len;

	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0) fallback(NULL);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	strcpy(sa.sun_path, sockpath);
	/* A unix connect does not wait for the peer's accept(): blocking is fine here. */
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0) fallback(NULL);
	fcntl(s, F_SETFL, O_NONBLOCK);

	long deadline = now_ms() + timeout_ms;
	size_t sent = 0, got = 0;
	char *rep = malloc(MAX_REPLY);
	if (!rep) fallback(NULL);
	for (;;) {
		long left = deadline - now_ms();
		if (left <= 0) {
			char reason[64];
			snprintf(reason, sizeof(reason), "no answer within %ld ms", timeout_ms - TIMEOUT_MARGIN_MS);
			fallback(reason);
		}
		struct pollfd pfd = { .fd = s, .events = POLLIN | (sent < off ? POLLOUT : 0) };
		int pr = poll(&pfd, 1, (int)left);
		if (pr < 0 && errno == EINTR) continue;
		if (pr < 0) fallback(NULL);
		if (pr == 0) continue;
		if (sent < off && (pfd.revents & POLLOUT)) {
			ssize_t w = send(s, req + sent, off - sent, MSG_NOSIGNAL);
			if (w < 0 && errno != EAGAIN && errno != EINTR) fallback(NULL);
			if (w > 0) sent += (size_t)w;
		}
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
			if (got == MAX_REPLY) fallback(NULL);
			ssize_t r = recv(s, rep + got, MAX_REPLY - got, 0);
			if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
			if (r < 0) fallback(NULL);
			if (r == 0) break;
			got += (size_t)r;
		}
	}
	close(s);

	/* HTTP/1.1 200, then "<exit> <stderr bytes>\n", stderr, stdout (the rest, Content-Length long). */
	if (got < 12 || memcmp(rep, "HTTP/1.1 200", 12)) fallback(NULL);
	char *body = memmem(rep, got, "\r\n\r\n", 4);
	if (!body) fallback(NULL);
	body += 4;
	char *cl = memmem(rep, (size_t)(body - rep), "\r\ncontent-length:", 17);
	if (!cl) cl = memmem(rep, (size_t)(body - rep), "\r\nContent-Length:", 17);
	if (!cl || strtoul(cl + 17, NULL, 10) != (size_t)(rep + got - body)) fallback(NULL);
	char *nl = memchr(body, '\n', (size_t)(rep + got - body));
	if (!nl) fallback(NULL);
	char *endp;
	long code = strtol(body, &endp, 10);
	if (endp == body || *endp != ' ' || (code != 0 && code != 1)) fallback(NULL);
	unsigned long errlen = strtoul(endp + 1, &endp, 10);
	if (endp != nl || errlen > (size_t)(rep + got - nl - 1)) fallback(NULL);
	write_all(2, nl + 1, errlen);
	write_all(1, nl + 1 + errlen, (size_t)(rep + got - nl - 1 - errlen));
	return (int)code;
}
