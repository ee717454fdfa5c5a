# Guardsite: the two commands are `make demo` and `make test` (see README.md).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/guardsite
TEST_BROKER_URL ?= redis://127.0.0.1:6379/15

.PHONY: demo test venv lint bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: pip takes the local CPU build instead of a multi-GB CUDA download.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	bash scripts/demo.sh

lint: venv
	$(BIN)/ruff check .

test: venv
	$(BIN)/ruff check .
	$(BIN)/python manage.py guard_model prepare
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(BIN)/pytest $(PYTEST_ARGS)

# The standalone benchmarks (the others under bench/ need the running stack; each says how in its header).
bench: venv
	$(BIN)/python bench/guard_throughput.py --no-profile
	$(BIN)/python bench/guard_cases.py --preset general
	$(BIN)/python bench/guard_cases.py --preset mlcommons_hazards
