"""The GPU check's parts run on a CPU with tiny shapes (scripts/gpu_check.sh runs them on a GPU).

Smoke runs, not measurements: each script runs end to end with its real code path, reports its
figures in the documented shape and exits 0.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_decode_check_cpu_smoke() -> None:
    r = _run("scripts/decode_check.py", "--device", "cpu", "--shape", "qwen3-tiny", "--batch", "3", "--max-tokens", "6",
             "--repeats", "1", "--check-every", "4")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert [s["check_every"] for s in out["settings"]] == [1, 4]
    assert all(s["tokens_per_s"] > 0 and s["host_syncs"] is None for s in out["settings"])


def test_grpo_vs_trl_real_size_shape_cpu_smoke() -> None:
    """The qwen2.5-0.5b config (GQA, its own MLP width, a vocabulary larger than the tokenizer), shrunk.

    TRL is the bench extra (not installed by `make test`): without it only verity's side runs."""
    tools = ("verity", "trl-bf16") if importlib.util.find_spec("trl") else ("verity",)
    r = _run("-m", "benchmarks.grpo_vs_trl", "--config", "qwen2.5-0.5b", "--device", "cpu", "--steps", "1",
             "--hidden", "64", "--layers", "1", "--heads", "4", "--kv-heads", "2", "--intermediate", "96",
             "--model-vocab", "1024", "--completions", "16", "--max-tokens", "6", "--tools", ",".join(tools),
             "--json")
    res = json.loads(r.stdout)["configs"]["qwen2.5-0.5b"]
    assert res["verity_over_floor"] > 1  # a real step is slower than the floor
    if len(tools) == 2:
        assert res["speedup"] > 0
    fl = res["floor"]
    assert fl["peak_bf16_gflops"] > 0 and fl["bandwidth_gbs"] > 0 and fl["floor_s"] == fl["train_s"] + fl["decode_s"]
    for tool in tools:
        run = res["runs"][tool]
        assert 0 < run["mfu_train"] < 1 and run["peak_rss_mb"] > 0 and run["completion_tokens_per_s"] > 0


def test_load_test_streams_cpu_smoke(tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    r = _run("scripts/load_test_serve.py", "--toy", "qwen3-tiny", "--device", "cpu", "--clients", "4", "--requests",
             "1", "--max-tokens", "4", "--batch-sizes", "4", "--torch-threads", "1", "--json", str(out))
    assert "TTFT" in r.stdout
    res = json.loads(out.read_text())["results"][0]
    assert res["errors"] == 0 and res["streamed"] and 0 < res["ttft_p50_s"] <= res["latency_p50_s"]


def test_gpu_check_script_parses() -> None:
    subprocess.run(["bash", "-n", str(REPO / "scripts" / "gpu_check.sh")], check=True)


def test_gpu_recipe_check_small_on_cpu(tmp_path: Path) -> None:
    """scripts/gpu_recipe_check.py --device cpu --small: 2 RL steps, save, resume for a 3rd, the plan, JSON."""
    out = tmp_path / "recipe.json"
    r = _run("scripts/gpu_recipe_check.py", "--device", "cpu", "--small", "--out", str(out),
             "--run-dir", str(tmp_path / "run"))
    res = json.loads(out.read_text())
    assert [s["step"] for s in res["steps"]] == [1, 2, 3] and res["resumed_steps"] == [3] and res["resume_ok"]
    assert res["trained_every_step"]  # every step had groups with a signal: the training step ran
    assert res["auto"]["micro_batch"] >= 1 and res["auto"]["decode_batch"] >= 1
    assert res["plan_gib"]["total"] > 0 and res["peak_gpu_gib"] is None  # no GPU here
    assert set(res["s_per_step"]) == {"generate", "score", "train"}
    assert (tmp_path / "run" / "checkpoints").is_dir()
    assert "memory plan" in r.stdout and "activations" in r.stdout


def test_gpu_recipe_check_without_cuda_is_a_one_line_error(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        return
    p = subprocess.run([sys.executable, "scripts/gpu_recipe_check.py", "--out", str(tmp_path / "x.json")], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "no CUDA device" in p.stderr
