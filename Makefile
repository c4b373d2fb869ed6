# Two entry points for a fresh machine: `make tune` (the main job) and `make test`.
# Each bootstraps the virtual environment it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The test extra's PyTorch (for Optuna's GP sampler), installed first so that pip keeps it: on
# these machines this release is a CPU build lying on disk (190 MB, about a minute to install),
# where a plain `torch` resolves to a CUDA build of several GB. Elsewhere: TORCH=torch.
TORCH ?= torch==2.13.0

.PHONY: tune search test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet '$(TORCH)'
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The main job on embedded defaults: bundled digits, Optuna journal file and MLflow SQLite here.
tune: $(STAMP)
	$(BIN)/automl tune --space search_spaces/quick.yaml --data digits --budget 300

search: $(STAMP)
	$(BIN)/automl search --space search_spaces/quick.yaml --data digits --trials 8 --epochs 5

test: $(STAMP)
	$(BIN)/ruff check automl tests benchmarks
	$(BIN)/python -m pytest -n 2 --dist loadgroup --durations=10

lint: $(STAMP)
	$(BIN)/ruff check automl tests benchmarks

clean:
	rm -rf $(VENV) automl-out .pytest_cache
