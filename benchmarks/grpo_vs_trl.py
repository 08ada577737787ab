"""GRPO step time: verity's :class:`~verity.train.rl.RLTrainer` vs TRL's ``GRPOTrainer``, identical work.

Both tools train the same random-init Qwen2 model (built in each child from a fixed seed, see
:mod:`benchmarks.common`) on the same prompts with the same reward, group size 8, temperature
1.0, full fine-tune with AdamW at the same learning rate, no KL, one iteration per batch, and
every completion exactly ``max_tokens`` long (an EOS the model cannot sample). Each tool and
setting runs in its own subprocess, so peak RSS is per tool; each does warm-up step(s), then
``--steps`` timed steps, and reports the median.

    python -m benchmarks.grpo_vs_trl [--config small|medium|all] [--steps N] [--json]

``speedup`` = best TRL s/step (fp32 or bf16) ÷ verity s/step. Each config also gets the step's
physical floor (:mod:`benchmarks.floor`, measured in its own process on the same device) and each
tool's step as a multiple of it, and the MFU of each tool's training phase (6·N·T ÷ train time ÷ the
measured bf16 peak). Smoke test (seconds, not a measurement):
``--config small --steps 1 --hidden 64 --layers 1 --completions 16 --max-tokens 8``.

GPU figures (``--device cuda``, defaults to the ``qwen2.5-0.5b`` shape and TRL in bf16 only)::

    python -m benchmarks.grpo_vs_trl --device cuda --steps 3 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from benchmarks.common import (
    CONFIGS,
    GPU_CONFIGS,
    GRPOBench,
    build_model,
    build_tokenizer,
    completion_text,
    emit,
    machine_info,
    make_words,
    median,
    num_params,
    print_table,
    prompt_text,
    run_child,
    vowel_fraction,
)
from benchmarks.floor import child_floor, kv_bytes_per_pos, step_floor
from verity.utils import peak_rss_mb

TOOLS = ("verity", "trl-fp32", "trl-bf16")


# ------------------------------------------------------------------------------ verity child
def verity_env(words: list[str]) -> Any:
    """A single-turn verity environment over the benchmark prompts with the vowel-fraction reward."""
    from datasets import Dataset

    from verity.envs.base import SingleTurnEnv
    from verity.rubrics.rubric import Rubric

    def vowel_fraction_reward(completion: Any) -> float:
        return vowel_fraction(completion_text(completion))

    ds = Dataset.from_dict({"question": [prompt_text(w) for w in words], "answer": [w[::-1] for w in words]})
    env = SingleTurnEnv(dataset=ds, rubric=Rubric([vowel_fraction_reward]))
    env.env_id = "bench-reverse"
    return env


def bench_model(cfg: GRPOBench, device: str = "cpu") -> tuple[Any, Any]:
    """(tokenizer, model) of ``cfg`` on ``device``: the same for every tool."""
    tok, model_vocab = build_tokenizer(make_words())
    model = build_model(tok, cfg.model_vocab or model_vocab, cfg.hidden, cfg.layers, cfg.heads,
                        kv_heads=cfg.kv_heads, intermediate=cfg.intermediate)
    return tok, model.to(device)


def verity_trainer(cfg: GRPOBench, total_steps: int, dtype: str = "auto", device: str = "cpu") -> tuple[Any, Any]:
    """An :class:`RLTrainer` for ``cfg`` (full fine-tune, like TRL); returns (trainer, model)."""
    from verity.train.config import RLConfig
    from verity.train.rl import RLTrainer

    words = make_words()
    tok, model = bench_model(cfg, device)
    rl = RLConfig(env="bench-reverse", lora_rank=0, group_size=cfg.group_size, groups_per_batch=cfg.groups,
                  lr=cfg.lr, max_tokens=cfg.max_tokens, temperature=1.0, top_p=1.0, kl_beta=0.0,
                  num_iterations=1, micro_batch_size=cfg.completions, steps=total_steps, seed=0,
                  output_dir=tempfile.mkdtemp(prefix="verity-bench-"), dtype=dtype)
    return RLTrainer(verity_env(words), (model, tok), rl), model


def count_train_tokens(trainer: Any) -> dict[str, int]:
    """Wrap the learner's forward_backward to count the tokens each training forward processes."""
    counts = {"real": 0, "padded": 0}
    inner = trainer.learner.forward_backward

    def fb(batch: Any, loss_fn: Any, scale: float = 1.0) -> dict[str, float]:
        counts["real"] += int(batch.attention_mask.sum())
        counts["padded"] += int(batch.attention_mask.numel())
        return inner(batch, loss_fn, scale=scale)

    trainer.learner.forward_backward = fb
    return counts


def time_verity(trainer: Any, warmup: int, steps: int) -> list[dict[str, Any]]:
    """Run warm-up + timed steps; one record per timed step (wall and verity's own phase timers)."""
    counts = count_train_tokens(trainer)
    records = []
    for step in range(warmup + steps):
        counts["real"] = counts["padded"] = 0
        t0 = time.perf_counter()
        m = trainer.train_step(step)
        wall = time.perf_counter() - t0
        if step >= warmup:
            records.append({"wall": wall, "generate": m["time/generate"], "score": m["time/score"],
                            "train": m["time/train"], "completion_tokens": m["tokens"],
                            "completion_len": m["completion_len/mean"], "frac_zero_std": m["frac_zero_std"],
                            "train_tokens": counts["real"], "train_tokens_padded": counts["padded"],
                            "reward": m["reward/mean"]})
    return records


def child_verity(cfg: GRPOBench, warmup: int, steps: int, device: str = "cpu") -> dict[str, Any]:
    trainer, model = verity_trainer(cfg, warmup + steps, device=device)
    recs = time_verity(trainer, warmup, steps)
    dtype = trainer.learner.autocast_dtype
    out = summarize(recs, gen_key="generate", rollout_keys=("generate", "score"))
    out.update(setting=f"default (autocast {str(dtype).replace('torch.', '') if dtype else 'fp32'})",
               params=num_params(model), frac_zero_std=median([r["frac_zero_std"] for r in recs]),
               train_tokens_per_step=median([r["train_tokens"] for r in recs]),
               train_s=median([r["train"] for r in recs]),
               prompt_len_mean=median([(r["train_tokens"] / cfg.completions) - r["completion_len"] for r in recs]))
    return out


# ------------------------------------------------------------------------------ TRL child
def timed(fn: Callable[..., Any], sink: list[float]) -> Callable[..., Any]:
    def wrapper(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            sink.append(time.perf_counter() - t0)
    return wrapper


def trl_trainer(cfg: GRPOBench, total_steps: int, bf16: bool, sinks: dict[str, list[float]],
                device: str = "cpu") -> Any:
    """TRL's GRPOTrainer on the same model/prompts/reward; ``sinks`` collect per-step timings."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    class StepTimer(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            sinks["ends"].append(time.perf_counter())

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            sinks["ends"].append(time.perf_counter())

    words = make_words()
    tok, model = bench_model(cfg, device)
    model.generate = timed(model.generate, sinks["generate"])  # instance attribute: what TRL calls
    ds = Dataset.from_dict({"prompt": [[{"role": "user", "content": prompt_text(w)}] for w in words]})

    def vowel_fraction_reward(completions: list[Any], **kw: Any) -> list[float]:
        return [vowel_fraction(completion_text(c)) for c in completions]

    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-bench-"), per_device_train_batch_size=cfg.completions,
        gradient_accumulation_steps=1, num_generations=cfg.group_size, max_completion_length=cfg.max_tokens,
        temperature=1.0, top_p=1.0, beta=0.0, num_iterations=1, loss_type="grpo", learning_rate=cfg.lr,
        lr_scheduler_type="constant", warmup_steps=0, max_steps=total_steps, bf16=bf16, use_cpu=device == "cpu",
        report_to=[], logging_steps=1, save_strategy="no", seed=0, dataloader_num_workers=0,
        disable_tqdm=True, log_completions=False,
    )
    trainer = GRPOTrainer(model=model, processing_class=tok, reward_funcs=vowel_fraction_reward, args=args,
                          train_dataset=ds, callbacks=[StepTimer()])
    trainer._generate_and_score_completions = timed(trainer._generate_and_score_completions, sinks["rollout"])
    return trainer, model


def child_trl(cfg: GRPOBench, warmup: int, steps: int, bf16: bool, device: str = "cpu") -> dict[str, Any]:
    sinks: dict[str, list[float]] = {"ends": [], "generate": [], "rollout": []}
    trainer, model = trl_trainer(cfg, warmup + steps, bf16, sinks, device)
    trainer.train()
    ends = sinks["ends"]
    walls = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    logs = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    recs = []
    for i in range(warmup, min(len(walls), warmup + steps)):
        lg = logs[i] if i < len(logs) else {}
        clen = float(lg.get("completions/mean_length", float("nan")))
        recs.append({"wall": walls[i], "generate": sinks["generate"][i], "rollout": sinks["rollout"][i],
                     "completion_len": clen, "completion_tokens": clen * cfg.completions,
                     "frac_zero_std": float(lg.get("frac_reward_zero_std", float("nan")))})
    out = summarize(recs, gen_key="generate", rollout_keys=("rollout",))
    out.update(setting="bf16" if bf16 else "fp32", params=num_params(model),
               frac_zero_std=median([r["frac_zero_std"] for r in recs]),
               train_s=median([r["wall"] - r["rollout"] for r in recs]))
    return out


# ------------------------------------------------------------------------------ summaries
def summarize(recs: list[dict[str, Any]], gen_key: str, rollout_keys: tuple[str, ...]) -> dict[str, Any]:
    """Median s/step, completion tokens/s and the generation / training share of the timed steps."""
    total = sum(r["wall"] for r in recs) or float("nan")
    s_step = median([r["wall"] for r in recs])
    rollout = sum(sum(r[k] for k in rollout_keys) for r in recs)
    return {
        "s_per_step": s_step, "step_times": [r["wall"] for r in recs],
        "completion_tokens_per_s": median([r["completion_tokens"] for r in recs]) / s_step,
        "completion_len_mean": median([r["completion_len"] for r in recs]),
        "gen_frac": sum(r[gen_key] for r in recs) / total,
        "train_frac": (total - rollout) / total,
        "peak_rss_mb": peak_rss_mb(), "timed_steps": len(recs), "peak_gpu_mb": _peak_gpu_mb(),
    }


def _peak_gpu_mb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def child_main(a: argparse.Namespace) -> None:
    if a.child == "floor":
        emit(child_floor(a.device))
        return
    cfg = GRPOBench("custom", a.hidden, a.layers, a.completions, a.max_tokens, a.group_size, a.lr, a.heads or 4,
                    a.kv_heads, a.intermediate, a.model_vocab)
    with tempfile.TemporaryDirectory(prefix="grpo-bench-") as root:
        tempfile.tempdir = root  # the trainers' output dirs; removed when the child ends
        if a.child == "verity":
            out = child_verity(cfg, a.warmup, a.steps, a.device)
        else:
            out = child_trl(cfg, a.warmup, a.steps, bf16=a.bf16, device=a.device)
        tempfile.tempdir = None
    emit(out)


def resolve_configs(a: argparse.Namespace) -> list[GRPOBench]:
    names = list(CONFIGS) if a.config == "all" else [a.config]
    out = []
    for n in names:
        c = {**CONFIGS, **GPU_CONFIGS}[n]
        out.append(GRPOBench(c.name, a.hidden or c.hidden, a.layers or c.layers, a.completions or c.completions,
                             a.max_tokens or c.max_tokens, c.group_size, c.lr, a.heads or c.heads,
                             a.kv_heads or c.kv_heads, a.intermediate or c.intermediate,
                             a.model_vocab or c.model_vocab))
    return out


def run_config(cfg: GRPOBench, a: argparse.Namespace) -> dict[str, Any]:
    """All tools on one config, each in its own process; the comparison dict of the JSON output."""
    runs: dict[str, Any] = {}
    for tool in a.tools.split(","):
        args = ["--child", "verity" if tool == "verity" else "trl", "--hidden", str(cfg.hidden),
                "--layers", str(cfg.layers), "--completions", str(cfg.completions),
                "--max-tokens", str(cfg.max_tokens), "--group-size", str(cfg.group_size), "--lr", str(cfg.lr),
                "--steps", str(a.steps), "--warmup", str(a.warmup), "--device", a.device, "--heads", str(cfg.heads)]
        args += [f for flag, v in (("--kv-heads", cfg.kv_heads), ("--intermediate", cfg.intermediate),
                                   ("--model-vocab", cfg.model_vocab)) if v for f in (flag, str(v))]
        args += ["--bf16"] if tool == "trl-bf16" else []
        if not a.json:
            print(f"[{cfg.name}] running {tool} ...", file=sys.stderr, flush=True)
        runs[tool] = run_child("benchmarks.grpo_vs_trl", args, timeout=a.timeout)
    v = runs.get("verity", {})
    trl_ok = {k: r for k, r in runs.items() if k.startswith("trl") and "s_per_step" in r}
    best = min(trl_ok, key=lambda k: trl_ok[k]["s_per_step"]) if trl_ok else None
    out: dict[str, Any] = {"config": cfg.as_dict(), "runs": runs,
                           "verity_s_per_step": v.get("s_per_step"), "verity_peak_rss_mb": v.get("peak_rss_mb"),
                           "trl_setting": best, "trl_s_per_step": trl_ok[best]["s_per_step"] if best else None,
                           "trl_peak_rss_mb": trl_ok[best]["peak_rss_mb"] if best else None}
    if v.get("s_per_step") and not a.no_floor:
        out.update(floor_report(cfg, runs, a))
    if best and v.get("s_per_step"):
        out["speedup"] = out["trl_s_per_step"] / v["s_per_step"]
        out["ratio_verity_over_trl"] = v["s_per_step"] / out["trl_s_per_step"]
        out["verity_tokens_per_s"] = v["completion_tokens_per_s"]
        out["trl_tokens_per_s"] = trl_ok[best]["completion_tokens_per_s"]
    return out


def floor_report(cfg: GRPOBench, runs: dict[str, Any], a: argparse.Namespace) -> dict[str, Any]:
    """The step's physical floor on this device, each tool's step ÷ floor, and each tool's training MFU."""
    hw = run_child("benchmarks.grpo_vs_trl", ["--child", "floor", "--device", a.device], timeout=a.timeout)
    if "error" in hw:
        return {"floor": hw}
    v = runs["verity"]
    fl = step_floor(v["params"], v["train_tokens_per_step"], cfg.completions, v["prompt_len_mean"], cfg.max_tokens,
                    kv_bytes_per_pos(cfg.hidden, cfg.layers, cfg.heads, cfg.kv_heads), hw["peak_bf16_gflops"],
                    hw["bandwidth_gbs"])
    out: dict[str, Any] = {"floor": {**hw, **fl}}
    flops = 6 * v["params"] * v["train_tokens_per_step"]
    for r in runs.values():
        if "s_per_step" in r:
            r["over_floor"] = r["s_per_step"] / fl["floor_s"]
            r["mfu_train"] = flops / r["train_s"] / (hw["peak_bf16_gflops"] * 1e9) if r.get("train_s") else None
    out["verity_over_floor"] = v["over_floor"]
    return out


def print_report(results: dict[str, Any]) -> None:
    headers = ["config", "tool", "setting", "s/step", "compl tok/s", "gen %", "train %", "peak RSS MB",
               "compl len", "zero-std", "verity/tool"]
    rows = []
    for name, res in results["configs"].items():
        vs = res.get("verity_s_per_step")
        for tool, r in res["runs"].items():
            if "error" in r:
                rows.append([name, tool, "ERROR: " + r["error"]] + [None] * 8)
                continue
            rows.append([name, tool, r["setting"], r["s_per_step"], r["completion_tokens_per_s"],
                         100 * r["gen_frac"], 100 * r["train_frac"], r["peak_rss_mb"], r["completion_len_mean"],
                         r["frac_zero_std"], (vs / r["s_per_step"]) if vs else None])
    print_table(headers, rows)
    for name, res in results["configs"].items():
        fl = res.get("floor", {})
        if "floor_s" in fl:
            print(f"{name}: floor {fl['floor_s']:.3g} s/step (training {fl['train_s']:.3g} s at "
                  f"{fl['peak_bf16_gflops']:.0f} GFLOP/s bf16 + decode {fl['decode_s']:.3g} s at "
                  f"{fl['bandwidth_gbs']:.0f} GB/s); verity {res['verity_over_floor']:.2f}x the floor; "
                  + ", ".join(f"{t} MFU(train) {r['mfu_train']:.1%}" for t, r in res["runs"].items()
                              if r.get("mfu_train") is not None))
        if res.get("speedup"):
            print(f"{name}: verity {res['verity_s_per_step']:.2f} s/step vs TRL ({res['trl_setting']}) "
                  f"{res['trl_s_per_step']:.2f} s/step -> speedup {res['speedup']:.2f}x")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.grpo_vs_trl", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=[*CONFIGS, *GPU_CONFIGS, "all"], default=None,
                   help="default: all on a CPU, qwen2.5-0.5b with --device cuda")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where both tools run")
    p.add_argument("--no-floor", action="store_true", help="skip measuring the physical floor")
    p.add_argument("--steps", type=int, default=5, help="timed steps per tool (after the warm-up)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--tools", default=None, help="comma list of " + ", ".join(TOOLS) +
                   " (default: all on a CPU; verity,trl-bf16 with --device cuda)")
    p.add_argument("--timeout", type=float, default=3600.0, help=argparse.SUPPRESS)
    # hidden: shape overrides for smoke tests, and the child protocol
    for flag in ("--hidden", "--layers", "--completions", "--max-tokens", "--group-size", "--heads", "--kv-heads",
                 "--intermediate", "--model-vocab"):
        p.add_argument(flag, type=int, default=None if flag != "--group-size" else 8, help=argparse.SUPPRESS)
    p.add_argument("--lr", type=float, default=1e-4, help=argparse.SUPPRESS)
    p.add_argument("--child", choices=("verity", "trl", "floor"), help=argparse.SUPPRESS)
    p.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    gpu = a.device == "cuda"
    a.config = a.config or ("qwen2.5-0.5b" if gpu else "all")
    a.tools = a.tools or ("verity,trl-bf16" if gpu else ",".join(TOOLS))
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.child:
        child_main(a)
        return 0
    results = {"configs": {}, "steps": a.steps, "warmup": a.warmup, "machine": machine_info()}
    for cfg in resolve_configs(a):
        results["configs"][cfg.name] = run_config(cfg, a)
    if a.json:
        print(json.dumps(results, default=float))
    else:
        print_report(results)
    failed = any("error" in r for c in results["configs"].values() for r in c["runs"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
