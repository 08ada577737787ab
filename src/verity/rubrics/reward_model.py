"""A rubric that scores with a learned reward model (``verity rm``'s output), so any environment can
optimise a learned reward: ``env.rubric = RewardModelRubric("OUT/final")``, then ``verity train`` as usual."""

from __future__ import annotations

from typing import Any

from verity.rubrics.rubric import Rubric


class RewardModelRubric(Rubric):
    """One reward function, ``reward_model``: the scalar score of prompt + completion under the reward model
    at ``path`` (a sequence-classification model with one output, e.g. ``verity rm``'s ``OUT/final``).

    ``weight`` scales it; the model runs in-process on the CPU (or ``device``), one rollout at a time.
    """

    def __init__(self, path: str, weight: float = 1.0, max_length: int = 1024, device: str = "cpu", **kwargs: Any):
        super().__init__(funcs=[self.reward_model], weights=[weight], **kwargs)
        self.path, self.max_length, self.device = path, max_length, device
        self._model: Any = None
        self._tok: Any = None

    def _load(self) -> None:
        from transformers import AutoModelForSequenceClassification

        from verity.models.loading import load_tokenizer

        self._model = AutoModelForSequenceClassification.from_pretrained(self.path).to(self.device).eval()
        self._tok = load_tokenizer(self.path)

    def reward_model(self, prompt: Any, completion: Any) -> float:
        """The reward model's score of the conversation (a string prompt/completion is one user/assistant turn)."""
        import torch

        from verity.train.sft_data import tokenize_conversation

        if self._model is None:
            self._load()
        msgs: list[Any] = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        msgs += [{"role": "assistant", "content": completion}] if isinstance(completion, str) else list(completion)
        ex = tokenize_conversation(self._tok, msgs, self.max_length)
        model: Any = self._model
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ex.input_ids], device=self.device))
        return float(out.logits[0, 0])
