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
    for p, b in zip(ids, batched):
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
    torch.testing.assert_close(lp * m, batch.old_logprobs * m, rtol=1e-4, atol=1e-4)


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
