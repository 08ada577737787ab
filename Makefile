# Two commands do all the set-up on a fresh machine:
#   make demo   - install, then RL-train verity-tiny on pii-masking and compare base vs trained
#   make test   - install, then run the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch: on a machine without CUDA this avoids a multi-GB CUDA download.
# On a GPU machine set TORCH_SPEC=torch (or preinstall your CUDA torch) before `make`.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test bench clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/verity demo

test: install
	$(BIN)/python -m pytest -x -q

bench: install
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python -m benchmarks.grpo_vs_trl --config all

clean:
	rm -rf $(VENV) outputs
