"""One check of sampling values for every entry point, and in-process generation that never runs
past the model's context window (issue 11, Medium 4 and the Low items on -T / --top-p)."""

from __future__ import annotations

import math

import pytest

from verity.errors import ConfigError, ContextLengthError
from verity.types import SamplingArgs, check_sampling

BAD = [
    ({"top_p": 0}, "top_p 0: must be in (0, 1]"),
    ({"top_p": 2.0}, "top_p 2.0: must be in (0, 1]"),
    ({"top_p": math.nan}, "top_p nan"),
    ({"temperature": -1.0}, "temperature -1.0: must be a number >= 0"),
    ({"temperature": math.inf}, "temperature inf"),
    ({"temperature": "hot"}, "temperature 'hot'"),
    ({"max_tokens": 0}, "max_tokens 0: must be an integer >= 1"),
    ({"max_tokens": 2.5}, "max_tokens 2.5"),
    ({"max_tokens": True}, "max_tokens True"),
]


@pytest.mark.parametrize("kw,msg", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_sampling_values_are_refused_everywhere(kw: dict, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        SamplingArgs(**kw)  # every sampler call goes through a SamplingArgs
    with pytest.raises(ConfigError):
        check_sampling(**kw)


def test_messages_name_the_entry_points_flags() -> None:
    with pytest.raises(ConfigError, match=r"^--top-p 0: "):
        check_sampling(top_p=0, names={"top_p": "--top-p"})
    from verity.eval.config import EvalConfig
    from verity.train.config import RLConfig

    with pytest.raises(ConfigError, match=r"^-T -1.0: "):
        EvalConfig(temperature=-1.0).validate()
    with pytest.raises(ConfigError, match=r"^--top-p 2.0: "):
        EvalConfig(top_p=2.0).validate()
    with pytest.raises(ConfigError, match=r"^--top-p 0.0: "):
        RLConfig(top_p=0.0).validate()
    with pytest.raises(ConfigError, match=r"^--temperature 0: RL samples"):
        RLConfig(temperature=0).validate()
    SamplingArgs(max_tokens=1, temperature=0, top_p=1)  # the edges that are allowed
    SamplingArgs(temperature=1e-9, top_p=1e-9)


def test_in_process_generation_refuses_to_run_past_the_context(tiny_model_dir: str) -> None:
    from verity.rollout.hf_sampler import HFSampler

    s = HFSampler.from_pretrained(tiny_model_dir, batch_size=4, dtype="fp32")
    ctx = s.model.config.max_position_embeddings
    assert s.context == ctx
    prompt = [5] * (ctx - 4)
    with pytest.raises(ContextLengthError, match=rf"max_tokens 8: a prompt of {ctx - 4} tokens .* window of {ctx}"):
        s.generate_ids([[5, 6], prompt], SamplingArgs(max_tokens=8, temperature=1.0, seed=0))
    out = s.generate_ids([prompt], SamplingArgs(max_tokens=4, temperature=1.0, seed=0))[0]  # exactly fits
    assert len(out.prompt_ids) + len(out.completion_ids) <= ctx


def test_greedy_reports_the_models_logprobs_and_top_k(tiny_model_dir: str) -> None:
    import torch

    from verity.rollout.hf_sampler import HFSampler

    s = HFSampler.from_pretrained(tiny_model_dir, batch_size=4, dtype="fp32")
    p = s.render([{"role": "user", "content": "hello there"}])
    for temp in (0.0, 0.7):
        c = s.generate_ids([p], SamplingArgs(max_tokens=6, temperature=temp, seed=1, top_logprobs=3))[0]
        with torch.no_grad():
            logits = s.model(torch.tensor([list(c.prompt_ids) + list(c.completion_ids)])).logits[0].float()
        ref = torch.log_softmax(logits[len(p) - 1:-1] / (temp or 1.0), -1)
        n = len(c.completion_ids)
        chosen = ref[torch.arange(n), torch.tensor(c.completion_ids)]
        torch.testing.assert_close(torch.tensor(c.logprobs), chosen, atol=1e-4, rtol=1e-4)
        top = ref.topk(3, -1)
        assert [[i for i, _ in alts] for alts in c.top_logprobs] == top.indices.tolist()
        torch.testing.assert_close(torch.tensor([[v for _, v in alts] for alts in c.top_logprobs]), top.values,
                                   atol=1e-4, rtol=1e-4)
        if temp == 0.0:  # greedy: the chosen token is the most likely one
            assert list(c.completion_ids) == top.indices[:, 0].tolist()


def test_per_row_seeds_make_a_row_independent_of_its_batch(tiny_model_dir: str) -> None:
    from verity.rollout.hf_sampler import HFSampler

    s = HFSampler.from_pretrained(tiny_model_dir, batch_size=8, dtype="fp32")
    ps = [s.render([{"role": "user", "content": q}]) for q in ("hello there", "x", "a longer prompt here")]
    args = SamplingArgs(max_tokens=8, temperature=1.0)
    together = s.generate_ids(ps, args, seeds=[11, 12, 13])
    for p, seed, c in zip(ps, (11, 12, 13), together, strict=True):
        assert s.generate_ids([p], args, seeds=[seed])[0].completion_ids == c.completion_ids
    other = s.generate_ids(ps[:1], args, seeds=[99])[0]
    assert other.completion_ids != together[0].completion_ids
