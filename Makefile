# SPDX-License-Identifier: Apache-2.0
# The two commands of the README: `make demo` (main job) and `make test` (whole suite).
NODE        := .tools/node/bin/node --disable-warning=ExperimentalWarning
BPF_SRCS    := $(wildcard bpf/*/*.bpf.c)
BPF_OBJS    := $(addprefix build/bpf/,$(notdir $(BPF_SRCS:.c=.o)))
BPF_HEADERS := $(wildcard bpf/include/*.h)
BPF_CFLAGS  := -O2 -g -target bpf -mcpu=v3 -Wall -Wextra -Werror -Wno-unused-parameter \
               -Ibpf/include -I/usr/include/x86_64-linux-gnu
TESTS       ?= test/unit/*.test.ts test/kernel/*.test.ts

vpath %.bpf.c $(sort $(dir $(BPF_SRCS)))

.PHONY: setup bpf typecheck test unit conformance conformance-all demo doctor clean
setup:
	@scripts/setup.sh

bpf: $(BPF_OBJS)

build/bpf/%.bpf.o: %.bpf.c $(BPF_HEADERS)
	@mkdir -p $(@D)
	clang $(BPF_CFLAGS) -c $< -o $@

typecheck:
	@node_modules/.bin/tsc --noEmit -p .

# Whole suite: setup (idempotent), eBPF build, type check, unit + kernel tests,
# then the conformance suite against every interception mode.
test: setup typecheck
	$(NODE) --test --test-reporter=spec $(TESTS)
	$(MAKE) -s conformance-all

unit: setup
	$(NODE) --test test/unit/*.test.ts

# One mode (MESHWARP_MODE, default ebpf), or every mode with conformance-all.
conformance: setup
	$(NODE) --test --test-reporter=spec --test-concurrency=1 test/conformance/*.test.ts

conformance-all:
	MESHWARP_MODE=ebpf $(NODE) --test --test-reporter=spec --test-concurrency=1 test/conformance/*.test.ts
	MESHWARP_MODE=iptables $(NODE) --test --test-reporter=spec --test-concurrency=1 test/conformance/*.test.ts

demo: setup
	bin/meshwarp demo

doctor: setup
	bin/meshwarp doctor

clean:
	rm -rf build
