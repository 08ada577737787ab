"""Jupyter helpers: a live training display and completions shown against their reference.

``trainer.train(on_step=LiveTraining(steps), progress=False)`` draws a progress bar and the
reward curve in the cell output as training runs (one display, updated in place, so a saved
notebook keeps only the final state). :func:`side_by_side` renders eval records as an HTML table
with each model answer's mistakes marked against the reference. IPython is imported only when
something is displayed; the HTML builders are plain functions.
"""

from __future__ import annotations

import difflib
import html
import io
import re
import time
from collections.abc import Sequence
from typing import Any

_TOKEN = re.compile(r"\[PII\]|\w+|\s+|[^\w\s]")
_WRONG = "background:#ffc9c9;text-decoration:line-through"
_MISSING = "background:#c3f5c3"


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    """PNG bytes of a matplotlib figure (no pyplot, no backend switch)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def diff_html(got: str | None, gold: str) -> str:
    """``got`` with its differences from ``gold`` marked, word by word: text that should not be
    there struck through in red, text that is missing inserted in green. ``None`` (the answer
    could not be parsed) renders as a red note."""
    if got is None:
        return f'<span style="{_WRONG}">(no parsable answer)</span>'
    a, b = _TOKEN.findall(got), _TOKEN.findall(gold)
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(html.escape("".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(f'<span style="{_WRONG}">{html.escape("".join(a[i1:i2]))}</span>')
        if j2 > j1:
            out.append(f'<span style="{_MISSING}">{html.escape("".join(b[j1:j2]))}</span>')
    return "".join(out)


def _question(record: dict[str, Any]) -> str:
    users = [m.get("content") or "" for m in record.get("prompt", []) if m.get("role") == "user"]
    return users[-1] if users else ""


def side_by_side(models: dict[str, Sequence[dict[str, Any]]], parse: Any, max_chars: int = 400) -> str:
    """An HTML table, one row per record of the first model: the input text, the reference, and
    each model's parsed answer with its mistakes marked (:func:`diff_html`) and its reward.

    ``models`` maps a label to eval records (``results.jsonl`` rows); the other models' records
    are matched to the first's by ``(example_id, rollout_idx)``. ``parse`` turns a completion
    into the answer text (e.g. an :class:`~verity.parsers.XMLParser`'s ``parse_answer``)."""
    if not models:
        raise ValueError("side_by_side: no models given")
    index = {lab: {(r["example_id"], r["rollout_idx"]): r for r in recs} for lab, recs in models.items()}
    head = "".join(f"<th>{html.escape(lab)}</th>" for lab in models)
    rows = [f'<table style="font-size:0.85em"><tr><th>text</th><th>reference</th>{head}</tr>']
    for r in next(iter(models.values())):
        key = (r["example_id"], r["rollout_idx"])
        cells = []
        for lab in models:
            other = index[lab].get(key)
            if other is None:
                cells.append("<td>–</td>")
                continue
            cells.append(f'<td style="text-align:left">{diff_html(parse(other["completion"]), other["answer"])}'
                         f'<br><small>reward {other["reward"]:.2f}</small></td>')
        rows.append(f'<tr><td style="text-align:left">{html.escape(_question(r)[:max_chars])}</td>'
                    f'<td style="text-align:left">{html.escape(r["answer"][:max_chars])}</td>{"".join(cells)}</tr>')
    rows.append("</table>")
    return "\n".join(rows)


def progress_html(step: int, total: int, elapsed: float, fields: dict[str, float]) -> str:
    """An HTML progress bar with the step, the given fields, s/step and the time left."""
    per = elapsed / max(step, 1)
    left = per * (total - step)
    parts = " · ".join(f"{k} {v:.3f}" for k, v in fields.items())
    return (f'<progress value="{step}" max="{total}" style="width:40%"></progress> '
            f"step {step}/{total} · {parts} · {per:.1f} s/step · {_mmss(elapsed)} elapsed, ~{_mmss(left)} left")


def _mmss(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s"


class LiveTraining:
    """``on_step`` callback for :meth:`verity.RLTrainer.train`: a progress bar and the reward
    curves, redrawn in place every ``plot_every`` steps (and at the last step)."""

    def __init__(self, total_steps: int, plot_every: int = 5):
        from IPython.display import HTML, DisplayHandle

        self.total, self.plot_every = total_steps, max(1, plot_every)
        self.rows: list[dict[str, Any]] = []
        self.t0 = time.time()
        self._bar, self._plot = DisplayHandle(), DisplayHandle()
        self._bar.display(HTML(progress_html(0, total_steps, 0.0, {})))
        self._plot.display(HTML("<i>the reward curve appears after the first steps</i>"))

    def __call__(self, metrics: dict[str, Any]) -> None:
        from IPython.display import HTML, Image

        from verity.train.plot import curve_figure

        self.rows.append(metrics)
        step = int(metrics["step"])
        fields = {"reward": metrics["reward/mean"], "loss": metrics.get("loss", 0.0)}
        self._bar.update(HTML(progress_html(step, self.total, time.time() - self.t0, fields)))
        if step % self.plot_every == 0 or step == self.total:
            self._plot.update(Image(data=figure_png(curve_figure(self.rows)), format="png"))
