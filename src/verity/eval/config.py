"""Typed configuration of ``verity eval`` (the CLI flags are derived from these fields)."""

from __future__ import annotations

from dataclasses import dataclass

from verity.config import ChatTemplateFlags, check_choices, flag, parse_env_args
from verity.errors import ConfigError
from verity.types import DType, RewardErrorPolicy, check_sampling
from verity.utils import output_dir_path

#: How ``verity eval`` / ``verity compare`` name the sampling values in error messages.
SAMPLING_FLAGS = {"max_tokens": "-t", "temperature": "-T", "top_p": "--top-p"}


@dataclass
class EvalFlags(ChatTemplateFlags):
    """What to sample and how much: shared by ``verity eval`` and ``verity compare``."""

    num_examples: int = flag("-n", "--num-examples", default=5)
    """Number of examples from the eval split (-1 = all)."""
    rollouts_per_example: int = flag("-r", "--rollouts-per-example", default=3)
    """Rollouts (samples) per example."""
    max_tokens: int | None = flag("-t", "--max-tokens", default=None)
    """Max completion tokens (default: the environment's, else 512)."""
    temperature: float | None = flag("-T", "--temperature", default=None)
    """Sampling temperature (default: the environment's, else 1.0)."""
    top_p: float | None = flag("--top-p", default=None)
    """Nucleus sampling mass."""
    env_args: str = flag("-a", "--env-args", default="{}")
    """JSON object of keyword arguments for load_environment."""
    sampling_args: str = flag("-S", "--sampling-args", default="{}")
    """JSON object of extra sampling args passed to the backend."""
    concurrency: int = flag("-c", "--concurrency", default=32)
    """Max concurrent requests to an endpoint."""
    batch_size: int = flag("--batch-size", default=64)
    """Sequences per generation batch for in-process models."""


@dataclass
class EvalConfig(EvalFlags):
    env: str = flag(positional=True, default="pii-masking")
    """Environment id, importable module, or path to a .py file exposing load_environment."""
    model: str = flag("-m", "--model", default="verity-tiny")
    """Model: local HF directory, hub id, `verity-tiny`, or the model name served at --base-url."""
    base_url: str | None = flag("-b", "--base-url", default=None)
    """OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1); omit to run the model in-process."""
    api_key_var: str | None = flag("-k", "--api-key-var", default=None)
    """Name of the environment variable holding the endpoint's API key."""
    timeout: float = flag("--timeout", default=120.0)
    """Seconds to wait for each endpoint request before retrying it (--base-url only)."""
    max_retries: int = flag("--max-retries", default=2)
    """Retries of a failed or timed-out endpoint request (with backoff) before giving up on it."""
    output_dir: str | None = flag("-o", "--output-dir", default=None)
    """Results directory (default: outputs/evals/ENV--MODEL--TIME)."""
    seed: int = flag("--seed", default=0)
    """Sampling seed (local models are reproducible with the same seed)."""
    resume: bool = flag("--resume", default=False)
    """Continue an interrupted run in --output-dir without redoing finished rollouts."""
    json: bool = flag("--json", default=False)
    """Print one JSON object with the summary on stdout instead of the table."""
    on_reward_error: RewardErrorPolicy = flag("--on-reward-error", default="zero")
    """A reward function that raises: score 0 and count it (zero), or abort (raise)."""
    dtype: DType = flag("--dtype", default="auto")
    """Weights dtype for in-process models (auto = bf16 on hardware that is fast at it)."""

    def validate(self) -> None:
        check_choices(self)
        if self.num_examples == 0 or self.num_examples < -1:
            raise ConfigError(f"-n {self.num_examples}: must be >= 1 (or -1 for all)")
        if self.rollouts_per_example < 1:
            raise ConfigError(f"-r {self.rollouts_per_example}: must be >= 1")
        check_sampling(self.max_tokens, self.temperature, self.top_p, names=SAMPLING_FLAGS)
        if not self.timeout > 0:
            raise ConfigError(f"--timeout {self.timeout}: must be > 0 seconds")
        if self.max_retries < 0:
            raise ConfigError(f"--max-retries {self.max_retries}: must be >= 0")
        if self.concurrency < 1:
            raise ConfigError(f"-c {self.concurrency}: must be >= 1")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size}: must be >= 1")
        if self.output_dir:
            output_dir_path(self.output_dir)
        if self.resume and not self.output_dir:
            raise ConfigError("--resume needs -o OUT_DIR (the run to continue)")
        parse_env_args(self.env_args)
        parse_env_args(self.sampling_args, "-S")
        self.check_chat_flags()
