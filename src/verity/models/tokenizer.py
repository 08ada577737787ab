"""Train a small byte-level BPE tokenizer with a chat template (for verity-tiny and test models).

Special tokens: ``<|pad|>``, ``<|end|>`` (end of a message; the EOS), and one role marker per
chat role. The chat template renders ``<|role|>\\ncontent<|end|>\\n`` per message and opens
``<|assistant|>\\n`` for generation, so completion tokens are exactly content + ``<|end|>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 2048, min_frequency: int = 2) -> Any:
    """A ``PreTrainedTokenizerFast`` trained on ``texts`` (byte-level, so any text round-trips)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|end|>", bos_token=None, unk_token=None,
        additional_special_tokens=SPECIAL_TOKENS[2:],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def make_tiny_model(out_dir: str, texts: Iterable[str] | None = None, vocab_size: int = 512,
                    hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4, seed: int = 0,
                    tokenizer: Any = None, max_position_embeddings: int = 2048) -> str:
    """Save a random-init Qwen2-architecture model + tokenizer to ``out_dir`` (for tests and benchmarks).

    The tokenizer is ``tokenizer`` or, else, a BPE tokenizer trained on ``texts`` (for example
    :func:`verity.envs.pii_masking.tokenizer_corpus`).
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if tokenizer is None:
        if texts is None:
            raise ValueError("make_tiny_model needs texts to train a tokenizer on, or a tokenizer")
        tokenizer = train_bpe_tokenizer(texts, vocab_size=vocab_size)
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 3,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
