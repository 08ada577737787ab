"""``code-tests``: write a Python function; reward = fraction of hidden tests it passes in the sandbox.

Each row asks for one function (name, signature, description) from a fixed set of small tasks.
Its hidden tests are inputs drawn from the row's seed; the expected outputs are computed here
by a reference implementation and never enter the sandbox: the model's code runs in
:mod:`verity.sandbox` on the inputs only and prints its outputs, which are compared outside. So
printing "all tests passed" or exiting early earns nothing.

Reward: ``tests_passed`` = passed / hidden tests (0 when no function is found). A run that hits
a sandbox limit (time, memory, output) scores 0 and is reported as a reward error with the
sandbox status. The code is the last fenced block of the answer (```python ... ```); an answer
without one scores 0. Offline, deterministic data.
"""

from __future__ import annotations

import inspect
import json
import random
import re
from collections.abc import Callable
from typing import Any

from verity.envs.base import SingleTurnEnv
from verity.rubrics.rubric import Rubric
from verity.sandbox import SandboxLimits, run_python

SYSTEM_PROMPT = ("Write the requested Python function. Answer with one ```python code block that defines it; "
                 "no example calls or prints.")

_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


class SandboxRunError(RuntimeError):
    """The code hit a sandbox limit (the message names it); the rollout scores 0."""


def _sum_of_evens(xs: list[int]) -> int:
    return sum(x for x in xs if x % 2 == 0)


def _reverse_words(s: str) -> str:
    return " ".join(reversed(s.split()))


def _count_vowels(s: str) -> int:
    return sum(c in "aeiouAEIOU" for c in s)


def _is_palindrome(s: str) -> bool:
    t = [c.lower() for c in s if c.isalnum()]
    return t == t[::-1]


def _fizzbuzz(n: int) -> str:
    return "FizzBuzz" if n % 15 == 0 else "Fizz" if n % 3 == 0 else "Buzz" if n % 5 == 0 else str(n)


def _digit_sum(n: int) -> int:
    return sum(int(c) for c in str(abs(n)))


def _second_largest(xs: list[int]) -> int:
    return sorted(set(xs))[-2]


def _run_lengths(s: str) -> list[list]:
    out: list[list] = []
    for c in s:
        if out and out[-1][0] == c:
            out[-1][1] += 1
        else:
            out.append([c, 1])
    return out


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return abs(a)


def _rotate(xs: list[int], k: int) -> list[int]:
    if not xs:
        return []
    k %= len(xs)
    return xs[-k:] + xs[:-k] if k else list(xs)


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(["red", "blue", "sky", "tree", "Anna", "level", "echo", "moon"]) for _ in range(n))


# name -> (signature, description, reference, input generator)
TASKS: dict[str, tuple[str, str, Callable[..., Any], Callable[[random.Random], list]]] = {
    "sum_of_evens": ("sum_of_evens(xs: list[int]) -> int", "Return the sum of the even numbers in xs.",
                     _sum_of_evens, lambda r: [[r.randint(-20, 20) for _ in range(r.randint(0, 8))]]),
    "reverse_words": ("reverse_words(s: str) -> str", "Return the words of s (split on whitespace) in reverse "
                      "order, joined by single spaces.", _reverse_words, lambda r: [_words(r, r.randint(1, 5))]),
    "count_vowels": ("count_vowels(s: str) -> int", "Count the vowels (a, e, i, o, u, either case) in s.",
                     _count_vowels, lambda r: [_words(r, r.randint(0, 4))]),
    "is_palindrome": ("is_palindrome(s: str) -> bool", "Return whether s reads the same backwards, ignoring case "
                      "and non-alphanumeric characters.", _is_palindrome,
                      lambda r: [r.choice(["Level", "A man, a plan", "racecar", "No lemon, no melon", "abca", "x"])]),
    "fizzbuzz": ("fizzbuzz(n: int) -> str", "Return 'FizzBuzz' if n is divisible by 15, 'Fizz' if by 3, 'Buzz' if "
                 "by 5, else str(n).", _fizzbuzz, lambda r: [r.randint(1, 100)]),
    "digit_sum": ("digit_sum(n: int) -> int", "Return the sum of the decimal digits of n (ignore the sign).",
                  _digit_sum, lambda r: [r.randint(-99999, 99999)]),
    "second_largest": ("second_largest(xs: list[int]) -> int", "Return the second largest distinct value in xs "
                       "(xs has at least two distinct values).", _second_largest,
                       lambda r: [[r.randint(0, 9) for _ in range(4)] + [10, 11]]),
    "run_lengths": ("run_lengths(s: str) -> list", "Return the run-length encoding of s as a list of "
                    "[character, count] pairs.", _run_lengths,
                    lambda r: ["".join(r.choice("aab") for _ in range(r.randint(0, 8)))]),
    "gcd": ("gcd(a: int, b: int) -> int", "Return the greatest common divisor of a and b (non-negative).",
            _gcd, lambda r: [r.randint(0, 500), r.randint(1, 500)]),
    "rotate": ("rotate(xs: list[int], k: int) -> list[int]", "Rotate xs right by k positions (k >= 0) and return "
               "the new list.", _rotate,
               lambda r: [[r.randint(0, 9) for _ in range(r.randint(0, 6))], r.randint(0, 9)]),
}

# Runs in the sandbox: defines the candidate, calls it on each input, prints one JSON line of results.
HARNESS = r'''
import json, sys
out = sys.stdout
sys.stdout = sys.stderr  # the candidate's own prints never mix with the results
spec = json.load(open("inputs.json"))
ns = {"__name__": "solution"}
try:
    exec(compile(open("solution.py").read(), "solution.py", "exec"), ns)
    fn = ns[spec["func"]]
except BaseException as e:
    fn, err = None, f"{type(e).__name__}: {e}"
results = []
for args in spec["inputs"]:
    if fn is None:
        results.append({"error": err})
        continue
    try:
        results.append({"value": fn(*args)})
    except BaseException as e:
        results.append({"error": f"{type(e).__name__}: {e}"})
out.write(json.dumps(results, default=repr) + "\n")
'''


def extract_code(text: str) -> str | None:
    """The last fenced code block of ``text`` (None without one: the format is part of the task)."""
    blocks = _FENCE.findall(text or "")
    return blocks[-1] if blocks else None


def make_rows(n: int, seed: int, tests_per_row: int = 5) -> list[dict]:
    rng = random.Random(seed)
    names = sorted(TASKS)
    rows = []
    for i in range(n):
        name = names[i % len(names)] if i < len(names) else rng.choice(names)
        sig, desc, ref, gen = TASKS[name]
        inputs = [gen(rng) for _ in range(tests_per_row)]
        expected = [ref(*json.loads(json.dumps(a))) for a in inputs]
        question = f"Write a Python function `{sig}`.\n{desc}"
        answer = f"```python\n{inspect.getsource(ref).replace(ref.__name__, name, 1)}```"
        info = json.dumps({"func": name, "inputs": inputs, "expected": expected})
        rows.append({"question": question, "answer": answer, "info": info, "task": "code_tests"})
    return rows


class TestsPassed:
    """The reward function ``tests_passed`` (a class so that the environment pickles)."""

    __name__ = "tests_passed"

    def __init__(self, limits: SandboxLimits):
        self.limits = limits

    async def __call__(self, completion: Any, info: Any, parser: Any) -> float:
        code = extract_code(parser.parse_answer(completion) or "")
        if code is None or f"def {info['func']}" not in code:
            return 0.0
        spec = json.dumps({"func": info["func"], "inputs": info["inputs"]})
        r = await run_python(HARNESS, self.limits, files={"solution.py": code, "inputs.json": spec})
        if r.status not in ("ok", "error"):
            raise SandboxRunError(f"sandbox {r.status} after {r.wall_s:.1f} s (layer {r.layer})")
        try:
            results = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return 0.0  # the program died before the harness reported (e.g. os._exit in the candidate)
        expected = json.loads(json.dumps(info["expected"]))
        passed = sum(isinstance(got, dict) and type(got.get("value")) is type(want) and got["value"] == want
                     for got, want in zip(results, expected, strict=False))
        return passed / len(expected)


def load_environment(num_train_examples: int = 500, num_eval_examples: int = 50, random_seed: int = 0,
                     tests_per_row: int = 5, timeout_s: float = 10.0, memory_mb: int = 512) -> SingleTurnEnv:
    from datasets import Dataset

    limits = SandboxLimits(timeout_s=timeout_s, cpu_s=max(1, int(timeout_s / 2)), memory_mb=memory_mb)
    rubric = Rubric([TestsPassed(limits)], [1.0])
    train = Dataset.from_list(make_rows(num_train_examples, random_seed, tests_per_row))
    test = Dataset.from_list(make_rows(num_eval_examples, random_seed + 1, tests_per_row))
    return SingleTurnEnv(dataset=train, eval_dataset=test, system_prompt=SYSTEM_PROMPT, rubric=rubric)
