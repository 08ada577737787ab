"""Bad inputs to the real CLI, table-driven (issue 11): each exits non-zero with exactly one line on stderr,
no traceback, and leaves what earlier runs wrote intact. Rows run as subprocesses, four at a time."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

VOWEL_ENV = str(Path(__file__).parent / "data" / "vowel_env.py")
RL = ["--group-size", "2", "--groups-per-batch", "2", "--max-tokens", "4", "--save-every", "1"]

# runs a CLI command on a disk that is full when metrics.jsonl or results.jsonl is appended to (ENOSPC)
DISK_FULL = """
import builtins, errno, os, sys
real_open = builtins.open
class Full:
    def __init__(self, f): self.f = f
    def __enter__(self): return self
    def __exit__(self, *a): self.f.close()
    def write(self, s): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    def __getattr__(self, k): return getattr(self.f, k)
def full_open(file, mode="r", *a, **k):
    f = real_open(file, mode, *a, **k)
    return Full(f) if str(file).endswith(("metrics.jsonl", "results.jsonl")) and "a" in mode else f
builtins.open = full_open
from verity.cli.main import main
main(sys.argv[1:])
"""


@dataclass
class Row:
    id: str
    argv: list[str]
    expect: str
    setup: Any = None  # fn(dir) -> None: damages a copied run before the command
    may_change: tuple[str, ...] = ()  # files the failing command may rewrite (same content otherwise)
    wrapper: str | None = None
    hold_lock: bool = False
    extra: dict = field(default_factory=dict)


def _write(rel: str, text: str):
    def f(d: Path) -> None:
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return f


def _truncate(rel: str):
    def f(d: Path) -> None:
        b = (d / rel).read_bytes()
        (d / rel).write_bytes(b[: len(b) // 2])
    return f


def _corrupt_metrics(d: Path) -> None:
    lines = (d / "run" / "metrics.jsonl").read_text().splitlines()
    (d / "run" / "metrics.jsonl").write_text("\n".join(["{oops", *lines[1:]]) + "\n")


def _malicious_optimizer(d: Path) -> None:
    import torch

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(d / "pwned"),)

    torch.save({"optimizer": Payload()}, d / "run" / "checkpoints" / "step_000002" / "optimizer.pt")


CKPT = "run/checkpoints/step_000002"
ROWS = [
    # --- run folders (High 1, 3) ---
    Row("train-into-finished-run", ["train", "{env}", "-m", "{model}", *RL, "--lora-rank", "0", "-o", "{run}"],
        "already holds a run"),
    Row("sft-into-finished-run", ["sft", "{data}", "-m", "{model}", "--max-steps", "1", "-o", "{run}"],
        "already holds a run"),
    Row("train-overwrite-foreign-folder", ["train", "{env}", "-m", "{model}", *RL, "--overwrite", "-o", "{d}/mine"],
        "not a verity run", setup=_write("mine/notes.txt", "keep")),
    Row("resume-changed-lora-rank", ["train", "{env}", "-m", "{model}", *RL, "--lora-rank", "2", "--resume",
                                     "-o", "{lora}"], "--lora-rank is 2"),
    Row("resume-lora-rank-0-on-lora-run", ["train", "{env}", "-m", "{model}", *RL, "--lora-rank", "0", "--resume",
                                           "-o", "{lora}"], "--lora-rank is 0"),
    Row("resume-changed-env-args", ["train", "{env}", "-m", "{model}", *RL, "-a", '{"num_examples": 32}',
                                    "--lora-rank", "0", "--resume", "-o", "{run}"], "--env-args is"),
    Row("resume-without-checkpoint", ["train", "{env}", "-m", "{model}", *RL, "--resume", "-o", "{d}/empty"],
        "no checkpoint"),
    Row("resume-and-overwrite", ["train", "{env}", "-m", "{model}", *RL, "--resume", "--overwrite", "-o", "{run}"],
        "contradict"),
    Row("train-locked-folder", ["train", "{env}", "-m", "{model}", *RL, "-o", "{d}/locked"],
        "another verity process", hold_lock=True),
    Row("train-save-every-0", ["train", "{env}", "-m", "{model}", "--save-every", "0", "-o", "{d}/x"],
        "--save-every 0: must be >= 1"),
    Row("train-keep-checkpoints-0", ["train", "{env}", "-m", "{model}", "--keep-checkpoints", "0", "-o", "{d}/x"],
        "--keep-checkpoints 0: must be >= 1"),
    # --- checkpoints (High 2) ---
    Row("resume-latest-escapes-run", ["train", "{env}", "-m", "{model}", *RL, "--lora-rank", "0", "--steps", "3",
                                      "--resume", "-o", "{run}"], "refusing to follow",
        setup=_write("run/checkpoints/latest", "../../elsewhere/step_000002\n")),
    Row("resume-malicious-optimizer", ["train", "{env}", "-m", "{model}", *RL, "--lora-rank", "0", "--steps", "3",
                                       "--resume", "-o", "{run}"], "optimizer.pt: refused to load",
        setup=_malicious_optimizer),
    Row("resume-truncated-checkpoint", ["train", "{env}", "-m", "{model}", *RL, "--lora-rank", "0", "--steps", "3",
                                        "--resume", "-o", "{run}"], "model.safetensors: not a readable safetensors",
        setup=_truncate(f"{CKPT}/model.safetensors")),
    Row("resume-corrupt-metrics-line", ["train", "{env}", "-m", "{model}", *RL, "--lora-rank", "0", "--steps", "3",
                                        "--resume", "-o", "{run}"], "metrics.jsonl line 1: not valid JSON",
        setup=_corrupt_metrics),
    Row("train-disk-full", ["train", "{env}", "-m", "{model}", *RL, "--lora-rank", "0", "--steps", "3",
                            "--resume", "-o", "{run}"], "disk full: could not write", wrapper=DISK_FULL,
        may_change=("run/manifest.json",)),
    Row("eval-disk-full", ["eval", "{env}", "-m", "{model}", "-n", "3", "-r", "1", "-t", "4", "--resume",
                           "-o", "{ev}"], "disk full: could not write", wrapper=DISK_FULL,
        may_change=("ev/metadata.json",)),
    # --- models and outputs (Low) ---
    Row("train-truncated-model", ["train", "{env}", "-m", "{d}/badmodel", *RL, "-o", "{d}/x"],
        "weights (*.safetensors) are truncated or corrupt", setup=_truncate("badmodel/model.safetensors")),
    Row("eval-garbage-model", ["eval", "{env}", "-m", "{d}/badmodel", "-n", "1", "-r", "1", "-o", "{d}/x"],
        "weights (*.safetensors) are truncated or corrupt", setup=_write("badmodel/model.safetensors", "garbage")),
    Row("eval-output-is-file", ["eval", "{env}", "-m", "{model}", "-o", "{d}/afile"], "is a file, not a directory",
        setup=_write("afile", "mine")),
    Row("train-output-is-file", ["train", "{env}", "-m", "{model}", "-o", "{d}/afile"], "is a file, not a directory",
        setup=_write("afile", "mine")),
    Row("sft-output-is-file", ["sft", "{data}", "-m", "{model}", "-o", "{d}/afile"], "is a file, not a directory",
        setup=_write("afile", "mine")),
    Row("compare-output-is-file", ["compare", "{env}", "-m", "{model}", "-m", "{model}", "-o", "{d}/afile"],
        "is a file, not a directory", setup=_write("afile", "mine")),
    Row("merge-output-is-file", ["merge", "{run}", "-o", "{d}/afile"], "is a file, not a directory",
        setup=_write("afile", "mine")),
    Row("eval-batch-size-0", ["eval", "{env}", "-m", "{model}", "--batch-size", "0"], "--batch-size 0: must be >= 1"),
    Row("sft-batch-size-0", ["sft", "{data}", "-m", "{model}", "--batch-size", "0"], "--batch-size 0: must be > 0"),
    Row("train-env-args-wrong-type", ["train", "{env}", "-m", "{model}", "-a", '{"num_examples": "many"}',
                                      "-o", "{d}/x"], "num_examples=\"many\": environment"),
    Row("eval-env-args-wrong-type", ["eval", "pii-masking", "-m", "{model}", "-a", '{"num_eval_examples": 2.5}'],
        "num_eval_examples=2.5: environment 'pii-masking' expects int"),
    Row("train-toml-wrong-type", ["train", "{env}", "-m", "{model}", "--config", "{d}/c.toml", "-o", "{d}/x"],
        "group_size = 'four' should be an integer", setup=_write("c.toml", 'group_size = "four"\n')),
    Row("sft-toml-bad-choice", ["sft", "{data}", "-m", "{model}", "--config", "{d}/c.toml", "-o", "{d}/x"],
        "lr_schedule = 'linear' is not one of", setup=_write("c.toml", 'lr_schedule = "linear"\n')),
    # --- eval --resume (Medium 6) ---
    Row("eval-resume-other-temperature", ["eval", "{env}", "-m", "{model}", "-n", "2", "-r", "1", "-t", "4",
                                          "-T", "0.5", "--resume", "-o", "{ev}"], "--resume: -T is 0.5"),
    Row("eval-resume-other-model", ["eval", "{env}", "-m", "{d}/othermodel", "-n", "2", "-r", "1", "-t", "4",
                                    "--resume", "-o", "{ev}"], "--resume: -m is"),
    Row("eval-resume-other-rollouts", ["eval", "{env}", "-m", "{model}", "-n", "2", "-r", "3", "-t", "4",
                                       "--resume", "-o", "{ev}"], "--resume: -r is 3"),
    Row("eval-resume-fewer-examples", ["eval", "{env}", "-m", "{model}", "-n", "1", "-r", "1", "-t", "4",
                                       "--resume", "-o", "{ev}"], "--resume: -n gives 1"),
    # --- bad inputs found before this issue ---
    Row("train-unknown-loss", ["train", "{env}", "--loss", "nope"], "invalid choice"),
    Row("train-group-size-1", ["train", "{env}", "--group-size", "1"], "--group-size 1"),
    Row("train-missing-config", ["train", "{env}", "--config", "{d}/none.toml"], "not found"),
    Row("train-unknown-config-key", ["train", "{env}", "--config", "{d}/c.toml"], "unknown key 'grup_size'",
        setup=_write("c.toml", "grup_size = 4\n")),
    Row("eval-bad-json-env-args", ["eval", "{env}", "-a", "{nope"], "invalid JSON"),
    Row("eval-unknown-env", ["eval", "no-such-env", "-m", "{model}"], "unknown environment"),
    Row("eval-zero-examples", ["eval", "{env}", "-n", "0"], "-n 0"),
    Row("eval-resume-without-o", ["eval", "{env}", "--resume"], "--resume needs -o"),
    Row("eval-results-exist", ["eval", "{env}", "-m", "{model}", "-n", "2", "-r", "1", "-o", "{ev}"],
        "already has results"),
    Row("sft-missing-data", ["sft", "{d}/missing.jsonl", "-m", "{model}"], "missing.jsonl"),
    Row("sft-no-data", ["sft", "-m", "{model}"], "--from-env"),
    Row("plot-not-a-run", ["plot", "{d}"], "no metrics.jsonl"),
    Row("merge-not-a-run", ["merge", "{d}", "-o", "{d}/m"], "no manifest.json"),
    Row("init-bad-name", ["init", "1bad name", "-o", "{d}"], "invalid environment name"),
    Row("unknown-command", ["frobnicate"], "invalid choice"),
]


def _snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file() and p.name != ".lock"}


def _run_row(row: Row, d: Path, fx: dict[str, str]) -> dict[str, Any]:
    shutil.copytree(fx["run"], d / "run")
    shutil.copytree(fx["lora"], d / "lora")
    shutil.copytree(fx["ev"], d / "ev")
    shutil.copytree(fx["model"], d / "badmodel")
    shutil.copytree(fx["model"], d / "othermodel")
    shutil.copytree(fx["run"] + "/checkpoints/step_000002", d / "elsewhere" / "step_000002")
    (d / "empty").mkdir()
    if row.setup:
        row.setup(d)
    subs = {"{env}": VOWEL_ENV, "{model}": fx["model"], "{data}": fx["data"], "{run}": str(d / "run"),
            "{lora}": str(d / "lora"), "{ev}": str(d / "ev"), "{d}": str(d)}
    argv = []
    for a in row.argv:
        for k, v in subs.items():
            a = a.replace(k, v)
        argv.append(a)
    before = _snapshot(d)
    fd = None
    if row.hold_lock:
        (d / "locked").mkdir()
        fd = os.open(d / "locked" / ".lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        cmd = [sys.executable, "-c", row.wrapper] if row.wrapper else [sys.executable, "-m", "verity"]
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        r = subprocess.run([*cmd, *argv], capture_output=True, text=True, timeout=600, cwd=d, env=env)
    finally:
        if fd is not None:
            os.close(fd)
    return {"r": r, "before": before, "after": _snapshot(d), "d": d}


@pytest.fixture(scope="module")
def results(tiny_model_dir, tmp_path_factory):
    from verity.envs.registry import load_environment
    from verity.train.config import RLConfig
    from verity.train.rl import RLTrainer

    base = tmp_path_factory.mktemp("bad_inputs_base")
    env = load_environment(VOWEL_ENV)
    for name, rank in (("run", 0), ("lora", 4)):
        RLTrainer(env, tiny_model_dir, RLConfig(env=VOWEL_ENV, group_size=2, groups_per_batch=2, max_tokens=4,
                                                steps=2, lora_rank=rank, save_every=1,
                                                output_dir=str(base / name))).train()
    data = base / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(8)))
    r = subprocess.run([sys.executable, "-m", "verity", "eval", VOWEL_ENV, "-m", tiny_model_dir, "-n", "2", "-r", "1",
                        "-t", "4", "-o", str(base / "ev")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    fx = {"run": str(base / "run"), "lora": str(base / "lora"), "ev": str(base / "ev"), "model": tiny_model_dir,
          "data": str(data)}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futs = {row.id: pool.submit(_run_row, row, base / "rows" / row.id, fx) for row in ROWS}
        return {k: f.result() for k, f in futs.items()}


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(results, row):
    res = results[row.id]
    r = res["r"]
    lines = r.stderr.splitlines()
    assert r.returncode != 0, f"exit 0; stdout={r.stdout[-500:]}"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert len(lines) == 1, r.stderr[-3000:]
    assert row.expect in lines[0], lines[0]
    assert lines[0].startswith("verity"), lines[0]
    before, after = res["before"], res["after"]
    changed = {k for k in before if after.get(k) != before[k]} - set(row.may_change)
    assert not changed, f"earlier outputs changed: {sorted(changed)}"
    assert not (res["d"] / "pwned").exists(), "a pickle payload ran"
