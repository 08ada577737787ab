"""Run folders: never two runs mixed in one, --overwrite starts clean, --resume refuses another model or
task, checkpoints ordered by step number, one writer at a time (issue 11, High 1 and 3)."""

import fcntl
import json
import os
from pathlib import Path

import pytest

from verity.envs.registry import load_environment
from verity.errors import ConfigError
from verity.train.config import RLConfig, SFTConfig
from verity.train.rl import RLTrainer
from verity.train.sft import SFTTrainer

VOWEL_ENV = str(Path(__file__).parent / "data" / "vowel_env.py")
CONVS = [[{"role": "user", "content": f"repeat {i}"}, {"role": "assistant", "content": str(i)}] for i in range(8)]


def _rl(out, **kw):
    base = dict(env=VOWEL_ENV, group_size=4, groups_per_batch=2, lr=1e-2, max_tokens=4, steps=2,
                lora_rank=0, save_every=1, output_dir=str(out), seed=1)
    base.update(kw)
    return RLConfig(**base)


def _sft(out, model, **kw):
    base = dict(data="x", model=model, batch_size=4, micro_batch_size=4, max_steps=2, output_dir=str(out),
                save_every=1, warmup_steps=0)
    base.update(kw)
    return SFTConfig(**base)


def _steps(run):
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def env():
    return load_environment(VOWEL_ENV)


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_rl_into_a_finished_run_is_refused_and_overwrite_starts_clean(tiny_model_dir, tmp_path, env):
    run = tmp_path / "run"
    RLTrainer(env, tiny_model_dir, _rl(run, steps=3)).train()
    before = _snapshot(run)
    with pytest.raises(ConfigError, match="already holds a run.*--resume.*--overwrite"):
        RLTrainer(env, tiny_model_dir, _rl(run, steps=2)).train()
    assert _snapshot(run) == before, "a refused run must not touch the folder"
    RLTrainer(env, tiny_model_dir, _rl(run, steps=2, overwrite=True)).train()
    assert _steps(run) == [1, 2]
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    assert ckpts == ["step_000001", "step_000002"], ckpts  # the old step 3 is gone, not kept over the new ones
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000002"


def test_sft_into_a_finished_run_is_refused(tiny_model_dir, tmp_path):
    run = tmp_path / "sft"
    SFTTrainer(CONVS, tiny_model_dir, _sft(run, tiny_model_dir)).train()
    with pytest.raises(ConfigError, match="already holds a run"):
        SFTTrainer(CONVS, tiny_model_dir, _sft(run, tiny_model_dir, max_steps=1))
    SFTTrainer(CONVS, tiny_model_dir, _sft(run, tiny_model_dir, max_steps=1, overwrite=True)).train()
    assert _steps(run) == [1]


def test_overwrite_refuses_a_folder_that_is_not_a_run(tiny_model_dir, tmp_path, env):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a verity run"):
        RLTrainer(env, tiny_model_dir, _rl(tmp_path, overwrite=True))
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("change,field", [
    ({"lora_rank": 2}, "--lora-rank"),   # another rank on a LoRA run
    ({"lora_rank": 0}, "--lora-rank"),   # a full fine-tune resuming a LoRA run
    ({"model": "other-model"}, "--model"),
    ({"env_args": '{"num_examples": 32}'}, "--env-args"),
])
def test_resume_refuses_another_model_or_task(tiny_model_dir, tmp_path, env, change, field):
    run = tmp_path / "run"
    RLTrainer(env, tiny_model_dir, _rl(run, lora_rank=4)).train()
    before = _snapshot(run)
    cfg = _rl(run, lora_rank=4, steps=3, resume=True)
    for k, v in change.items():
        setattr(cfg, k, v)
    model = cfg.model if "model" in change else tiny_model_dir
    with pytest.raises(ConfigError, match=f"--resume: {field} is .* was trained with"):
        RLTrainer(env, model, cfg)
    assert _snapshot(run) == before
    # the same settings (and a longer run) resume fine
    RLTrainer(env, tiny_model_dir, _rl(run, lora_rank=4, steps=3, resume=True, env_args="{}")).train()
    assert _steps(run) == [1, 2, 3]


def test_checkpoints_are_ordered_by_step_number(tmp_path):
    from verity.train.checkpoint import _prune, latest_checkpoint, list_checkpoints

    root = tmp_path / "checkpoints"
    for name in ("step_999999", "step_1000000", "step_000002"):
        (root / name).mkdir(parents=True)
        (root / name / "trainer_state.json").write_text("{}")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000002", "step_999999", "step_1000000"]
    assert latest_checkpoint(tmp_path).name == "step_1000000"  # no pointer: the highest step, not the last name
    _prune(root, keep=1)
    assert sorted(p.name for p in root.iterdir()) == ["step_1000000"]


def test_second_writer_gets_a_one_line_error(tiny_model_dir, tmp_path, env):
    run = tmp_path / "run"
    run.mkdir()
    fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT)  # another process writing this run
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        tr = RLTrainer(env, tiny_model_dir, _rl(run))
        with pytest.raises(ConfigError, match="another verity process .* is writing this run folder"):
            tr.train()
        assert not (run / "metrics.jsonl").exists() and not (run / "checkpoints").exists()
    finally:
        os.close(fd)
    tr.train()  # the lock is free again
    assert _steps(run) == [1, 2]


def test_lock_is_taken_by_the_writer_only(tmp_path, monkeypatch):
    """Under torch.distributed only rank 0 writes and locks; other ranks are not blocked by it."""
    from verity.train import rundir

    cfg = _rl(tmp_path / "run")
    with rundir.locked_run(cfg.output_dir, cfg, ()):
        monkeypatch.setattr(rundir, "is_writer", lambda: False)  # rank 1 of the same run
        with rundir.locked_run(cfg.output_dir, cfg, ()):
            pass
        monkeypatch.setattr(rundir, "is_writer", lambda: True)
        with pytest.raises(ConfigError, match="another verity process"), rundir.locked_run(cfg.output_dir, cfg, ()):
            pass


def test_output_path_that_is_a_file(tiny_model_dir, tmp_path, env):
    f = tmp_path / "afile"
    f.write_text("keep me")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        RLTrainer(env, tiny_model_dir, _rl(f))
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        SFTTrainer(CONVS, tiny_model_dir, _sft(f, tiny_model_dir))
    assert f.read_text() == "keep me"


@pytest.mark.parametrize("kw,msg", [
    ({"save_every": 0}, "--save-every 0: must be >= 1"),
    ({"keep_checkpoints": 0}, "--keep-checkpoints 0: must be >= 1"),
    ({"resume": True, "overwrite": True}, "contradict"),
])
def test_bad_run_flags(tiny_model_dir, tmp_path, env, kw, msg):
    with pytest.raises(ConfigError, match=msg):
        RLTrainer(env, tiny_model_dir, _rl(tmp_path / "r", **kw))
    with pytest.raises(ConfigError, match=msg):
        SFTTrainer(CONVS, tiny_model_dir, _sft(tmp_path / "s", tiny_model_dir, **kw))


def test_run_files_have_one_mode(tiny_model_dir, tmp_path, env):
    run = tmp_path / "run"
    RLTrainer(env, tiny_model_dir, _rl(run, steps=1)).train()
    mask = os.umask(0)
    os.umask(mask)
    modes = {str(p.relative_to(run)): oct(p.stat().st_mode & 0o777) for p in run.rglob("*") if p.is_file()}
    assert set(modes.values()) == {oct(0o666 & ~mask)}, modes
