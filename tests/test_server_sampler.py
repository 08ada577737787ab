"""--sampler server: generation on `verity serve` processes, LoRA weight sync every step, mismatch_kl."""

import json
from pathlib import Path

import httpx
import pytest
import torch

from verity.envs.registry import load_environment
from verity.errors import ConfigError, EndpointError
from verity.rollout.server_sampler import ServerSampler, api_base, parse_token_ids
from verity.serve.launch import ServerProcess
from verity.train.batching import pack_rows
from verity.train.config import RLConfig
from verity.train.rl import RLTrainer
from verity.types import SamplingArgs

VOWEL_ENV = str(Path(__file__).parent / "data" / "vowel_env.py")
# fp32 on both sides: the server's log-probs of a sequence equal the learner's up to float32 noise
TOL = 1e-4


def test_urls_and_token_ids():
    assert api_base("http://h:1/") == "http://h:1/v1" and api_base("http://h:1/v1") == "http://h:1/v1"
    with pytest.raises(EndpointError, match="not an http"):
        api_base("h:1")
    assert parse_token_ids(["token_id:5", "token_id:0"], "x") == [5, 0]
    with pytest.raises(EndpointError, match="return_tokens_as_token_ids"):
        parse_token_ids(["hello"], "x")


def test_server_needs_url_and_lora():
    with pytest.raises(ConfigError, match="--sampler-url"):
        RLConfig(sampler="server").validate()
    with pytest.raises(ConfigError, match="--lora-rank 0"):
        RLConfig(sampler="server", sampler_url="http://h:1", lora_rank=0).validate()


@pytest.fixture(scope="module")
def servers(tiny_model_dir):
    with ServerProcess(tiny_model_dir, "--dtype", "fp32") as a, ServerProcess(tiny_model_dir, "--dtype", "fp32") as b:
        yield a, b


def test_train_with_server_sampler_and_weight_sync(servers, tiny_model_dir, tmp_path):
    a, b = servers
    cfg = RLConfig(env=VOWEL_ENV, group_size=4, groups_per_batch=4, lr=3e-2, max_tokens=8, steps=3, lora_rank=4,
                   save_every=10, seed=1, dtype="fp32", output_dir=str(tmp_path / "run"), sampler="server",
                   sampler_url=f"{a.url},{b.base_url}", sync_every=1)
    tr = RLTrainer(load_environment(VOWEL_ENV), tiny_model_dir, cfg)
    tr.train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for r in rows:  # the servers sample from the learner's current weights
        assert 0 <= r["mismatch_kl"] < 1e-6, r["mismatch_kl"]
        assert r["time/wait_for_weights"] > 0 and r["frac_zero_std"] < 1
    # requests went to both servers
    for srv in (a, b):
        assert httpx.get(srv.url + "/health").json()["sequences"] > 0

    # after a sync, a fixed sequence has the learner's log-probs on the server
    tr._synced_at = -1
    tr.sync_weights(3)
    sampler = tr.sampler.inner
    assert isinstance(sampler, ServerSampler) and sampler.model == "verity-policy"
    prompt = sampler.render([{"role": "user", "content": "write vowels 3"}])
    [c] = sampler.generate_ids([prompt], SamplingArgs(max_tokens=8, temperature=1.0, seed=7))
    assert len(c.completion_ids) > 0
    batch = pack_rows([c.prompt_ids], [c.completion_ids], [[]], [c.logprobs], [0.0], tr.tokenizer.pad_token_id)
    with torch.no_grad():
        learner = tr.learner.completion_logprobs(batch)[0][0, :len(c.completion_ids)]
        base = tr.learner.completion_logprobs(batch, disable_adapter=True)[0][0, :len(c.completion_ids)]
    server = torch.tensor(c.logprobs)
    assert float((server - learner).abs().max()) < TOL
    assert float((server - base).abs().max()) > 100 * TOL  # the sync carried trained weights, not the base's


def test_verity_serve_rejects_bad_adapters(servers, tmp_path):
    a, _ = servers
    r = httpx.post(a.base_url + "/load_lora_adapter", json={"lora_name": "x", "lora_path": str(tmp_path)})
    assert r.status_code == 400 and "not a LoRA adapter folder" in r.json()["error"]["message"]
    r = httpx.post(a.base_url + "/unload_lora_adapter", json={"lora_name": "nope"})
    assert r.status_code == 404

