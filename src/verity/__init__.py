"""verity: reinforcement learning with verifiable rewards for LLMs.

Build an environment (dataset + parser + rubric), evaluate any model in it, train a model
in it (GRPO-family RL, SFT), and compare models side by side. Heavy modules (torch,
trainers) load lazily so that ``import verity`` and API-only evaluation stay fast.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _pkg_version
from typing import Any

from verity.envs.base import Environment, SingleTurnEnv
from verity.envs.registry import list_environments, load_environment
from verity.errors import VerityError
from verity.parsers import Parser, ThinkParser, XMLParser
from verity.rubrics import Rubric
from verity.types import (
    Batch,
    Completion,
    Example,
    GenerateOutputs,
    Group,
    Rollout,
    RolloutScore,
    RolloutScores,
    SamplingArgs,
)

try:  # one source for the version: the installed package's metadata (pyproject.toml)
    __version__ = _pkg_version("verity")
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"

_LAZY = {
    "RLTrainer": "verity.train.rl",
    "RLConfig": "verity.train.config",
    "SFTTrainer": "verity.train.sft",
    "SFTConfig": "verity.train.config",
    "DPOTrainer": "verity.train.dpo",
    "DPOConfig": "verity.train.config",
    "RewardModelTrainer": "verity.train.reward_model",
    "RMConfig": "verity.train.config",
    "RewardModelRubric": "verity.rubrics.reward_model",
    "evaluate": "verity.eval.evaluate",
    "make_sampler": "verity.rollout.sampler",
    "MultiTurnEnv": "verity.envs.multiturn",
    "ToolEnv": "verity.envs.tool_env",
    "StatefulToolEnv": "verity.envs.tool_env",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'verity' has no attribute {name!r}")


__all__ = [
    "Environment", "SingleTurnEnv", "load_environment", "list_environments", "Parser", "XMLParser",
    "ThinkParser", "Rubric", "Example", "Rollout", "Group", "Batch", "Completion", "SamplingArgs",
    "VerityError", "RolloutScore", "RolloutScores", "GenerateOutputs", *_LAZY,
]
