"""verity doctor: fails an env whose reward raises or is not deterministic, warns on one that pays for an
empty answer, passes the built-ins, and with -m audits rollouts and the chat template."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from verity.doctor import diagnose, exit_code, template_audit
from verity.envs.registry import BUILTINS, load_environment
from verity.types import Rollout

ENVS = str(Path(__file__).parent / "data" / "doctor_envs.py")


def _checks(env_id: str, **kw):
    return {c.name: c for c in asyncio.run(diagnose(load_environment(env_id, **kw), num_examples=3))}


def doctor(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "verity", "doctor", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_sound_env_passes():
    checks = _checks(ENVS, kind="ok")
    assert exit_code(list(checks.values())) == 0
    assert checks["determinism"].status == checks["errors"].status == "pass"
    assert checks["probe:empty"].status == "pass" and checks["pickle"].status == "pass"


def test_reward_that_raises_fails():
    checks = _checks(ENVS, kind="raises")
    assert checks["errors"].status == "fail" and "'raises'" in checks["errors"].detail
    assert "cannot score this" in checks["errors"].detail
    assert exit_code(list(checks.values())) == 1


def test_nondeterministic_reward_fails():
    checks = _checks(ENVS, kind="noisy")
    assert checks["determinism"].status == "fail"


def test_paying_for_an_empty_answer_warns():
    checks = _checks(ENVS, kind="empty")
    assert checks["probe:empty"].status == "warn" and checks["probe:whitespace"].status == "warn"
    assert checks["probe:prompt_echo"].status == "pass"
    assert exit_code(list(checks.values())) == 0


@pytest.mark.parametrize("env_id", sorted(BUILTINS))
def test_builtins_pass_without_warnings(env_id):
    """All six built-ins, the pickle check included; the tool and multi-turn ones score their
    reference conversation (with its tool call / guesses) as gold."""
    checks = _checks(env_id)
    assert [c for c in checks.values() if c.status != "pass"] == []
    if env_id in ("calculator", "guess-number"):  # solved (1.0) with the tool / by guessing, not format alone
        assert float(checks["gold"].detail.split()[4]) > 1.0, checks["gold"]


def test_cli_lines_and_exit_codes():
    bad = doctor(ENVS, "-a", '{"kind": "raises"}', "-n", "2")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert any(line.startswith("FAIL  errors") for line in bad.stdout.splitlines()), bad.stdout
    warn = doctor(ENVS, "-a", '{"kind": "empty"}', "-n", "2", "--json")
    assert warn.returncode == 0, warn.stderr
    out = json.loads(warn.stdout)
    assert out["summary"]["fail"] == 0 and out["summary"]["warn"] >= 2
    bad_flag = doctor(ENVS, "-a", "{kind}")
    assert bad_flag.returncode == 2 and bad_flag.stderr.startswith("verity doctor: error: -a")


def test_with_a_model_audits_rollouts_and_template(tiny_model_dir):
    p = doctor("reverse-text", "-m", tiny_model_dir, "-n", "2", "-r", "2", "-t", "8", "--json")
    assert p.returncode == 0, p.stderr
    checks = {c["name"]: c for c in json.loads(p.stdout)["checks"]}
    assert checks["rollouts"]["detail"].startswith("4 rollouts")
    assert "per example:" in checks["pass-rate"]["detail"]
    assert checks["zero-variance"]["detail"].endswith("(no RL signal there)")
    # a random model samples non-canonical token sequences: boundaries must hold, drift is a warning
    assert checks["template"]["status"] in ("pass", "warn"), checks["template"]
    assert checks["template"]["status"] == "pass" or "turn boundaries reproduced in 4/4" in checks["template"]["detail"]


class _Tok:
    """A chat template that re-renders the conversation with one token changed (or none)."""

    chat_template = "(fake)"

    def __init__(self, at: int | None):
        self.at = at

    def apply_chat_template(self, conv, tokenize=True, add_generation_prompt=False):
        ids = [1, 2, 3, 4, 5, 6, 0]
        if self.at is not None:
            ids[self.at] = 9
        return {"input_ids": ids}


def _rollout():
    return Rollout(example_id=0, rollout_idx=0, prompt=({"role": "user", "content": "q"},),
                   completion=({"role": "assistant", "content": "a"},), answer="a", info={}, task="t",
                   scores={}, reward=0.0, prompt_ids=(1, 2, 3), completion_ids=(4, 5, 6, 0))


def test_template_audit_boundary_and_drift():
    assert template_audit(_Tok(None), [_rollout()], eos_ids=[0]).status == "pass"
    bad = template_audit(_Tok(2), [_rollout()], eos_ids=[0])
    assert bad.status == "fail" and "turn boundary" in bad.detail
    drift = template_audit(_Tok(4), [_rollout()], eos_ids=[0])
    assert drift.status == "warn" and "differ from token 1" in drift.detail
