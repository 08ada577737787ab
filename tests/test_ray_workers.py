"""--rollout-workers 2 on a local Ray: the same rollouts, hence the same reward trend, as in-process."""

import json
from pathlib import Path

import pytest

from verity.envs.registry import load_environment
from verity.train.config import RLConfig
from verity.train.rl import RLTrainer

ray = pytest.importorskip("ray", reason="the ray extra (pip install 'verity[ray]') is not installed")

VOWEL_ENV = str(Path(__file__).parent / "data" / "vowel_env.py")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_workers_match_in_process(local_ray, tiny_model_dir, tmp_path):
    def run(name, **kw):
        cfg = RLConfig(env=VOWEL_ENV, group_size=4, groups_per_batch=4, lr=3e-2, max_tokens=8, steps=4, lora_rank=4,
                       save_every=100, seed=5, dtype="fp32", rollout_seeding="group", output_dir=str(tmp_path / name),
                       **kw)
        RLTrainer(load_environment(VOWEL_ENV), tiny_model_dir, cfg).train(progress=False)
        return [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    local, remote = run("local"), run("ray", rollout_workers=2)
    assert len(remote) == 4
    for a, b in zip(local, remote, strict=True):  # the actors sample the learner's weights of that step
        assert a["reward/mean"] == pytest.approx(b["reward/mean"], abs=1e-6)
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert b["mismatch_kl"] < 1e-6
    assert any(a["reward/mean"] != local[0]["reward/mean"] for a in local[1:])  # the policy moved
