"""Environments: built-in ones, the registry (`load_environment`) and the base classes."""

from verity.envs.base import Environment, SingleTurnEnv
from verity.envs.registry import list_environments, load_environment

__all__ = ["Environment", "SingleTurnEnv", "load_environment", "list_environments"]
