"""Run-directory bookkeeping: metrics.jsonl, manifest.json, and the console progress line."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from verity.utils import (
    append_jsonl,
    atomic_write_json,
    git_commit,
    peak_rss_mb,
    read_jsonl,
    rewrite_jsonl,
    versions,
)


def write_manifest(run_dir: Path, kind: str, config: Any, env_id: str | None = None,
                   env_args: dict | None = None, extra: dict | None = None) -> None:
    from dataclasses import asdict

    atomic_write_json(run_dir / "manifest.json", {
        "kind": kind, "config": asdict(config), "seed": getattr(config, "seed", None), "env": env_id,
        "env_args": env_args or {}, "base_model": getattr(config, "model", None), "versions": versions(),
        "git_commit": git_commit(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **(extra or {}),
    })


class MetricsLog:
    """Appends one JSON line per step; on resume, drops lines past the restored step."""

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            keep = [r for r in read_jsonl(self.path) if r.get("step", 0) <= resume_step]
            rewrite_jsonl(self.path, keep)
        elif resume_step is None and self.path.exists():
            self.path.unlink()

    def log(self, record: dict[str, Any]) -> None:
        """Append ``record`` with ``peak_rss_mb``, the process's peak resident memory so far."""
        append_jsonl(self.path, [{**record, "peak_rss_mb": peak_rss_mb()}])


def _num(v: float) -> str:
    """Three decimals, or three significant digits for small magnitudes (a learning rate of 5e-4)."""
    return f"{v:.3f}" if v == 0 or abs(v) >= 0.01 else f"{v:.2e}"


class ProgressLine:
    """A one-line live status on stderr: step, reward, speed and time left."""

    def __init__(self, total: int, start: int = 0):
        self.total, self.start, self.t0 = total, start, time.time()
        self.tty = sys.stderr.isatty()

    def update(self, step: int, fields: dict[str, float]) -> None:
        done = step - self.start
        el = time.time() - self.t0
        left = el / max(done, 1) * (self.total - step)
        parts = " ".join(f"{k}={_num(v)}" for k, v in fields.items())
        line = f"step {step}/{self.total} {parts} | {el / max(done, 1):.1f}s/step, ~{_fmt(left)} left"
        if self.tty:
            print("\r\033[K" + line, end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _fmt(s: float) -> str:
    s = int(s)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
