# qcc — the two commands a newcomer needs: `make demo` and `make check`.
# Both run scripts/setup first, so a fresh Debian 12 machine needs nothing else.

BUILD    ?= build
JOBS     ?= $(shell nproc)
LLVM_DIR ?= /usr/lib/llvm-22
SECONDS  ?= 60

.PHONY: all setup configure build demo demo-tiny check fuzz clean docs llama-cpp

all: build

setup:
	@scripts/setup

$(BUILD)/build.ninja: | setup
	cmake -S . -B $(BUILD) -G Ninja \
	  -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
	  -DMLIR_DIR=$(LLVM_DIR)/lib/cmake/mlir -DLLVM_DIR=$(LLVM_DIR)/lib/cmake/llvm \
	  -DPython3_EXECUTABLE=$(CURDIR)/.venv/bin/python

configure: $(BUILD)/build.ninja

build: setup configure
	cmake --build $(BUILD) -j $(JOBS)

# The main job on the real model (Gemma 3 270M Q4_K_M from PyPI): base
# perplexity and sample, LoRA fine-tuning, perplexity and sample after.
demo: build
	@scripts/demo

# The first wave's demo: a small synthetic byte-level llama trained through
# its q8_0 blocks.
demo-tiny: build
	@scripts/demo-tiny

# llama.cpp's tools (the oracle of the interop tests), built once into the
# cache (~10 min on 2 cores the first time; `make clean` keeps them).
llama-cpp: setup
	@scripts/build-llama-cpp

check: build llama-cpp
	@scripts/check $(BUILD)

fuzz: setup configure
	cmake --build $(BUILD) --target qcc-gguf-fuzz -j $(JOBS)
	@scripts/fuzz $(BUILD) $(SECONDS)

docs: build
	cmake --build $(BUILD) --target qcc-docs

clean:
	rm -rf $(BUILD)
