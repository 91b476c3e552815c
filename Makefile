# pixelrl — two commands on a fresh machine:
#   make train   create .venv, install pixelrl, train the default agent (A3C on Pong)
#   make test    create .venv with the dev extras, run the test suite
#
# Torch is installed first, pinned, so that pip takes the local CPU wheel instead of a
# multi-GB CUDA build; pyproject.toml keeps a loose range so an existing torch is kept.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
EXTRAS ?= box2d,sweep
DEV_EXTRAS ?= dev,box2d,dmc,sweep
ARGS ?=
# pytest processes for `make test` (pytest-xdist; 0: one). Two, on 2 cores: 491 s against 907 s
# for one, back to back (2026-12-06, BENCHMARKS.md). Two had been slower (20.0 min against 15.5)
# while idle OpenMP threads still spun; since the suite and the CLI let them sleep
# (OMP_WAIT_POLICY=PASSIVE) and DDPG's learning tests run on one thread, they no longer do.
TEST_PROCS ?= 2
PYTEST := $(PY) -m pytest -q $(if $(filter-out 0,$(TEST_PROCS)),-n $(TEST_PROCS) --dist worksteal)

.PHONY: help install install-dev browser train test test-fast lint bench plot clean

help:
	@echo "make train   - install into $(VENV) and train the default agent (python -m pixelrl $(ARGS))"
	@echo "make test    - install with dev extras and run the test suite"
	@echo "make bench   - throughput benchmarks (python -m pixelrl.bench)"
	@echo "make lint    - ruff"
	@echo "make clean   - remove $(VENV), runs/, multirun/"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet "torch==$(TORCH_VERSION)" || $(PIP) install --quiet "torch>=2.4"
	$(PIP) install --quiet -e ".[$(EXTRAS)]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet "torch==$(TORCH_VERSION)" || $(PIP) install --quiet "torch>=2.4"
	$(PIP) install --quiet -e ".[$(DEV_EXTRAS)]"
	$(MAKE) --no-print-directory browser
	touch $(VENV)/.installed $@

# The report page's test drives a real browser: Debian's chromium and its driver (the test
# skips, saying why, where neither is present and this cannot install them: not root, no apt).
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
			echo "installing chromium and chromium-driver (apt-get) for the report page's test"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				chromium chromium-driver >/dev/null) || echo "chromium: apt-get failed"; \
		else echo "chromium: not installed (the browser test will skip)"; fi; \
	fi

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

train: install
	$(PY) -m pixelrl $(ARGS)

# the 20 slowest cases are listed at the end: where the suite's time goes, on every run
test: install-dev
	$(PYTEST) --durations=20 $(ARGS)

test-fast: install-dev
	$(PYTEST) -m "not slow" $(ARGS)

lint: install-dev
	$(PY) -m ruff check pixelrl tests
	$(PY) -m ruff format --check pixelrl tests

bench: install
	$(PY) -m pixelrl.bench $(ARGS)

clean:
	rm -rf $(VENV) runs multirun outputs .pytest_cache
