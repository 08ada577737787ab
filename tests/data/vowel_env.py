"""A toy environment a random-init model can learn by RL: reward = fraction of vowels written."""

from datasets import Dataset

import verity


def vowel_reward(completion) -> float:
    text = completion[-1]["content"]
    return sum(c in "aeiou" for c in text) / max(len(text), 1)


def length_metric(completion) -> float:
    return float(len(completion[-1]["content"]))


def load_environment(num_examples: int = 64):
    ds = Dataset.from_list([{"question": f"write vowels {i}", "answer": ""} for i in range(num_examples)])
    rubric = verity.Rubric([vowel_reward, length_metric], weights=[1.0, 0.0])
    return verity.SingleTurnEnv(dataset=ds, rubric=rubric)
