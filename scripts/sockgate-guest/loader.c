// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* scripts/sockgate-guest/run.sh: the S4 gate in a guest. Loads only mwsc_sk_msg of
 * sidecar.bpf.o (nothing pinned), attaches it to its sock_pairs, switches S4 on,
 * runs mw-sockcheck with the maps as fds 3 and 4, then prints the messages redirected. */
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	struct bpf_program *p;
	if (!obj) { printf("{\"check\":\"load\",\"ok\":false,\"detail\":\"open\"}\n"); return 2; }
	struct bpf_map *m;
	bpf_object__for_each_map(m, obj)
		bpf_map__set_pin_path(m, NULL); /* private: nothing pinned */
	bpf_object__for_each_program(p, obj)
		bpf_program__set_autoload(p, strcmp(bpf_program__name(p), "mwsc_sk_msg") == 0);
	int err = bpf_object__load(obj);
	if (err) { printf("{\"check\":\"load\",\"ok\":false,\"detail\":\"load %d\"}\n", err); return 2; }
	int pairs = bpf_object__find_map_fd_by_name(obj, "sock_pairs");
	int origin = bpf_object__find_map_fd_by_name(obj, "origin_by_sock");
	int cfg = bpf_object__find_map_fd_by_name(obj, "sockmap_config");
	int stats = bpf_object__find_map_fd_by_name(obj, "stats");
	int prog = bpf_program__fd(bpf_object__find_program_by_name(obj, "mwsc_sk_msg"));
	if (bpf_prog_attach(prog, pairs, BPF_SK_MSG_VERDICT, 0)) { perror("attach"); return 2; }
	unsigned zero = 0, on = 1;
	if (bpf_map_update_elem(cfg, &zero, &on, 0)) { perror("cfg"); return 2; }
	pid_t pid = fork();
	if (pid == 0) {
		dup2(pairs, 3); dup2(origin, 4);
		char *args[16] = { argv[2], "3", "4" }; int n = 3;
		for (int i = 3; i < argc && n < 15; i++) args[n++] = argv[i];
		args[n] = NULL;
		execv(argv[2], args);
		perror("exec"); _exit(2);
	}
	int st; waitpid(pid, &st, 0);
	int ncpu = libbpf_num_possible_cpus();
	unsigned long long v[256] = {0}, sum = 0; unsigned idx = 54; /* MW_STAT_SOCKMAP_MSGS */
	if (!bpf_map_lookup_elem(stats, &idx, v)) for (int i = 0; i < ncpu; i++) sum += v[i];
	printf("{\"check\":\"redirected\",\"ok\":true,\"detail\":\"%llu\"}\n", sum);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 3;
}
