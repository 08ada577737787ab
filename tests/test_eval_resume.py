"""``evaluate(resume=True)`` continues only the same evaluation (issue 11, Medium 6): other settings are
refused naming the flag; a larger -n extends the run with just the missing rollouts."""

from __future__ import annotations

import asyncio
import json

import pytest

import verity
from verity.errors import ConfigError
from verity.eval.evaluate import evaluate
from verity.types import Completion


class Sampler:
    def __init__(self, name="model-a"):
        self.name, self.prompts = name, 0

    async def generate(self, prompts, args):
        self.prompts += len(prompts)
        return [Completion(text="<answer>\nA\n</answer>") for _ in prompts]


def _env():
    parser = verity.XMLParser(["answer"])
    rubric = verity.Rubric([lambda completion, answer, parser: float(parser.parse_answer(completion) == answer)],
                           parser=parser)
    rows = [{"question": q, "answer": "A"} for q in "abcd"]
    return verity.SingleTurnEnv(eval_dataset=rows, parser=parser, rubric=rubric)


def _eval(out, sampler=None, n=2, r=1, args=None, resume=False, seed=0):
    return asyncio.run(evaluate(_env(), sampler or Sampler(), n, r, args or {"temperature": 1.0}, out_dir=out,
                                resume=resume, seed=seed))


@pytest.mark.parametrize("kw,flag", [
    ({"sampler": Sampler("model-b")}, "-m"),
    ({"args": {"temperature": 0.5}}, "-T"),
    ({"args": {"temperature": 1.0, "max_tokens": 9}}, "-t"),
    ({"args": {"temperature": 1.0, "top_p": 0.9}}, "--top-p"),
    ({"r": 2}, "-r"),
    ({"seed": 3}, "--seed"),
    ({"n": 1}, "-n gives 1"),
])
def test_resume_with_other_settings_is_refused(tmp_path, kw, flag):
    _eval(tmp_path)
    before = (tmp_path / "results.jsonl").read_text(), (tmp_path / "metadata.json").read_text()
    with pytest.raises(ConfigError, match=f"--resume: {flag}"):
        _eval(tmp_path, resume=True, **kw)
    assert ((tmp_path / "results.jsonl").read_text(), (tmp_path / "metadata.json").read_text()) == before


def test_resume_with_more_examples_extends(tmp_path):
    _eval(tmp_path, n=2)
    s = Sampler()
    res = _eval(tmp_path, sampler=s, n=4, resume=True)
    assert s.prompts == 2  # only examples 2 and 3 were generated
    assert [r["example_id"] for r in res.records] == [0, 1, 2, 3]
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["num_examples"] == 4 and meta["summary"]["num_rollouts"] == 4
