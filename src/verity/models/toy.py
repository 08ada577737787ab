"""Toy models and tokenizers in real architectures, built locally in well under a second.

For tests, benchmarks and GPU checks that must exercise what users bring (Qwen3 / Llama-3
instruct models loaded from a local Hugging Face directory) without downloading anything:

- :func:`qwen3_tokenizer` / :func:`llama3_tokenizer`: byte-level tokenizers (every byte is a
  token, so any text round-trips) carrying the family's special tokens and its published chat
  template (Qwen3: ``enable_thinking``, the empty think block on the last assistant turn,
  tools; Llama-3: header tokens and ``<|eot_id|>``).
- :func:`tiny_model`: a random-init model in that architecture at reduced depth and width.
- :func:`save_toy`: model + tokenizer saved as a local directory, so ``-m ./dir`` goes through
  the real loading path.
- :func:`qwen3_1_7b_config`: Qwen3-1.7B's real config (no weights), for memory planning and
  the GPU recipe script.

``base=True`` gives the tokenizer of a *base* checkpoint: its EOS is the end-of-text token, so
the end-of-turn token (``<|im_end|>`` / ``<|eot_id|>``) is not in the tokenizer's stop set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

QWEN3_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                 "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                 "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
# Added tokens Qwen3 marks as not special (they survive ``skip_special_tokens``).
QWEN3_ADDED = ["<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
               "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>"]

TEMPLATES = Path(__file__).resolve().parent.parent / "assets" / "templates"
# Qwen3's chat template as published in Qwen/Qwen3-*/tokenizer_config.json.
QWEN3_CHAT_TEMPLATE = (TEMPLATES / "qwen3.jinja").read_text()

LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>", "<|eom_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>"]
# Meta-Llama-3-8B-Instruct's chat template.
LLAMA3_CHAT_TEMPLATE = (TEMPLATES / "llama3.jinja").read_text()


def _byte_tokenizer(special: list[str], added: list[str]) -> Any:
    """Byte-level BPE with no merges (ids 0..255 are the bytes) plus ``special`` and ``added`` tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet(), key=lambda c: ord(c))
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in added])
    return tok


def qwen3_tokenizer(base: bool = False) -> Any:
    """A byte-level tokenizer with Qwen3's special tokens and chat template.

    EOS is ``<|im_end|>`` (instruct checkpoints) or ``<|endoftext|>`` with ``base=True``; the
    pad token is ``<|endoftext|>`` as in Qwen3.
    """
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=_byte_tokenizer(QWEN3_SPECIAL, QWEN3_ADDED), bos_token=None, unk_token=None,
        eos_token="<|endoftext|>" if base else "<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = QWEN3_CHAT_TEMPLATE
    return fast


def llama3_tokenizer(base: bool = False) -> Any:
    """A byte-level tokenizer with Llama-3's special tokens and chat template.

    BOS is ``<|begin_of_text|>`` (written by the template); EOS is ``<|eot_id|>`` (instruct) or
    ``<|end_of_text|>`` with ``base=True``. Llama-3 has no pad token; ``<|finetune_right_pad_id|>``
    is used, as Llama-3.1 recipes do.
    """
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=_byte_tokenizer(LLAMA3_SPECIAL, []), bos_token="<|begin_of_text|>", unk_token=None,
        eos_token="<|end_of_text|>" if base else "<|eot_id|>", pad_token="<|finetune_right_pad_id|>")
    fast.chat_template = LLAMA3_CHAT_TEMPLATE
    return fast


def toy_tokenizer(arch: str = "qwen3", base: bool = False) -> Any:
    """:func:`qwen3_tokenizer` or :func:`llama3_tokenizer` by ``arch``."""
    if arch == "qwen3":
        return qwen3_tokenizer(base)
    if arch == "llama":
        return llama3_tokenizer(base)
    raise ValueError(f"arch {arch!r}: expected 'qwen3' or 'llama'")


def qwen3_1_7b_config() -> Any:
    """Qwen3-1.7B's published ``config.json`` as a ``Qwen3Config`` (no weights)."""
    from transformers import Qwen3Config

    fields: dict[str, Any] = dict(  # rope_theta / torch_dtype: accepted by transformers 4.x and 5.x
        vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
        rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu",
        attention_bias=False, attention_dropout=0.0, bos_token_id=151643, eos_token_id=151645,
        torch_dtype="bfloat16", use_cache=True, use_sliding_window=False, max_window_layers=28)
    return Qwen3Config(**fields)


def toy_config(arch: str = "qwen3", vocab_size: int = 512, **overrides: Any) -> Any:
    """A reduced-size config in ``arch`` (``qwen3`` | ``llama``): hidden 64, 2 layers, 4 heads / 2 KV
    heads, head_dim 16; any config field can be overridden."""
    from transformers import LlamaConfig, Qwen3Config

    fields: dict[str, Any] = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
        rope_theta=1_000_000.0 if arch == "qwen3" else 500_000.0, tie_word_embeddings=arch == "qwen3")
    fields.update(overrides)
    if arch == "qwen3":
        return Qwen3Config(**fields)
    if arch == "llama":
        return LlamaConfig(**fields)
    raise ValueError(f"arch {arch!r}: expected 'qwen3' or 'llama'")


def tiny_model(arch: str = "qwen3", tokenizer: Any = None, seed: int = 0, **overrides: Any) -> Any:
    """A random-init causal LM in ``arch`` at reduced depth/width (see :func:`toy_config`).

    With ``tokenizer`` the vocabulary, EOS and pad ids are taken from it, and the generation
    config's EOS is the tokenizer's (as a checkpoint's ``generation_config.json`` would say).
    """
    import torch
    from transformers import AutoModelForCausalLM

    if tokenizer is not None:
        overrides.setdefault("vocab_size", len(tokenizer))
        overrides.setdefault("eos_token_id", tokenizer.eos_token_id)
        overrides.setdefault("pad_token_id", tokenizer.pad_token_id)
        overrides.setdefault("bos_token_id", tokenizer.bos_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(toy_config(arch, **overrides))
    if tokenizer is not None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def save_toy(path: str | Path, arch: str = "qwen3", base: bool = False, seed: int = 0, **overrides: Any) -> str:
    """Save :func:`tiny_model` + :func:`toy_tokenizer` of ``arch`` as a local HF directory; returns the path."""
    tok = toy_tokenizer(arch, base)
    model = tiny_model(arch, tokenizer=tok, seed=seed, **overrides)
    out = str(path)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


#: Qwen3-architecture layer shapes (config overrides for :func:`tiny_model` / :func:`save_toy`; the
#: vocabulary stays the toy tokenizer's) used by the GPU check scripts; ``qwen3-tiny`` for CPU smoke runs.
QWEN3_SHAPES: dict[str, dict[str, Any]] = {
    "qwen3-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, max_position_embeddings=4096),
    "qwen3-1.7b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, max_position_embeddings=4096),
    "qwen3-tiny": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, max_position_embeddings=1024),
}
