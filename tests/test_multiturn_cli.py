"""The multi-turn built-ins from the command line: `verity eval` offline and through `verity serve`
on loopback, and `verity train` (the multi-turn training path), on a tiny random model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from verity.serve.launch import ServerProcess

ENVS = ["calculator", "guess-number"]


def verity(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "verity", *args], capture_output=True, text=True, timeout=timeout)


def _check_eval(p, out, env_id):
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["env"] == env_id and summary["errors"] == 0 and summary["num_examples"] == 5
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all(r["error"] is None for r in rows)
    assert all(r["stop_reason"] in ("completed", "max_turns", "max_tokens", "context") for r in rows)
    return rows


@pytest.mark.parametrize("env_id", ENVS)
def test_eval_offline(tiny_model_dir, tmp_path, env_id):
    out = tmp_path / "ev"
    p = verity("eval", env_id, "-m", tiny_model_dir, "-n", "5", "-r", "2", "-t", "12", "--json", "-o", str(out))
    rows = _check_eval(p, out, env_id)
    if env_id == "guess-number":  # feedback every turn: a random model keeps guessing until the turn limit
        assert max(r["num_turns"] for r in rows) > 1
        assert any(m["role"] == "user" and m["content"].startswith("I did not find a guess")
                   for r in rows for m in r["completion"])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from verity.envs.pii_masking import tokenizer_corpus
    from verity.models.tokenizer import make_tiny_model

    model = make_tiny_model(str(tmp_path_factory.mktemp("tiny_srv")), tokenizer_corpus(), hidden_size=64,
                            max_position_embeddings=2048)
    with ServerProcess(model, "--served-model-name", "tiny", env={"OMP_NUM_THREADS": "1"}) as srv:
        yield srv


@pytest.mark.parametrize("env_id", ENVS)
def test_eval_through_endpoint(server, tmp_path, env_id):
    out = tmp_path / "ev"
    p = verity("eval", env_id, "-b", server.base_url, "-m", "tiny", "-n", "5", "-r", "2", "-t", "12", "--json",
               "-o", str(out))
    rows = _check_eval(p, out, env_id)
    if env_id == "guess-number":
        assert max(r["num_turns"] for r in rows) > 1


@pytest.mark.parametrize("env_id", ENVS)
def test_train_two_steps(tiny_model_dir, tmp_path, env_id):
    out = tmp_path / "run"
    p = verity("train", env_id, "-m", tiny_model_dir, "--steps", "2", "--group-size", "2", "--groups-per-batch", "2",
               "--max-tokens", "12", "--lora-rank", "0", "--lr", "1e-3", "--eval-examples", "0", "-o", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert (out / "checkpoints").is_dir()
