"""pii-masking with data_source: a local JSONL file in the public dataset's schema, and bad files."""

import json

import pytest

from verity.envs.registry import load_environment
from verity.errors import DatasetError


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_local_jsonl_source(tmp_path):
    rows = [{"question": f"Call Ann at 555-010{i}.", "answer": "Call [PII] at [PII].",
             "info": json.dumps({"pii_count": 2}), "task": "privacy_masking"} for i in range(5)]
    env = load_environment("pii-masking", data_source=_write(tmp_path / "d.jsonl", rows), num_eval_examples=2)
    assert len(env.get_examples("eval")) == 2 and len(env.get_examples("train")) == 3
    ex = env.get_examples("eval")[0]
    assert ex.info["pii_count"] == 2 and ex.prompt[0]["role"] == "system"


def test_missing_info_is_derived_from_the_answer(tmp_path):
    rows = [{"question": "Mail bo@x.io", "answer": "Mail [PII]"}] * 3
    env = load_environment("pii-masking", data_source=_write(tmp_path / "d.jsonl", rows), num_eval_examples=1)
    assert env.get_examples("eval")[0].info["pii_count"] == 1


def test_bad_sources(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_environment("pii-masking", data_source=str(tmp_path / "nope.jsonl"))
    bad = _write(tmp_path / "bad.jsonl", [{"question": "a", "answer": "b"}, {"question": 3, "answer": "c"}])
    with pytest.raises(DatasetError, match="row 1, column 'question'"):
        load_environment("pii-masking", data_source=bad)
