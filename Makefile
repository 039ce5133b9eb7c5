# hamcast — the two commands a newcomer needs: `make demo` and `make test`.
# Each sets up everything it needs first (a .venv with the project and its
# tools), so both work on a fresh machine.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# npm ci writes this file; the dashboard's browser libraries (docs/monitor.md).
WEB_STAMP := web/node_modules/.package-lock.json

# As root, the test suite runs inside a fresh network namespace so that no
# test can send anything out of this machine's real interfaces.
IS_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo yes)
ifeq ($(IS_ROOT),yes)
NETNS := unshare --net -- sh -c 'ip link set lo up && exec "$$0" "$$@"'
else
NETNS :=
endif

.PHONY: setup test lint typecheck pytest demo bench clean

# As root, setup also installs the Debian packages of the network test-bed
# (pimd, smcroute) and Chromium for the dashboard's browser test; the script
# is quick when they are already there.
setup: $(STAMP) $(WEB_STAMP)
ifeq ($(IS_ROOT),yes)
	@scripts/install-system-packages
else
	@echo "*** NOT ROOT: not installing pimd/smcroute; network test-bed tests will be SKIPPED ***"
endif

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# cytoscape.js for `hamcast monitor`, pinned by web/package-lock.json: installed
# here, never fetched by the page at run time (the machines are offline).
$(WEB_STAMP): web/package.json web/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix web --no-audit --no-fund --loglevel=error; \
	else \
		echo "*** no npm: the monitor dashboard cannot draw graphs; its browser test will FAIL ***"; \
	fi

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: setup
	$(VENV)/bin/mypy src

pytest: setup
ifneq ($(IS_ROOT),yes)
	@echo "*** NOT ROOT: tests that need root or network namespaces will be SKIPPED ***"
endif
	$(NETNS) $(PY) -m pytest

test: lint typecheck pytest

demo: setup
	$(PY) -m hamcast.demo

# `hamcast bench` (docs/performance.md): as root two hosts in network
# namespaces it builds and removes itself, else loopback only. Results, JSON
# and PNG plots go to bench-results/.
bench: setup
	$(PY) -m hamcast.cli bench --rounds 3 --out bench-results

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
