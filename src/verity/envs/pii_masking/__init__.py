"""``pii-masking``: rewrite text with every piece of personal data replaced by ``[PII]``.

The model answers inside ``<masked_output>…</masked_output>``. Reward =
1.0 × exact match with the reference + 0.5 × (``[PII]`` count equals ``info["pii_count"]``)
+ 0.1 × format. Data: a deterministic Faker generator (offline, schema of the public
``AdamLucek/open-pii-masking-en-us-30k``), a hub dataset id, or a local JSONL/Parquet file.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from verity.envs.base import SingleTurnEnv
from verity.envs.dataset import LazyRows
from verity.errors import ConfigError, DatasetError
from verity.parsers.xml import XMLParser
from verity.rubrics.rubric import Rubric

HUB_DATASET = "AdamLucek/open-pii-masking-en-us-30k"
DEFAULT_NUM_ROWS = 30_000

SYSTEM_PROMPT = """You mask personal data. Rewrite the user's text exactly, replacing every piece of \
personally identifiable information (names of people, dates of birth, phone numbers, emails, street \
addresses, SSNs, account, card and ID numbers, usernames, IP addresses) with [PII]. Keep all other \
words, numbers and punctuation unchanged. Answer only inside <masked_output></masked_output> tags.

Example 1
Text: Hi, I'm Laura Chen, call me at 555-201-7733 about order 42.
<masked_output>
Hi, I'm [PII], call me at [PII] about order 42.
</masked_output>

Example 2
Text: Patient DOB 03/14/1988, room 12, email j.ortiz@mail.com.
<masked_output>
Patient DOB [PII], room 12, email [PII].
</masked_output>"""

parser = XMLParser(["masked_output"], answer_field="masked_output", strip_think=True)


def exact_match_reward(completion: Any, answer: str) -> float:
    """1.0 when the masked output equals the reference exactly (surrounding whitespace ignored)."""
    got = parser.parse_answer(completion)
    return float(got is not None and got.strip() == answer.strip())


def pii_count_reward(completion: Any, info: dict) -> float:
    """1.0 when the number of ``[PII]`` tokens equals ``info['pii_count']``."""
    got = parser.parse_answer(completion)
    if got is None:
        return 0.0
    return float(got.count("[PII]") == int(info["pii_count"]))


def _load_rows(data_source: str) -> list[dict[str, Any]]:
    """Rows of a hub dataset id or a local JSONL/Parquet file, checked and completed."""
    from datasets import load_dataset

    p = Path(data_source)
    if p.suffix in (".jsonl", ".json", ".parquet"):
        if not p.is_file():
            raise DatasetError(f"data_source {data_source}: file not found")
        kind = "parquet" if p.suffix == ".parquet" else "json"
        try:
            ds = load_dataset(kind, data_files=str(p), split="train")
        except Exception as e:  # datasets raises many types for malformed files
            raise DatasetError(f"data_source {data_source}: cannot read {kind} file: {type(e).__name__}: {e}") from None
    else:
        try:
            ds = load_dataset(data_source, split="train")
        except Exception as e:
            raise DatasetError(
                f"data_source {data_source!r}: cannot load hub dataset (offline?): {type(e).__name__}") from None
    rows = ds.to_list()
    for i, r in enumerate(rows):
        for col in ("question", "answer"):
            if not isinstance(r.get(col), str):
                got = type(r.get(col)).__name__
                raise DatasetError(f"{data_source}, row {i}, column '{col}': expected str, got {got}")
        info = r.get("info")
        if isinstance(info, str):
            import json

            info = json.loads(info) if info.strip() else {}
        info = dict(info or {})
        info.setdefault("pii_count", r["answer"].count("[PII]"))
        r["info"], r["task"] = info, r.get("task") or "privacy_masking"
    return rows


def load_environment(num_train_examples: int = -1, num_eval_examples: int = -1, random_seed: int = 42,
                     data_source: str | None = None, num_rows: int = DEFAULT_NUM_ROWS) -> SingleTurnEnv:
    """The PII-masking environment. Eval split = ``num_eval_examples`` rows or 20%.

    Generated rows (the default) are built when first read, so evaluating 100 examples builds
    100 rows; the splits are the same rows as building all ``num_rows`` and shuffling them.
    """
    if num_rows < 2:
        raise ConfigError(f"num_rows={num_rows}: need at least 2 rows")
    source = "synthetic" if data_source is None else data_source
    synthetic = source == "synthetic"
    if synthetic:
        from verity.envs.pii_masking.generator import row_builder

        n, row = num_rows, row_builder(num_rows, seed=random_seed)
    else:
        rows = _load_rows(source)
        n, row = len(rows), rows.__getitem__
    order = list(range(n))
    random.Random(random_seed).shuffle(order)
    n_eval = num_eval_examples if num_eval_examples >= 0 else max(1, n // 5)
    if n_eval >= n:
        raise ConfigError(f"num_eval_examples={n_eval} leaves no training rows (dataset has {n})")
    train_idx = order[n_eval:] if num_train_examples < 0 else order[n_eval:][:num_train_examples]

    def split(indices: list[int]) -> Any:
        rows = LazyRows(row, n, ("question", "answer", "info", "task"), indices)
        return rows if synthetic else rows.to_dataset()

    rubric = Rubric(
        [exact_match_reward, pii_count_reward, parser.get_format_reward_func()], [1.0, 0.5, 0.1], parser=parser
    )
    return SingleTurnEnv(
        dataset=split(train_idx) if train_idx else None,
        eval_dataset=split(order[:n_eval]), system_prompt=SYSTEM_PROMPT, parser=parser, rubric=rubric,
        sampling_args={"max_tokens": 256},  # the longest masked answers are ~110 tokens with tags
    )


def tokenizer_corpus(num_rows: int = 300, seed: int = 0) -> list[str]:
    """Texts to train a small tokenizer on: the system prompt and ``num_rows`` generated question/answer pairs."""
    from verity.envs.pii_masking.generator import generate_rows

    rows = generate_rows(num_rows, seed=seed)
    return [SYSTEM_PROMPT] + [r["question"] + "\n" + r["answer"] for r in rows]
