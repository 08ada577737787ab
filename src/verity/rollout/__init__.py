"""Rollout: samplers (local HF models, OpenAI-compatible endpoints) behind one small interface."""

from verity.rollout.sampler import Sampler, make_sampler

__all__ = ["Sampler", "make_sampler"]
