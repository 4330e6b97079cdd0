# The two commands of the README: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test demo bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml plugins/s3/pyproject.toml plugins/huggingface/pyproject.toml
	$(BIN)/pip install --quiet -e ".[test]" -e "plugins/s3[test]" -e "plugins/huggingface[test]"
	touch $(STAMP)

setup: $(STAMP)

test: setup lint
	$(BIN)/python -m pytest

demo: setup
	$(BIN)/python -m demo

bench: setup
	$(BIN)/python -m benchmarks

lint: setup
	$(BIN)/python -m mypy src/storage_core plugins/s3/src/storage_core_s3 plugins/huggingface/src/storage_core_huggingface

clean:
	rm -rf $(VENV) build dist *.egg-info
