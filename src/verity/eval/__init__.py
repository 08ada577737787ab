"""Evaluation: run n examples × r rollouts through an environment, save and summarise results."""

from verity.eval.evaluate import EvalResults, evaluate, summarize

__all__ = ["EvalResults", "evaluate", "summarize"]
