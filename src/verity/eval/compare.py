"""``verity compare``: several models on the same examples and seeds, side by side.

Each model is evaluated exactly as ``verity eval`` does it (:func:`verity.eval.run.run_eval`,
results in ``OUT/<model>/results.jsonl`` + ``metadata.json``). The comparison is a table with
one row per metric (total reward, then each reward function) and one column per model: each mean
with its 95% bootstrap confidence interval (examples resampled with their rollouts kept together,
the same draws for every model), the best mean of each row in bold. A second table gives each
model's paired difference to the first model, with its interval, and per-example wins / ties /
losses. Written as ``comparison.md``, ``comparison.json`` and a bar chart with the intervals,
``comparison.png``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from verity.config import flag, parse_env_args
from verity.errors import ConfigError
from verity.eval.config import EvalConfig, EvalFlags
from verity.eval.stats import LEVEL, RESAMPLES, by_example, mean_interval, paired
from verity.types import DType, RewardErrorPolicy

LOCAL = ("", "-")


@dataclass
class CompareConfig(EvalFlags):
    env: str = flag(positional=True, default="pii-masking")
    """Environment id, importable module, or path to a .py file exposing load_environment."""
    models: list[str] = flag("-m", "--model", default=[])
    """A model to compare (give -m two or more times): local directory, hub id, or a name served at its -b."""
    base_urls: list[str] = flag("-b", "--base-url", default=[])
    """Endpoint of the model at the same position among the -m (repeatable; '-' or '' = run it in-process)."""
    api_key_vars: list[str] = flag("-k", "--api-key-var", default=[])
    """Environment variable with the API key of the model at the same position (repeatable; '-' or '' = none)."""
    output_dir: str | None = flag("-o", "--output-dir", default=None)
    """Comparison directory (default: outputs/compare/ENV--TIME); one subdirectory per model."""
    seed: int = flag("--seed", default=0)
    """Sampling seed, the same for every model."""
    json: bool = flag("--json", default=False)
    """Print comparison.json on stdout instead of the markdown table."""
    on_reward_error: RewardErrorPolicy = flag("--on-reward-error", default="zero")
    """A reward function that raises: score 0 and count it (zero), or abort (raise)."""
    dtype: DType = flag("--dtype", default="auto")
    """Weights dtype for in-process models."""

    def validate(self) -> None:
        if len(self.models) < 2:
            raise ConfigError(f"-m: give at least two models to compare (got {len(self.models)})")
        for flag_name, vals in (("-b", self.base_urls), ("-k", self.api_key_vars)):
            if len(vals) > len(self.models):
                raise ConfigError(f"{flag_name} given {len(vals)} times but -m only {len(self.models)} times "
                                  f"({flag_name} values are matched to -m by position)")
        for i, key in enumerate(self.api_key_vars):
            if key not in LOCAL and self.base_url(i) is None:
                raise ConfigError(f"-k {key}: model {self.models[i]!r} has no -b endpoint to send the key to")
        self.eval_config(0).validate()

    def base_url(self, i: int) -> str | None:
        """Endpoint of model ``i`` (None = in-process)."""
        v = self.base_urls[i] if i < len(self.base_urls) else ""
        return None if v in LOCAL else v

    def api_key_var(self, i: int) -> str | None:
        v = self.api_key_vars[i] if i < len(self.api_key_vars) else ""
        return None if v in LOCAL else v

    def eval_template(self) -> EvalConfig:
        """The ``verity eval`` configuration every model shares: the EvalFlags and the settings below."""
        shared = [f.name for f in fields(EvalFlags)] + ["env", "seed", "on_reward_error", "dtype"]
        return EvalConfig(**{name: getattr(self, name) for name in shared})

    def eval_config(self, i: int) -> EvalConfig:
        """The ``verity eval`` configuration of model ``i``: the template with its model and endpoint."""
        return replace(self.eval_template(), model=self.models[i], base_url=self.base_url(i),
                       api_key_var=self.api_key_var(i))


@dataclass
class Comparison:
    """Per-model metrics on one environment, in -m order."""

    env: str
    labels: list[str]
    models: list[dict[str, Any]]
    """One entry per model: model, base_url, label, results_dir, metrics {name: {mean, std, ci_low, ci_high}},
    errors, ...; models after the first also vs_first {name: {diff, ci_low, ci_high, wins, ties, losses}}."""
    metric_names: list[str]
    settings: dict[str, Any] = field(default_factory=dict)

    def best(self) -> dict[str, list[str]]:
        """Labels with the highest mean per metric (ties all count; NaN never wins)."""
        out = {}
        for name in self.metric_names:
            vals = [m["metrics"].get(name, {}).get("mean", float("nan")) for m in self.models]
            finite = [v for v in vals if not math.isnan(v)]
            top = max(finite) if finite else None
            out[name] = [lab for lab, v in zip(self.labels, vals, strict=False) if top is not None and _close(v, top)]
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (NaN means become null, so the file is standard JSON)."""
        return _no_nan({"env": self.env, "settings": self.settings, "metrics": self.metric_names,
                        "models": self.models, "best": self.best()})


def _no_nan(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_no_nan(v) for v in x]
    return x


def _close(a: float, b: float) -> bool:
    return not math.isnan(a) and abs(a - b) <= 1e-12 * max(1.0, abs(b))


def model_labels(models: Sequence[str]) -> list[str]:
    """Short unique column labels: a local path's last component, else the name; '#2' etc. on clashes."""
    base = [Path(m).name if ("/" in m and Path(m).exists()) else m for m in models]
    out, seen = [], {}  # type: ignore[var-annotated]
    for b in base:
        seen[b] = seen.get(b, 0) + 1
        out.append(b if seen[b] == 1 else f"{b}#{seen[b]}")
    return out


def subdir_names(labels: Sequence[str]) -> list[str]:
    """One filesystem-safe, unique results subdirectory per model."""
    out, used = [], set()  # type: ignore[var-annotated]
    for i, lab in enumerate(labels):
        s = re.sub(r"[^A-Za-z0-9_.-]+", "_", lab).strip("._")[-60:] or f"model{i}"
        name, k = s, 2
        while name in used:
            name, k = f"{s}-{k}", k + 1
        used.add(name)
        out.append(name)
    return out


def markdown_table(c: Comparison) -> str:
    """Rows: metrics; columns: models; cells 'mean [95% CI]' ('mean ± std' without intervals); the best
    mean per row in bold. Followed by the paired table (:func:`paired_table`) when there is one."""
    best = c.best()
    head = "| metric | " + " | ".join(_md_escape(lab) for lab in c.labels) + " |"
    sep = "|---|" + "---:|" * len(c.labels)
    rows = [head, sep]
    for name in c.metric_names:
        cells = []
        for lab, m in zip(c.labels, c.models, strict=False):
            v = m["metrics"].get(name)
            if v is None:
                cells.append("–")
                continue
            if v.get("ci_low") is not None:
                text = f"{v['mean']:.4f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"
            else:
                text = f"{v['mean']:.4f} ± {v['std']:.4f}"
            cells.append(f"**{text}**" if lab in best[name] else text)
        rows.append(f"| {_md_escape(name)} | " + " | ".join(cells) + " |")
    errs = [str(m.get("errors", 0)) for m in c.models]
    rows.append("| errors | " + " | ".join(errs) + " |")
    pairs = paired_table(c)
    return "\n".join(rows) + "\n" + (f"\n{pairs}" if pairs else "")


def paired_table(c: Comparison) -> str:
    """Each model after the first minus the first: mean of the per-example differences [95% CI], and
    W / T / L, the examples where it scored higher / the same / lower. '' when there is nothing to pair."""
    others = [(lab, m["vs_first"]) for lab, m in zip(c.labels[1:], c.models[1:], strict=False) if m.get("vs_first")]
    if not others:
        return ""
    first = _md_escape(c.labels[0])
    head = "| metric | " + " | ".join(f"{_md_escape(lab)} − {first} | W / T / L" for lab, _ in others) + " |"
    rows = [head, "|---|" + "---:|---:|" * len(others)]
    for name in c.metric_names:
        cells = []
        for _, vs in others:
            d = vs.get(name)
            cells += ["–", "–"] if d is None else [f"{d['diff']:+.4f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]",
                                                    f"{d['wins']} / {d['ties']} / {d['losses']}"]
        rows.append(f"| {_md_escape(name)} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def comparison_markdown(c: Comparison) -> str:
    s = c.settings
    boot = f"{s['bootstrap_resamples']} resamples" if s.get("bootstrap_resamples") else "resampling"
    lines = [f"# {c.env}: {' vs '.join(c.labels)}", "",
             f"{s.get('num_examples')} examples × {s.get('rollouts_per_example')} rollouts, seed {s.get('seed')}, "
             f"same examples and seeds for every model. Best mean per row in bold. [low, high]: {LEVEL:.0%} "
             f"bootstrap confidence interval ({boot} of the examples, "
             f"rollouts of an example kept together, seed {s.get('seed')}). Second table: each model minus "
             f"{c.labels[0]}, mean of the per-example differences [{LEVEL:.0%} CI]; W / T / L = examples where "
             "it scored higher / the same / lower.", "", markdown_table(c)]
    lines += ["| model | source | results |", "|---|---|---|"]
    for lab, m in zip(c.labels, c.models, strict=False):
        lines.append(f"| {_md_escape(lab)} | {m.get('base_url') or 'in-process'} | {m.get('results_dir')} |")
    return "\n".join(lines) + "\n"


def _whiskers(vals: list[dict[str, Any] | None], key: str = "mean") -> tuple[list[float], list[list[float]]]:
    """Bar heights and asymmetric [below, above] error lengths from intervals (0 where there is none)."""
    nan = float("nan")
    heights = [v.get(key, nan) if v else nan for v in vals]
    below, above = [], []
    for h, v in zip(heights, vals, strict=True):
        lo, hi = (v.get("ci_low"), v.get("ci_high")) if v else (None, None)
        below.append(h - lo if lo is not None else 0.0)
        above.append(hi - h if hi is not None else 0.0)
    return heights, [below, above]


def comparison_figure(c: Comparison) -> Any:
    """Grouped bars (one group per metric, one bar per model) with 95% bootstrap intervals; with two or
    more models, a second panel of the paired differences to the first model with their intervals.
    A matplotlib Figure built without pyplot (no global backend switch)."""
    from matplotlib.figure import Figure

    n_models, n_metrics = len(c.labels), len(c.metric_names)
    others = [(k, m) for k, m in enumerate(c.models) if k > 0 and m.get("vs_first")]
    width = 0.8 / max(n_models, 1)
    fig = Figure(figsize=(max(6.0, 0.75 * n_metrics * max(n_models, 2)) + (4.5 if others else 0), 4.5))
    axes = fig.subplots(1, 2 if others else 1, squeeze=False, width_ratios=[1.6, 1] if others else None)[0]
    ax = axes[0]
    for k, (lab, m) in enumerate(zip(c.labels, c.models, strict=False)):
        heights, err = _whiskers([m["metrics"].get(n) for n in c.metric_names])
        xs = [i + (k - (n_models - 1) / 2) * width for i in range(n_metrics)]
        ax.bar(xs, heights, width, yerr=err, capsize=3, label=lab, color=f"C{k}")
    _axis(ax, c.metric_names, "mean score")
    n_ex, n_r = c.settings.get("num_examples"), c.settings.get("rollouts_per_example")
    ax.set_title(f"{c.env}: {n_ex} examples × {n_r} rollouts, {LEVEL:.0%} CI", fontsize="medium")
    ax.legend(fontsize="small")
    if others:
        ax2, w2 = axes[1], 0.8 / len(others)
        for j, (k, m) in enumerate(others):
            heights, err = _whiskers([m["vs_first"].get(n) for n in c.metric_names], key="diff")
            xs = [i + (j - (len(others) - 1) / 2) * w2 for i in range(n_metrics)]
            ax2.bar(xs, heights, w2, yerr=err, capsize=3, color=f"C{k}", label=f"{c.labels[k]} − {c.labels[0]}")
        _axis(ax2, c.metric_names, f"difference to {c.labels[0]}")
        ax2.set_title(f"paired difference, {LEVEL:.0%} CI", fontsize="medium")
        ax2.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _axis(ax: Any, names: Sequence[str], ylabel: str) -> None:
    ax.set_xticks(list(range(len(names))))
    ax.set_xticklabels(names, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.axhline(0, color="black", linewidth=0.6)


def bar_chart(c: Comparison, path: str | Path) -> None:
    """Write :func:`comparison_figure` to ``path`` (PNG)."""
    comparison_figure(c).savefig(path, dpi=120)


def write_outputs(c: Comparison, out_dir: str | Path) -> dict[str, str]:
    """comparison.md, comparison.json and comparison.png in ``out_dir``; returns their paths."""
    from verity.utils import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    paths = {"markdown": str(out / "comparison.md"), "json": str(out / "comparison.json"),
             "chart": str(out / "comparison.png")}
    atomic_write_text(paths["markdown"], comparison_markdown(c))
    atomic_write_json(paths["json"], c.to_json())
    bar_chart(c, paths["chart"])
    return paths


def compare(cfg: CompareConfig, out_dir: str | Path, show_progress: bool = True, log: Any = None) -> Comparison:
    """Evaluate every model of ``cfg`` on the same examples and seeds; write the comparison files."""
    from verity.envs.registry import load_env_for
    from verity.eval.run import run_eval
    from verity.rollout.sampler import make_sampler
    from verity.utils import output_dir_path

    output_dir_path(out_dir)
    env = load_env_for(cfg.env, cfg.env_args, cfg.on_reward_error)
    names = ["reward", *env.require_rubric().func_names]
    labels = model_labels(cfg.models)
    subdirs = subdir_names(labels)
    entries: list[dict[str, Any]] = []
    records: list[list[dict[str, Any]]] = []
    for i, model in enumerate(cfg.models):
        ecfg = cfg.eval_config(i)
        if log:
            log(f"[{i + 1}/{len(cfg.models)}] {labels[i]} ({ecfg.base_url or 'in-process'})")
        sampler = make_sampler(model, base_url=ecfg.base_url, api_key_env=ecfg.api_key_var,
                               concurrency=cfg.concurrency, batch_size=cfg.batch_size, dtype=cfg.dtype,
                               chat_template=cfg.chat_template, template_kwargs=cfg.template_kwargs())
        res = run_eval(env, sampler, ecfg, show_progress=show_progress, out_dir=str(Path(out_dir) / subdirs[i]))
        del sampler  # free an in-process model before loading the next
        records.append(res.records)
        entries.append({"model": model, "label": labels[i], "base_url": ecfg.base_url, "results_dir": res.results_dir,
                        "metrics": res.summary["metrics"], "errors": res.summary["errors"],
                        "generation_errors": res.summary["generation_errors"], "truncated": res.summary["truncated"],
                        "completion_tokens_mean": res.summary["completion_tokens_mean"]})
    settings = {"num_examples": _num_examples(entries[0]), "rollouts_per_example": cfg.rollouts_per_example,
                "seed": cfg.seed, "env_args": parse_env_args(cfg.env_args), "max_tokens": cfg.max_tokens,
                "temperature": cfg.temperature, "top_p": cfg.top_p, "bootstrap_resamples": RESAMPLES,
                "confidence_level": LEVEL}
    attach_statistics(entries, records, names, seed=cfg.seed)
    c = Comparison(env=cfg.env, labels=labels, models=entries, metric_names=names, settings=settings)
    write_outputs(c, out_dir)
    return c


def attach_statistics(entries: list[dict[str, Any]], records: Sequence[Sequence[dict[str, Any]]],
                      names: Sequence[str], seed: int, resamples: int = RESAMPLES) -> None:
    """Add to each entry's metrics the 95% bootstrap interval of the mean (``ci_low``, ``ci_high``)
    and, to every model after the first, ``vs_first``: the paired difference to the first model
    with its interval and per-example wins / ties / losses. Examples are resampled with the same
    draws for every model (rollouts of an example kept together)."""
    first = {n: by_example(records[0], n) for n in names}
    for k, (entry, recs) in enumerate(zip(entries, records, strict=True)):
        vs: dict[str, dict[str, float | int]] = {}
        for n in names:
            groups = by_example(recs, n)
            if not groups:
                continue
            iv = mean_interval([groups[e] for e in sorted(groups)], resamples, seed)
            entry["metrics"].setdefault(n, {"mean": iv.value})
            entry["metrics"][n].update(ci_low=iv.low, ci_high=iv.high)
            if k > 0 and first[n]:
                p = paired(first[n], groups, resamples, seed)
                vs[n] = {"diff": p.diff.value, "ci_low": p.diff.low, "ci_high": p.diff.high,
                         "wins": p.wins, "ties": p.ties, "losses": p.losses}
        if k > 0:
            entry["vs_first"] = vs


def _num_examples(entry: dict[str, Any]) -> int | None:
    import json

    try:
        meta = json.loads((Path(entry["results_dir"]) / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta.get("num_examples")
