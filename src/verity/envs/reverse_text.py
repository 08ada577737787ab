"""``reverse-text``: reverse a short string inside ``<reversed>`` tags (a small verifiable toy task).

Reward = 1.0 × exact match + 0.5 × character-level similarity (LCS ratio) + 0.1 × format.
Data is generated deterministically from a word list, so it works offline. Reward functions are
module-level (the parser is injected), so the environment pickles.
"""

from __future__ import annotations

import difflib
import random

from verity.envs.base import SingleTurnEnv
from verity.parsers.xml import XMLParser
from verity.rubrics.funcs import format_reward
from verity.rubrics.rubric import Rubric

WORDS = [
    "apple", "river", "stone", "cloud", "green", "quick", "table", "light", "mouse", "paper", "orange", "silver",
    "window", "garden", "planet", "rocket", "little", "yellow", "bright", "forest", "music", "spring", "castle",
    "dragon", "pencil", "summer", "winter", "ocean", "purple", "circle", "button", "camera", "coffee", "doctor",
    "energy", "family", "friend", "golden", "honey", "island", "jungle", "kitten", "ladder", "magnet", "number",
    "pepper", "rabbit", "sugar", "tiger", "violin", "wonder", "zebra",
]

SYSTEM_PROMPT = "Reverse the given text character by character. Answer inside <reversed>...</reversed>."


def make_rows(n: int, seed: int, min_words: int = 1, max_words: int = 3) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words)))
        rows.append({"question": text, "answer": text[::-1], "task": "reverse_text"})
    return rows


def exact_match_reward(completion, answer, parser) -> float:
    return float((parser.parse_answer(completion) or "") == answer)


def lcs_reward(completion, answer, parser) -> float:
    """Partial credit: difflib's similarity ratio of the answer to the reversed text."""
    got = parser.parse_answer(completion) or ""
    return difflib.SequenceMatcher(None, got, answer).ratio()


def load_environment(num_train_examples: int = 2000, num_eval_examples: int = 200, random_seed: int = 0,
                     min_words: int = 1, max_words: int = 3) -> SingleTurnEnv:
    from datasets import Dataset

    parser = XMLParser(["reversed"], answer_field="reversed", strip_think=True)
    rubric = Rubric([exact_match_reward, lcs_reward, format_reward], [1.0, 0.5, 0.1], parser=parser)
    train = Dataset.from_list(make_rows(num_train_examples, random_seed, min_words, max_words))
    test = Dataset.from_list(make_rows(num_eval_examples, random_seed + 1, min_words, max_words))
    return SingleTurnEnv(dataset=train, eval_dataset=test, system_prompt=SYSTEM_PROMPT, parser=parser, rubric=rubric)
