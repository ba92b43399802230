# The two README commands: `make serve` (run the gateway on its embedded default) and `make test`
# (lint, type-check and run the whole suite). Both create .venv from pyproject.toml on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test lint typecheck pytest chromium bench bench-workloads clean

# Two stamps: serving needs only the runtime dependencies (a first `make serve` is quick); the dev extras
# (pytest, Playwright, moto, mypy, ...) are installed by the targets that need them, on top.
# A current pip first: the one a new venv bundles spends most of a minute of CPU matching index links;
# --no-compile: Python compiles what the gateway imports on first use, not every module of every package.
$(VENV)/.installed-serve: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-serve
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

# The stamp earlier Makefiles made (everything installed); kept so tools waiting for it still work.
$(VENV)/.installed: $(VENV)/.installed-dev
	touch $@

serve: $(VENV)/.installed-serve
	$(BIN)/aistats serve

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	cd src && ../$(BIN)/lint-imports ../pyproject.toml

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

# The dashboard's browser tests (tests/ui) drive Debian's chromium through Playwright (never a downloaded
# browser). Install it when it is missing and apt-get is usable (root); `apt-get update` only when the
# first try fails (a fresh machine has no package lists). Without it those tests skip and say why.
CHROMIUM ?= /usr/bin/chromium
chromium:
	@if [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "chromium: $(CHROMIUM) is missing and apt-get is not usable here (needs root); browser tests will skip"; \
	  exit 0; fi; \
	echo "chromium: installing Debian's chromium for the browser tests"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y -qq chromium >/dev/null \
	  || { apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium: apt-get could not install chromium; browser tests will skip"

# pytest exits 5 when it collects no test; that is not a failure of the suite.
pytest: $(VENV)/.installed-dev chromium
	$(BIN)/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

test: lint typecheck pytest

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/batch_throughput.py --lines 20000 --also-mock

# Workloads W1-W4 of the benchmark issue at 10 % size (gateway and baselines on the mock upstream);
# full size: $(BIN)/python bench/workloads.py --workload all
bench-workloads: $(VENV)/.installed-dev
	$(BIN)/python bench/workloads.py --workload all --scale 0.1

clean:
	rm -rf $(VENV) .venv312* .mypy_cache .ruff_cache .pytest_cache
