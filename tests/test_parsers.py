"""XMLParser / ThinkParser / Parser on hand-made cases (literal numbers, verifiers 0.1.x semantics).

tests/test_verifiers_compat.py checks the same functions against the real verifiers package on
generated inputs; these cases document the behaviour in readable form.
"""

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


def test_parse_whitespace_next_to_tags_is_never_content():
    p = XMLParser(["answer"])
    assert p.parse("<answer>  42 \n</answer>").answer == "42"
    # the pattern <answer>\s*(.*?)\s*</answer> already trims, so strip=False changes nothing here
    assert p.parse("<answer>  42 \n</answer>", strip=False).answer == "42"
    assert p.parse("<answer>a\nb</answer>").answer == "a\nb"
    assert p.parse("<answer>1</answer><answer>2</answer>").answer == "1"
    assert p.parse("<answer>1</answer><answer>2</answer>", last=True).answer == "2"
    assert p.parse("<answer></answer>").answer == ""  # present but empty: '' not None
    assert p.parse("<answer>unclosed").answer is None


def test_parse_alternatives_expose_every_tag_name():
    p = XMLParser(["reasoning", ("code", "answer")], answer_field="answer")
    assert p.get_fields() == ["reasoning", "code"]
    r = p.parse("<reasoning>t</reasoning><answer>print(1)</answer>")
    assert (r.reasoning, r.code, r.answer) == ("t", None, "print(1)")
    r = p.parse("<code>x = 2</code>")
    assert (r.code, r.answer) == ("x = 2", None)
    assert p.parse_answer("<answer>y</answer>") == "y"
    assert p.get_format_str() == "<reasoning>\n...\n</reasoning>\n<[ code | answer ]>\n...\n</[ code | answer ]>"


def test_constructor_accepts_what_verifiers_accepts_and_refuses_the_rest():
    assert XMLParser([]).parse("<a>1</a>").__dict__ == {}
    assert XMLParser(["x"]).parse_answer("<x>1</x>") is None  # default answer_field 'answer' is not a field
    with pytest.raises(ValueError, match="empty"):
        XMLParser([()])
    with pytest.raises(TypeError):
        XMLParser([("a", 1)])
    with pytest.raises(TypeError):
        XMLParser([["a", "b"]])  # a list is not a tuple of alternatives
    with pytest.raises(ValueError, match="duplicate"):
        XMLParser(["a", ("a", "b")])
    with pytest.raises(ConfigError):  # also a ConfigError, so the CLI prints one line
        XMLParser(["a", "a"])


# ---------------------------------------------------------------- parse_answer
def test_parse_answer_on_string_takes_the_last_occurrence():
    p = XMLParser(["masked_output"], answer_field="masked_output")
    assert p.parse_answer("<masked_output>\nHi [PII]\n</masked_output>") == "Hi [PII]"
    assert p.parse_answer("<masked_output>1</masked_output> <masked_output>2</masked_output>") == "2"
    assert p.parse_answer("Hi [PII]") is None
    assert p.parse_answer("") is None


def test_parse_answer_on_messages_uses_the_last_assistant_message_that_has_the_field():
    p = XMLParser(["answer"])
    msgs = [user("q"), asst("<answer>1</answer>"), user("more?"), asst("<answer>2</answer><answer>3</answer>"),
            user("and?"), asst("I give up")]
    assert p.parse_answer(msgs) == "2"  # within a message: the first occurrence
    assert p.parse_answer([user("<answer>9</answer>"), asst("nothing")]) is None
    assert p.parse_answer([]) is None


# ---------------------------------------------------------------- format
def test_format_uses_canonical_tags_and_raises_on_missing_fields():
    p = XMLParser(["think", ("code", "answer")])
    assert p.format(think="a", answer="b") == "<think>\na\n</think>\n<code>\nb\n</code>"
    assert p.format(think="a", code="c", answer="b") == "<think>\na\n</think>\n<code>\nc\n</code>"
    with pytest.raises(ValueError, match="'code'"):
        p.format(think="a")


# ---------------------------------------------------------------- format reward
# per message: 0.4 x fraction of fields whose tag appears (if any field parses) + 0.2 (always)
#              + 0.2 starts with a first-field tag + 0.2 ends with a last-field closing tag
@pytest.mark.parametrize("text, expected", [
    ("<masked_output>\nx\n</masked_output>", 1.0),
    ("<masked_output>x</masked_output>", 1.0),
    ("  <masked_output>\nx\n</masked_output>\n", 1.0),             # outer whitespace ignored
    ("<masked_output>  x  </masked_output>", 1.0),                 # padding is not content
    ("<masked_output></masked_output>", 1.0),
    ("x", 0.2),                                                    # no tag: the constant 0.2 only
    ("", 0.2),
    ("Sure! <masked_output>\nx\n</masked_output>", 0.8),
    ("<masked_output>\nx\n</masked_output> hope it helps", 0.8),
    ("Sure: <masked_output>\nx\n</masked_output> ok", 0.6),
    ("<masked_output>\nx\n", 0.4),                                 # unclosed: starts right, nothing parses
])
def test_single_field_format_score(text, expected):
    p = XMLParser(["masked_output"], answer_field="masked_output")
    assert p.format_score(text) == pytest.approx(expected, abs=1e-12)
    assert p.get_format_reward_func()([asst(text)]) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("text, expected", [
    ("<think>\nhmm\n</think>\n<answer>\n42\n</answer>", 1.0),
    ("<think>\nhmm\n</think>\nforty-two", 0.6),        # 0.4*1/2 + 0.2 + 0.2 starts
    ("<answer>42</answer>", 0.6),                      # 0.4*1/2 + 0.2 + 0.2 ends
    ("So <answer>42</answer>.", 0.4),
    ("<think>unclosed <answer>42</answer>", 1.0),      # an unclosed tag still counts as present
    ("nothing", 0.2),
])
def test_multi_field_format_score(text, expected):
    assert XMLParser(["think", "answer"]).format_score(text) == pytest.approx(expected, abs=1e-12)


def test_format_reward_averages_assistant_messages():
    f = XMLParser(["masked_output"], answer_field="masked_output").get_format_reward_func()
    good, junk = asst("<masked_output>\nx\n</masked_output>"), asst("no tags")
    assert f([good]) == 1.0
    assert f([good, junk]) == pytest.approx(0.6)
    assert f([user("ignored"), good, asst("Sure! <masked_output>\nx\n</masked_output>")]) == pytest.approx(0.9)
    assert f([user("only a user message")]) == 0.0
    assert f([]) == 0.0


# ---------------------------------------------------------------- ThinkParser
def test_think_parser_parse():
    p = ThinkParser()
    assert p.parse("<think>reasoning</think>  42 ") == "42"
    assert p.parse("<think>a</think>x</think>y") == "y"  # after the last </think>
    assert p.parse("<think>still thinking") == ""        # no </think>: nothing to parse yet
    assert p.parse(" plain answer ") == ""
    q = ThinkParser(extract_fn=lambda s: s.split()[-1] if s else "?")
    assert q.parse("<think>r</think>the answer is 7") == "7"
    assert q.parse("no think") == "?"


def test_think_parser_parse_answer_uses_last_assistant_message():
    p = ThinkParser()
    assert p.parse_answer([user("q"), asst("<think>a</think>1"), asst("<think>b</think>2")]) == "2"
    assert p.parse_answer("<think>a</think>3") == "3"
    with pytest.raises(IndexError):  # as in verifiers: no assistant message
        p.parse_answer([user("q")])


@pytest.mark.parametrize("completion, expected", [
    ([asst("<think>a</think>42")], 1.0),
    ([asst("  <think>\na\n</think>\n42\n")], 1.0),
    ([asst("42")], 0.0),
    ([asst("<think>a</think>")], 0.0),                    # nothing after thinking
    ([asst("<think>a</think> ")], 1.0),                   # ...a space counts (len > 0, not stripped)
    ([asst("<think>a</think><think>b</think>42")], 0.0),
    ([asst("intro <think>a</think>42")], 0.0),
    ([asst("<think>a</think>42"), asst("42")], 0.5),
])
def test_think_parser_format_reward(completion, expected):
    assert ThinkParser().get_format_reward_func()(completion) == pytest.approx(expected)


def test_think_parser_format_reward_without_assistant_messages_raises_like_verifiers():
    with pytest.raises(ZeroDivisionError):
        ThinkParser().get_format_reward_func()([user("q")])


# ---------------------------------------------------------------- base Parser
def test_base_parser():
    p = Parser()
    assert p.parse("x") == "x"
    assert Parser(extract_fn=str.upper).parse_answer("text") == "TEXT"
    assert p.parse_answer([user("q"), asst("a1"), asst("a2")]) == "a2"
    with pytest.raises(IndexError):
        p.parse_answer([user("q")])
    assert p.get_user_messages([user("q"), asst("a")]) == [user("q")]
    f = p.get_format_reward_func()
    assert f([asst("anything")]) == 1.0
    assert f([asst("")]) == 1.0
