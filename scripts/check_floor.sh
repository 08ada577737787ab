#!/usr/bin/env bash
# The declared dependency floor, measured: a second venv holding the lowest transformers / peft /
# tokenizers / huggingface-hub / datasets versions pyproject.toml allows, layered over .venv for
# everything else (torch included: CPU torch 2.4 is not on PyPI), then the tests that exercise them.
#   bash scripts/check_floor.sh [pytest args]      (default: the model, sampling, training and SFT tests)
set -euo pipefail
cd "$(dirname "$0")/.."
FLOOR=${FLOOR_VENV:-/tmp/verity-floor}
PYV=$(.venv/bin/python -c 'import sys; print(f"python{sys.version_info.major}.{sys.version_info.minor}")')
BASE=$(.venv/bin/python -c 'import sys; print(sys.base_prefix)')
if [ ! -x "$FLOOR/bin/python" ]; then
  "$BASE/bin/python3" -m venv "$FLOOR"
  "$FLOOR/bin/pip" install -q "transformers==4.56.2" "huggingface-hub<1.0" "datasets==4.0.0"
  "$FLOOR/bin/pip" install -q --no-deps "peft==0.13.2"
  # everything else (torch, pytest, verifiers, ...) from .venv, after the floor's own packages
  echo "$PWD/.venv/lib/$PYV/site-packages" > "$FLOOR/lib/$PYV/site-packages/zz_verity_venv.pth"
fi
"$FLOOR/bin/python" -c 'import transformers, peft, tokenizers, datasets, torch; print("floor:", "transformers", transformers.__version__, "peft", peft.__version__, "tokenizers", tokenizers.__version__, "datasets", datasets.__version__, "torch", torch.__version__)'
export PYTHONPATH=$PWD/src
if [ $# -eq 0 ]; then
  set -- tests/test_chat_templates.py tests/test_sampler.py tests/test_decode_syncs.py tests/test_train_rl.py \
    tests/test_sft.py tests/test_checkpoint_safety.py -q
fi
exec "$FLOOR/bin/python" -m pytest "$@"
