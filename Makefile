# Quick start: `make deploy` (set up + main job), `make test` (tests). See README.md.
VENV := .venv
STAMP := $(VENV)/.ramp-edge-installed
PYTEST := $(VENV)/bin/python -m pytest

.PHONY: setup deploy test test-slow test-all lint

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

setup: $(STAMP)

deploy: $(STAMP)
	$(VENV)/bin/ramp-edge deploy --device localhost

test: $(STAMP)
	$(PYTEST) -m "not slow"

test-slow: $(STAMP)
	$(PYTEST) -m "slow"

test-all: $(STAMP)
	$(PYTEST)

lint: $(STAMP)
	$(VENV)/bin/ruff check ramp_edge tests scripts agents
