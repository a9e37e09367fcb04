# Entry points: `make demo`, `make test` (`make test-fast`: without the slow tests), `make lint`
# (ruff lint + format check; `make format` fixes), `make typecheck` (mypy), `make bench` (every
# benchmark, tables into BENCHMARKS.md) and `make bench-quick` (smoke-sized, into
# BENCHMARKS.quick.md). All create .venv and install crabser first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint typecheck format bench bench-quick bench-deps clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU wheel of torch first, so no other requirement pulls a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/crabser demo

# Two pytest workers (pytest-xdist), a test file each at a time: the session fixtures are built once
# per worker. On 2 cores the suite takes about two thirds of the time of one worker.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test: setup
	$(PYTEST)

# The tests not marked slow (the slow ones train or run the pipeline on real corpora): a few minutes.
test-fast: setup
	$(PYTEST) -m "not slow"

LINTED := src tests benchmarks scripts
lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

# mypy over the package (settings in pyproject.toml: strict for models/, losses/ and training/)
typecheck: setup
	$(BIN)/mypy src/crabser

format: setup
	$(BIN)/ruff check --fix $(LINTED)
	$(BIN)/ruff format $(LINTED)

# benchmarks.asr_wer synthesises speech with espeak-ng (Debian), installed here when missing.
bench-deps: setup
	command -v espeak-ng >/dev/null || { apt-get install -y -q espeak-ng || { apt-get update -q && apt-get install -y -q espeak-ng; }; }

bench: bench-deps
	$(BIN)/python -m benchmarks.run_all

bench-quick: bench-deps
	$(BIN)/python -m benchmarks.run_all --quick

clean:
	rm -rf runs cache
