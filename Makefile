# The two commands of the README: `make run` and `make test`. Each sets up
# everything it needs from nothing: a virtual environment, the pinned CPU build
# of torch (a bare "torch" requirement would pull a multi-GB CUDA build), the
# project, then runs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

export KEDRO_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test lint viz serve bench clean

$(BIN)/kedro: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/kedro

run: install
	$(BIN)/kedro run $(ARGS)
	@echo
	@echo "Start the search service with:  make serve"

test: install
	$(BIN)/pytest $(ARGS)

lint: install
	$(BIN)/ruff check src tests bench

viz: install
	$(BIN)/kedro viz build

serve: install
	$(BIN)/python -m product_search.service $(ARGS)

clean:
	rm -rf $(VENV)
