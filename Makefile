# Two commands do all the set-up on a fresh machine:
#   make demo   - install, then RL-train verity-tiny on pii-masking and compare base vs trained
#   make test   - install, then run the test suite
#   make lint   - install, then ruff and the type checker (pyright)
#   make notebook - install, then execute examples/rl_with_llms.ipynb with its defaults, outputs saved in it
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch: on a machine without CUDA this avoids a multi-GB CUDA download.
# On a GPU machine set TORCH_SPEC=torch (or preinstall your CUDA torch) before `make`.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test lint notebook bench starter clean

# The compat extra (verifiers==0.1.6.post0) is what tests/test_verifiers_*.py compare verity against;
# the ray extra runs tests/test_ray_workers.py (--rollout-workers).
$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev,math,compat,ray]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/verity demo

test: install
	$(BIN)/python -m pytest -x -q

lint: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/pyright --pythonpath $(BIN)/python

# Execute the teaching notebook with its default (full) settings and save the outputs in it
notebook: install
	cd examples && $(abspath $(BIN))/jupyter-execute --inplace --timeout=-1 rl_with_llms.ipynb

bench: install
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python -m benchmarks.grpo_vs_trl --config all

# Rebuild the bundled starter model (stage 1 wants a GPU: ~3.6 h on 2 CPU cores; see scripts/build_starter.py)
starter: install
	$(BIN)/python scripts/build_starter.py --steps 4500 --decay-steps 1200 --out outputs/starter-stage1 \
		--run-dir outputs/build-starter-stage1
	$(BIN)/python scripts/build_starter.py --init outputs/starter-stage1 --weak-labels date,email,first,username,ip:0.8 \
		--steps 200 --lr 5e-4 --decay-steps 100 --run-dir outputs/build-starter-stage2

clean:
	rm -rf $(VENV) outputs
