"""Human-readable eval summaries: a rich table of mean ± std per reward function and error counts."""

from __future__ import annotations

from typing import Any


def print_summary(results: Any, title: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    s = results.summary
    t = Table(title=title or None)
    t.add_column("metric")
    t.add_column("mean", justify="right")
    t.add_column("± std", justify="right")
    t.add_column("errors", justify="right")
    for name, m in s["metrics"].items():
        t.add_row(name, f"{m['mean']:.4f}", f"{m['std']:.4f}", str(s["reward_errors"].get(name, "")))
    console = Console()
    console.print(t)
    console.print(
        f"{s['num_rollouts']} rollouts · generation errors {s['generation_errors']} · "
        f"reward-function errors {sum(s['reward_errors'].values())} · truncated {s['truncated']} · "
        f"mean completion tokens {s['completion_tokens_mean']:.1f}"
    )
    if s["reward_errors"]:
        console.print("[yellow]some reward functions raised; they were scored 0 and are counted above[/yellow]")
