"""Rubric: argument injection, weights, async functions, error accounting."""

from __future__ import annotations

import asyncio

import pytest

from verity.errors import ConfigError
from verity.parsers import XMLParser
from verity.rubrics.rubric import RewardFunctionError, Rubric

PROMPT = [{"role": "user", "content": "q"}]
COMPLETION = [{"role": "assistant", "content": "<answer>4</answer>"}]


def score(rubric: Rubric, **kw):
    args = dict(prompt=PROMPT, completion=COMPLETION, answer="4", info={"k": 1}, task="t")
    args.update(kw)
    return asyncio.run(rubric.score(**args))


# ---------------------------------------------------------------- injection
def test_function_receives_only_what_it_declares():
    seen = {}

    def only_answer(answer):
        seen["only_answer"] = answer
        return 1.0

    def completion_and_info(completion, info):
        seen["completion_and_info"] = (completion, info)
        return 0.5

    def with_default(answer, scale=2.0):  # a non-injectable arg with a default is allowed, not passed
        seen["scale"] = scale
        return 0.0

    s = score(Rubric([only_answer, completion_and_info, with_default]))
    assert seen["only_answer"] == "4"
    assert seen["completion_and_info"] == (COMPLETION, {"k": 1})
    assert seen["scale"] == 2.0
    assert s.scores == {"only_answer": 1.0, "completion_and_info": 0.5, "with_default": 0.0}


def test_kwargs_function_receives_everything():
    got = {}
    parser = XMLParser(["answer"])

    def everything(**kwargs):
        got.update(kwargs)
        return 1.0

    score(Rubric([everything], parser=parser), state={"turn": 2})
    assert set(got) == {"prompt", "completion", "answer", "info", "task", "state", "parser", "example_id"}
    assert got["prompt"] == PROMPT
    assert got["completion"] == COMPLETION
    assert got["answer"] == "4"
    assert got["info"] == {"k": 1}
    assert got["task"] == "t"
    assert got["state"] == {"turn": 2}
    assert got["parser"] is parser


def test_defaults_for_missing_info_and_state():
    got = {}

    def f(info, state, task):
        got.update(info=info, state=state, task=task)
        return 0.0

    asyncio.run(Rubric([f]).score(prompt=PROMPT, completion=COMPLETION))
    assert got == {"info": {}, "state": {}, "task": "default"}


def test_parser_injection_uses_rubric_parser():
    parser = XMLParser(["answer"])

    def correct(completion, answer, parser):
        return float(parser.parse_answer(completion) == answer)

    assert score(Rubric([correct], parser=parser)).reward == 1.0


def test_call_reward_func_returns_zero_on_error_like_verifiers():
    def bad(completion, ground_truth):
        return 1.0

    r = Rubric([bad])
    assert asyncio.run(r.call_reward_func(bad, PROMPT, COMPLETION, "4", {})) == 0.0
    assert "missing 1 required positional argument: 'ground_truth'" in score(r).errors["bad"]


# ---------------------------------------------------------------- weights
def test_weights_and_weighted_sum():
    def a(answer):
        return 1.0

    def b(answer):
        return 0.5

    def c(answer):
        return 0.25

    s = score(Rubric([a, b, c], weights=[1.0, 0.5, 2.0]))
    assert s.scores == {"a": 1.0, "b": 0.5, "c": 0.25}
    assert s.reward == pytest.approx(1.0 * 1.0 + 0.5 * 0.5 + 2.0 * 0.25)  # 1.75
    assert s.errors == {}


def test_default_weights_are_one():
    def a(answer):
        return 0.3

    def b(answer):
        return 0.4

    assert score(Rubric([a, b])).reward == pytest.approx(0.7)


def test_weight_zero_is_recorded_but_not_in_reward():
    def main(answer):
        return 1.0

    def metric(completion):
        return 0.75

    r = Rubric([main, metric], weights=[1.0, 0.0])
    s = score(r)
    assert s.scores == {"main": 1.0, "metric": 0.75}
    assert s.reward == 1.0


def test_add_reward_func_and_names():
    def a(answer):
        return 1.0

    def b(answer):
        return 1.0

    r = Rubric([a])
    r.add_reward_func(b, weight=3.0)
    assert r.func_names == ["a", "b"]
    assert r.weights == [1.0, 3.0]
    assert score(r).reward == 4.0


def test_bool_and_int_results_become_floats():
    def yes(answer):
        return True

    def two(answer):
        return 2

    s = score(Rubric([yes, two]))
    assert s.scores == {"yes": 1.0, "two": 2.0}
    assert all(type(v) is float for v in s.scores.values())


# ---------------------------------------------------------------- async
def test_async_reward_functions():
    async def slow(answer):
        await asyncio.sleep(0.01)
        return 0.5

    def fast(answer):
        return 1.0

    s = score(Rubric([slow, fast], weights=[2.0, 1.0]))
    assert s.scores == {"slow": 0.5, "fast": 1.0}
    assert s.reward == 2.0


def test_async_functions_run_concurrently():
    # `waiter` only finishes if `setter` runs while it waits: sequential scoring would time out
    ev = {}

    async def waiter(answer):
        ev.setdefault("e", asyncio.Event())
        await asyncio.wait_for(ev["e"].wait(), timeout=5)
        return 1.0

    async def setter(answer):
        ev.setdefault("e", asyncio.Event()).set()
        return 1.0

    s = score(Rubric([waiter, setter]))
    assert s.errors == {} and s.reward == 2.0


# ---------------------------------------------------------------- errors
def test_raising_function_is_recorded_scored_zero_others_still_scored():
    def good(answer):
        return 1.0

    def broken(completion):
        raise ValueError("boom")

    async def good_async(answer):
        return 0.5

    s = score(Rubric([good, broken, good_async], weights=[1.0, 5.0, 1.0]))
    assert s.scores == {"good": 1.0, "broken": 0.0, "good_async": 0.5}
    assert s.reward == 1.5
    assert s.errors == {"broken": "ValueError: boom"}


def test_returning_none_is_an_error():
    def forgot_return(answer):
        pass

    s = score(Rubric([forgot_return]))
    assert s.scores == {"forgot_return": 0.0}
    assert "forgot_return" in s.errors
    assert "None" in s.errors["forgot_return"]


def test_on_error_raise():
    def good(answer):
        return 1.0

    async def broken(answer):
        raise KeyError("pii_count")

    with pytest.raises(RewardFunctionError, match="broken"):
        score(Rubric([good, broken], on_error="raise"))
    # the CLI flips the mode on a built rubric
    r = Rubric([good, broken])
    assert score(r).errors == {"broken": "KeyError: 'pii_count'"}
    r.on_error = "raise"
    with pytest.raises(RewardFunctionError):
        score(r)


def test_bad_on_error_value():
    with pytest.raises(ConfigError, match="on_error"):
        Rubric([], on_error="ignore")


def test_same_named_functions_both_count():
    # verifiers accepts two lambdas; its metrics dict keeps the last one's score under '<lambda>'
    r = Rubric([lambda answer: 1.0, lambda completion: 0.25], weights=[1.0, 2.0])
    s = score(r)
    assert r.get_reward_func_names() == ["<lambda>", "<lambda>"]
    assert r.func_names == ["<lambda>", "<lambda>_2"]  # verity's per-rollout scores keep both
    assert s.scores == {"<lambda>": 1.0, "<lambda>_2": 0.25}
    assert s.reward == 1.5
    rs = asyncio.run(r.score_rollout(PROMPT, COMPLETION, "4", {}))
    assert (rs.reward, rs.metrics) == (1.5, {"<lambda>": 0.25})


def test_weights_length_mismatch_pairs_like_zip():
    # verifiers zips functions with weights: an unweighted function is scored but adds nothing
    def a(answer):
        return 1.0

    def b(answer):
        return 3.0

    assert score(Rubric([a], weights=[1.0, 2.0])).reward == 1.0
    s = score(Rubric([a, b], weights=[0.5]))
    assert (s.scores, s.reward) == ({"a": 1.0, "b": 3.0}, 0.5)


def test_verifiers_rubric_api():
    def a(answer):
        return 1.0

    r = Rubric(funcs=[a], weights=[2.0], parallelize_scoring=False, judge_model="m")
    assert r.judge_model == "m"  # extra kwargs become attributes
    assert r.get_reward_funcs() == [a] and r.get_reward_weights() == [2.0]
    assert r.get_reward_func_names() == ["a"]
    state: dict = {}
    rs = asyncio.run(r.score_rollout(PROMPT, COMPLETION, "4", state))
    assert (rs.reward, rs.metrics) == (2.0, {"a": 1.0})
    assert state["timing"]["scoring_ms"] >= 0.0
    many = asyncio.run(r.score_rollouts([PROMPT] * 3, [COMPLETION] * 3, ["4"] * 3, [{}, {}, {}], ["t"] * 3,
                                        [{}] * 3, max_concurrent=2, use_tqdm=False))
    assert (many.reward, many.metrics) == ([2.0] * 3, {"a": [1.0] * 3})
    empty = asyncio.run(r.score_rollouts([], [], [], [], [], [], use_tqdm=False))
    assert (empty.reward, empty.metrics) == ([], {"a": []})


def test_extra_kwargs_and_example_id_reach_functions_that_ask():
    got = {}

    def f(completion, example_id, difficulty):
        got.update(example_id=example_id, difficulty=difficulty)
        return 1.0

    rs = asyncio.run(Rubric([f]).score_rollout(PROMPT, COMPLETION, "4", {}, example_id=7, difficulty="hard"))
    assert rs.reward == 1.0 and got == {"example_id": 7, "difficulty": "hard"}
    # without the kwarg the call fails: scored 0 (verifiers) and recorded (verity)
    rs = asyncio.run(Rubric([f]).score_rollout(PROMPT, COMPLETION, "4", {}))
    assert rs.reward == 0.0 and "difficulty" in rs.errors["f"]
