"""XMLParser / ThinkParser / Parser: parsing and format rewards on hand-made cases (literal numbers)."""

from __future__ import annotations

import pytest

from verity.errors import ConfigError
from verity.parsers import Parser, ThinkParser, XMLParser


def asst(text: str) -> dict:
    return {"role": "assistant", "content": text}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


# ---------------------------------------------------------------- XMLParser.parse
def test_parse_fields_and_absent_field_is_none():
    p = XMLParser(["think", "answer"])
    r = p.parse("<think>\nlet me see\n</think>\n<answer>\n42\n</answer>")
    assert r.think == "let me see"
    assert r.answer == "42"
    r = p.parse("<answer>7</answer>")
    assert r.think is None
    assert r.answer == "7"
    r = p.parse("no tags at all")
    assert r.think is None and r.answer is None


def test_parse_strip_flag_and_multiline_content():
    p = XMLParser(["answer"])
    assert p.parse("<answer>  42 \n</answer>").answer == "42"
    assert p.parse("<answer>  42 \n</answer>", strip=False).answer == "  42 \n"
    assert p.parse("<answer>a\nb</answer>").answer == "a\nb"
    # first occurrence wins within one message
    assert p.parse("<answer>1</answer><answer>2</answer>").answer == "1"
    # an empty tag is present (''), not absent (None)
    assert p.parse("<answer></answer>").answer == ""


def test_parse_tuple_alternatives_use_canonical_name():
    p = XMLParser(["think", ("code", "python")], answer_field="code")
    assert p.fields == ["think", "code"]
    r = p.parse("<think>t</think><python>print(1)</python>")
    assert r.code == "print(1)"
    assert not hasattr(r, "python")
    assert p.parse("<code>x = 2</code>").code == "x = 2"
    assert p.parse_answer("<python>y</python>") == "y"


def test_constructor_errors():
    with pytest.raises(ConfigError):
        XMLParser([])
    with pytest.raises(ConfigError, match="answer_field"):
        XMLParser(["think"])  # default answer_field 'answer' is not a field
    with pytest.raises(ConfigError):
        XMLParser([("",)], answer_field="")


# ---------------------------------------------------------------- parse_answer
def test_parse_answer_on_string():
    p = XMLParser(["masked_output"], answer_field="masked_output")
    assert p.parse_answer("<masked_output>\nHi [PII]\n</masked_output>") == "Hi [PII]"
    assert p.parse_answer("Hi [PII]") is None
    assert p.parse_answer("") is None


def test_parse_answer_uses_last_assistant_message_that_has_the_field():
    p = XMLParser(["answer"])
    msgs = [user("q"), asst("<answer>1</answer>"), user("more?"), asst("<answer>2</answer>"), user("and?"),
            asst("I give up")]
    assert p.parse_answer(msgs) == "2"
    # user messages never count
    assert p.parse_answer([user("<answer>9</answer>"), asst("nothing")]) is None
    assert p.parse_answer([]) is None
    assert p.parse_answer([asst("<answer>only</answer>")]) == "only"


# ---------------------------------------------------------------- format reward
# format_score = 0.4 * fraction of fields present + 0.2 clean contents + 0.2 starts with first tag
#                + 0.2 ends with last closing tag
@pytest.mark.parametrize("text, expected", [
    ("<masked_output>\nx\n</masked_output>", 1.0),                 # perfect
    ("<masked_output>x</masked_output>", 1.0),                     # no newlines is also clean
    ("  <masked_output>\nx\n</masked_output>\n", 1.0),             # outer whitespace ignored
    ("x", 0.0),                                                    # missing tag
    ("", 0.0),
    ("Sure! <masked_output>\nx\n</masked_output>", 0.8),           # leading junk loses 0.2
    ("<masked_output>\nx\n</masked_output> hope it helps", 0.8),   # trailing junk loses 0.2
    ("Sure: <masked_output>\nx\n</masked_output> ok", 0.6),        # both
    ("<masked_output>  x  </masked_output>", 0.8),                 # padded content is not clean
    ("<masked_output>\n\nx\n</masked_output>", 0.8),               # two newlines is padding
    ("<masked_output></masked_output>", 0.8),                      # empty content is not clean
    ("<masked_output>\nx\n", 0.2),                                 # unclosed: absent, but starts right
])
def test_single_field_format_score(text, expected):
    p = XMLParser(["masked_output"], answer_field="masked_output")
    assert p.format_score(text) == pytest.approx(expected, abs=1e-9)
    assert p.get_format_reward_func()(text) == pytest.approx(expected, abs=1e-9)


def test_format_reward_averages_assistant_messages():
    f = XMLParser(["masked_output"], answer_field="masked_output").get_format_reward_func()
    good, junk = asst("<masked_output>\nx\n</masked_output>"), asst("no tags")
    assert f([good]) == 1.0
    assert f([good, junk]) == pytest.approx(0.5)
    assert f([user("ignored"), good, user("ignored"), asst("Sure! <masked_output>\nx\n</masked_output>")]) \
        == pytest.approx(0.9)
    assert f([user("only a user message")]) == 0.0
    assert f([]) == 0.0


@pytest.mark.parametrize("text, expected", [
    ("<think>\nhmm\n</think>\n<answer>\n42\n</answer>", 1.0),
    ("<think>\nhmm\n</think>\nforty-two", 0.6),   # 0.4*0.5 + 0.2 clean + 0.2 starts + 0 ends
    ("<answer>42</answer>", 0.6),                 # 0.4*0.5 + 0.2 clean + 0 starts + 0.2 ends
    ("So <answer>42</answer>.", 0.4),             # 0.4*0.5 + 0.2 clean
    ("<think> hmm </think><answer>42</answer>", 0.8),  # one padded field: no clean bonus
    ("nothing", 0.0),
])
def test_multi_field_format_score(text, expected):
    p = XMLParser(["think", "answer"])
    assert p.format_score(text) == pytest.approx(expected, abs=1e-9)


def test_format_with_alternatives_and_format_roundtrip():
    p = XMLParser(["think", ("code", "python")], answer_field="code")
    assert p.format_score("<think>a</think><python>print(1)</python>") == 1.0
    q = XMLParser(["think", "answer"])
    text = q.format(think="a", answer="b")
    assert text == "<think>\na\n</think>\n<answer>\nb\n</answer>"
    assert q.format_score(text) == 1.0
    assert q.format(answer="b") == "<answer>\nb\n</answer>"


# ---------------------------------------------------------------- ThinkParser
def test_think_parser_parse():
    p = ThinkParser()
    assert p.parse("<think>reasoning</think>  42 ") == "42"
    assert p.parse("<think>a</think>x</think>y") == "y"  # after the last </think>
    assert p.parse("<think>still thinking") is None
    assert p.parse(" plain answer ") == "plain answer"
    q = ThinkParser(extract_fn=lambda s: s.split()[-1])
    assert q.parse("<think>r</think>the answer is 7") == "7"


def test_think_parser_parse_answer_uses_last_assistant_message():
    p = ThinkParser()
    assert p.parse_answer([user("q"), asst("<think>a</think>1"), asst("<think>b</think>2")]) == "2"
    assert p.parse_answer("<think>a</think>3") == "3"
    assert p.parse_answer([user("q")]) is None


@pytest.mark.parametrize("completion, expected", [
    ("<think>a</think>42", 1.0),
    ("  <think>\na\n</think>\n42\n", 1.0),
    ("42", 0.0),
    ("<think>a</think>", 0.0),                    # no answer after thinking
    ("<think>a</think><think>b</think>42", 0.0),  # two think blocks
    ("intro <think>a</think>42", 0.0),            # does not start with <think>
    ("<think>unclosed 42", 0.0),
    ([asst("<think>a</think>42"), asst("42")], 0.5),
    ([user("<think>a</think>42")], 0.0),
])
def test_think_parser_format_reward(completion, expected):
    assert ThinkParser().get_format_reward_func()(completion) == pytest.approx(expected)


# ---------------------------------------------------------------- base Parser
def test_base_parser():
    p = Parser()
    assert p.parse("x") == "x"
    assert p.parse_answer("text") == "text"
    assert p.parse_answer([user("q"), asst("a1"), asst("a2")]) == "a2"
    assert p.parse_answer([user("q")]) is None
    f = p.get_format_reward_func()
    assert f("anything") == 1.0
    assert f("") == 0.0
