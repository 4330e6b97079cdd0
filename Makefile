# The two commands of the README: `make demo` and `make test`. Each sets up .venv first.
# `make test-sn13` runs the suite again in .venv-sn13, pinned to subnet 13's own environment.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-sn13 demo bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml plugins/s3/pyproject.toml plugins/huggingface/pyproject.toml
	$(BIN)/pip install --quiet -e ".[test]" -e "plugins/s3[test]" -e "plugins/huggingface[test]"
	touch $(STAMP)

setup: $(STAMP)

# Every core (two in CI): each test module runs whole on one worker, so module-scoped subnets are started once.
PYTEST_PARALLEL := -n auto --dist loadfile

test: setup lint
	$(BIN)/python -m pytest $(PYTEST_PARALLEL)

demo: setup
	$(BIN)/python -m demo

bench: setup
	$(BIN)/python -m benchmarks

# Subnet 13's environment (constraints/sn13.txt: bittensor 10.3, huggingface-hub 0.27.1, pyarrow 17, ...):
# its pinned packages are installed too (-r) so that `pip check` proves storage-core sits next to them, and the
# constraints (-c) make any install that would move one of those versions fail.
SN13_VENV := .venv-sn13
SN13_BIN := $(SN13_VENV)/bin
SN13_STAMP := $(SN13_VENV)/.installed
SN13_PINS := constraints/sn13.txt
# Left out in .venv-sn13 (none for being slow):
# - bittensor 11 only: these tests drive bittensor 11's own API (bittensor_core, bt.calls, bt.storage) to set up
#   or inspect the dev chain; tests/test_chain_sdk.py covers the same ground through storage_core.chain on both SDKs.
SN13_SKIP := --ignore=tests/test_chain_commitments.py --ignore=tests/test_chain_membership.py \
	--ignore=tests/test_devchain.py \
	--deselect tests/test_config_source.py::test_undecodable_commitment_keeps_last_known_good \
	--deselect tests/test_config_source.py::test_corrupt_cache_file_is_ignored

$(SN13_BIN)/python:
	$(PYTHON) -m venv $(SN13_VENV)
	$(SN13_BIN)/pip install --quiet --upgrade pip

$(SN13_STAMP): $(SN13_BIN)/python $(SN13_PINS) pyproject.toml plugins/s3/pyproject.toml plugins/huggingface/pyproject.toml
	$(SN13_BIN)/pip install --quiet -c $(SN13_PINS) -r $(SN13_PINS) \
		-e ".[test]" -e "plugins/s3[test]" -e "plugins/huggingface[test]"
	touch $(SN13_STAMP)

test-sn13: $(SN13_STAMP)
	$(SN13_BIN)/pip check
	$(SN13_BIN)/python -c "import bittensor, huggingface_hub, pyarrow; print('sn13 pins:', bittensor.__version__, huggingface_hub.__version__, pyarrow.__version__)"
	$(SN13_BIN)/python -m pytest $(PYTEST_PARALLEL) $(SN13_SKIP)

lint: setup
	$(BIN)/python -m mypy src/storage_core plugins/s3/src/storage_core_s3 plugins/huggingface/src/storage_core_huggingface

clean:
	rm -rf $(VENV) $(SN13_VENV) build dist *.egg-info
