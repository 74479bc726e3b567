# rag-pipeline: the two commands of the README are `make up` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install up down status test lint bench scale reliability screenshots clean lock

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@PYTHON=$(PYTHON) scripts/require-tools up
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# The local stack's random PostgreSQL password (and nothing else: see README, Configuration).
local.env: | install
	$(BIN)/rag-pipeline env init

# Everything: the local stack, then the Dagster UI and daemon on http://127.0.0.1:3000.
up: tools-up install local.env
	$(BIN)/rag-pipeline dev

down: install
	$(BIN)/rag-pipeline stack down

status: install
	$(BIN)/rag-pipeline stack status

# The whole test suite; it starts its own stack on other ports (see tests/conftest.py).
# First the Go side of the contract (go/: types, validator, shared vectors, JSON Schema).
test: tools-test install lint
	cd go && go test ./...
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	@test -z "$$(gofmt -l go tools)" || { echo "gofmt: these files need formatting:"; gofmt -l go tools; exit 1; }
	cd go && go vet ./...
	cd tools/composecheck && go vet ./...

bench: tools-bench install
	$(BIN)/python -m bench.run_all

# Cost as the work grows: the periodic work at 0, 100k and 1M jobs in the ledger, and bytes per
# page before and after retention (docs/benchmarks.md, "Cost as the work grows"; ~15 minutes).
scale: tools-bench install
	$(BIN)/python -m bench.scale
	$(BIN)/python -m bench.retention
	$(BIN)/python -m bench.report

# The seventeen fault scenarios and a no_fault reference at full size (>= 1,000 pages each); table in
# docs/reliability.md. Some only: .venv/bin/python -m bench.faults --only host_crash,go_api_hang
reliability: tools-reliability install
	$(BIN)/python -m bench.faults

# Pictures of the running UI for the README (needs `make up` running).
screenshots: tools-screenshots install
	$(BIN)/python scripts/screenshots.py

# What a target needs on the machine, said before anything is installed or started.
tools-%:
	@PYTHON=$(PYTHON) scripts/require-tools $*

clean:
	rm -rf $(VENV) .stack-test

# The image's dependency lock with hashes (requirements/image.txt), after a dependency change.
lock: install
	$(BIN)/python scripts/lock-image
