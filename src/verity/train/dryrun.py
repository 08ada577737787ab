"""Memory settings of a training run (``auto`` resolved) and ``--dry-run``'s printed plan.

Both read only the model's config.json and, for RL, the tokenizer (to measure the environment's
prompts); no weights are loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from verity.train.config import RLConfig, SFTConfig
from verity.train.memory import GiB, MemorySettings, ModelShape, resolve_settings

#: Ceilings of ``--micro-batch-size auto`` (the former fixed defaults): larger micro-batches
#: stop paying on the CPU and change nothing on a GPU once the device is busy.
RL_MICRO_CEILING = 64
SFT_MICRO_CEILING = 32


def compute_bytes(dtype: Any) -> int:
    import torch

    return 2 if dtype in (torch.bfloat16, torch.float16) else 4


def prompt_tokens(prompts: Sequence[Any], render: Callable[[Any], list[int]], sample: int = 64) -> int:
    """Longest rendered prompt among the first ``sample`` prompts (the plan's prompt length)."""
    return max((len(render(p)) for p in list(prompts)[:sample]), default=1)


def token_counter(tok: Any) -> Callable[[Any], list[int]]:
    """Prompt -> token ids with ``tok`` (chat messages through its template, text as is)."""
    from verity.models.chat import render

    def rend(p: Any) -> list[int]:
        return list(tok(p, add_special_tokens=False)["input_ids"]) if isinstance(p, str) else render(tok, p)

    return rend


def rl_settings(cfg: RLConfig, shape: ModelShape, device: str, dtype: Any, prompt_len: int) -> MemorySettings:
    seq = prompt_len + cfg.max_tokens
    return resolve_settings(shape, device, micro_batch=cfg.micro_batch_size,
                            ceiling=min(RL_MICRO_CEILING, cfg.batch_size), decode_batch=cfg.max_decode_batch,
                            decode_ceiling=cfg.batch_size, checkpointing=cfg.gradient_checkpointing, seq_len=seq,
                            completion_len=cfg.max_tokens, lora_rank=cfg.lora_rank, compute_bytes=compute_bytes(dtype),
                            decode_len=seq)


def sft_settings(cfg: SFTConfig, shape: ModelShape, device: str, dtype: Any) -> MemorySettings:
    return resolve_settings(shape, device, micro_batch=cfg.micro_batch_size,
                            ceiling=min(SFT_MICRO_CEILING, cfg.batch_size), decode_batch=0, decode_ceiling=0,
                            checkpointing=cfg.gradient_checkpointing, seq_len=cfg.max_length,
                            completion_len=cfg.max_length, lora_rank=cfg.lora_rank,
                            compute_bytes=compute_bytes(dtype))


def _header(name: str, shape: ModelShape, lora_rank: int) -> str:
    lora = f", LoRA rank {lora_rank}: {shape.lora_params(lora_rank) / 1e6:.1f}M trainable" if lora_rank else ""
    return (f"memory plan for {name}: {shape.params / 1e9:.3f}B parameters ({shape.layers} layers, hidden "
            f"{shape.hidden}, vocabulary {shape.vocab}){lora}")


def dry_run_rl(cfg: RLConfig, env: Any) -> list[str]:
    """The lines ``verity train --dry-run`` prints (the environment's prompts are rendered with the
    model's tokenizer to size the sequences)."""
    from verity.models.loading import load_tokenizer, pick_device, pick_dtype

    shape = ModelShape.from_model(cfg.model)
    device = pick_device("auto")
    dtype = pick_dtype(cfg.dtype, device)
    plen = prompt_tokens([ex.prompt for ex in env.get_examples("train")], token_counter(load_tokenizer(cfg.model)))
    s = rl_settings(cfg, shape, device, dtype, plen)
    return [_header(cfg.model, shape, cfg.lora_rank),
            f"batch {cfg.group_size} x {cfg.groups_per_batch} rollouts, prompts up to {plen} tokens "
            f"(first 64 of {env.env_id!r}), completions up to {cfg.max_tokens}", *s.lines(), _fits(s)]


def dry_run_sft(cfg: SFTConfig) -> list[str]:
    from verity.models.loading import pick_device, pick_dtype

    shape = ModelShape.from_model(cfg.model)
    device = pick_device("auto")
    s = sft_settings(cfg, shape, device, pick_dtype(cfg.dtype, device))
    return [_header(cfg.model, shape, cfg.lora_rank),
            f"batch {cfg.batch_size} sequences of up to {cfg.max_length} tokens", *s.lines(), _fits(s)]


def _fits(s: MemorySettings) -> str:
    verdict = "fits" if s.plan.total <= s.budget else "DOES NOT FIT"
    return f"{verdict}: peak {s.plan.total / GiB:.2f} GiB of {s.budget / GiB:.2f} GiB"
