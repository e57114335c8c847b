# Needs only Python 3.11+ and make: everything else is installed into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# The demo's runs, and the UI that shows them, share one Dagster instance.
DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install demo test lint ui bench clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(INSTALLED)

install: $(INSTALLED)

## Materialize every example asset (into $$DATABASE_URL, else the embedded PostgreSQL).
demo: install
	mkdir -p $(DAGSTER_HOME)
	DAGSTER_HOME=$(DAGSTER_HOME) $(BIN)/python -m pipelines

lint: install
	$(BIN)/ruff check resources pipelines tests benchmarks
	$(BIN)/ruff format --check resources pipelines tests benchmarks
	$(BIN)/mypy

## Lint, type-check and run the whole test suite on a real PostgreSQL.
test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

## The Dagster UI on the same database as `make demo`.
ui: install
	mkdir -p $(DAGSTER_HOME)
	DAGSTER_HOME=$(DAGSTER_HOME) $(BIN)/dagster dev

## The full benchmark (1M rows, every case five times; streamed writes of 1M and 10M rows, into a
## new table and into the empty one, twice;
## about 15 minutes): output in benchmarks/results/.
## Then benchmarks.partitions: a day's replace, upsert and read in 1,000 daily partitions of
## 10,000 rows against 10 (native and plain tables): partitions.json, output-partitions.txt.
## Then benchmarks.matrix: issue 16's cases ÷ the key-sorted COPY (L2) on PostgreSQL 18 and 15,
## tuned and with defaults (1M rows, best of 5): matrix.json, output-matrix.txt.
bench: install
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	bash -o pipefail -c '$(BIN)/python -m benchmarks.run --rows 1000000 --stream-rows 10000000 --stream-chunk 100000 --stream-repeat 2 | tee benchmarks/results/output-1000000.txt'
	$(BIN)/python -m benchmarks.partitions
	$(BIN)/python -m benchmarks.matrix

clean:
	rm -rf $(VENV) .dagster_copy_upsert .dagster_home
