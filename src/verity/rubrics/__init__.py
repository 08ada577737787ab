"""Rubrics: weighted sets of reward functions that score a rollout."""

from verity.rubrics.rubric import Rubric, RubricScore

__all__ = ["Rubric", "RubricScore"]
