"""Chat templates of real model families (Qwen3, Llama-3) with the toy models of verity.models.toy."""

from __future__ import annotations

import pytest

from verity.models.toy import qwen3_1_7b_config, save_toy, tiny_model, toy_tokenizer

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "<think>\nsky\n</think>\n\nBlue."},
        {"role": "user", "content": "Another?"}, {"role": "assistant", "content": "Red."}]


def ids_of(out):
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def test_qwen3_template_renders_like_qwen3():
    tok = toy_tokenizer("qwen3")
    text = tok.apply_chat_template(CHAT, tokenize=False)
    # history's reasoning is dropped; the last assistant turn (after the last query) gets a think block
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n"
                    "<|im_start|>assistant\nBlue.<|im_end|>\n<|im_start|>user\nAnother?<|im_end|>\n"
                    "<|im_start|>assistant\n<think>\n\n</think>\n\nRed.<|im_end|>\n")
    off = tok.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    on = tok.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert on.endswith("<|im_start|>assistant\n")
    ids = ids_of(tok.apply_chat_template(CHAT, tokenize=True))
    assert tok.decode(ids) == text
    specials = {"<|im_start|>", "<|im_end|>", "<think>", "</think>"}
    assert specials <= set(tok.convert_ids_to_tokens(ids))  # each marker is one token
    assert tok.eos_token == "<|im_end|>" and toy_tokenizer("qwen3", base=True).eos_token == "<|endoftext|>"


def test_qwen3_template_tools():
    tok = toy_tokenizer("qwen3")
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    msgs = [{"role": "user", "content": "1+2?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "add", "arguments": {"a": 1, "b": 2}}}]},
            {"role": "tool", "content": "3"}]
    text = tok.apply_chat_template(msgs, tools=[tool], tokenize=False, add_generation_prompt=True)
    assert "<tools>\n" + '{"type": "function"' in text
    assert '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call><|im_end|>' in text
    assert text.endswith("<|im_start|>user\n<tool_response>\n3\n</tool_response><|im_end|>\n<|im_start|>assistant\n")


def test_llama3_template():
    tok = toy_tokenizer("llama")
    text = tok.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert text == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\nName a colour.<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert tok.decode(ids_of(tok.apply_chat_template(CHAT[:2], tokenize=True))).count("<|begin_of_text|>") == 1
    assert tok.eos_token == "<|eot_id|>" and toy_tokenizer("llama", base=True).eos_token == "<|end_of_text|>"


@pytest.mark.parametrize("arch,cls", [("qwen3", "Qwen3ForCausalLM"), ("llama", "LlamaForCausalLM")])
def test_toy_model_saves_and_loads_through_verity(tmp_path, arch, cls):
    import torch

    from verity.models.loading import load_model

    tok = toy_tokenizer(arch)
    m = tiny_model(arch, tokenizer=tok, num_hidden_layers=1)
    assert type(m).__name__ == cls and m.config.num_hidden_layers == 1 and m.config.vocab_size == len(tok)
    d = save_toy(tmp_path / arch, arch)
    model, tok2 = load_model(d, dtype="fp32", device="cpu")
    assert type(model).__name__ == cls and tok2.chat_template == tok.chat_template
    ref = tiny_model(arch, tokenizer=tok)
    x = torch.tensor([ids_of(tok.apply_chat_template(CHAT[:2], tokenize=True))])
    with torch.no_grad():
        assert torch.equal(model(x).logits, ref(x).logits)  # same seed -> same weights after the round trip


def test_qwen3_1_7b_config():
    c = qwen3_1_7b_config()
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim,
            c.intermediate_size, c.vocab_size, c.tie_word_embeddings) == (2048, 28, 16, 8, 128, 6144, 151936, True)
    rope = getattr(c, "rope_parameters", None) or {"rope_theta": c.rope_theta}  # transformers 5 | 4
    assert rope["rope_theta"] == 1e6
