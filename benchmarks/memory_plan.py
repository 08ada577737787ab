"""The --dry-run memory plan against the measured peak of real train steps on this CPU.

A random-init Qwen3-architecture model of 54.5M parameters (hidden 512, 12 layers, 8 heads / 4 KV
heads, MLP 1536, vocabulary 32,768) is built locally and trained with bf16 autocast over fp32
weights (the learner's CPU/GPU setting). Each case runs in a fresh process: two train steps
(``LocalLearner.forward_backward`` + ``optim_step``) on ``MB`` rows of ``P`` prompt + ``C``
completion tokens; the peak resident memory of the second step (``VmHWM`` after resetting it
through ``/proc/self/clear_refs``) is compared with the plan:

- step: the peak's increase over the resident memory before the step, against
  ``MemoryPlan.train_step`` (gradients, bf16 weight copies, activations, logits);
- total: the peak's increase over the process before the model was built (Python + torch),
  against ``MemoryPlan.total`` (without a sampler).

Usage: ``python benchmarks/memory_plan.py [--quick] [--json OUT]``; Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

SHAPE = dict(hidden_size=512, num_hidden_layers=12, num_attention_heads=8, num_key_value_heads=4, head_dim=64,
             intermediate_size=1536, vocab_size=32768)

CASE = textwrap.dedent("""
    import json, sys, torch
    from verity.utils import return_freed_memory
    return_freed_memory()

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    MB, P, C, LORA, CKPT = (int(x) for x in sys.argv[1:6])
    SHAPE = json.loads(sys.argv[6])
    torch.set_num_threads(2)
    from verity.algos.losses import policy_loss
    from verity.models.toy import tiny_model
    from verity.train.batching import pack_rows
    from verity.train.learner import LocalLearner, add_lora

    runtime = status("VmRSS:")
    model = add_lora(tiny_model("qwen3", **SHAPE), LORA)
    learner = LocalLearner(model, lr=1e-5, autocast_dtype=torch.bfloat16)
    learner.gradient_checkpointing = bool(CKPT)
    g = torch.Generator().manual_seed(0)
    V = SHAPE["vocab_size"]
    prompts = [torch.randint(0, V, (P,), generator=g).tolist() for _ in range(MB)]  # distinct: no sharing
    comps = [torch.randint(0, V, (C,), generator=g).tolist() for _ in range(MB)]
    batch = pack_rows(prompts, comps, [[]] * MB, [[]] * MB, torch.randn(MB, generator=g).tolist(), pad_id=0)

    def loss_fn(lp, mb):
        return policy_loss(lp, lp.detach(), mb.advantages, mb.loss_mask, loss_type="dr_grpo", max_completion_length=C)

    def step():
        learner.forward_backward(batch, loss_fn)
        learner.optim_step()

    step()  # allocates the optimizer states
    return_freed_memory()
    import ctypes
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = status("VmRSS:")
    open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
    step()
    peak = status("VmHWM:")
    print("CASE " + json.dumps({"runtime": runtime, "before": before, "peak": peak}))
""")


def run_case(mb: int, p: int, c: int, lora: int, ckpt: bool) -> dict:
    from verity.train.memory import ModelShape, plan_memory

    proc = subprocess.run([sys.executable, "-c", CASE, str(mb), str(p), str(c), str(lora), str(int(ckpt)),
                           json.dumps(SHAPE)], capture_output=True, text=True, timeout=1200)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("CASE ")), None)
    if line is None:
        raise RuntimeError(proc.stderr[-3000:])
    m = json.loads(line[5:])
    cfg = {**SHAPE, "tie_word_embeddings": True}
    plan = plan_memory(ModelShape.from_config(cfg), micro_batch=mb, seq_len=p + c, completion_len=c,
                       lora_rank=lora, checkpointing=ckpt, sampler=False)
    step, total = m["peak"] - m["before"], m["peak"] - m["runtime"]
    return {"micro_batch": mb, "prompt": p, "completion": c, "lora": lora, "checkpointing": ckpt,
            "measured_step_mb": round(step / 2**20), "plan_step_mb": round(plan.train_step / 2**20),
            "step_ratio": round(plan.train_step / step, 3),
            "measured_total_mb": round(total / 2**20), "plan_total_mb": round(plan.total / 2**20),
            "total_ratio": round(plan.total / total, 3)}


CASES = [(8, 128, 128, 0, False), (8, 256, 512, 0, False), (8, 128, 128, 32, False), (8, 256, 512, 32, False),
         (8, 256, 512, 0, True), (8, 256, 512, 32, True)]


def main() -> None:
    ap = argparse.ArgumentParser(description="The --dry-run memory plan against measured train-step peaks.")
    ap.add_argument("--quick", action="store_true", help="only the two sequence lengths, full fine-tune")
    ap.add_argument("--json", help="write the rows to this file")
    a = ap.parse_args()
    rows = []
    for case in CASES[:2] if a.quick else CASES:
        r = run_case(*case)
        rows.append(r)
        print(json.dumps(r), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
