"""``verity doctor``: check an environment before training in it; one pass/warn/fail line per check.

Without a model it scores probe completions on a few eval examples:

* **dataset** -- every row of both splits validates (prompt, answer, info, task); sizes.
* **rubric** -- the environment has reward functions.
* **errors** -- no reward function raises on any probe, none takes longer than ``timeout_s``.
* **range** -- every function's scores are finite; the observed range per function.
* **determinism** -- the same completion scored twice gets the same scores.
* **pickle** -- the environment pickles (parallel workers need that; else they must reload it).
* **gold** -- the reference answer, in the environment's format, scores above the empty answer
  (an environment may define ``reference_completion(example) -> messages``: a whole reference
  conversation, e.g. with the tool calls a tool environment pays for).
* **hacking probes** -- empty, whitespace, the prompt echoed, the gold answer with its format
  broken, a very long output, the format alone: a warning when one scores near the top
  (>= ``hack_fraction`` of the gold answer's reward).

With a sampler (``-m``): ``n`` examples x ``rollouts`` rollouts -- the pass-rate histogram over
examples, the share of groups whose rollouts all got the same reward (RL learns nothing there)
and a chat-template audit: rendering the sampled conversation with the model's chat template
must reproduce the sampled prompt and completion token ids at the turn boundary -- for
multi-turn rollouts at every turn boundary (:func:`turn_audit`).
"""

from __future__ import annotations

import asyncio
import math
import pickle
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from verity.errors import VerityError
from verity.models.chat import render
from verity.types import DoctorCheck, Example, Message, SamplingArgs

PROBES = ("empty", "whitespace", "prompt_echo", "gold_broken_format", "very_long", "format_only")
_MARKUP = re.compile(r"</?[A-Za-z_][\w-]*>|```[\w-]*")


def _check(name: str, status: str, detail: str) -> DoctorCheck:
    return DoctorCheck(name=name, status=status, detail=detail)  # type: ignore[arg-type]


def gold_text(env: Any, ex: Example) -> str:
    """The reference answer as the model should write it (wrapped in the parser's answer tag)."""
    answer = ex.answer or ""
    if _MARKUP.search(answer):
        return answer  # already formatted (e.g. a fenced code block)
    fmt, field = getattr(env.parser, "format", None), getattr(env.parser, "answer_field", None)
    if callable(fmt) and field:
        try:
            return str(fmt(**{field: answer}))
        except Exception:
            return answer
    return answer


def probe_texts(env: Any, ex: Example) -> dict[str, str]:
    """The reward-hacking probe completions for one example."""
    gold = gold_text(env, ex)
    if isinstance(ex.prompt, str):  # completion mode: the prompt is the text
        echo = ex.prompt
    else:
        user = [m for m in ex.prompt if m.get("role") == "user"]
        echo = str(user[-1].get("content", "")) if user else ""
    broken = _MARKUP.sub("", gold).strip()
    if ex.answer and ex.answer in gold and gold != ex.answer:
        fmt_only = gold.replace(ex.answer, "")
    else:  # the answer is the formatted text itself: keep only its markup
        fmt_only = "\n".join(_MARKUP.findall(gold))
    filler = "The answer is not known. " * 2000
    return {
        "empty": "", "whitespace": " \n\t \n", "prompt_echo": echo,
        "gold_broken_format": broken, "very_long": filler + broken + " " + filler, "format_only": fmt_only,
    }


def gold_completion(env: Any, ex: Example) -> str | list[Message]:
    """The reference completion: the environment's ``reference_completion(example)`` when it has one
    (a multi-turn or tool environment: the whole conversation, e.g. with its tool calls), else
    :func:`gold_text` as one assistant message."""
    ref: Callable[[Example], Sequence[Message]] | None = getattr(env, "reference_completion", None)
    return list(ref(ex)) if ref is not None else gold_text(env, ex)


async def _score(env: Any, ex: Example, text: str | list[Message], timeout_s: float) -> tuple[Any, float]:
    t0 = time.monotonic()
    completion = text if isinstance(text, list) else [{"role": "assistant", "content": text}]
    s = await asyncio.wait_for(env.rubric.score(
        prompt=list(ex.prompt), completion=completion, answer=ex.answer,
        info=ex.info, task=ex.task, state={}), timeout=timeout_s)
    return s, time.monotonic() - t0


def check_dataset(env: Any) -> tuple[list[DoctorCheck], list[Example]]:
    sizes, examples = [], []
    for split, ds in (("train", env.dataset), ("eval", env.eval_dataset)):
        if ds is None:
            sizes.append(f"{split}: none")
            continue
        try:
            rows = env.get_examples(split, -1)
        except VerityError as e:
            return [_check("dataset", "fail", str(e))], []
        sizes.append(f"{split}: {len(rows)} rows")
        examples = rows if split == "eval" or not examples else examples
    status = "pass" if examples else "fail"
    if examples and any(s.endswith("none") for s in sizes):
        status = "warn"
    no_answer = sum(1 for ex in examples if not ex.answer)
    detail = ", ".join(sizes) + (f"; {no_answer} eval rows without an answer" if no_answer else "")
    return [_check("dataset", status, detail)], examples


def check_pickle(env: Any) -> DoctorCheck:
    try:
        pickle.loads(pickle.dumps(env))
    except Exception as e:
        return _check("pickle", "warn", f"not picklable ({type(e).__name__}: {str(e)[:120]}); parallel workers "
                                        "must re-load it by id")
    return _check("pickle", "pass", "the environment pickles and unpickles")


async def _score_probes(env: Any, examples: Sequence[Example], timeout_s: float) -> dict[str, Any]:
    """Score gold + probes on each example, gold twice (determinism)."""
    jobs = []
    for ex in examples:
        texts: dict[str, str | list[Message]] = {"gold": gold_completion(env, ex),
                                                 "gold_again": gold_completion(env, ex), **probe_texts(env, ex)}
        texts["very_long_again"] = texts["very_long"]
        jobs += [(ex, kind, text) for kind, text in texts.items()]
    results = await asyncio.gather(*(_score(env, ex, t, timeout_s) for ex, _, t in jobs), return_exceptions=True)
    return {"jobs": jobs, "results": results}


def _summarise_errors(jobs: list, results: list, timeout_s: float) -> DoctorCheck:
    timeouts = sum(isinstance(r, asyncio.TimeoutError) for r in results)
    raised = [r for r in results if isinstance(r, BaseException) and not isinstance(r, asyncio.TimeoutError)]
    errs: dict[str, str] = {}
    for r in results:
        if not isinstance(r, BaseException):
            errs.update({k: v for k, v in r[0].errors.items() if k not in errs})
    slow = max((r[1] for r in results if not isinstance(r, BaseException)), default=0.0)
    if timeouts:
        return _check("errors", "fail", f"{timeouts}/{len(jobs)} scorings took longer than {timeout_s:g} s")
    if raised:
        return _check("errors", "fail", f"scoring raised: {type(raised[0]).__name__}: {raised[0]}")
    if errs:
        name, msg = next(iter(errs.items()))
        return _check("errors", "fail", f"reward function {name!r} raised on a probe: {msg[:160]}"
                      + (f" (and {len(errs) - 1} more functions)" if len(errs) > 1 else ""))
    return _check("errors", "pass", f"{len(jobs)} scorings, no exceptions; slowest {slow:.2f} s")


def _ranges(jobs: list, results: list) -> tuple[DoctorCheck, DoctorCheck]:
    per_fn: dict[str, list[float]] = {}
    by_key: dict[tuple[int, str], Any] = {}
    for (ex, kind, _), r in zip(jobs, results, strict=True):
        if isinstance(r, BaseException):
            continue
        by_key[(ex.id, kind)] = r[0]
        for name, v in r[0].scores.items():
            per_fn.setdefault(name, []).append(float(v))
    bad = [n for n, vs in per_fn.items() if not all(math.isfinite(v) for v in vs)]
    rng = "; ".join(f"{n} [{min(vs):.3g}, {max(vs):.3g}]" for n, vs in per_fn.items())
    range_check = _check("range", "fail" if bad else "pass",
                         f"non-finite scores from {bad}" if bad else rng or "no scores")
    diffs = [(ex_id, kind) for (ex_id, kind), s in by_key.items() if kind in ("gold", "very_long")
             and (ex_id, kind + "_again") in by_key and dict(s.scores) != dict(by_key[(ex_id, kind + "_again")].scores)]
    det = _check("determinism", "fail" if diffs else "pass",
                 f"{len(diffs)} completions scored differently twice, e.g. {diffs[0][1]} on example {diffs[0][0]}"
                 if diffs else "the same completions scored twice got the same scores")
    return range_check, det


def _hacking(jobs: list, results: list, hack_fraction: float) -> list[DoctorCheck]:
    rewards: dict[str, list[float]] = {}
    for (_, kind, _), r in zip(jobs, results, strict=True):
        if not isinstance(r, BaseException):
            rewards.setdefault(kind, []).append(float(r[0].reward))
    mean = {k: sum(v) / len(v) for k, v in rewards.items() if v}
    top, empty = mean.get("gold", 0.0), mean.get("empty", 0.0)
    out = [_check("gold", "pass" if top > empty else "warn",
                  f"gold answer mean reward {top:.3g} vs empty {empty:.3g}"
                  + ("" if top > empty else ": the reference does not beat an empty answer (format not guessed?)"))]
    for kind in PROBES:
        if kind not in mean:
            continue
        hot = top > 0 and mean[kind] >= hack_fraction * top
        out.append(_check(f"probe:{kind}", "warn" if hot else "pass",
                          f"mean reward {mean[kind]:.3g} ({mean[kind] / top:.0%} of gold)" if top > 0
                          else f"mean reward {mean[kind]:.3g}"))
    return out


async def check_rubric(env: Any, examples: Sequence[Example], timeout_s: float = 30.0,
                       hack_fraction: float = 0.8) -> list[DoctorCheck]:
    if env.rubric is None or not env.rubric.funcs:
        return [_check("rubric", "fail", "the environment has no reward functions")]
    named = zip(env.rubric.func_names, env.rubric.weights, strict=True)
    checks = [_check("rubric", "pass", f"{len(env.rubric.funcs)} reward functions: "
                     + ", ".join(f"{n} ×{w:g}" for n, w in named))]
    probed = await _score_probes(env, examples, timeout_s)
    jobs, results = probed["jobs"], probed["results"]
    checks.append(_summarise_errors(jobs, results, timeout_s))
    checks += list(_ranges(jobs, results))
    checks += _hacking(jobs, results, hack_fraction)
    return checks


def _histogram(rates: Sequence[float]) -> str:
    bins = [0, 0, 0, 0, 0]  # 0, (0, .25], (.25, .5], (.5, 1), 1
    for r in rates:
        bins[0 if r == 0 else 4 if r >= 1 else 1 if r <= 0.25 else 2 if r <= 0.5 else 3] += 1
    labels = ("0", "≤25%", "≤50%", "<100%", "100%")
    return " ".join(f"{lab}:{n}" for lab, n in zip(labels, bins, strict=True))


def template_audit(tokenizer: Any, rollouts: Sequence[Any], eos_ids: Sequence[int] = ()) -> DoctorCheck:
    """Re-render each sampled conversation with the chat template. The sampled prompt ids must be
    reproduced up to the turn boundary (fail otherwise); completion text that re-tokenizes to other
    ids than were sampled is a warning (verity trains on the sampled ids; re-rendering pipelines drift)."""
    boundary, drift, checked = [], [], 0
    for r in rollouts:
        if not r.prompt_ids or r.error:
            continue
        checked += 1
        full = render(tokenizer, [*r.prompt, *r.completion], add_generation_prompt=False)
        p, c = list(r.prompt_ids), list(r.completion_ids)
        while c and c[-1] in eos_ids:
            c.pop()
        if full[:len(p)] != p:
            boundary.append(f"example {r.example_id}: the prompt re-renders differently before the assistant turn")
        elif full[len(p):len(p) + len(c)] != c:
            at = next((i for i, (a, b) in enumerate(zip(full[len(p):], c, strict=False)) if a != b), len(c))
            drift.append(f"example {r.example_id}: completion ids differ from token {at}")
    return _audit_verdict(
        checked, boundary, drift, empty="no token ids to audit (endpoint or errored rollouts)",
        fail="{n}/{checked} conversations break at the turn boundary; {first}",
        warn="turn boundaries reproduced in {checked}/{checked}; the sampled text re-tokenizes to other ids in "
             "{n}/{checked} ({first})",
        ok=f"{checked} conversations re-render to the sampled token ids")


def _audit_verdict(checked: int, broken: list[str], drift: list[str], empty: str, fail: str, warn: str,
                   ok: str) -> DoctorCheck:
    """fail on a broken conversation, warn on drift (or nothing audited), else pass; ``fail``/``warn``
    are formatted with ``n`` (how many), ``checked`` and ``first`` (the first one's note)."""
    if not checked:
        return _check("template", "warn", empty)
    for status, notes, text in (("fail", broken, fail), ("warn", drift, warn)):
        if notes:
            return _check("template", status, text.format(n=len(notes), checked=checked, first=notes[0]))
    return _check("template", "pass", ok)


def _diff_region(r: Any, position: int) -> str:
    """Where in the context ``prompt_ids + completion_ids`` a position lies: the prompt, tokens the
    model sampled, or tokens the environment and the chat template put between turns."""
    if position < len(r.prompt_ids):
        return "prompt"
    j = position - len(r.prompt_ids)
    return "sampled" if j < len(r.completion_mask) and r.completion_mask[j] == 1 else "between turns"


def turn_audit(tokenizer: Any, rollouts: Sequence[Any], tools: Sequence[Mapping[str, Any]] | None = None,
               ) -> DoctorCheck:
    """Multi-turn rollouts: re-render each conversation at every turn boundary
    (:func:`verity.rollout.tokens.audit_rollout`) and compare with the ids the model saw there.
    A difference in the prompt or in the tokens between turns (environment messages, template
    markup) fails; one inside sampled text (it re-tokenizes to other ids, or the template rewrites
    earlier turns, e.g. drops ``<think>`` blocks) is a warning: verity trains on the sampled ids,
    a trainer that re-renders would not."""
    from verity.rollout.tokens import audit_rollout

    broken, drift, checked, boundaries = [], [], 0, 0
    for r in rollouts:
        if r.error or not r.turns or not r.prompt_ids or isinstance(r.prompt, str) or isinstance(r.completion, str):
            continue
        checked += 1
        for a in audit_rollout(tokenizer, r, tools):
            boundaries += 1
            if a.matches or a.first_diff is None:
                continue
            where = _diff_region(r, a.first_diff)
            note = f"example {r.example_id} turn {a.turn}: differs at token {a.first_diff} ({where})"
            (drift if where == "sampled" else broken).append(note)
            break
    return _audit_verdict(
        checked, broken, drift, empty="no multi-turn token ids to audit (endpoint or errored rollouts)",
        fail="{n}/{checked} multi-turn conversations re-render to other ids than the model saw; {first}",
        warn="in {n}/{checked} multi-turn conversations earlier sampled text re-renders to other ids ({first}); "
             "verity trains on the sampled ids",
        ok=f"{checked} multi-turn conversations: all {boundaries} turn boundaries re-render to the ids the model saw")


async def check_rollouts(env: Any, sampler: Any, examples: Sequence[Example], rollouts: int,
                         args: SamplingArgs) -> list[DoctorCheck]:
    jobs = [(ex, i) for ex in examples for i in range(rollouts)]
    rs = await env.rollout_batch(sampler, jobs, args)
    errors = sum(1 for r in rs if r.error)
    by_ex: dict[int, list[float]] = {}
    for r in rs:
        by_ex.setdefault(r.example_id, []).append(float(r.reward))
    golds = {ex.id: (await _score(env, ex, gold_completion(env, ex), 60.0))[0].reward for ex in examples}
    rates = [sum(v >= golds[i] - 1e-9 for v in vs) / len(vs) for i, vs in by_ex.items()]
    flat = sum(1 for vs in by_ex.values() if max(vs) - min(vs) < 1e-9)
    mean = sum(r.reward for r in rs) / max(len(rs), 1)
    checks = [
        _check("rollouts", "fail" if errors == len(rs) else "warn" if errors else "pass",
               f"{len(rs)} rollouts, mean reward {mean:.3g}, {errors} errors"),
        _check("pass-rate", "pass", f"share of rollouts reaching the gold reward, per example: {_histogram(rates)}"),
        _check("zero-variance", "warn" if flat > len(by_ex) / 2 else "pass",
               f"{flat}/{len(by_ex)} groups have the same reward in every rollout (no RL signal there)"),
    ]
    tok = getattr(sampler, "tokenizer", None)
    if tok is None:
        checks.append(_check("template", "warn", "sampler has no tokenizer (endpoint): chat template not audited"))
    elif any(len(r.turns) > 1 for r in rs):
        checks.append(turn_audit(tok, rs, getattr(env, "oai_tools", None) or None))
    else:
        checks.append(template_audit(tok, rs, getattr(sampler, "eos_ids", ())))
    return checks


async def diagnose(env: Any, sampler: Any = None, num_examples: int = 5, rollouts: int = 4,
                   sampling_args: SamplingArgs | None = None, timeout_s: float = 30.0,
                   hack_fraction: float = 0.8) -> list[DoctorCheck]:
    """All checks for ``env`` (see the module doc); with ``sampler`` also the rollout checks."""
    checks, examples = check_dataset(env)
    examples = examples[:max(num_examples, 1)]
    if not examples:
        return checks
    checks += await check_rubric(env, examples, timeout_s, hack_fraction)
    checks.append(check_pickle(env))
    if sampler is not None and env.rubric is not None and env.rubric.funcs:
        args = sampling_args or SamplingArgs(max_tokens=int(env.sampling_args.get("max_tokens", 256)))
        checks += await check_rollouts(env, sampler, examples, rollouts, args)
    return checks


def exit_code(checks: Sequence[DoctorCheck]) -> int:
    return 1 if any(c.status == "fail" for c in checks) else 0


def summary(checks: Sequence[DoctorCheck]) -> Mapping[str, int]:
    return {s: sum(c.status == s for c in checks) for s in ("pass", "warn", "fail")}
