# Entry points: `make run` (the embedded default pipeline), `make test`, `make bench`
# (performance ratios, python -m unlearn.bench) and `make vanilla` (rebuild the shipped tiny
# vanilla model, python -m unlearn.ship); `make gpu-smoke` on a GPU machine: every method on
# each tiny family under trainer=gpu (bf16) and trainer=fsdp, a table of ok / refused / failed,
# seconds and peak GPU memory into experiments/gpu_smoke.md (python -m unlearn.bench.gpu_smoke).
# Each creates .venv on first use. Torch: a CPU build where no NVIDIA GPU is visible (fast,
# small), otherwise the newest release of the minor version pyproject.toml pins. Override with
# `make TORCH_SPEC='torch==2.13.0+cu126' ...`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 'torch>=2.13,<2.14' || echo 'torch==2.13.0')
STAMP  := $(VENV)/.installed

.PHONY: install run test bench gpu-smoke vanilla clean

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

# rebuild the vanilla model shipped in unlearn/assets/vanilla/ (after a twin or recipe change)
vanilla: $(STAMP)
	$(PY) -m unlearn.ship $(ARGS)

bench: $(STAMP)
	$(PY) -m unlearn.bench $(ARGS)

gpu-smoke: $(STAMP)
	$(PY) -m unlearn.bench.gpu_smoke $(ARGS)

clean:
	rm -rf outputs multirun .cache
