# Alcove: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
WEB_TOOLS := web/node_modules/.package-lock.json
VENDOR := web/static/vendor/selfie_segmentation/selfie_segmentation.js

.PHONY: run test lint jscheck typecheck unit deps venv vendor clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## Debian packages the tests drive for real (Chromium, coturn, node; emoji font for the safety code; redis-server
## and nginx for several instances behind a load balancer, started by the tests on loopback, never as services).
## Installed only when missing and root.
deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v turnserver >/dev/null || missing="$$missing coturn"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v nginx >/dev/null || missing="$$missing nginx-light"; \
	dpkg-query -W -f='$${Status}' fonts-noto-color-emoji 2>/dev/null | grep -q "ok installed" || missing="$$missing fonts-noto-color-emoji"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "apt-get install:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "not root: cannot install$$missing (tests that need them skip, or fail in CI)"; fi; \
	fi

run: $(STAMP) $(VENDOR)
	$(BIN)/alcove serve --demo

lint: $(STAMP) jscheck
	$(BIN)/ruff check signaling rtc server peer tools tests
	$(BIN)/mypy signaling
	$(BIN)/mypy rtc server peer tools

## The browser client's JavaScript: TypeScript over the JSDoc types (no emit) and ESLint, with the exact
## versions of web/package-lock.json (installed into web/node_modules when the lock file changes).

$(WEB_TOOLS): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

## The background-blur model and its runtime (an npm package, web/package-lock.json) copied into the package data
## (web/static/vendor/, git-ignored): served from Alcove's own origin by `make run` and shipped in the wheel.
$(VENDOR): $(WEB_TOOLS) web/vendor.sh
	cd web && sh vendor.sh

vendor: $(VENDOR)

jscheck: $(WEB_TOOLS)
	cd web && ./node_modules/.bin/tsc -p . && ./node_modules/.bin/eslint .

## Every test. Media tests run in a network namespace with only `lo` (no packet can leave the machine).
## `make test` runs three pytest processes side by side — the browser tests, the other tests, and those marked
## `outage` (they mostly wait on a real clock: Redis down for 30 s) — then, alone, the tests marked `serial` (rates,
## throughput and CPU figures that need the machine to themselves). The side runs' output follows the browser run's.
## With PYTEST_ARGS: one run of exactly what was asked for.
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider
SUITE := if [ -n "$(PYTEST_ARGS)" ]; then exec $(PYTEST) --durations=15 $(PYTEST_ARGS); fi; \
  rest=$$(mktemp); outage=$$(mktemp); \
  $(PYTEST) -m outage >"$$outage" 2>&1 & s1=$$!; \
  $(PYTEST) --durations=10 -m "not browser and not outage and not serial" >"$$rest" 2>&1 & s2=$$!; \
  $(PYTEST) --durations=10 -m "browser and not serial"; a=$$?; wait $$s2; b=$$?; wait $$s1; c=$$?; \
  echo "--- the tests not in a browser (run in parallel):"; cat "$$rest"; \
  echo "--- tests marked outage (run in parallel):"; cat "$$outage"; rm -f "$$rest" "$$outage"; \
  echo "--- tests marked serial (run alone):"; $(PYTEST) --durations=5 -m "serial and not outage"; d=$$?; \
  [ $$a -eq 0 ] && [ $$b -eq 0 ] && [ $$c -eq 0 -o $$c -eq 5 ] && [ $$d -eq 0 ]

test: $(STAMP) deps lint $(VENDOR)
	@if [ "$$(id -u)" = 0 ] && command -v unshare >/dev/null; then \
	  unshare -n sh -c 'ip link set lo up || exit 1; $(SUITE)'; \
	else \
	  echo "not root: running without a loopback-only namespace"; \
	  sh -c '$(SUITE)'; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache web/node_modules web/static/vendor
