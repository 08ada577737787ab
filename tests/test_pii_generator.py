"""Tests for the synthetic PII-masking data generator (verity.envs.pii_masking.generator)."""

from __future__ import annotations

import random
import re
import statistics
from collections import Counter

import pytest

from verity.envs.pii_masking import generator as G
from verity.envs.pii_masking.generator import PII_TOKEN, Pii, generate_rows, mask, template_names

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return generate_rows(3000, seed=7, with_template=True)


def _check_row_invariants(question: str, answer: str, count: int) -> None:
    assert PII_TOKEN not in question
    assert answer.count(PII_TOKEN) == count
    # Rebuild: the non-PII pieces of the answer occur in order in the question, and the gaps
    # between them (the masked values) are non-empty.
    pieces = answer.split(PII_TOKEN)
    assert question.startswith(pieces[0]) and question.endswith(pieces[-1])
    pos = len(pieces[0])
    for piece in pieces[1:]:
        nxt = question.find(piece, pos + 1) if piece else len(question)
        assert nxt > pos, (question, answer)
        pos = nxt + len(piece)
    # one value is one span: never two masks separated only by spaces on one line
    assert not re.search(r"\[PII\][ \t]*\[PII\]", answer), answer


def test_mask_helper() -> None:
    q, a, n = mask(["Call ", Pii("Ann Lee"), " at ", Pii("555-123-4567"), " after 5 PM."])
    assert q == "Call Ann Lee at 555-123-4567 after 5 PM."
    assert a == "Call [PII] at [PII] after 5 PM."
    assert n == 2
    assert mask(["No personal data, order #123."]) == ("No personal data, order #123.",) * 2 + (0,)


def test_schema_and_types() -> None:
    for row in generate_rows(500):
        assert set(row) == {"question", "answer", "info", "task"}
        assert isinstance(row["question"], str) and isinstance(row["answer"], str)
        assert row["info"] == {"pii_count": row["info"]["pii_count"]}
        assert isinstance(row["info"]["pii_count"], int)
        assert row["task"] == "privacy_masking"


def test_answer_is_question_with_pii_replaced(rows: list[dict]) -> None:
    for row in rows:
        _check_row_invariants(row["question"], row["answer"], row["info"]["pii_count"])
        assert 0 <= row["info"]["pii_count"] <= 6


def test_every_template_renders_consistently() -> None:
    names = template_names()
    for k, name in enumerate(names):
        for s in range(25):
            segs = G._render(k, random.Random(f"t-{name}-{s}"))
            question, answer, count = mask(segs)
            _check_row_invariants(question, answer, count)
            assert 15 <= len(question) <= 400, question
            # a masked value never also appears unmasked elsewhere in the answer
            for seg in segs:
                if isinstance(seg, Pii) and len(seg) >= 5:
                    assert not re.search(rf"(?<![\w@.-]){re.escape(seg)}(?![\w@-])", answer), (seg, answer)


def test_field_keys_have_no_trailing_digit() -> None:
    # a trailing digit selects another entity ({name2}); a base field ending in a digit would clash
    assert not [k for k in G._FIELDS if k[-1].isdigit()]
    assert set(G._FIELDS) >= G.PII_FIELDS


def test_determinism_and_prefix_property() -> None:
    a = generate_rows(300, seed=3)
    assert a == generate_rows(300, seed=3)
    assert generate_rows(120, seed=3) == a[:120]
    b = generate_rows(300, seed=4)
    assert sum(x["question"] != y["question"] for x, y in zip(a, b, strict=False)) > 290


def test_30000_distinct_questions() -> None:
    data = generate_rows(30000)
    assert len(data) == 30000
    assert len({r["question"] for r in data}) == 30000


def test_template_diversity(rows: list[dict]) -> None:
    names = template_names()
    assert len(names) == len(set(names)) >= 60
    used = Counter(r["template"] for r in rows[:2000])
    assert len(used) >= 60
    assert set(used) <= set(names)
    assert "template" not in generate_rows(3)[0]


def test_zero_pii_rows_exist(rows: list[dict]) -> None:
    zero = [r for r in rows if r["info"]["pii_count"] == 0]
    assert 0.02 <= len(zero) / len(rows) <= 0.12
    assert all(r["answer"] == r["question"] for r in zero)
    counts = Counter(r["info"]["pii_count"] for r in rows)
    assert all(counts[k] > 0 for k in range(6))


def test_distractors_survive(rows: list[dict]) -> None:
    answers = [r["answer"] for r in rows]
    patterns = {
        "money": r"\$\d", "percent": r"\d%", "time": r"\b\d{1,2}:\d{2}\b", "order/ticket ref": r"#\d{4,}|TCK-\d",
        "room": r"room \w+", "version": r"version \d+\.\d+\.\d+", "weekday": "|".join(WEEKDAYS),
    }
    for label, pat in patterns.items():
        assert sum(bool(re.search(pat, a)) for a in answers) >= 30, label


def test_pii_positions_and_lengths(rows: list[dict]) -> None:
    answers = [r["answer"] for r in rows]
    assert sum(a.startswith(PII_TOKEN) for a in answers) >= 30
    assert sum(a.rstrip(".!?").endswith(PII_TOKEN) for a in answers) >= 30
    lengths = [len(r["question"]) for r in rows]
    assert 110 <= statistics.median(lengths) <= 200
    assert sum(60 <= n <= 350 for n in lengths) / len(lengths) >= 0.9
    assert sum("\n" in r["question"] for r in rows) >= 100  # multi-line emails, forms, chats


def test_pii_segments_know_their_kind() -> None:
    kinds = {seg.kind for s in range(300) for seg in G._make_row(random.Random(f"k-{s}"))[1] if isinstance(seg, Pii)}
    assert {"name", "email", "phone", "date"} <= kinds <= G.PII_FIELDS


def test_weak_labels_unmask_only_the_named_kinds_at_the_given_rate() -> None:
    gold = generate_rows(2000, seed=3)
    weak = generate_rows(2000, seed=3, miss_rate={"date": 0.75, "email": 0.75})
    assert [r["question"] for r in weak] == [r["question"] for r in gold]
    assert [r["info"] for r in weak] == [r["info"] for r in gold]  # the gold count is kept
    missed = total = 0
    for s in range(2000):  # the same segments generate_rows builds for row s
        segs = G._make_row(random.Random(f"3-{s}"))[1]
        if mask(segs)[0] != gold[s]["question"]:
            continue  # a de-duplicated row (rebuilt from another seed)
        targets = [seg for seg in segs if isinstance(seg, Pii) and seg.kind in ("date", "email")]
        n_weak = weak[s]["answer"].count(PII_TOKEN)
        assert gold[s]["info"]["pii_count"] - len(targets) <= n_weak <= gold[s]["info"]["pii_count"]
        missed += gold[s]["info"]["pii_count"] - n_weak
        total += len(targets)
        if n_weak == gold[s]["info"]["pii_count"]:
            assert weak[s]["answer"] == gold[s]["answer"]
    assert total > 500 and 0.70 < missed / total < 0.80
    assert generate_rows(50, seed=3, miss_rate={}) == generate_rows(50, seed=3)
    with pytest.raises(ValueError, match="unknown PII kind"):
        generate_rows(5, miss_rate={"order": 0.5})
