"""code-tests: hidden tests run in the sandbox; hostile answers score 0 (limit hits are reported as
reward errors) while the other rollouts of the same batch finish and score."""

from __future__ import annotations

import asyncio
import json

import pytest

from verity.envs.code_tests import TASKS, extract_code, make_rows
from verity.envs.registry import load_environment


@pytest.fixture(scope="module")
def env():
    return load_environment("code-tests", num_train_examples=4, num_eval_examples=len(TASKS), timeout_s=6.0,
                            memory_mb=256)


def _score(env, example, text):
    return env.rubric.score(prompt=list(example.prompt), completion=[{"role": "assistant", "content": text}],
                            answer=example.answer, info=example.info, task=example.task)


def _fence(code: str) -> str:
    return f"Here it is:\n```python\n{code}\n```\n"


def test_rows_are_deterministic_and_answers_hidden():
    a, b = make_rows(12, seed=3), make_rows(12, seed=3)
    assert a == b and a != make_rows(12, seed=4)
    info = json.loads(a[0]["info"])
    assert len(info["inputs"]) == len(info["expected"]) == 5
    assert "expected" not in a[0]["question"]


def test_extract_code_takes_the_last_fence():
    assert extract_code("```python\na = 1\n```\ntext\n```\nb = 2\n```") == "b = 2\n"
    assert extract_code("def f(): pass") is None


def test_gold_answers_pass_and_partial_credit(env):
    examples = env.get_examples("eval")

    async def run():
        gold = [_score(env, ex, ex.answer) for ex in examples]
        ds = next(ex for ex in examples if ex.info["func"] == "digit_sum")
        # str(n) of a negative number has a '-': this attempt fails exactly the negative inputs
        partial = _score(env, ds, _fence("def digit_sum(n):\n    return sum(int(c) for c in str(n))"))
        return await asyncio.gather(*gold), ds, await partial

    gold, ds, partial = asyncio.run(run())
    assert [s.reward for s in gold] == [1.0] * len(examples), [s.errors for s in gold]
    want = sum(1 for (n,) in ds.info["inputs"] if n >= 0) / len(ds.info["inputs"])
    assert partial.reward == pytest.approx(want) and not partial.errors


HOSTILE = {
    "infinite_loop": ("while True:\n    pass", "timeout|cpu_limit"),
    "fork_bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
                  "timeout|cpu_limit"),
    "memory_bomb": ("def {f}(*a):\n    return bytearray(1 << 31)\nx = [bytearray(1 << 27) for _ in range(64)]", None),
    "network": ("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=2)", None),
    "write_outside": ("open('/etc/verity-sandbox-escape', 'w').write('x')", None),
    "huge_output": ("import os\nwhile True:\n    os.write(1, b'x' * 65536)", "output_limit"),
    # claims success on the real stdout and exits before the harness reports: worth nothing
    "fake_results": ("import os\nos.write(1, b'all tests passed\\n[{{\"value\": \"PASS\"}}]\\n')\nos._exit(0)", None),
}


def test_hostile_answers_score_zero_and_the_rest_finish(env):
    ex = env.get_examples("eval")[0]
    f = ex.info["func"]

    async def run():
        texts = [_fence(f"def {f}(*a):\n    pass\n" + code.format(f=f)) for code, _ in HOSTILE.values()]
        return await asyncio.gather(*(_score(env, ex, t) for t in [*texts, ex.answer]))

    *bad, good = asyncio.run(run())
    assert good.reward == 1.0 and not good.errors
    for (name, (_, reported)), s in zip(HOSTILE.items(), bad, strict=True):
        assert s.reward == 0.0, (name, s)
        if reported:
            assert list(s.errors) == ["tests_passed"], (name, s)
            assert any(k in s.errors["tests_passed"] for k in reported.split("|")), (name, s.errors)
    import os

    assert not os.path.exists("/etc/verity-sandbox-escape")
