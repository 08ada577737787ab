"""--max-off-policy-steps: generation overlaps training, stale batches are dropped and counted."""

import json
import time
from pathlib import Path

from verity.envs.registry import load_environment
from verity.train.config import RLConfig
from verity.train.offpolicy import RolloutProducer, is_stale
from verity.train.rl import RLTrainer
from verity.types import RolloutBatch

# a judge that takes 1 s per step (asyncio.sleep: it waits for "a remote judge", it does not compute)
SLOW_ENV = '''
import asyncio
from datasets import Dataset
import verity

async def slow_vowels(completion) -> float:
    await asyncio.sleep(1.0)
    text = completion[-1]["content"]
    return sum(c in "aeiou" for c in text) / max(len(text), 1)

def load_environment():
    ds = Dataset.from_list([{"question": f"write vowels {i}", "answer": ""} for i in range(64)])
    return verity.SingleTurnEnv(dataset=ds, rubric=verity.Rubric([slow_vowels]))
'''


def _cfg(env_file, out, **kw):
    base = dict(env=str(env_file), group_size=4, groups_per_batch=4, lr=1e-2, max_tokens=8, steps=5, lora_rank=4,
                save_every=100, seed=0, dtype="fp32", micro_batch_size=4, output_dir=str(out))
    return RLConfig(**{**base, **kw})


def test_is_stale():
    assert not is_stale(5, 3, 2) and is_stale(5, 2, 2) and not is_stale(0, 0, 0) and is_stale(1, 0, 0)


def test_overlap_beats_sequential_and_drops_are_counted(tiny_model_dir, tmp_path):
    env_file = tmp_path / "slow_env.py"
    env_file.write_text(SLOW_ENV)
    walls = {}
    for name, lag in (("sync", 0), ("async", 2)):
        tr = RLTrainer(load_environment(str(env_file)), tiny_model_dir,
                       _cfg(env_file, tmp_path / name, max_off_policy_steps=lag))
        t0 = time.perf_counter()
        tr.train(progress=False)
        walls[name] = time.perf_counter() - t0
    rows = [json.loads(x) for x in (tmp_path / "async" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    for r in rows:
        assert 0 <= r["off_policy/staleness"] <= 2
        # batches are generated in data order and each one is trained on or dropped
        assert r["off_policy/data_step"] - r["step"] == r["off_policy/dropped"]
    # overlap, shown without a clock: a batch trained at learner version V > v was generated with
    # weights v, i.e. while the learner was still training the steps between
    assert rows[-1]["off_policy/staleness"] > 0
    # wall times are a measurement, not a test (loaded shared CPU): printed for the record
    parts = sum(r["time/generate"] + r["time/score"] + r["time/train"] for r in rows)
    print(f"wall: sync {walls['sync']:.1f} s, async {walls['async']:.1f} s (its parts end to end: {parts:.1f} s)")


def test_stale_batches_are_dropped_and_counted(tiny_model_dir, tmp_path):
    env = load_environment(str(Path(__file__).parent / "data" / "vowel_env.py"))
    tr = RLTrainer(env, tiny_model_dir, _cfg(Path(__file__).parent / "data" / "vowel_env.py", tmp_path / "r"))
    p = RolloutProducer(tr, start=0, max_off_policy_steps=2)  # not started: the queue is filled by hand
    for step, version in ((0, 1), (1, 2)):
        p.queue.put(RolloutBatch(step=step, groups=(), first=0, version=version))
    rb, _ = p.next(learner_version=4)  # version 1 is 3 steps old (> 2): dropped; version 2 is 2 old: kept
    assert rb.step == 1 and p.dropped == 1
