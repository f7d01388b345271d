# The two commands of the README: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test lint bench install clean

$(STAMP): setup.cfg pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tfcompress demo

test: $(STAMP)
	scripts/ensure_chromium.sh
	$(BIN)/ruff check tfcompress tests benchmarks
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=25 tests
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -q

lint: $(STAMP)
	$(BIN)/ruff check tfcompress tests benchmarks
	$(BIN)/ruff format --check tfcompress tests benchmarks

.PHONY: docs
docs: $(STAMP)  # the documentation site, into site/
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/python benchmarks/convert_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
