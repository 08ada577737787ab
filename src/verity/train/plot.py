"""Reward curves: ``RUN_DIR/reward_curve.png`` from metrics.jsonl (train raw + smoothed, eval points)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from verity.utils import read_jsonl


def _smooth(xs: list[float], alpha: float = 0.2) -> list[float]:
    out, s = [], None
    for x in xs:
        s = x if s is None else alpha * x + (1 - alpha) * s
        out.append(s)
    return out


def curve_figure(rows: list[dict]) -> Any:
    """Reward and each reward function (train raw + EMA, eval markers) from metrics lines; SFT rows plot loss.

    A :class:`matplotlib.figure.Figure` built without pyplot, so no global backend is switched
    (safe inside Jupyter, where the caller displays it)."""
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("no metrics rows to plot")
    is_rl = "reward/mean" in rows[0]
    skip = ("reward/std", "reward/errors")
    # SFT rows plot the loss; preference runs (verity dpo) also their implicit reward margin and accuracy
    keys = [k for k in rows[0] if k.startswith("reward/") and k not in skip] if is_rl else \
        ["loss"] + [k for k in ("rewards/margin", "rewards/accuracy") if any(k in r for r in rows)]
    fig = Figure(figsize=(4.2 * len(keys), 3.4))
    axes = fig.subplots(1, len(keys), squeeze=False)
    for ax, k in zip(axes[0], keys, strict=False):
        pts = [(r["step"], r[k]) for r in rows if k in r]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, alpha=0.3, color="C0", label="train")
        ax.plot(xs, _smooth(ys), color="C0", label="train (EMA)")
        ev = [(r["step"], r[f"eval/{k}"]) for r in rows if f"eval/{k}" in r]
        if ev:
            ax.plot([e[0] for e in ev], [e[1] for e in ev], "o-", color="C3", label="eval")
        ax.set_title(k.replace("reward/", "") if k != "reward/mean" else "total reward")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the run's curves (:func:`curve_figure`) to ``reward_curve.png`` (RL) or ``loss_curve.png`` (SFT)."""
    run_dir = Path(run_dir)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    if not rows:
        raise FileNotFoundError(f"{run_dir}/metrics.jsonl has no rows")
    fig = curve_figure(rows)
    out = Path(out) if out else run_dir / ("reward_curve.png" if "reward/mean" in rows[0] else "loss_curve.png")
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(out)
    return out
