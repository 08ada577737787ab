"""The :class:`Sampler` interface and a factory picking the backend for a model argument.

A sampler turns chat prompts into :class:`~verity.types.Completion` objects. Local samplers
also return token ids and sampling log-probs, which the trainers use; API samplers return text.
Environments only ever see this interface, so the same rollout code runs against an
in-process model, ``verity serve``, vLLM or a hosted API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from verity.errors import ConfigError
from verity.types import ChatOrText, Completion, SamplingArgs


@runtime_checkable
class Sampler(Protocol):
    """Generates completions for a batch of prompts."""

    name: str
    """Model name recorded in results."""

    async def generate(self, prompts: Sequence[ChatOrText], args: SamplingArgs,
                       tools: Sequence[Mapping[str, Any]] | None = None) -> list[Completion]:
        """One completion per prompt (chat messages, or plain text for completion-mode environments),
        in order; ``tools`` (OpenAI function schemas) are offered to the model when given.
        Failures come back as ``finish_reason='error'``."""
        ...


@runtime_checkable
class TokenSampler(Sampler, Protocol):
    """A local sampler that also samples from token ids: what multi-turn token bookkeeping needs."""

    tokenizer: Any
    """The model's tokenizer (with its chat template)."""

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], args: SamplingArgs,
                     seeds: Sequence[int] | None = None) -> list[Completion]:
        """One completion per tokenised prompt, with token ids and sampling log-probs."""
        ...


def make_sampler(
    model: Any,
    model_name: str | None = None,
    base_url: str | None = None,
    api_key_env: str | None = None,
    concurrency: int = 32,
    batch_size: int = 64,
    dtype: str = "auto",
    timeout: float = 120.0,
    max_retries: int = 2,
    chat_template: str | None = None,
    template_kwargs: Mapping[str, Any] | None = None,
) -> Sampler:
    """Build a sampler for ``model``: a Sampler (returned as is), an OpenAI client, a model
    path / hub id / ``verity-tiny`` (local HF), or a model name served at ``base_url``.

    ``chat_template`` (a Jinja file) and ``template_kwargs`` apply to in-process models; an
    endpoint gets ``template_kwargs`` as the ``chat_template_kwargs`` request field (vLLM's and
    ``verity serve``'s) and renders with its own template."""
    if isinstance(model, Sampler) and not isinstance(model, str):
        return model
    if base_url is not None:
        from verity.rollout.openai_sampler import OpenAISampler

        if chat_template is not None:
            raise ConfigError(f"--chat-template {chat_template}: applies to in-process models; the endpoint at "
                              f"{base_url} renders prompts with its own template")
        return OpenAISampler(base_url=base_url, model=model, api_key_env=api_key_env, concurrency=concurrency,
                             timeout=timeout, max_retries=max_retries, template_kwargs=template_kwargs)
    cls_mod = type(model).__module__
    if cls_mod.startswith("openai"):
        from verity.rollout.openai_sampler import OpenAISampler

        if not model_name:
            raise ValueError("evaluating through an OpenAI client needs model_name=")
        return OpenAISampler(client=model, model=model_name, concurrency=concurrency)
    from verity.rollout.hf_sampler import HFSampler

    if isinstance(model, str):
        return HFSampler.from_pretrained(model, batch_size=batch_size, dtype=dtype, chat_template=chat_template,
                                         template_kwargs=template_kwargs)
    if isinstance(model, tuple) and len(model) == 2:
        from verity.models.loading import configure_chat

        return HFSampler(model[0], configure_chat(model[1], chat_template, template_kwargs), batch_size=batch_size,
                         name=model_name)
    raise TypeError(f"cannot make a sampler from {type(model).__name__}")
