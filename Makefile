# Entry points: `make run` (the embedded default pipeline), `make test`, and `make bench`
# (peak memory of one training step per method, python -m unlearn.bench).
# Both create .venv on first use. Torch: a CPU build where no NVIDIA GPU is visible (fast,
# small), otherwise the newest release the range in pyproject.toml allows. Override with
# `make TORCH_SPEC='torch==2.5.1' ...`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 'torch>=2.4' || echo 'torch==2.13.0')
STAMP  := $(VENV)/.installed

.PHONY: install run test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m unlearn $(ARGS)

test: $(STAMP)
	$(PY) -m ruff check unlearn tests
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m unlearn.bench $(ARGS)

clean:
	rm -rf outputs multirun .cache
