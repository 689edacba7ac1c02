# Entry points. `make lab` brings up the whole chain on this machine;
# `make test` runs every test against real services. Both run `make setup` first.
VENV := .venv
INVOKE := $(VENV)/bin/invoke
PYTEST := $(VENV)/bin/pytest
RUFF := $(VENV)/bin/ruff
PYTHON_FILES := authops bench tests tasks.py

.PHONY: setup lab lab-down test lint format bench

setup:
	@scripts/setup.sh

lab: setup
	$(INVOKE) lab.up

lab-down: setup
	$(INVOKE) lab.down

lint: setup
	$(RUFF) format --check $(PYTHON_FILES)
	$(RUFF) check $(PYTHON_FILES)

format: setup
	$(RUFF) format $(PYTHON_FILES)
	$(RUFF) check --fix $(PYTHON_FILES)

test: lint
	$(PYTEST)

# Runs every scenario of bench/ on the lab (about 15 minutes on 2 cores) and
# rewrites docs/benchmarks.md. Not part of `make test`.
bench: setup
	$(VENV)/bin/python -m bench
