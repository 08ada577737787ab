"""Environments: built-in ones, the registry (`load_environment`) and the base classes."""

from verity.envs.base import Environment, SingleTurnEnv
from verity.envs.multiturn import MultiTurnEnv
from verity.envs.registry import list_environments, load_environment
from verity.envs.tool_env import StatefulToolEnv, ToolEnv

__all__ = ["Environment", "SingleTurnEnv", "MultiTurnEnv", "ToolEnv", "StatefulToolEnv", "load_environment",
           "list_environments"]
