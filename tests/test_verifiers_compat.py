"""Differential tests: verity against the real verifiers 0.1.6.post0 on generated inputs.

Hypothesis feeds the same inputs to both packages and requires identical outputs (values,
floats bit for bit, and the exception type when verifiers raises). The inputs mix tags of the
schema (open, close, nested, repeated, unclosed), whitespace (ASCII and Unicode) and Unicode
text. The number of generated cases is printed in pytest's summary (>= 10,000 when the whole
module runs). Needs the ``compat`` extra (``pip install -e .[compat]``; ``make test`` installs it).

Intentional differences are tested at the end of the module, one line of reason each
(docs/verifiers.md lists them).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections import Counter
from typing import Any

import pytest

vf = pytest.importorskip("verifiers", reason="differential tests need the compat extra: pip install -e .[compat]")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import verity  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _quiet_reward_function_errors():
    """Both packages log every failing reward function; silence that for this module only."""
    loggers = [logging.getLogger(name) for name in ("verifiers", "verity")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    yield
    for lg, level in zip(loggers, levels, strict=True):
        lg.setLevel(level)


CASES: Counter[str] = Counter()
"""Generated cases run per property (read by conftest's terminal summary)."""


def run(n: int):
    """Hypothesis settings for ``n`` deterministic cases (same inputs on every run and in CI).

    ``VERITY_DIFF_SCALE`` multiplies ``n`` (e.g. 10 for a longer local search)."""
    scaled = max(1, int(n * float(os.environ.get("VERITY_DIFF_SCALE", "1"))))
    return settings(max_examples=scaled, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


# ---------------------------------------------------------------- generators
# Texts are joined from fragments drawn out of a fixed pool (one draw per fragment keeps 10,000
# cases fast) plus a short Hypothesis-generated Unicode string at a drawn position.
TAGS = ["think", "answer", "code", "reasoning", "a", "x_1"]
WHITESPACE = [" ", "  ", "\n", "\n\n", "\t", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u00a0", "\u2003", "\u3000",
              "\u200b", "\ufeff"]
WORDS = ["42", "x", "[PII]", "hello world", "<", ">", "</", "/>", "<<a>>", "think", "é", "日本", "\U0001f600",
         "<answer", "answer>", "< answer>", "<ANSWER>", "</think", "<b>", "</b>", "\\n", "$1", ".*", "\u0301", "\u202e"]
_rng = random.Random(0)
UNICODE = ["".join(chr(_rng.choice([_rng.randrange(0x20, 0x250), _rng.randrange(0x370, 0x3000),
                                    _rng.randrange(0x4e00, 0x9fff), _rng.randrange(0x1f300, 0x1fad0)]))
                   for _ in range(_rng.randint(1, 6))) for _ in range(40)]


def fragment_pool(tags: list[str]) -> list[str]:
    """Open and close tags, whole blocks with padding (also nested), whitespace, words and Unicode."""
    blocks = [f"<{t}>{w1}{c}{w2}</{t}>" for t in tags for w1, c, w2 in
              [("", "42", ""), ("\n", "x y", "\n"), ("  ", "", " "), ("\u00a0", "日本", "\t"), ("", "\n\n", "")]]
    nested = [f"<{t}><{u}>n</{u}></{t}>" for t in tags for u in tags]
    return ([f"<{t}>" for t in tags] + [f"</{t}>" for t in tags] + blocks + nested + WHITESPACE + WORDS + UNICODE)


def texts(tags: list[str] = TAGS):
    pool = fragment_pool(tags)
    return st.builds(lambda parts, u, k: "".join(parts[:k]) + u + "".join(parts[k:]),
                     st.lists(st.sampled_from(pool), max_size=14),
                     st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=3),
                     st.integers(0, 14))


@st.composite
def schemas(draw):
    """An XMLParser schema: canonical names unique, some fields with alternatives, and an answer_field."""
    names = draw(st.lists(st.sampled_from(TAGS), min_size=1, max_size=4, unique=True))
    fields: list[Any] = []
    used = set(names)
    for name in names:
        extra = [t for t in draw(st.lists(st.sampled_from(TAGS), max_size=2, unique=True)) if t not in used]
        used.update(extra)
        fields.append((name, *extra) if extra else name)
    answer_field = draw(st.sampled_from([*used, "answer"]))
    return fields, answer_field


def messages(tags: list[str] = TAGS):
    roles = st.sampled_from(["assistant", "assistant", "user", "system", "tool"])
    return st.lists(st.builds(lambda r, c: {"role": r, "content": c}, roles, texts(tags)), max_size=4)


def both(f_vf, f_vt):
    """Call both; equal results, or verity raising an instance of the exception type verifiers raised."""
    try:
        expected = f_vf()
    except Exception as e:  # noqa: BLE001 - any exception verifiers raises must be matched
        with pytest.raises(type(e)):
            f_vt()
        return
    got = f_vt()
    if hasattr(expected, "__dict__") and type(expected).__name__ == "SimpleNamespace":
        expected, got = vars(expected), vars(got)
    assert got == expected, (got, expected)


def parsers(fields, answer_field):
    return vf.XMLParser(fields, answer_field=answer_field), verity.XMLParser(fields, answer_field=answer_field)


# ---------------------------------------------------------------- XMLParser
@run(3000)
@given(schemas(), texts(), st.booleans(), st.booleans())
def test_xml_parse(schema, text, strip, last):
    a, b = parsers(*schema)
    both(lambda: a.parse(text, strip=strip, last=last), lambda: b.parse(text, strip=strip, last=last))
    CASES["XMLParser.parse"] += 1


@run(1500)
@given(schemas(), texts())
def test_xml_parse_answer_string(schema, text):
    a, b = parsers(*schema)
    both(lambda: a.parse_answer(text), lambda: b.parse_answer(text))
    CASES["XMLParser.parse_answer(str)"] += 1


@run(1500)
@given(schemas(), messages())
def test_xml_parse_answer_messages(schema, msgs):
    a, b = parsers(*schema)
    both(lambda: a.parse_answer(msgs), lambda: b.parse_answer(msgs))
    CASES["XMLParser.parse_answer(messages)"] += 1


@run(600)
@given(schemas(), st.dictionaries(st.sampled_from(TAGS), st.none() | st.sampled_from(WORDS + UNICODE) | texts(),
                                  max_size=5))
def test_xml_format_and_fields(schema, values):
    a, b = parsers(*schema)
    both(lambda: a.format(**values), lambda: b.format(**values))
    assert b.get_fields() == a.get_fields()
    assert b.get_format_str() == a.get_format_str()
    CASES["XMLParser.format/get_fields/get_format_str"] += 1


@run(2000)
@given(schemas(), messages() | texts())  # a string completion (completion mode) raises in both: scored 0
def test_xml_format_reward(schema, msgs):
    a, b = parsers(*schema)
    both(lambda: a.get_format_reward_func()(msgs), lambda: b.get_format_reward_func()(msgs))
    CASES["XMLParser format reward"] += 1


# ---------------------------------------------------------------- ThinkParser and Parser
think_texts = texts(["think", "answer"]) | st.builds(lambda w, t, w2, rest: f"{w}<think>{t}</think>{w2}{rest}",
                                                      st.sampled_from(["", *WHITESPACE]), texts(["answer"]),
                                                      st.sampled_from(["", *WHITESPACE]), texts(["think"]))
EXTRACT = {"identity": lambda s: s, "last word": lambda s: s.split()[-1] if s.split() else "", "upper": str.upper}


@run(1200)
@given(think_texts, st.sampled_from(sorted(EXTRACT)), st.lists(st.builds(
    lambda r, c: {"role": r, "content": c}, st.sampled_from(["assistant", "user"]), think_texts), max_size=4))
def test_think_parser(text, extract, msgs):
    a = vf.ThinkParser(extract_fn=EXTRACT[extract])
    b = verity.ThinkParser(extract_fn=EXTRACT[extract])
    both(lambda: a.parse(text), lambda: b.parse(text))
    both(lambda: a.parse_answer(text), lambda: b.parse_answer(text))
    both(lambda: a.parse_answer(msgs), lambda: b.parse_answer(msgs))
    both(lambda: a.get_format_reward_func()(msgs), lambda: b.get_format_reward_func()(msgs))
    CASES["ThinkParser parse/parse_answer/format reward"] += 1


@run(300)
@given(texts(), messages(), st.sampled_from(sorted(EXTRACT)))
def test_base_parser(text, msgs, extract):
    a, b = vf.Parser(extract_fn=EXTRACT[extract]), verity.Parser(extract_fn=EXTRACT[extract])
    both(lambda: a.parse(text), lambda: b.parse(text))
    both(lambda: a.parse_answer(msgs), lambda: b.parse_answer(msgs))
    both(lambda: a.get_format_reward_func()(msgs), lambda: b.get_format_reward_func()(msgs))
    CASES["Parser"] += 1


# ---------------------------------------------------------------- Rubric
def reward_pool(parser_a, parser_b):
    """Pairs of equivalent reward functions for each package (the parser is the package's own)."""

    def pair(make):
        return make(parser_a), make(parser_b)

    def exact(p):
        def exact_answer(completion, answer):
            return float(p.parse_answer(completion) == answer)
        return exact_answer

    def length(p):
        def length_reward(completion, **kwargs):
            return len(str(completion)) / 97.0
        return length_reward

    def injected(p):
        def uses_parser(completion, parser, info):
            return 0.5 * (parser.parse_answer(completion) is not None) + info.get("bonus", 0.0)
        return uses_parser

    def lam(p):
        return lambda completion, answer: float(answer in str(completion)) / 3.0

    def lam2(p):
        return lambda prompt, completion: len(prompt) * 0.125

    def broken(p):
        def raises(completion):
            raise ValueError("boom")
        return raises

    def none(p):
        def returns_none(answer):
            return None
        return returns_none

    def async_(p):
        async def async_reward(completion, answer, task):
            await asyncio.sleep(0)
            return 0.3 if task == "t" else 0.7
        return async_reward

    def example(p):
        def by_example(example_id, state):
            return (example_id or 0) * 0.1 + ("timing" in state)
        return by_example

    return [pair(m) for m in (exact, length, injected, lam, lam2, broken, none, async_, example)] + \
        [(a.get_format_reward_func(), b.get_format_reward_func()) for a, b in [(parser_a, parser_b)]]


weights = st.floats(-2, 2, allow_nan=False, allow_infinity=False) | st.sampled_from([0.0, 1.0, 0.1, 0.2, 0.5])


@run(700)
@given(schemas(), messages(), st.sampled_from(["42", "x", "", "[PII]"]), st.lists(st.integers(0, 9), max_size=6),
       st.lists(weights, max_size=7), st.booleans(), st.sampled_from(["t", "default"]), st.integers(0, 5))
def test_rubric_weighted_reward(schema, msgs, answer, picks, weights_, parallel, task, example_id):
    pa, pb = parsers(*schema)
    pool = reward_pool(pa, pb)
    funcs_a, funcs_b = [pool[i][0] for i in picks], [pool[i][1] for i in picks]
    ra = vf.Rubric(funcs=funcs_a, weights=list(weights_), parser=pa, parallelize_scoring=parallel)
    rb = verity.Rubric(funcs=funcs_b, weights=list(weights_), parser=pb, parallelize_scoring=parallel)
    prompt = [{"role": "user", "content": "q"}]
    info = {"bonus": 0.25}

    def state():
        return {"timing": {"generation_ms": 0.0, "scoring_ms": 0.0, "total_ms": 0.0}}

    sa = asyncio.run(ra.score_rollout(prompt, msgs, answer, state(), task, info, example_id))
    sb = asyncio.run(rb.score_rollout(prompt, msgs, answer, state(), task, info, example_id))
    assert (sb.reward, dict(sb.metrics)) == (sa.reward, sa.metrics)
    assert rb.get_reward_func_names() == ra.get_reward_func_names()
    assert rb.get_reward_weights() == ra.get_reward_weights()
    CASES["Rubric.score_rollout weighted reward"] += 1


def test_rubric_score_rollouts_matches():
    pa, pb = parsers(["think", ("answer", "code")], "answer")
    pool = reward_pool(pa, pb)
    ra = vf.Rubric(funcs=[f for f, _ in pool], weights=[0.5 * i for i in range(len(pool))], parser=pa)
    rb = verity.Rubric(funcs=[g for _, g in pool], weights=[0.5 * i for i in range(len(pool))], parser=pb)
    completions = [[{"role": "assistant", "content": c}] for c in
                   ["<think>a</think><answer>42</answer>", "<code>42</code>", "42", "", "<answer>\n x \n</answer>"]]
    n = len(completions)
    args = ([[{"role": "user", "content": "q"}]] * n, completions, ["42"] * n)
    rest = (["t"] * n, [{"bonus": 0.1}] * n)

    def states():
        return [{"timing": {"generation_ms": 0.0, "scoring_ms": 0.0, "total_ms": 0.0}} for _ in range(n)]

    sa = asyncio.run(ra.score_rollouts(*args, states(), *rest, use_tqdm=False))
    sb = asyncio.run(rb.score_rollouts(*args, states(), *rest, use_tqdm=False, max_concurrent=2))
    assert (sb.reward, dict(sb.metrics)) == (sa.reward, sa.metrics)


# ---------------------------------------------------------------- intentional differences (one line of reason each)
def test_difference_tag_names_are_literal():
    # verifiers puts tag names into its regex unescaped (a '.' matches any character); verity matches them literally
    assert vf.XMLParser(["a.b"]).parse("<aXb>1</aXb>").__dict__ == {"a.b": "1"}
    assert verity.XMLParser(["a.b"]).parse("<aXb>1</aXb>").__dict__ == {"a.b": None}


def test_difference_reward_errors_are_recorded():
    # verifiers logs a failing reward function and scores 0; verity scores 0 and records the error on the rollout
    def boom(completion):
        raise KeyError("k")

    s = asyncio.run(verity.Rubric([boom]).score_rollout([], [], "", {}))
    assert (s.reward, s.metrics, s.errors) == (0.0, {"boom": 0.0}, {"boom": "KeyError: 'k'"})


def test_difference_state_without_timing_is_accepted():
    # verifiers' score_rollout raises KeyError on a state without "timing"; verity creates it
    with pytest.raises(KeyError):
        asyncio.run(vf.Rubric([lambda completion: 1.0]).score_rollout([], [], "", {}))
    state: dict = {}
    assert asyncio.run(verity.Rubric([lambda completion: 1.0]).score_rollout([], [], "", state)).reward == 1.0
    assert "scoring_ms" in state["timing"]


def test_zz_generated_case_count():
    """Runs last in this module: the generated cases add up to at least 10,000 when every property ran."""
    expected = {"XMLParser.parse", "XMLParser.parse_answer(str)", "XMLParser.parse_answer(messages)",
                "XMLParser.format/get_fields/get_format_str", "XMLParser format reward",
                "ThinkParser parse/parse_answer/format reward", "Parser", "Rubric.score_rollout weighted reward"}
    if set(CASES) != expected or float(os.environ.get("VERITY_DIFF_SCALE", "1")) < 1:
        pytest.skip(f"only {sorted(CASES)} ran (a -k selection or VERITY_DIFF_SCALE < 1)")
    assert sum(CASES.values()) >= 10_000, CASES
