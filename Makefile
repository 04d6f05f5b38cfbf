# `make demo` and `make test` bootstrap everything from a fresh machine with Python >= 3.11 and access to PyPI.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
UV_VERSION := 0.13.9
JOBS ?= 1000
# Two install sets, one stamp each. The demo's: the core + `demo` + `chain` extras (requirements-demo.lock). The
# development set: every extra and the test tools (requirements.lock), a superset pinned to the same versions.
# Installing the development set stamps the demo set too: `make test` then `make demo` installs nothing more,
# and `make demo` then `make test` adds the rest. Both are `uv pip install` (never sync): nothing is removed.
STAMP := $(VENV)/.ciro-installed
DEMO_STAMP := $(VENV)/.ciro-demo-installed
# torch's CPU build lies on this machine's disk (uv does not read pip's config, so it is named here). The lock pins
# `torch==2.13.0` with no local label: this wheel (2.13.0+cpu) satisfies it, and so does PyPI's build elsewhere.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
INSTALL := $(UV) pip install -q --python $(BIN)/python
COMPILE := $(UV) pip compile -q pyproject.toml --python-version 3.11 --custom-compile-command "make lock"

.PHONY: venv demo-venv demo test lint bench lock clean contracts browser

$(UV):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Ciro needs Python >= 3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"

$(STAMP): pyproject.toml requirements.lock | $(UV)
	$(INSTALL) $(FIND_LINKS) -r requirements.lock
	$(INSTALL) --no-deps -e .
	touch $@ $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml requirements-demo.lock | $(UV)
	$(INSTALL) -r requirements-demo.lock
	$(INSTALL) --no-deps -e .
	touch $@

venv: $(STAMP)
demo-venv: $(DEMO_STAMP)

# The main job on the embedded default: local Ray head + gateway, 1,000 jobs checked against onnxruntime, then
# 10 jobs paid on the local devnet. Needs only the demo set.
demo: demo-venv
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

# Re-pin both locks after changing dependencies in pyproject.toml. The development lock first; a local label that a
# --find-links wheel brought in (torch 2.13.0+cpu) is dropped so the lock resolves from PyPI alone. `-P torch`: the
# old pin `torch==2.13.0` as a preference would pick PyPI's CUDA build (and its NVIDIA packages) over the local wheel.
# The demo lock takes the development lock as constraints: a package the two share has the same version in both.
lock: | $(UV)
	$(COMPILE) --extra dev $(FIND_LINKS) -P torch -o requirements.lock
	sed -E 's/^([A-Za-z0-9._-]+==[^+ ]+)\+[A-Za-z0-9.]+$$/\1/' requirements.lock > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock
	$(COMPILE) --extra demo --extra chain -c requirements.lock -o requirements-demo.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
