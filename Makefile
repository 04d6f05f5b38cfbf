# `make demo` and `make test` bootstrap everything from a fresh machine with Python >= 3.11.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
JOBS ?= 1000
STAMP := $(VENV)/.ciro-installed
# torch's CPU build lies on this machine's disk (uv does not read pip's config, so it is named here).
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: venv demo test lint bench lock clean contracts browser

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Ciro needs Python >= 3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	$(BIN)/uv pip install -q --python $(BIN)/python $(FIND_LINKS) -r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $@

venv: $(STAMP)

# The main job on the embedded default: local Ray head + gateway, 1,000 jobs checked against onnxruntime.
demo: venv
	$(BIN)/ciro demo --jobs $(JOBS); status=$$?; $(BIN)/ciro down >/dev/null; exit $$status

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

# Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser itself).
CHROMIUM ?= /usr/lib/chromium/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@test -x $(CHROMIUM) || { echo "no Chromium at $(CHROMIUM): install Debian's chromium package"; exit 1; }

test: venv lint browser
	$(BIN)/pytest

bench: venv
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/cold_start.py

# Compile the Cairo contracts into contracts/compiled (Sierra, CASM, manifest of class hashes).
contracts: venv
	$(BIN)/python contracts/build.py

# Re-pin requirements.lock after changing dependencies in pyproject.toml.
lock: venv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 $(FIND_LINKS) -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
