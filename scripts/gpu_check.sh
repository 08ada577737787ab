#!/usr/bin/env bash
# The one GPU check of issues #13 (recipe, decode loop, server), #17 (GRPO step vs TRL) and #18 (NCCL under torchrun),
# one run, < 10 min on one H200 (part limits add up to 555 s).
# 0. scripts/gpu_recipe_check.py: Qwen3-1.7B config, LoRA 32, 8 x 32 rollouts, 512 tokens, two RL steps, save, resume.
#   bash scripts/gpu_check.sh [OUT_DIR]        # OUT_DIR defaults to $OUT or gpu-figures/
# 1. scripts/decode_check.py: Qwen3-1.7B-shaped random model, 64 rows × 256 tokens, host check every
#    token vs every 16: tokens/s and host syncs per decode token (torch.cuda.set_sync_debug_mode).
# 2. benchmarks.grpo_vs_trl --device cuda: Qwen2.5-0.5B shape, verity vs TRL (bf16), 1 warm-up + 3 steps:
#    s/step, tokens/s, MFU of the training phase, the step's physical floor.
# 3. scripts/load_test_serve.py: verity serve of a Qwen3-0.6B-shaped model, 64 streaming clients × 2
#    requests × 128 tokens: TTFT, latency, throughput.
# 4. scripts/gpu_dist_check.sh: generation speed, torchrun NCCL training (1 rank; 2 ranks on one GPU if NCCL allows).
# Each part has its own time limit; a failed part does not stop the others. Exit status: failed parts.
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu-figures}}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python}"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT_DIR/gpu.txt" 2>&1 || true
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())" >> "$OUT_DIR/gpu.txt" 2>&1
fail=0
part() {  # part NAME SECONDS CMD...
  local name=$1 secs=$2; shift 2
  echo "== $name (limit ${secs}s): $*" | tee -a "$OUT_DIR/summary.txt"
  local t0=$SECONDS
  timeout "$secs" "$@" > "$OUT_DIR/$name.out" 2> "$OUT_DIR/$name.err"
  local rc=$?
  echo "   exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT_DIR/summary.txt"
  tail -n 25 "$OUT_DIR/$name.out" | tee -a "$OUT_DIR/summary.txt"
  [ "$rc" -eq 0 ] || { fail=$((fail + 1)); tail -n 20 "$OUT_DIR/$name.err" | tee -a "$OUT_DIR/summary.txt"; }
}
part recipe 190 "$PY" scripts/gpu_recipe_check.py --device cuda --out "$OUT_DIR/recipe.json"
part decode 60 "$PY" scripts/decode_check.py --device cuda --batch 64 --max-tokens 256
part grpo 140 "$PY" -m benchmarks.grpo_vs_trl --device cuda --steps 3 --timeout 65
part serve 75 "$PY" scripts/load_test_serve.py --toy qwen3-0.6b --batch-sizes 64 --clients 64 --requests 2 \
  --max-tokens 128 --json "$OUT_DIR/serve.json"
part dist 90 env OUT="$OUT_DIR/dist" PY="$PY" bash scripts/gpu_dist_check.sh
echo "failed parts: $fail" | tee -a "$OUT_DIR/summary.txt"
exit "$fail"
