"""``arithmetic``: small integer arithmetic, answer inside ``<answer>`` tags.

Reward = 1.0 × ``correct_answer`` + 0.1 × format. ``correct_answer`` comes from
:class:`~verity.rubrics.math_rubric.MathRubric`: the ``<answer>`` field (or, without tags, the
last ``\\boxed{..}``) compared with the gold value by `math-verify` (``-7``, ``-7.0``, ``\\boxed{-7}``,
``$-7$`` all count); without the ``math`` extra installed it compares plain numbers and warns once.
Offline, deterministic data. Reward functions are module-level, so the environment pickles.
"""

from __future__ import annotations

import random

from verity.envs.base import SingleTurnEnv
from verity.parsers.xml import XMLParser
from verity.rubrics.funcs import format_reward
from verity.rubrics.math_rubric import MathRubric

SYSTEM_PROMPT = "Compute the value of the expression. Answer with the number inside <answer>...</answer>."


def make_rows(n: int, seed: int, max_operand: int = 99) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
        op = rng.choice("+-*")
        value = a + b if op == "+" else a - b if op == "-" else a * b
        rows.append({"question": f"{a} {op} {b}", "answer": str(value), "task": "arithmetic"})
    return rows


def load_environment(num_train_examples: int = 2000, num_eval_examples: int = 200, random_seed: int = 0,
                     max_operand: int = 99) -> SingleTurnEnv:
    from datasets import Dataset

    parser = XMLParser(["answer"], answer_field="answer", strip_think=True)
    rubric = MathRubric([format_reward], [0.1], parser=parser)
    train = Dataset.from_list(make_rows(num_train_examples, random_seed, max_operand))
    test = Dataset.from_list(make_rows(num_eval_examples, random_seed + 1, max_operand))
    return SingleTurnEnv(dataset=train, eval_dataset=test, system_prompt=SYSTEM_PROMPT, parser=parser, rubric=rubric)
