"""HF sampler: batching, prefix sharing, row compaction and the bf16 weight copy change nothing."""

import torch

from verity.models.loading import load_model
from verity.rollout.hf_sampler import HFSampler
from verity.train.batching import make_batch
from verity.train.learner import LocalLearner
from verity.types import Rollout, SamplingArgs


def _prompts(sampler):
    qs = ["mask: Jane Roe 555-0100", "hello there", "a much longer prompt with several words in it", "x"]
    return [sampler.render([{"role": "user", "content": q}]) for q in qs]


def test_batched_greedy_equals_one_at_a_time(tiny_model_dir):
    model, tok = load_model(tiny_model_dir, dtype="fp32")
    s = HFSampler(model, tok, batch_size=16)
    ids = _prompts(s) * 2  # repeated prompts exercise the shared prefill
    args = SamplingArgs(max_tokens=12, temperature=0)
    batched = s.generate_ids(ids, args)
    for p, b in zip(ids, batched, strict=False):
        alone = s.generate_ids([p], args)[0]
        assert alone.completion_ids == b.completion_ids
        assert len(b.logprobs) == len(b.completion_ids)


def test_seeded_sampling_is_reproducible(tiny_model_dir):
    model, tok = load_model(tiny_model_dir, dtype="fp32")
    s = HFSampler(model, tok, batch_size=8)
    ids = _prompts(s)
    a = s.generate_ids(ids, SamplingArgs(max_tokens=10, temperature=1.0, seed=3))
    b = s.generate_ids(ids, SamplingArgs(max_tokens=10, temperature=1.0, seed=3))
    assert [c.completion_ids for c in a] == [c.completion_ids for c in b]


def test_sampling_logprobs_match_learner_logprobs(tiny_model_dir):
    model, tok = load_model(tiny_model_dir, dtype="fp32", for_training=True)
    s = HFSampler(model, tok, batch_size=8)  # fp32: exact comparison
    ids = _prompts(s)
    comps = s.generate_ids(ids, SamplingArgs(max_tokens=10, temperature=1.0, seed=0))
    rollouts = [Rollout(example_id=i, rollout_idx=0, prompt=(), completion=(), answer="", info={}, task="t",
                        scores={}, reward=0.0, prompt_ids=c.prompt_ids, completion_ids=c.completion_ids,
                        completion_logprobs=c.logprobs, completion_mask=(1,) * len(c.completion_ids))
                for i, c in enumerate(comps)]
    batch = make_batch(rollouts, [0.0] * len(rollouts), tok.pad_token_id)
    with torch.no_grad():
        lp, _ = LocalLearner(model, lr=1e-3).completion_logprobs(batch)
    m = batch.loss_mask
    torch.testing.assert_close(lp * m, batch.sampler_logprobs * m, rtol=1e-4, atol=1e-4)


def test_bf16_sampling_copy_follows_the_training_weights(tiny_model_dir):
    model, tok = load_model(tiny_model_dir, dtype="fp32", for_training=True)
    s = HFSampler(model, tok, batch_size=8, autocast_dtype=torch.bfloat16)
    ids = _prompts(s)[:1]
    args = SamplingArgs(max_tokens=6, temperature=0)
    before = s.generate_ids(ids, args)[0].completion_ids
    with torch.no_grad():  # an "optimizer step" that zeroes every weight: all logits tie, argmax = token 0
        for p in model.parameters():
            p.zero_()
    after = s.generate_ids(ids, args)[0].completion_ids
    assert next(model.parameters()).dtype == torch.float32
    assert before != after and list(after) == [0] * 6


def _group_batch(s, tok, group=4):
    """GRPO-shaped batch: each of 3 prompts (different lengths) repeated ``group`` times."""
    ids = [p for p in _prompts(s)[:3] for _ in range(group)]
    comps = s.generate_ids(ids, SamplingArgs(max_tokens=9, temperature=1.0, seed=1))
    rollouts = [Rollout(example_id=i, rollout_idx=0, prompt=(), completion=(), answer="", info={}, task="t",
                        scores={}, reward=0.0, prompt_ids=c.prompt_ids, completion_ids=c.completion_ids,
                        completion_logprobs=c.logprobs, completion_mask=(1,) * len(c.completion_ids))
                for i, c in enumerate(comps)]
    return make_batch(rollouts, [float(i % 3) - 1.0 for i in range(len(rollouts))], tok.pad_token_id)


def test_shared_prompt_forward_equals_per_row_forward(tiny_model_dir):
    """Each distinct prompt run once (KV cache gathered to its group) gives the same log-probs and
    the same gradients as running every row whole, for full fine-tuning and for LoRA."""
    from verity.train.learner import add_lora, shared_prefix_index

    for rank in (0, 4):
        model, tok = load_model(tiny_model_dir, dtype="fp32", for_training=True)
        model = add_lora(model, rank, 8)
        s = HFSampler(model, tok, batch_size=16)
        batch = _group_batch(s, tok)
        C = batch.loss_mask.shape[1]
        first, _ = shared_prefix_index(batch.input_ids, batch.attention_mask, C)
        assert sorted(first.tolist()) == [0, 4, 8]  # one row per group of 4
        learner = LocalLearner(model, lr=1e-3)
        results = []
        for share in (False, True):
            learner.share_prefixes = share
            model.zero_grad(set_to_none=True)
            lp, _ = learner.completion_logprobs(batch)
            ((lp * batch.loss_mask).sum(-1) * batch.advantages).sum().backward()
            grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
            results.append((lp.detach() * batch.loss_mask, grads))
        torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
        for g0, g1 in zip(results[0][1], results[1][1], strict=False):
            torch.testing.assert_close(g0, g1, rtol=1e-4, atol=1e-6)


def test_shared_prefix_index_only_when_it_pays():
    from verity.train.learner import shared_prefix_index

    ids = torch.tensor([[0, 5, 6, 7, 8], [0, 5, 6, 9, 9], [3, 4, 6, 7, 1]])
    attn = torch.tensor([[0, 1, 1, 1, 1], [0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    first, inverse = shared_prefix_index(ids, attn, C=2, min_saving=0.0)
    assert first.tolist() == [0, 2] and inverse.tolist() == [0, 0, 1]
    assert shared_prefix_index(ids, attn, C=2) is None  # 2·3 + 3·2 = 12 > 0.75 · 15: not worth it
    assert shared_prefix_index(ids, attn, C=5) is None  # no prompt columns


def test_decode_attention_over_the_preallocated_buffer_equals_eager():
    """The CPU decode attention reads the whole zero-filled buffer with spare positions masked;
    it must match eager attention on the L-slice, and refuse tensors that are not such slices."""
    from types import SimpleNamespace

    from transformers.models.qwen2.modeling_qwen2 import eager_attention_forward

    from verity.rollout.hf_sampler import _decode_attention, _whole_buffer

    torch.manual_seed(0)
    B, H, L, Lmax, D = 3, 2, 5, 9, 4
    kb, vb = torch.zeros(B, H, Lmax, D), torch.zeros(B, H, Lmax, D)
    kb[:, :, :L], vb[:, :, :L] = torch.randn(B, H, L, D), torch.randn(B, H, L, D)
    k, v = kb[:, :, :L], vb[:, :, :L]
    q = torch.randn(B, H, 1, D)
    mask = torch.zeros(B, 1, 1, L)
    mask[0, ..., :2] = torch.finfo(torch.float32).min  # a left-padded row
    module = SimpleNamespace(training=False, num_key_value_groups=1)
    ours, _ = _decode_attention(module, q, k, v, mask, scaling=0.5)
    ref, _ = eager_attention_forward(module, q, k, v, mask, scaling=0.5)
    torch.testing.assert_close(ours, ref)
    assert _whole_buffer(k).shape == (B, H, Lmax, D)
    assert _whole_buffer(k.contiguous()) is None  # not a slice of a bigger buffer
    assert _whole_buffer(kb[:2, :, :L]) is not None and _whole_buffer(kb[:, :1, :L]) is None


def test_inverse_cdf_sampling_follows_the_distribution():
    from verity.rollout.decode import inverse_cdf

    gen = torch.Generator().manual_seed(0)
    w = torch.tensor([[0.1, 0.2, 0.7, 0.0]] * 20000)  # unnormalised weights work too: × 3 below
    draws = inverse_cdf(w * 3, torch.rand(20000, generator=gen))
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.2, 0.7, 0.0]), atol=0.015, rtol=0)
    assert int((draws == 3).sum()) == 0  # zero weight: never drawn


def test_decode_fast_path_only_for_plain_attention():
    """Architectures with their own attention variants (soft-capping, sinks, sliding windows)
    keep eager attention; the fast path itself defers to eager when such arguments arrive."""
    from types import SimpleNamespace

    from verity.rollout.hf_sampler import _decode_attention, _decode_attention_name

    assert _decode_attention_name(SimpleNamespace(config=SimpleNamespace(model_type="gemma2"))) == "eager"
    assert _decode_attention_name(SimpleNamespace(config=SimpleNamespace(model_type="qwen2"))) == "verity_decode"
    kb = torch.zeros(1, 2, 6, 4)
    kb[:, :, :3] = torch.randn(1, 2, 3, 4)
    q, k = torch.randn(1, 2, 1, 4), kb[:, :, :3]
    module = SimpleNamespace(training=False, num_key_value_groups=1)
    called = {}

    def spy(*a, **kw):
        called["eager"] = True
        return torch.zeros(1, 1, 2, 4), None

    import transformers.models.qwen2.modeling_qwen2 as q2
    orig, q2.eager_attention_forward = q2.eager_attention_forward, spy
    try:
        _decode_attention(module, q, k, k, None, scaling=0.5, sliding_window=2)
    finally:
        q2.eager_attention_forward = orig
    assert called.get("eager")


def test_lora_sampling_copy_is_merged_and_follows_the_adapters(tiny_model_dir):
    """The bf16 sampling copy of a LoRA model is the plain architecture with W + ΔW: no adapter modules,
    the LoRA model's logits (bf16 tolerance), and it follows the adapters at every sync."""
    from verity.train.learner import add_lora

    model, tok = load_model(tiny_model_dir, dtype="fp32", for_training=True)
    model = add_lora(model, 4)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)  # adapters that change the logits
    s = HFSampler(model, tok, batch_size=8, autocast_dtype=torch.bfloat16)
    x = torch.tensor([_prompts(s)[0]])
    shadow = s._sampling_model()
    assert not any("lora_" in n for n, _ in shadow.named_parameters())
    assert all(p.dtype == torch.bfloat16 for p in shadow.parameters())
    with torch.no_grad():
        ref, base = model(x).logits, None
        with model.disable_adapter():
            base = model(x).logits
        got = shadow(x).logits.float()
    assert (ref - base).abs().max() > 0.1  # the adapters matter
    torch.testing.assert_close(got, ref, atol=0.05, rtol=0.02)
    with torch.no_grad():  # an "optimizer step" that zeroes the adapters: the next sync samples the base model
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.zero_()
        got = s._sampling_model()(x).logits.float()
    torch.testing.assert_close(got, base, atol=0.05, rtol=0.02)
