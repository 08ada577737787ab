"""``evaluate``: examples × rollouts through :meth:`Environment.rollout_batch`, written as they finish.

Results go to ``OUT_DIR/results.jsonl`` one line per rollout, appended and fsynced after
each chunk, so a killed run loses at most the chunk in flight; ``resume=True`` skips the
``(example_id, rollout_idx)`` pairs already there. ``metadata.json`` is written atomically.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verity.errors import ConfigError, VerityError
from verity.types import SamplingArgs
from verity.utils import append_jsonl, atomic_write_json, output_dir_path, read_jsonl, rewrite_jsonl, versions

if TYPE_CHECKING:
    from verity.envs.base import Environment
    from verity.rollout.sampler import Sampler

SAMPLING_KEYS = ("max_tokens", "temperature", "top_p", "stop", "seed")


def sampling_args_from(
    d: Mapping[str, Any] | SamplingArgs | None, base: Mapping[str, Any] | None = None
) -> SamplingArgs:
    """Merge env defaults (``base``) with user args into a :class:`SamplingArgs`."""
    if isinstance(d, SamplingArgs):
        return d
    merged = {**(base or {}), **{k: v for k, v in (d or {}).items() if v is not None}}
    if "max_completion_tokens" in merged:
        merged["max_tokens"] = merged.pop("max_completion_tokens")
    known = {k: merged[k] for k in SAMPLING_KEYS if k in merged}
    if "stop" in known:
        known["stop"] = (known["stop"],) if isinstance(known["stop"], str) else tuple(known["stop"])
    extra = {k: v for k, v in merged.items() if k not in SAMPLING_KEYS}
    return SamplingArgs(**known, extra=extra)


@dataclass
class EvalResults:
    """Per-rollout records (as in results.jsonl) and the summary."""

    records: list[dict[str, Any]]
    summary: dict[str, Any]
    results_dir: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, float]:
        return {k: v["mean"] for k, v in self.summary["metrics"].items()}


def summarize(records: list[dict[str, Any]], func_names: list[str]) -> dict[str, Any]:
    """Mean ± std of ``reward`` and each reward function; error counts."""
    metrics = {}
    for name in ["reward", *func_names]:
        xs = [r["reward"] if name == "reward" else r["scores"].get(name, 0.0) for r in records]
        mean = sum(xs) / len(xs) if xs else float("nan")
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs)) if xs else float("nan")
        metrics[name] = {"mean": mean, "std": std}
    reward_errors: dict[str, int] = {}
    for r in records:
        for n in r.get("reward_errors") or {}:
            reward_errors[n] = reward_errors.get(n, 0) + 1
    gen_errors = sum(1 for r in records if r.get("error"))
    return {
        "num_rollouts": len(records),
        "metrics": metrics,
        "reward_errors": reward_errors,
        "generation_errors": gen_errors,
        "errors": gen_errors + sum(reward_errors.values()),
        "truncated": sum(1 for r in records if r.get("finish_reason") == "length"),
        "completion_tokens_mean": sum(r.get("completion_tokens", 0) for r in records) / len(records) if records else 0,
    }


async def evaluate(
    env: Environment,
    sampler: Sampler,
    num_examples: int = 5,
    rollouts_per_example: int = 3,
    sampling_args: Mapping[str, Any] | SamplingArgs | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    seed: int = 0,
    chunk_size: int | None = None,
    split: str = "eval",
    on_progress: Callable[[int, int], None] | None = None,
) -> EvalResults:
    """Evaluate ``sampler`` in ``env``; write results incrementally when ``out_dir`` is given."""
    if rollouts_per_example < 1:
        raise ConfigError(f"-r {rollouts_per_example}: rollouts per example must be >= 1")
    rubric = env.require_rubric()
    args = sampling_args_from(sampling_args, getattr(env, "sampling_args", None))
    examples = env.get_examples(split, num_examples)
    jobs = [(ex, r) for ex in examples for r in range(rollouts_per_example)]
    out = output_dir_path(out_dir) if out_dir is not None else None
    meta = {
        "env": getattr(env, "env_id", type(env).__name__), "env_args": getattr(env, "env_args", {}),
        "model": getattr(sampler, "name", "?"), "sampling_args": _args_dict(args), "seed": seed,
        "num_examples": len(examples), "rollouts_per_example": rollouts_per_example,
        "versions": versions(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "status": "running",
    }
    records: list[dict[str, Any]] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        res_path = out / "results.jsonl"
        if resume:
            check_resume_metadata(out / "metadata.json", meta)
            records = read_jsonl(res_path)
            rewrite_jsonl(res_path, records)  # drop a torn last line
        elif res_path.exists() and res_path.stat().st_size > 0:
            raise ConfigError(f"{res_path} already has results; pass --resume to continue it or choose another -o")
        atomic_write_json(out / "metadata.json", meta)
    done = {(r["example_id"], r["rollout_idx"]) for r in records}
    todo = [(ex, r) for ex, r in jobs if (ex.id, r) not in done]
    size = chunk_size or getattr(sampler, "batch_size", None) or 64
    if on_progress:
        on_progress(len(jobs) - len(todo), len(jobs))
    for start in range(0, len(todo), size):
        chunk = todo[start:start + size]
        chunk_args = args.replace(seed=(args.seed if args.seed is not None else seed) + len(done) + start)
        rollouts = await env.rollout_batch(sampler, chunk, chunk_args)
        new = [r.to_record() for r in rollouts]
        if out is not None:
            append_jsonl(out / "results.jsonl", new)
        records.extend(new)
        if on_progress:
            on_progress(len(jobs) - len(todo) + start + len(chunk), len(jobs))
    records.sort(key=lambda r: (r["example_id"], r["rollout_idx"]))
    summary = summarize(records, rubric.func_names)
    failed = bool(records) and summary["generation_errors"] == len(records)
    meta.update(status="failed" if failed else "done", finished=time.strftime("%Y-%m-%dT%H:%M:%S"), summary=summary,
                averages={k: v["mean"] for k, v in summary["metrics"].items()})
    if out is not None:
        atomic_write_json(out / "metadata.json", meta)
    return EvalResults(records=records, summary=summary, results_dir=str(out) if out else None, metadata=meta)


class AllRolloutsFailed(VerityError):
    """Every rollout of an evaluation failed to generate (the results written are kept)."""


def raise_if_all_failed(results: EvalResults) -> None:
    """Raise :class:`AllRolloutsFailed`, with the first error, when no rollout produced a completion."""
    recs = results.records
    if not recs or results.summary["generation_errors"] < len(recs):
        return
    why = " ".join(str(recs[0].get("error")).split())
    where = f"; results kept in {results.results_dir}" if results.results_dir else ""
    raise AllRolloutsFailed(f"all {len(recs)} rollouts failed, e.g. {why[:240]}{where}")
# metadata fields that --resume must not change, and the flag that sets each
_RESUME_FLAGS = {"env": "the environment", "env_args": "-a", "model": "-m", "seed": "--seed",
                 "rollouts_per_example": "-r", "max_tokens": "-t", "temperature": "-T", "top_p": "--top-p",
                 "stop": "-S stop", "extra": "-S"}


def _resume_view(meta: Mapping[str, Any]) -> dict[str, Any]:
    sa = dict(meta.get("sampling_args") or {})
    view = {k: meta.get(k) for k in ("env", "env_args", "model", "seed", "rollouts_per_example")}
    view.update({k: sa.pop(k, None) for k in ("max_tokens", "temperature", "top_p", "stop")})
    sa.pop("seed", None)
    view["extra"] = sa
    return view


def check_resume_metadata(path: Path, new: Mapping[str, Any]) -> None:
    """``--resume`` continues only the same evaluation: same model, environment and sampling settings.
    More examples (``-n``) extend it; fewer are refused, as are changes to anything else (naming the flag)."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    except (OSError, ValueError) as e:
        raise ConfigError(f"--resume: {path} is unreadable ({e}); choose another -o") from None
    a, b = _resume_view(old), _resume_view(new)
    for k, flag in _RESUME_FLAGS.items():
        if json.dumps(a[k], sort_keys=True, default=str) != json.dumps(b[k], sort_keys=True, default=str):
            raise ConfigError(f"--resume: {flag} is {b[k]!r} but the results in {path.parent} were made with "
                              f"{a[k]!r}; resume with the same settings or choose another -o")
    if isinstance(old.get("num_examples"), int) and new["num_examples"] < old["num_examples"]:
        raise ConfigError(f"--resume: -n gives {new['num_examples']} examples but {path.parent} already has "
                          f"{old['num_examples']}; use -n {old['num_examples']} or more (more extends the run)")


def _args_dict(a: SamplingArgs) -> dict[str, Any]:
    return {"max_tokens": a.max_tokens, "temperature": a.temperature, "top_p": a.top_p,
            "stop": list(a.stop), "seed": a.seed, **dict(a.extra)}

