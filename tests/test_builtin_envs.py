"""The acceptance commands for the single-turn built-ins (reverse-text, arithmetic, code-tests):
``verity eval ENV -m <tiny model> -n 5 -r 2 --json`` offline and through ``verity serve`` on loopback,
and ``verity doctor ENV``; plus the reward semantics each README promises."""

from __future__ import annotations

import asyncio
import json
import pickle
import subprocess
import sys

import pytest

from verity.doctor import gold_text
from verity.envs.registry import BUILTINS as BUILTIN_IDS
from verity.envs.registry import load_environment
from verity.serve.launch import ServerProcess

BUILTINS = ["reverse-text", "arithmetic", "code-tests"]


def verity(*args: str, cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "verity", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    with ServerProcess(tiny_model_dir, "--served-model-name", "tiny", env={"OMP_NUM_THREADS": "1"}) as srv:
        yield srv


def _check_summary(p: subprocess.CompletedProcess, env_id: str) -> dict:
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    assert (out["env"], out["num_examples"], out["rollouts_per_example"]) == (env_id, 5, 2)
    assert out["errors"] == 0 and "reward" in out["metrics"]
    return out


@pytest.mark.parametrize("env_id", BUILTINS)
def test_eval_offline_and_through_an_endpoint(env_id, tiny_model_dir, server, tmp_path):
    local = verity("eval", env_id, "-m", tiny_model_dir, "-n", "5", "-r", "2", "--json", "-t", "16", cwd=tmp_path)
    served = verity("eval", env_id, "-m", "tiny", "-b", server.base_url, "-n", "5", "-r", "2", "--json", "-t", "16",
                    cwd=tmp_path)
    a, b = _check_summary(local, env_id), _check_summary(served, env_id)
    assert set(a["metrics"]) == set(b["metrics"])


def test_doctor_cli_passes_a_builtin(tmp_path):
    p = verity("doctor", "code-tests", "-n", "3", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "FAIL" not in p.stdout and p.stdout.strip().endswith("0 failed")


def _score(env, text, i=0):
    ex = env.get_examples("eval")[i]
    return asyncio.run(env.rubric.score(prompt=list(ex.prompt), completion=[{"role": "assistant", "content": text}],
                                        answer=ex.answer, info=ex.info, task=ex.task))


def test_reverse_text_partial_credit():
    env = load_environment("reverse-text")
    ans = env.get_examples("eval")[0].answer
    full, half, none = (_score(env, f"<reversed>\n{t}\n</reversed>") for t in (ans, ans[: len(ans) // 2], "#"))
    assert full.scores["exact_match_reward"] == 1.0 and full.scores["lcs_reward"] == 1.0
    assert half.scores["exact_match_reward"] == 0.0 and 0.4 < half.scores["lcs_reward"] < 0.9
    assert none.scores["lcs_reward"] == 0.0 and full.reward > half.reward > none.reward


def test_arithmetic_uses_math_verify_for_tagged_and_boxed_answers():
    pytest.importorskip("math_verify")
    env = load_environment("arithmetic")
    gold = env.get_examples("eval")[0].answer
    for text in (f"<answer>\n{gold}\n</answer>", f"<answer>\n{gold}.0\n</answer>",
                 f"<answer>\\boxed{{{gold}}}</answer>", f"so the value is \\boxed{{{gold}}}",
                 f"<answer>${gold}$</answer>"):
        assert _score(env, text).scores["correct_answer"] == 1.0, text
    for text in (f"<answer>{int(gold) + 1}</answer>", gold, "<answer></answer>"):
        assert _score(env, text).scores["correct_answer"] == 0.0, text


def test_math_fallback_without_math_verify(monkeypatch):
    from verity.rubrics import math_rubric

    monkeypatch.setattr(math_rubric, "math_verify_available", lambda: False)
    monkeypatch.setattr(math_rubric, "_warned", False)
    with pytest.warns(UserWarning, match=r"pip install 'verity\[math\]'"):
        assert math_rubric.math_equal("1,234", "1234")
    assert not math_rubric.math_equal("1/2", "0.5")  # plain numbers only without the extra


@pytest.mark.parametrize("env_id", sorted(BUILTIN_IDS))
def test_builtins_pickle(env_id):
    """Every built-in pickles (parallel rollout workers get the environment that way) and the copy
    has the same rows and scores a completion the same way (multi-turn ones: with a tool message)."""
    env = load_environment(env_id, num_train_examples=4, num_eval_examples=2)
    clone = pickle.loads(pickle.dumps(env))
    assert clone.rubric.func_names == env.rubric.func_names
    ex, ex2 = env.get_examples("eval")[1], clone.get_examples("eval")[1]
    assert (ex.prompt, ex.answer, dict(ex.info)) == (ex2.prompt, ex2.answer, dict(ex2.info))
    final = f"<guess>{ex.answer}</guess>" if env_id == "guess-number" else gold_text(env, ex)
    completion = [{"role": "tool", "content": ex.answer, "tool_call_id": "c0"},
                  {"role": "assistant", "content": final}]
    a, b = (asyncio.run(e.rubric.score(prompt=list(ex.prompt), completion=completion, answer=ex.answer,
                                       info=ex.info, task=ex.task, state={})) for e in (env, clone))
    assert a.scores == b.scores and a.errors == b.errors == {}
    assert a.reward > 0, a.scores
