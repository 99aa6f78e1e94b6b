# SPDX-License-Identifier: Apache-2.0
# The two commands of the README: `make demo` (main job) and `make test` (whole suite).
NODE        := .tools/node/bin/node --disable-warning=ExperimentalWarning
# One eBPF object per directory of bpf/ (bpf/sidecar/ -> build/bpf/sidecar.bpf.o):
# each .bpf.c in it is compiled on its own, then libbpf's static linker
# (bpftool gen object) joins the units, so a driver still loads one object.
BPF_DIRS    := $(sort $(patsubst bpf/%/,%,$(dir $(wildcard bpf/*/*.bpf.c))))
BPF_OBJS    := $(BPF_DIRS:%=build/bpf/%.bpf.o)
BPF_HEADERS := $(wildcard bpf/include/*.h bpf/*/*.h)
BPF_CFLAGS  := -O2 -g -target bpf -mcpu=v3 -Wall -Wextra -Werror -Wno-unused-parameter \
               -Ibpf/include -I/usr/include/x86_64-linux-gnu
TESTS       ?= test/unit/*.test.ts test/kernel/*.test.ts

# The compiled units of object $(1), its maps.bpf.c (which defines the maps and
# globals the other units declare extern) first: libbpf 1.1's linker leaves a
# map it meets as an extern before its definition at offset 0 of the section.
bpf_units_of = $(patsubst bpf/%.bpf.c,build/bpf/units/%.o,$(wildcard bpf/$(1)/*.bpf.c))
bpf_units = $(filter %/maps.o,$(call bpf_units_of,$(1))) $(filter-out %/maps.o,$(call bpf_units_of,$(1)))

.PHONY: setup bpf typecheck test unit conformance conformance-all demo doctor clean k8s-tools kube-test kernel-matrix kernel-matrix-ci
setup:
	@scripts/setup.sh

bpf: $(BPF_OBJS) build/bin/mw-sockcheck

# The S4 behaviour gate's socket exerciser (src/datapath/sidecar/sockgate.ts runs it).
build/bin/mw-sockcheck: src/datapath/sidecar/sockcheck.c
	@mkdir -p $(@D)
	cc -O2 -Wall -Wextra -Werror -pthread -o $@ $<

build/bpf/units/%.o: bpf/%.bpf.c $(BPF_HEADERS)
	@mkdir -p $(@D)
	clang $(BPF_CFLAGS) -c $< -o $@

# Keep the units (make would delete them as intermediates) for incremental builds.
.SECONDARY: $(foreach d,$(BPF_DIRS),$(call bpf_units,$(d)))
.SECONDEXPANSION:
build/bpf/%.bpf.o: $$(call bpf_units,$$*)
	bpftool gen object $@ $^

typecheck:
	@node_modules/.bin/tsc --noEmit -p .

# Whole suite: setup (idempotent), eBPF build, type check, unit + kernel tests,
# then the conformance suite against every interception mode.
test: setup typecheck
	$(NODE) --test --test-reporter=spec $(TESTS)
	$(MAKE) -s kube-test
	$(MAKE) -s conformance-all
	$(MAKE) -s kernel-matrix-ci

# Debian's kernels (5.10, 6.1, 6.12, newest trixie-backports) under QEMU (TCG, no network
# device), the host's root read-only over virtiofs: every kernel test and the capture +
# lifecycle conformance files per kernel, cgroup2 unified and hybrid; TAP and the summary
# table in build/kernel-matrix/ (docs/kernels.md). Kernels cached in /var/cache/meshwarp/kernels.
kernel-matrix: setup
	scripts/kernel-matrix/kmatrix.sh all

# The named subset `make test` (and so CI) runs per kernel: docs/kernels.md says which and why.
kernel-matrix-ci: setup
	KM_PROFILE=ci scripts/kernel-matrix/kmatrix.sh all

# Kubernetes test dependencies (etcd, kube-apiserver, helm, kubeconform) at pinned
# versions, built once into /var/cache/meshwarp/k8s-tools (see README for the first-run cost).
k8s-tools:
	@scripts/k8s-tools.sh >/dev/null

# src/k8s, the chart and the end-to-end test against a real etcd + kube-apiserver.
kube-test: setup k8s-tools
	$(NODE) --test --test-reporter=spec --test-concurrency=1 test/kube/*.test.ts

unit: setup
	$(NODE) --test test/unit/*.test.ts

# One engine (MESHWARP_ENGINE, default ebpf; MESHWARP_TC=legacy for cls_bpf), or all of them with conformance-all.
conformance: setup
	$(NODE) --test --test-reporter=spec --test-concurrency=1 test/conformance/*.test.ts

# The eBPF engine runs its tc scenarios (lifecycle, capture) again with legacy cls_bpf:
# what the agent uses by itself on kernels without tcx (< 6.6).
conformance-all:
	MESHWARP_ENGINE=ebpf $(NODE) --test --test-reporter=spec --test-concurrency=1 test/conformance/*.test.ts
	MESHWARP_ENGINE=ebpf MESHWARP_TC=legacy $(NODE) --test --test-reporter=spec --test-concurrency=1 test/conformance/lifecycle.test.ts test/conformance/capture.test.ts
	MESHWARP_ENGINE=iptables $(NODE) --test --test-reporter=spec --test-concurrency=1 test/conformance/*.test.ts
	MESHWARP_DATAPLANE=ambient MESHWARP_ENGINE=ebpf $(NODE) --test --test-reporter=spec --test-concurrency=1 test/conformance/ambient.test.ts
	MESHWARP_DATAPLANE=ambient MESHWARP_ENGINE=ebpf MESHWARP_TC=legacy $(NODE) --test --test-reporter=spec --test-concurrency=1 test/conformance/ambient.test.ts
	MESHWARP_DATAPLANE=ambient MESHWARP_ENGINE=iptables $(NODE) --test --test-reporter=spec --test-concurrency=1 test/conformance/ambient.test.ts

demo: setup
	bin/meshwarp demo
	bin/meshwarp demo --dataplane ambient
	bin/meshwarp demo --dataplane ambient --engine iptables

doctor: setup
	bin/meshwarp doctor

clean:
	rm -rf build
