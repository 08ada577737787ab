#!/usr/bin/env bash
# The one GPU check of issue #18 (a few minutes; every part has its own timeout):
#   1. generation speed of the in-process sampler (verity-tiny, 64 prompts x up to 128 new tokens)
#   2. `torchrun --nproc_per_node 1` RL training with NCCL (5 steps, fp32, LoRA)
#   3. `torchrun --nproc_per_node 2` on the same GPU: NCCL first (it usually refuses two ranks on
#      one GPU), else gloo; the 2-rank adapter is compared with the 1-rank one (same global batch)
# Figures go to $OUT/gpu_dist_check.json (OUT defaults to ./gpu_check_out), logs next to it.
# Without a GPU it runs the same steps on the CPU with gloo (a smoke test of the script itself).
# Usage: scripts/gpu_dist_check.sh            (from the repository root; PY=python to choose the interpreter)
set -uo pipefail
PY=${PY:-python}
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
ENV=tests/data/vowel_env.py
GPU=$($PY -c 'import torch; print(int(torch.cuda.is_available()))')
echo "gpu available: $GPU"; nvidia-smi -L 2>/dev/null || true
if [ "$GPU" = 1 ]; then SIZE=(64 128 8 64 5); else SIZE=(8 16 4 8 2); fi  # CPU: a smoke test of the script
# generation prompts, new tokens; training groups per batch, max tokens, steps
export GEN_N=${GEN_N:-${SIZE[0]}} GEN_TOKENS=${GEN_TOKENS:-${SIZE[1]}}
NGROUPS=${NGROUPS:-${SIZE[2]}} MAXTOK=${MAXTOK:-${SIZE[3]}} STEPS=${STEPS:-${SIZE[4]}}
TRAIN=(train "$ENV" -m verity-tiny --group-size 8 --groups-per-batch "$NGROUPS" --max-tokens "$MAXTOK"
       --steps "$STEPS" --lr 1e-3 --lora-rank 8 --save-every "$STEPS" --dtype fp32 --seed 0
       --rollout-seeding group --overwrite)

# 1. generation speed
timeout 180 $PY - > "$OUT/generation.json" 2> "$OUT/generation.log" <<'EOF'
import json, os, time, torch
from verity.rollout.hf_sampler import HFSampler
N, T = int(os.environ["GEN_N"]), int(os.environ["GEN_TOKENS"])
from verity.types import SamplingArgs
s = HFSampler.from_pretrained("verity-tiny", batch_size=N)
ids = [s.render([{"role": "user", "content": f"Write a story about the number {i}."}]) for i in range(N)]
args = SamplingArgs(max_tokens=T, temperature=1.0, seed=0)
s.generate_ids(ids[:8], SamplingArgs(max_tokens=8, temperature=1.0, seed=0))  # warm-up
if torch.cuda.is_available(): torch.cuda.synchronize()
t0 = time.perf_counter(); outs = s.generate_ids(ids, args)
if torch.cuda.is_available(): torch.cuda.synchronize()
dt = time.perf_counter() - t0; n = sum(len(c.completion_ids) for c in outs)
print(json.dumps({"device": str(next(s.model.parameters()).device), "dtype": str(next(s.model.parameters()).dtype),
                  "sequences": len(outs), "new_tokens": n, "seconds": round(dt, 3), "tokens_per_s": round(n / dt, 1)}))
EOF
echo "generation: rc=$? $(cat "$OUT/generation.json" 2>/dev/null)"

run_train() {  # name nproc backend
  local name=$1 nproc=$2 backend=$3 t0=$SECONDS rc
  VERITY_DIST_BACKEND=$backend OMP_NUM_THREADS=2 timeout 240 $PY -m torch.distributed.run --standalone \
    --nproc_per_node "$nproc" -m verity "${TRAIN[@]}" -o "$OUT/$name" > "$OUT/$name.log" 2>&1
  rc=$?
  echo "{\"run\": \"$name\", \"nproc\": $nproc, \"backend\": \"$backend\", \"rc\": $rc, \"seconds\": $((SECONDS - t0))}" \
    > "$OUT/$name.status.json"
  echo "$name: rc=$rc"; tail -3 "$OUT/$name.log"
  return $rc
}

if [ "$GPU" = 1 ]; then BACKEND=nccl; else BACKEND=gloo; fi
run_train ddp1 1 $BACKEND
run_train ddp2 2 $BACKEND || { [ "$BACKEND" = nccl ] && run_train ddp2_gloo 2 gloo; }

$PY - "$OUT" "$STEPS" <<'EOF' | tee "$OUT/gpu_dist_check.json"
import json, sys
from pathlib import Path
out, steps = Path(sys.argv[1]), int(sys.argv[2])
res = {"generation": json.loads((out / "generation.json").read_text() or "null") if (out / "generation.json").exists() else None}
def adapter(run):
    from safetensors.torch import load_file
    f = out / run / "checkpoints" / f"step_{steps:06d}" / "adapter_model.safetensors"
    return load_file(str(f)) if f.exists() else None
for run in ("ddp1", "ddp2", "ddp2_gloo"):
    st = out / f"{run}.status.json"
    if not st.exists():
        continue
    r = json.loads(st.read_text())
    m = out / run / "metrics.jsonl"
    rows = [json.loads(x) for x in m.read_text().splitlines()] if m.exists() else []
    r["metric_lines"] = len(rows)
    if rows:
        r["reward_first_last"] = [round(rows[0]["reward/mean"], 4), round(rows[-1]["reward/mean"], 4)]
        r["s_per_step"] = round(sum(x["time/generate"] + x["time/score"] + x["time/train"] for x in rows) / len(rows), 3)
        r["mismatch_kl_max"] = max(x["mismatch_kl"] for x in rows)
        man = json.loads((out / run / "manifest.json").read_text())
        r["world_size"] = man.get("world_size")
    a, b = adapter("ddp1"), adapter(run)
    if run != "ddp1" and a is not None and b is not None:
        r["max_abs_diff_vs_ddp1"] = max(float((a[k] - b[k]).abs().max()) for k in a)
    res[run] = r
print(json.dumps(res, indent=1))
EOF
