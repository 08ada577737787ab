"""--watchdog-seconds: a run whose reward function blocks forever ends non-zero, naming the reward phase."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from verity.train.checkpoint import latest_checkpoint
from verity.train.watchdog import EXIT_CODE, Watchdog

# reward = vowel share, until the 5th call (step 2 of 2 x 2 rollouts): then it never returns
BLOCKING_ENV = '''
import time
from datasets import Dataset
import verity

CALLS = [0]

def blocking_reward(completion) -> float:
    CALLS[0] += 1
    if CALLS[0] > 4:
        time.sleep(10**6)
    text = completion[-1]["content"]
    return sum(c in "aeiou" for c in text) / max(len(text), 1)

def load_environment():
    ds = Dataset.from_list([{"question": f"q{i}", "answer": ""} for i in range(8)])
    return verity.SingleTurnEnv(dataset=ds, rubric=verity.Rubric([blocking_reward]))
'''
LIMIT = 20  # above a step of this tiny run on a loaded 2-core machine (observed up to 8 s)


def test_blocked_reward_exits_naming_the_phase(tiny_model_dir, tmp_path):
    env_file = tmp_path / "blocking_env.py"
    env_file.write_text(BLOCKING_ENV)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "verity", "train", str(env_file), "-m", tiny_model_dir, "-o", str(out),
           "--group-size", "2", "--groups-per-batch", "2", "--max-tokens", "4", "--steps", "3", "--lora-rank", "2",
           "--save-every", "1", "--dtype", "fp32", "--watchdog-seconds", str(LIMIT)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    ended = time.time()
    assert p.returncode == EXIT_CODE, p.stderr[-2000:]
    assert "stuck in phase 'reward' during step 2" in p.stderr
    assert "blocking_reward" in p.stderr  # the stack dump shows where it hangs
    # within the limit: from step 1's last write (its checkpoint, then its plot; step 2 starts right after)
    ckpt = latest_checkpoint(out)
    assert ckpt is not None and ckpt.name == "step_000001"
    assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == 1
    assert (ckpt / "adapter_model.safetensors").stat().st_size > 0
    assert not list((out / "checkpoints").glob(".tmp_*"))
    last_write = max(f.stat().st_mtime for f in [*ckpt.iterdir(), out / "reward_curve.png"])
    assert ended - last_write < LIMIT + 5, ended - last_write
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1]


def test_phases_nest_and_restore():
    w = Watchdog(0)
    with w.phase("reward"):
        with w.phase("generation"):
            assert w.current == "generation"
        assert w.current == "reward"
    assert w.current == "startup"
    w.beat(3)
    assert w.step == 3
    w.start()
    assert w._thread is None  # 0 = off: no thread
