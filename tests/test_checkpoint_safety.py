"""Resuming never runs code from the run folder, never follows ``latest`` out of it, and turns a corrupt
checkpoint, a corrupt metrics line or a full disk into one-line errors (issue 11, High 2 and Low)."""

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from verity.envs.registry import load_environment
from verity.errors import CheckpointError, DiskFullError, VerityError
from verity.train.config import RLConfig
from verity.train.rl import RLTrainer

VOWEL_ENV = str(Path(__file__).parent / "data" / "vowel_env.py")


def _cfg(out, **kw):
    base = dict(env=VOWEL_ENV, group_size=4, groups_per_batch=2, lr=1e-2, max_tokens=4, steps=2,
                lora_rank=0, save_every=1, output_dir=str(out), seed=1)
    base.update(kw)
    return RLConfig(**base)


class Payload:
    """A pickle that creates a directory when unpickled (harmless stand-in for arbitrary code)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture(scope="module")
def env():
    return load_environment(VOWEL_ENV)


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, tmp_path_factory, env):
    run = tmp_path_factory.mktemp("finished") / "run"
    RLTrainer(env, tiny_model_dir, _cfg(run)).train()
    return run


@pytest.fixture
def run(finished_run, tmp_path):
    shutil.copytree(finished_run, tmp_path / "run")
    return tmp_path / "run"


def _resume(env, tiny_model_dir, run, **kw):
    return RLTrainer(env, tiny_model_dir, _cfg(run, steps=3, resume=True, **kw)).train()


@pytest.mark.parametrize("victim", ["optimizer.pt", "rng.pt"])
def test_malicious_pickle_does_not_run(tiny_model_dir, run, tmp_path, env, victim):
    ckpt = run / "checkpoints" / "step_000002"
    marker = tmp_path / "pwned"
    if victim == "rng.pt":  # a checkpoint in the older format, whose RNG state was pickled
        (ckpt / "rng.json").unlink()
    torch.save({"optimizer": Payload(marker), "python": Payload(marker)}, ckpt / victim)
    with pytest.raises(CheckpointError, match=f"{victim}: refused to load"):
        _resume(env, tiny_model_dir, run)
    assert not marker.exists(), "the pickle payload ran"


def test_checkpoint_holds_no_pickled_rng_and_resumes_old_format(tiny_model_dir, run, env):
    ckpt = run / "checkpoints" / "step_000002"
    assert not (ckpt / "rng.pt").exists()
    rng = json.loads((ckpt / "rng.json").read_text())
    assert len(rng["python"][1]) == 625 and len(rng["torch"]) > 0
    import random
    # the older format (rng.pt with the same states) still resumes, read with weights_only=True
    random.seed(7)
    torch.manual_seed(7)
    torch.save({"python": random.getstate(), "torch": torch.get_rng_state()}, ckpt / "rng.pt")
    (ckpt / "rng.json").unlink()
    _resume(env, tiny_model_dir, run)
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_optimizer_state_is_loaded_onto_the_cpu(tiny_model_dir, run, env, monkeypatch):
    """``map_location='cpu'``: a checkpoint written on a GPU resumes on a CPU-only machine."""
    from verity.train import checkpoint

    calls = []
    real = torch.load

    def spy(*a, **kw):
        calls.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr(checkpoint.torch, "load", spy)
    _resume(env, tiny_model_dir, run)
    assert calls and all(kw.get("weights_only") is True and kw.get("map_location") == "cpu" for kw in calls), calls


@pytest.mark.parametrize("target", ["../../elsewhere/step_000002", "/tmp/step_000002", "step_000002/../../x"])
def test_latest_pointer_must_stay_inside_the_run(tiny_model_dir, run, tmp_path, env, target):
    outside = tmp_path / "elsewhere" / "step_000002"
    shutil.copytree(run / "checkpoints" / "step_000002", outside)
    (run / "checkpoints" / "latest").write_text(target + "\n")
    with pytest.raises(CheckpointError, match="not a checkpoint inside .*refusing to follow it"):
        _resume(env, tiny_model_dir, run)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_checkpoint_weights(tiny_model_dir, run, env, damage):
    f = run / "checkpoints" / "step_000002" / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors file"):
        _resume(env, tiny_model_dir, run)


def test_corrupt_middle_line_of_metrics_on_resume(tiny_model_dir, run, env):
    m = run / "metrics.jsonl"
    lines = m.read_text().splitlines()
    m.write_text("\n".join(["{not json", *lines[1:]]) + "\n")
    before = m.read_text()
    with pytest.raises(VerityError, match="metrics.jsonl line 1: not valid JSON"):
        _resume(env, tiny_model_dir, run)
    assert m.read_text() == before


def test_disk_full_while_appending_metrics(tiny_model_dir, tmp_path, env, monkeypatch):
    from verity import utils

    real = os.fsync

    def full(fd):  # the disk fills up when the first metrics line is flushed
        if os.readlink(f"/proc/self/fd/{fd}").endswith("metrics.jsonl"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    tr = RLTrainer(env, tiny_model_dir, _cfg(tmp_path / "r", steps=1))
    monkeypatch.setattr(utils.os, "fsync", full)
    with pytest.raises(DiskFullError, match=r"^disk full: could not write .*metrics.jsonl"):
        tr.train()


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(tiny_model_dir, run, env, monkeypatch):
    """torch.save into a disk that fills up after 1000 bytes: the step-3 checkpoint fails, step 2 stays."""
    from verity.train import checkpoint

    real = torch.save

    class FullDisk:
        def __init__(self):
            self.n = 0

        def write(self, b):
            self.n += len(b)
            if self.n > 1000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return len(b)

        def flush(self):
            pass

    monkeypatch.setattr(checkpoint.torch, "save", lambda obj, path, **kw: real(obj, FullDisk(), **kw))
    with pytest.raises(DiskFullError, match="^disk full: could not write checkpoint .*step_000003"):
        _resume(env, tiny_model_dir, run)
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000002"
    assert (run / "checkpoints" / "step_000002" / "trainer_state.json").is_file()


def test_torch_short_write_counts_as_disk_full():
    """What torch's zip writer raises when the file system refuses bytes (seen with a full disk)."""
    from verity.utils import disk_full_as_error

    with pytest.raises(DiskFullError, match="^disk full: could not write x/optimizer.pt"), \
            disk_full_as_error("x/optimizer.pt"):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    with pytest.raises(RuntimeError, match="something else"), disk_full_as_error("x"):
        raise RuntimeError("something else")
