"""Small environments for the doctor tests: load_environment(kind=...) picks the flaw."""

from __future__ import annotations

import random

import verity as vf


def exact(completion, answer) -> float:
    return float((completion[-1]["content"] or "").strip() == answer)


def raises(completion, answer) -> float:
    if completion[-1]["content"] == answer:
        return 1.0
    raise ValueError("cannot score this")


def noisy(completion, answer) -> float:
    return exact(completion, answer) + random.random()


def pays_for_empty(completion, answer) -> float:
    text = completion[-1]["content"] or ""
    return 1.0 if not text.strip() or text.strip() == answer else 0.0


FUNCS = {"ok": [exact], "raises": [raises], "noisy": [noisy], "empty": [pays_for_empty]}


def load_environment(kind: str = "ok"):
    from datasets import Dataset

    rows = [{"question": f"Say {w}", "answer": w} for w in ("alpha", "beta", "gamma", "delta")]
    return vf.SingleTurnEnv(dataset=Dataset.from_list(rows), rubric=vf.Rubric(FUNCS[kind]))
