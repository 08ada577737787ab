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


# ---------------------------------------------------------------- template arguments, stopping, no template
def qwen3_pair(base: bool = False, **kw):
    tok = toy_tokenizer("qwen3", base=base)
    return tiny_model("qwen3", tokenizer=tok, **kw), tok


class EndTurnAfter:
    """Forward hook on the LM head: from the ``k``-th decode step on, ``token`` is by far the most likely
    next token (a stand-in for a trained model that ends its turn)."""

    def __init__(self, model, token: int, k: int):
        self.token, self.k, self.calls = token, k, 0
        self.handle = model.get_output_embeddings().register_forward_hook(self)

    def __call__(self, module, inputs, out):
        self.calls += 1
        if self.calls > self.k:  # call 1 is the prefill (it picks the first completion token)
            out = out.clone()
            out[..., self.token] += 1e4
        return out


def test_template_kwargs_reach_the_sampler_prompt():
    from verity.models.chat import render
    from verity.rollout.sampler import make_sampler
    from verity.types import SamplingArgs

    user = [{"role": "user", "content": "Name a colour."}]
    for kwargs, tail in (({"enable_thinking": False}, "assistant\n<think>\n\n</think>\n\n"), ({}, "assistant\n")):
        model, tok = qwen3_pair()
        sampler = make_sampler((model, tok), template_kwargs=kwargs or None)
        (c,) = sampler.generate_sync([user], SamplingArgs(max_tokens=2, seed=0))
        text = tok.decode(c.prompt_ids)
        assert text.endswith(tail) and text == tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True,
                                                                       **kwargs)
        # every rendering through this tokenizer carries the arguments; a call can override them
        assert render(tok, user, tokenize=False) == text
        flip = {"enable_thinking": not kwargs.get("enable_thinking", True)}
        flipped = render(tok, user, tokenize=False, extra_kwargs=flip)
        assert flipped != text


def test_template_kwargs_through_from_pretrained(qwen3_toy_dir, tmp_path):
    from verity.rollout.hf_sampler import HFSampler

    s = HFSampler.from_pretrained(qwen3_toy_dir, dtype="fp32", template_kwargs={"enable_thinking": False})
    assert s.tokenizer.decode(s.render([{"role": "user", "content": "x"}])).endswith("<think>\n\n</think>\n\n")
    tpl = tmp_path / "plain.jinja"
    tpl.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}<|im_end|>{% endfor %}"
                   "{% if add_generation_prompt %}[assistant] {% endif %}")
    s2 = HFSampler.from_pretrained(qwen3_toy_dir, dtype="fp32", chat_template=str(tpl))
    assert s2.tokenizer.decode(s2.render([{"role": "user", "content": "x"}])) == "[user] x<|im_end|>[assistant] "


@pytest.mark.parametrize("arch,eot", [("qwen3", "<|im_end|>"), ("llama", "<|eot_id|>")])
def test_rollouts_stop_at_the_end_of_turn_token_of_a_base_tokenizer(arch, eot):
    from verity.rollout.hf_sampler import HFSampler
    from verity.types import SamplingArgs

    tok = toy_tokenizer(arch, base=True)  # EOS is end-of-text: the end-of-turn token is not the tokenizer's EOS
    model = tiny_model(arch, tokenizer=tok)
    end = tok.convert_tokens_to_ids(eot)
    assert end != tok.eos_token_id and model.generation_config.eos_token_id != end
    sampler = HFSampler(model, tok)
    assert end in sampler.eos_ids
    hook = EndTurnAfter(model, end, k=5)
    try:
        (c,) = sampler.generate_sync([[{"role": "user", "content": "hi"}]], SamplingArgs(max_tokens=40, seed=1))
    finally:
        hook.handle.remove()
    # the completion trained on ends at, and includes, the end-of-turn token; the text does not show it
    assert c.finish_reason == "stop" and len(c.completion_ids) == 6 and c.completion_ids[-1] == end
    assert end not in c.completion_ids[:-1] and eot not in c.text


def test_end_of_turn_ids_of_the_bundled_starter():
    from verity.models.chat import end_of_turn_ids
    from verity.models.loading import load_tokenizer

    tok = load_tokenizer("verity-tiny")
    assert end_of_turn_ids(tok) == [tok.eos_token_id] == [tok.convert_tokens_to_ids("<|end|>")]


def test_tokenizer_without_template_is_an_error_naming_the_fix(tmp_path):
    from verity.errors import ConfigError
    from verity.models.chat import render
    from verity.models.loading import configure_chat, load_tokenizer

    d = save_toy(tmp_path / "m", "qwen3")
    (tmp_path / "m" / "chat_template.jinja").unlink(missing_ok=True)
    cfg = tmp_path / "m" / "tokenizer_config.json"
    import json

    cfg.write_text(json.dumps({k: v for k, v in json.loads(cfg.read_text()).items() if k != "chat_template"}))
    tok = load_tokenizer(d)
    assert not tok.chat_template
    with pytest.raises(ConfigError, match=r"has no chat template; pass --chat-template FILE"):
        render(tok, [{"role": "user", "content": "x"}])
    tpl = tmp_path / "t.jinja"
    tpl.write_text(toy_tokenizer("qwen3").chat_template)
    assert render(configure_chat(tok, str(tpl)), [{"role": "user", "content": "x"}], tokenize=False) \
        == "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(ConfigError, match=r"--chat-template nope.jinja: file not found"):
        configure_chat(tok, "nope.jinja")


@pytest.mark.parametrize("cls_path", ["verity.train.config:RLConfig", "verity.train.config:SFTConfig",
                                      "verity.eval.config:EvalConfig", "verity.cli.serve_cmd:ServeConfig"])
def test_bad_chat_template_kwargs_name_the_flag(cls_path):
    import importlib

    from verity.errors import ConfigError

    mod, name = cls_path.split(":")
    cls = getattr(importlib.import_module(mod), name)
    extra = {"model": "x"} if name == "ServeConfig" else {"data": "x.jsonl"} if name == "SFTConfig" else {}
    with pytest.raises(ConfigError, match=r"^--chat-template-kwargs '\{bad': invalid JSON"):
        cls(**extra, chat_template_kwargs="{bad").validate()
    with pytest.raises(ConfigError, match=r"^--chat-template-kwargs: 'tokenize' is an argument"):
        cls(**extra, chat_template_kwargs='{"tokenize": false}').validate()
    cls(**extra, chat_template_kwargs='{"enable_thinking": false}').validate()


# ---------------------------------------------------------------- server
def _serve(sampler, body):
    import asyncio

    import httpx

    from verity.serve.app import create_app

    app = create_app(sampler, "toy", max_batch_size=4, max_queue=8)

    async def go():
        batcher = app.state.verity.batcher
        batcher.start()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                return await c.post("/v1/chat/completions", json=body)
        finally:
            await batcher.stop()

    return asyncio.run(go())


def test_server_honours_chat_template_kwargs_and_stops_at_im_end():
    from verity.models.chat import set_template_kwargs
    from verity.rollout.hf_sampler import HFSampler

    model, tok = qwen3_pair(base=True)
    user = [{"role": "user", "content": "Name a colour."}]
    n_on = len(ids_of(tok.apply_chat_template(user, add_generation_prompt=True)))
    n_off = len(ids_of(tok.apply_chat_template(user, add_generation_prompt=True, enable_thinking=False)))
    body = {"model": "toy", "messages": user, "max_tokens": 30, "seed": 0}
    sampler = HFSampler(model, tok)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    hook = EndTurnAfter(model, end, k=3)
    try:
        r = _serve(sampler, {**body, "chat_template_kwargs": {"enable_thinking": False}})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens"] == n_off
        assert r.json()["choices"][0]["finish_reason"] == "stop" and r.json()["usage"]["completion_tokens"] == 4
    finally:
        hook.handle.remove()
    assert _serve(sampler, body).json()["usage"]["prompt_tokens"] == n_on
    set_template_kwargs(tok, {"enable_thinking": False})  # the server's --chat-template-kwargs; requests override
    assert _serve(sampler, body).json()["usage"]["prompt_tokens"] == n_off
    r = _serve(sampler, {**body, "chat_template_kwargs": {"enable_thinking": True}})
    assert r.json()["usage"]["prompt_tokens"] == n_on
    bad = _serve(sampler, {**body, "chat_template_kwargs": {"add_generation_prompt": False}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "chat_template_kwargs"


# ---------------------------------------------------------------- SFT loss masks
def masked_spans(tok, ex) -> list[str]:
    """The decoded runs of loss-masked tokens."""
    spans, cur = [], []
    for i, m in zip(ex.input_ids, ex.loss_mask, strict=True):
        if m:
            cur.append(i)
        elif cur:
            spans.append(tok.decode(cur))
            cur = []
    return spans + ([tok.decode(cur)] if cur else [])


@pytest.mark.parametrize("arch,kwargs,expected", [
    ("qwen3", {"enable_thinking": False}, ["Blue.<|im_end|>", "Red.<|im_end|>"]),
    # thinking on: the last turn's (empty) think block is what the model generates after the prompt
    ("qwen3", {}, ["Blue.<|im_end|>", "<think>\n\n</think>\n\nRed.<|im_end|>"]),
    ("llama", {}, ["<think>\nsky\n</think>\n\nBlue.<|eot_id|>", "Red.<|eot_id|>"]),
])
def test_sft_mask_covers_exactly_the_assistant_tokens(arch, kwargs, expected):
    from verity.models.chat import set_template_kwargs
    from verity.train.sft_data import tokenize_conversation

    tok = set_template_kwargs(toy_tokenizer(arch), kwargs)
    ex = tokenize_conversation(tok, CHAT, 4096)
    assert masked_spans(tok, ex) == expected
    assert list(ex.input_ids) == ids_of(tok.apply_chat_template(CHAT, tokenize=True, **kwargs))


def test_sft_mask_from_generation_blocks_agrees_with_the_render_diff():
    from verity.models.chat import has_generation_blocks
    from verity.train.sft_data import render_diff_mask, tokenize_conversation

    tok = toy_tokenizer("llama")
    tok.chat_template = (
        "{% for m in messages %}{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
        "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' }}"
        "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] | trim + '<|eot_id|>' }}{% endgeneration %}"
        "{% else %}{{ m['content'] | trim + '<|eot_id|>' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
    assert has_generation_blocks(tok)
    ex = tokenize_conversation(tok, CHAT, 4096)
    assert masked_spans(tok, ex) == ["<think>\nsky\n</think>\n\nBlue.<|eot_id|>", "Red.<|eot_id|>"]
    assert render_diff_mask(tok, CHAT) == (list(ex.input_ids), list(ex.loss_mask))


def test_sft_render_diff_refuses_a_span_it_cannot_check():
    from verity.errors import DatasetError
    from verity.train.sft_data import tokenize_conversation

    tok = toy_tokenizer("qwen3")
    # a template that writes the assistant's answer nowhere: the span cannot hold the message text
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                         "{% if m['role'] != 'assistant' %}{{ m['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(DatasetError, match=r"row 3, message 2: cannot locate the assistant tokens"):
        tokenize_conversation(tok, CHAT, 4096, where="data.jsonl, row 3")


# ---------------------------------------------------------------- parser
def test_xml_parser_ignores_tags_inside_a_leading_think_block():
    from verity.envs.pii_masking import parser as pii_parser
    from verity.parsers.xml import XMLParser

    text = "<think>\nmaybe <answer>1</answer>?\n</think>\n\n<answer>2</answer>"
    msgs = [{"role": "assistant", "content": text}]
    p = XMLParser(["answer"], strip_think=True)
    assert p.parse(text).answer == "2" and p.parse_answer(msgs) == "2" and p.parse_answer(text) == "2"
    assert p.parse_answer([{"role": "assistant", "content": "<think>only <answer>1</answer>"}]) is None  # unfinished
    assert p.parse("<answer>1</answer></think><answer>2</answer>").answer == "2"  # think opened by the prompt
    assert p.format_score(text) == p.format_score("<answer>2</answer>") == 1.0
    # verifiers 0.1.x semantics stay the default: the first match, inside the think block
    assert XMLParser(["answer"]).parse_answer(msgs) == "1"
    masked = "<think>\n<masked_output>wrong</masked_output>\n</think>\n<masked_output>\nHi [PII]\n</masked_output>"
    assert pii_parser.parse_answer([{"role": "assistant", "content": masked}]) == "Hi [PII]"
    with pytest.raises(ValueError, match="'think' cannot also be a field"):
        XMLParser(["think", "answer"], strip_think=True)


def test_endpoint_sampler_sends_chat_template_kwargs():
    import asyncio
    from types import SimpleNamespace

    from verity.errors import ConfigError
    from verity.rollout.openai_sampler import OpenAISampler
    from verity.rollout.sampler import make_sampler
    from verity.types import SamplingArgs

    sent: list[dict] = []

    async def create(**req):
        sent.append(req)
        msg = SimpleNamespace(content="ok", tool_calls=None)
        return SimpleNamespace(choices=[SimpleNamespace(message=msg, finish_reason="stop")], usage=None)

    client = SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create)), timeout=5.0,
                             max_retries=0, base_url="http://fake")
    s = OpenAISampler("m", client=client, template_kwargs={"enable_thinking": False})
    s._checked = True  # the fake client has no /models to check
    (c,) = asyncio.run(s.generate([[{"role": "user", "content": "x"}]], SamplingArgs(max_tokens=4)))
    assert c.text == "ok" and sent[0]["extra_body"] == {"chat_template_kwargs": {"enable_thinking": False}}
    with pytest.raises(ConfigError, match=r"--chat-template t.jinja: applies to in-process models"):
        make_sampler("m", base_url="http://127.0.0.1:9/v1", chat_template="t.jinja")


def test_cli_one_line_errors_for_chat_template_flags(tmp_path):
    import json
    import subprocess
    import sys

    d = save_toy(tmp_path / "m", "qwen3")
    (tmp_path / "m" / "chat_template.jinja").unlink(missing_ok=True)
    cfg = tmp_path / "m" / "tokenizer_config.json"
    cfg.write_text(json.dumps({k: v for k, v in json.loads(cfg.read_text()).items() if k != "chat_template"}))

    def verity(*args: str) -> list[str]:
        p = subprocess.run([sys.executable, "-m", "verity", *args], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
        assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
        lines = [x for x in p.stderr.splitlines() if x.strip()]
        assert len(lines) == 1, p.stderr
        return lines

    (line,) = verity("eval", "arithmetic", "-m", d, "-n", "1", "-r", "1", "-t", "2")
    assert "the tokenizer has no chat template; pass --chat-template FILE" in line
    (line,) = verity("train", "arithmetic", "-m", d, "--chat-template-kwargs", "{bad")
    assert "--chat-template-kwargs '{bad': invalid JSON" in line
