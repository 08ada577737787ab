"""Reward curves: ``RUN_DIR/reward_curve.png`` from metrics.jsonl (train raw + smoothed, eval points)."""

from __future__ import annotations

from pathlib import Path

from verity.utils import read_jsonl


def _smooth(xs: list[float], alpha: float = 0.2) -> list[float]:
    out, s = [], None
    for x in xs:
        s = x if s is None else alpha * x + (1 - alpha) * s
        out.append(s)
    return out


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw reward and each reward function (train raw + EMA, eval markers); SFT runs plot loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    if not rows:
        raise FileNotFoundError(f"{run_dir}/metrics.jsonl has no rows")
    is_rl = "reward/mean" in rows[0]
    skip = ("reward/std", "reward/errors")
    keys = [k for k in rows[0] if k.startswith("reward/") and k not in skip] if is_rl else ["loss"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
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
    out = Path(out) if out else run_dir / ("reward_curve.png" if is_rl else "loss_curve.png")
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out
