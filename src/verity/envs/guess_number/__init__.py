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
from collections.abc import Mapping
from typing import Any

from verity.envs.multiturn import MultiTurnEnv, State
from verity.rubrics.rubric import Rubric
from verity.types import Example, Messages

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


def guesses(completion: Any) -> list[int]:
    """The guesses of a conversation, in order (one per assistant message that holds one)."""
    if not isinstance(completion, list):
        return []
    found = [GUESS_RE.findall(m.get("content") or "") for m in completion if m.get("role") == "assistant"]
    return [int(g[-1]) for g in found if g]


def feedback(guess: int | None, secret: int, max_value: int) -> str:
    """The environment's answer to one guess."""
    if guess is None:
        return "I did not find a guess. Write it as <guess>N</guess>."
    if not 1 <= guess <= max_value:
        return f"{guess} is outside 1..{max_value}."
    return "Higher." if guess < secret else "Lower."


class GuessNumberEnv(MultiTurnEnv):
    """Feedback each turn: higher / lower / how to write a guess."""

    def __init__(self, max_value: int = 100, **kwargs: Any):
        super().__init__(**kwargs)
        self.max_value = max_value

    async def setup_state(self, state: State, **kwargs: Any) -> State:
        state["secret"] = int(state["answer"])
        return state

    async def is_completed(self, messages: Messages, state: State, **kwargs: Any) -> bool:
        return last_guess(messages) == state["secret"] or await super().is_completed(messages, state, **kwargs)

    async def env_response(self, messages: Messages, state: State, **kwargs: Any) -> tuple[Messages, State]:
        text = feedback(last_guess(messages), state["secret"], self.max_value)
        return [{"role": "user", "content": text}], state

    def reference_completion(self, example: Example) -> Messages:
        """A binary search to the secret with the environment's feedback (what `verity doctor` scores as gold)."""
        secret, lo, hi, out = int(example.answer), 1, self.max_value, []
        for _ in range(self.max_turns):
            guess = (lo + hi) // 2
            out.append({"role": "assistant", "content": f"<guess>{guess}</guess>"})
            if guess == secret:
                break
            out.append({"role": "user", "content": feedback(guess, secret, self.max_value)})
            lo, hi = (guess + 1, hi) if guess < secret else (lo, guess - 1)
        return out


def make_rows(n: int, seed: int, max_value: int, max_turns: int) -> list[dict[str, Any]]:
    """Rows with a secret each; ``info`` carries the game's parameters (the reward functions read them)."""
    rng = random.Random(seed)
    info = {"max_value": max_value, "max_turns": max_turns}
    return [{"question": "Guess the number.", "answer": str(rng.randint(1, max_value)), "task": "guess-number",
             "info": dict(info)} for _ in range(n)]


def solved(completion: Any, answer: str) -> float:
    """1 when the last guess is the secret."""
    g = guesses(completion)
    return float(bool(g) and g[-1] == int(answer))


def efficiency(completion: Any, answer: str, info: Mapping[str, Any]) -> float:
    """1 for a first-guess hit, falling linearly to 0 at ``max_turns`` guesses; 0 when unsolved."""
    g, max_turns = guesses(completion), int(info["max_turns"])
    if not (g and g[-1] == int(answer)):
        return 0.0
    return 1.0 if max_turns <= 1 else max(0.0, 1.0 - (len(g) - 1) / (max_turns - 1))


def closeness(completion: Any, answer: str, info: Mapping[str, Any]) -> float:
    """``1 - |last guess - secret| / max_value`` (0 without a guess)."""
    guess = last_guess(completion) if isinstance(completion, list) else None
    return 0.0 if guess is None else max(0.0, 1.0 - abs(guess - int(answer)) / int(info["max_value"]))


def load_environment(num_train_examples: int = 1000, num_eval_examples: int = 100, random_seed: int = 0,
                     max_value: int = 100, max_turns: int = 7) -> GuessNumberEnv:
    from datasets import Dataset

    rubric = Rubric([solved, efficiency, closeness], [1.0, 0.5, 0.2])
    return GuessNumberEnv(
        max_value=max_value, max_turns=max_turns,
        dataset=Dataset.from_list(make_rows(num_train_examples, random_seed, max_value, max_turns)),
        eval_dataset=Dataset.from_list(make_rows(num_eval_examples, random_seed + 1, max_value, max_turns)),
        system_prompt=system_prompt(max_value), rubric=rubric,
        sampling_args={"max_tokens": 64},  # per turn; eval's -t overrides
    )
