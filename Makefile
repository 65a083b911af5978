# Thin wrapper over CMake for the README's two commands.
BUILD ?= build
SAN_BUILD ?= build-asan
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps build demo test test-asan fuzz clean

all: build

deps:
	@scripts/setup-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS) >/dev/null
	@ninja -C $(BUILD) -j $(JOBS)

demo: build
	@scripts/demo.sh $(BUILD)

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	@$(MAKE) --no-print-directory test-asan

# The whole suite once more under AddressSanitizer + UndefinedBehaviorSanitizer (CPU code only). The
# server's SDK, load and restart tests run in the normal pass only (minutes each under ASan); its
# fuzz test, which is what the sanitizers are for, runs in both. So do the two longest forward-pass
# tests (chunk-size sweep: 233 s under ASan, fixture logits: 130 s; they set the ASan pass's wall time
# on a many-core CI machine): the same forward code runs under ASan in the other EngineCpu tests.
# -O1 with line tables only: half the compile time of -O2 -g, and sanitizer reports still name file
# and line.
test-asan: deps
	@cmake -S . -B $(SAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
	  -DFLASHSTAR_SANITIZE=ON \
	  -DFLASHSTAR_ENABLE_CUDA=OFF >/dev/null
	@ninja -C $(SAN_BUILD) -j $(JOBS)
	@cd $(SAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) \
	  -E '^(py_test_server_(sdk|load|disk_cache)|EngineCpu.ChunkSizesAndDecodeGiveIdenticalLogits|py_test_fixtures_logits)$$'

fuzz: deps
	@CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DFLASHSTAR_FUZZ=ON -DFLASHSTAR_ENABLE_CUDA=OFF \
	  -DFLASHSTAR_TESTS=OFF >/dev/null
	@ninja -C build-fuzz fuzz_gguf
	@mkdir -p build-fuzz/corpus && build-fuzz/fuzz_gguf build-fuzz/corpus -max_total_time=$${FUZZ_SECONDS:-60}

clean:
	rm -rf $(BUILD) $(SAN_BUILD) build-fuzz
