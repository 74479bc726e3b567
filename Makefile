# rag-pipeline: the two commands of the README are `make up` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install up down status test lint bench reliability screenshots clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

.env: | install
	$(BIN)/rag-pipeline env init

# Everything: the local stack, then the Dagster UI and daemon on http://127.0.0.1:3000.
up: install .env
	$(BIN)/rag-pipeline dev

down: install
	$(BIN)/rag-pipeline stack down

status: install
	$(BIN)/rag-pipeline stack status

# The whole test suite; it starts its own stack on other ports (see tests/conftest.py).
test: install
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python -m bench.run_all

# The seven fault scenarios at full size (>= 1,000 pages each); table in docs/reliability.md.
reliability: install
	$(BIN)/python -m bench.faults

# Pictures of the running UI for the README (needs `make up` running).
screenshots: install
	$(BIN)/python scripts/screenshots.py

clean:
	rm -rf $(VENV) .stack-test
