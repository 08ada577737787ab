"""``guess-number``: find a secret integer with "higher" / "lower" feedback after every guess.

A :class:`~verity.envs.multiturn.MultiTurnEnv`. Each row holds a secret in ``1..max_value``;
the model writes ``<guess>N</guess>``, the environment answers ``Higher.``, ``Lower.`` or
explains a malformed guess, until the model hits the secret or ``max_turns`` guesses are used
(the feedback on the last guess is still appended). Binary search needs
``ceil(log2(max_value + 1))`` guesses, so the default 7 turns suffice for 1..100.

Reward = 1.0 × solved + 0.5 × efficiency (1 for one guess, falling linearly to 0 at
``max_turns`` guesses; 0 when unsolved) + 0.2 × closeness of the last guess
(``1 - |guess - secret| / max_value``). See README.md in this folder.
"""

from __future__ import annotations

import random
import re
from typing import Any

from verity.envs.multiturn import MultiTurnEnv, State
from verity.rubrics.rubric import Rubric
from verity.types import Messages

GUESS_RE = re.compile(r"<guess>\s*(-?\d+)\s*</guess>")


def system_prompt(max_value: int) -> str:
    return (f"I am thinking of a whole number between 1 and {max_value}. Find it. After each guess I say whether "
            "the number is higher or lower. Write each guess as <guess>N</guess>.")


def last_guess(messages: Messages) -> int | None:
    """The guess in the latest assistant message (None if it has none)."""
    for m in reversed(messages):
        if m.get("role") == "assistant":
            found = GUESS_RE.findall(m.get("content") or "")
            return int(found[-1]) if found else None
    return None


class GuessNumberEnv(MultiTurnEnv):
    """Feedback each turn: higher / lower / how to write a guess."""

    def __init__(self, max_value: int = 100, **kwargs: Any):
        super().__init__(**kwargs)
        self.max_value = max_value

    async def setup_state(self, state: State, **kwargs: Any) -> State:
        state["secret"] = int(state["answer"])
        state["guesses"] = []
        return state

    async def is_completed(self, messages: Messages, state: State, **kwargs: Any) -> bool:
        guess = last_guess(messages)
        if guess is not None:
            state["guesses"].append(guess)
        return guess == state["secret"] or await super().is_completed(messages, state, **kwargs)

    async def env_response(self, messages: Messages, state: State, **kwargs: Any) -> tuple[Messages, State]:
        guess = last_guess(messages)
        if guess is None:
            text = "I did not find a guess. Write it as <guess>N</guess>."
        elif not 1 <= guess <= self.max_value:
            text = f"{guess} is outside 1..{self.max_value}."
        else:
            text = "Higher." if guess < state["secret"] else "Lower."
        return [{"role": "user", "content": text}], state


def make_rows(n: int, seed: int, max_value: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"question": "Guess the number.", "answer": str(rng.randint(1, max_value)), "task": "guess-number"}
            for _ in range(n)]


def load_environment(num_train_examples: int = 1000, num_eval_examples: int = 100, random_seed: int = 0,
                     max_value: int = 100, max_turns: int = 7) -> GuessNumberEnv:
    from datasets import Dataset

    def solved(state) -> float:
        g = state.get("guesses") or []
        return float(bool(g) and g[-1] == state.get("secret"))

    def efficiency(state) -> float:
        g = state.get("guesses") or []
        if not (g and g[-1] == state.get("secret")):
            return 0.0
        return 1.0 if max_turns <= 1 else max(0.0, 1.0 - (len(g) - 1) / (max_turns - 1))

    def closeness(completion, answer) -> float:
        guess = last_guess(completion) if isinstance(completion, list) else None
        return 0.0 if guess is None else max(0.0, 1.0 - abs(guess - int(answer)) / max_value)

    rubric = Rubric([solved, efficiency, closeness], [1.0, 0.5, 0.2])
    return GuessNumberEnv(
        max_value=max_value, max_turns=max_turns,
        dataset=Dataset.from_list(make_rows(num_train_examples, random_seed, max_value)),
        eval_dataset=Dataset.from_list(make_rows(num_eval_examples, random_seed + 1, max_value)),
        system_prompt=system_prompt(max_value), rubric=rubric,
        sampling_args={"max_tokens": 64},  # per turn; eval's -t overrides
    )
