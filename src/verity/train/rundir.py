"""Run-folder rules shared by ``verity train`` and ``verity sft``.

* A non-empty folder is refused unless ``--resume`` (continue it) or ``--overwrite`` (delete the
  previous run's files and start clean): two runs are never mixed in one folder.
* ``--resume`` refuses a config that changes what is being trained (model, LoRA rank/alpha,
  environment or data), naming the field.
* One writer at a time: :class:`RunLock` holds an exclusive ``flock`` on ``RUN_DIR/.lock`` for the
  whole run; a second process gets a one-line error. Only the writing process takes it: under
  ``torch.distributed`` that is rank 0 (:func:`is_writer`), so the other ranks are never blocked.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from verity.errors import ConfigError
from verity.train.checkpoint import latest_checkpoint, read_trainer_state
from verity.utils import output_dir_path

LOCK_NAME = ".lock"
# what a verity run writes into its folder; --overwrite deletes exactly these
RUN_FILES = ("checkpoints", "metrics.jsonl", "manifest.json", "reward_curve.png", "loss_curve.png", "final",
             "sync")


def is_writer() -> bool:
    """True in the process that writes the run folder: rank 0 under torch.distributed, else always."""
    try:
        import torch.distributed as dist

        return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    except ImportError:  # pragma: no cover
        return True


class RunLock:
    """Exclusive lock on a run folder for the lifetime of a run (``with RunLock(dir): ...``)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(f"-o {self.run_dir}: another verity process (pid {holder}) is writing this run "
                              "folder; wait for it to finish or choose another -o") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def check_run_dir(run_dir: str | Path, resume: bool, overwrite: bool) -> None:
    """Refuse a file, a non-empty folder without --resume/--overwrite, or --resume without a checkpoint."""
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: continue the run or start clean")
    output_dir_path(run_dir)
    contents = [p.name for p in run_dir.iterdir() if p.name != LOCK_NAME] if run_dir.is_dir() else []
    if resume:
        if latest_checkpoint(run_dir) is None:
            raise ConfigError(f"--resume: no checkpoint in {run_dir}/checkpoints")
        return
    if not contents:
        return
    if not overwrite:
        raise ConfigError(f"-o {run_dir}: already holds a run ({', '.join(sorted(contents)[:3])}); "
                          "pass --resume to continue it, --overwrite to start clean, or choose another -o")
    if not any(name in RUN_FILES for name in contents):
        raise ConfigError(f"-o {run_dir}: --overwrite refuses to empty a folder that is not a verity run "
                          f"({', '.join(sorted(contents)[:3])})")


def clear_run(run_dir: str | Path) -> None:
    """``--overwrite``: delete the previous run's files (call with the lock held)."""
    for name in RUN_FILES:
        p = Path(run_dir) / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def _same(field: str, old: Any, new: Any) -> bool:
    if field == "env_args":
        def parse(v: Any) -> Any:
            try:
                return json.loads(v) if isinstance(v, str) else v
            except ValueError:
                return v
        return parse(old) == parse(new)
    if field in ("model", "data", "env", "from_env") and isinstance(old, str) and isinstance(new, str):
        return old == new or (Path(old).exists() and Path(old).resolve() == Path(new).resolve())
    return old == new


def check_resume_config(run_dir: str | Path, config: Mapping[str, Any], fields: Sequence[str]) -> None:
    """``--resume`` with a config whose ``fields`` differ from the checkpoint's: a one-line error naming the first."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        return
    saved = read_trainer_state(ckpt).get("config") or {}
    for f in fields:
        if f in saved and f in config and not _same(f, saved[f], config[f]):
            name = _LABELS.get(f, "--" + f.replace("_", "-"))
            raise ConfigError(f"--resume: {name} is {config[f]!r} but the run in {run_dir} was trained with "
                              f"{saved[f]!r}; resume with the same {name}, or start a new run with another -o")


_LABELS = {"env": "the environment", "data": "the data"}


def preflight(run_dir: str | Path, config: Any, fields: Sequence[str]) -> None:
    """The folder and resume checks, before any model is loaded (repeated under the lock by :func:`open_run`)."""
    check_run_dir(run_dir, config.resume, config.overwrite)
    if config.resume:
        check_resume_config(run_dir, asdict(config), fields)


@contextlib.contextmanager
def locked_run(run_dir: str | Path, config: Any, fields: Sequence[str]) -> Iterator[None]:
    """For the run's duration: lock the folder (the writer only), re-check it, clear it on ``--overwrite``."""
    if not is_writer():
        yield
        return
    with RunLock(run_dir):
        preflight(run_dir, config, fields)
        if config.overwrite:
            clear_run(run_dir)
        yield
