"""torchrun data-parallel training (gloo, 2 CPU ranks) equals one process on the same global batch."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from verity.envs.registry import load_environment
from verity.train.config import RLConfig
from verity.train.rl import RLTrainer
from verity.train.rollouts import rollout_seed

VOWEL_ENV = str(Path(__file__).parent / "data" / "vowel_env.py")
# 2 steps of 4 groups x 4 rollouts, LoRA rank 4, fp32 so both sides compute in the same precision
ARGS: dict[str, Any] = dict(group_size=4, groups_per_batch=4, lr=3e-2, max_tokens=8, steps=2, lora_rank=4, save_every=1,
            seed=3, dtype="fp32", micro_batch_size=4)
# summed gradients of two half-batches vs one batch differ only by float32 summation order
ATOL = 1e-5


def _flags(**kw) -> list[str]:
    out = []
    for k, v in kw.items():
        out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def _torchrun(model_dir: str, out: Path, extra: tuple[str, ...] = (), **over) -> subprocess.CompletedProcess:
    args = {**ARGS, **over}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "verity", "train", VOWEL_ENV, "-m", model_dir, "-o", str(out), *_flags(**args), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def _adapter(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step_{step:06d}" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    """One single-process run (group seeding) and one 2-rank torchrun run of the same config."""
    root = tmp_path_factory.mktemp("dist")
    single = RLTrainer(load_environment(VOWEL_ENV), tiny_model_dir,
                       RLConfig(env=VOWEL_ENV, output_dir=str(root / "single"), rollout_seeding="group", **ARGS))
    single.train(progress=False)
    p = _torchrun(tiny_model_dir, root / "ddp")
    assert p.returncode == 0, p.stderr[-3000:]
    return root / "single", root / "ddp", p


def test_two_ranks_equal_one_process(runs):
    single, ddp, proc = runs
    rows = [json.loads(x) for x in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]  # one line per step: rank 0 alone writes
    ref = [json.loads(x) for x in (single / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(ref, rows, strict=True):  # the same rollouts, so the same rewards; real learning happened
        assert a["reward/mean"] == pytest.approx(b["reward/mean"], abs=1e-6)
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert b["frac_zero_std"] < 1.0 and b["grad_norm"] > 0
    assert json.loads((ddp / "manifest.json").read_text())["world_size"] == 2
    assert proc.stdout.count("run: ") == 1  # rank 0 alone prints the summary
    for step in (1, 2):
        a, b = _adapter(single, step), _adapter(ddp, step)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(a[k], b[k], atol=ATOL, rtol=0), (step, k, float((a[k] - b[k]).abs().max()))
    moved = [k for k in a if not torch.allclose(_adapter(ddp, 1)[k], a[k], atol=1e-4)]
    assert moved, "the second step changed nothing: no learning signal"


def test_resume_under_torchrun_is_exact(runs, tiny_model_dir, tmp_path):
    _, ddp, _ = runs
    cut = tmp_path / "cut"
    shutil.copytree(ddp, cut)
    shutil.rmtree(cut / "checkpoints" / "step_000002")  # as if killed after step 1
    (cut / "checkpoints" / "latest").write_text("step_000001\n")
    p = _torchrun(tiny_model_dir, cut, ("--resume",))
    assert p.returncode == 0, p.stderr[-3000:]
    a, b = _adapter(ddp, 2), _adapter(cut, 2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [json.loads(x)["step"] for x in (cut / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_uneven_split_is_refused(tiny_model_dir, tmp_path):
    p = _torchrun(tiny_model_dir, tmp_path / "odd", groups_per_batch=3)
    assert p.returncode != 0
    ranks = p.stderr.split("torch/distributed/elastic")[0]  # what the ranks wrote, before torchrun's own report
    assert ranks.count("error: --groups-per-batch 3 does not split over 2 ranks") == 2
    assert "Traceback" not in ranks


def test_rollout_seed_is_a_function_of_seed_step_position():
    assert rollout_seed(0, 1, 2) == rollout_seed(0, 1, 2)
    assert len({rollout_seed(0, s, j) for s in range(10) for j in range(10)}) == 100
    assert 0 <= rollout_seed(123, 4, 5) < 2**31


def test_sft_two_ranks_equal_one_process(tiny_model_dir, tmp_path):
    data = tmp_path / "sft.jsonl"
    rows = [{"prompt": f"say {w}", "completion": f"{w} {w} {w}"} for w in
            ("one", "two", "three", "four", "five", "six", "seven", "eight")]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    flags = dict(batch_size=4, micro_batch_size=2, lr=1e-2, max_steps=2, save_every=1, warmup_steps=0,
                 lora_rank=4, seed=2, dtype="fp32")
    cmd = [sys.executable, "-m", "verity", "sft", str(data), "-m", tiny_model_dir, *_flags(**flags)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    single = subprocess.run([*cmd, "-o", str(tmp_path / "one")], capture_output=True, text=True, env=env,
                            timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        *cmd[1:], "-o", str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    a_rows = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    b_rows = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in b_rows] == [1, 2]
    for a, b in zip(a_rows, b_rows, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5) and a["tokens"] == b["tokens"]
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["world_size"] == 2
    a, b = _adapter(tmp_path / "one", 2), _adapter(tmp_path / "two", 2)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=ATOL, rtol=0), (k, float((a[k] - b[k]).abs().max()))
