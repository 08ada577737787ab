"""The ``verity`` CLI as a user runs it: subprocesses, JSON output, results files, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

RECORD_KEYS = {"example_id", "rollout_idx", "prompt", "completion", "answer", "info", "task", "scores",
               "reward", "reward_errors", "completion_tokens", "finish_reason", "stop_reason", "num_turns", "latency_s",
               "error"}
METRICS = {"reward", "exact_match_reward", "pii_count_reward", "format_reward_func"}


def verity(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "verity", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    assert p.returncode != 0, p.stdout
    assert "Traceback" not in p.stderr, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("verity eval: error:"), lines[0]
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def acceptance_run(tiny_model_dir, tmp_path_factory):
    """The acceptance command, run once in a fresh directory (default output dir)."""
    cwd = tmp_path_factory.mktemp("cli_eval")
    p = verity("eval", "pii-masking", "-m", tiny_model_dir, "-n", "10", "-r", "2", "--json", "-t", "32",
               "-a", '{"num_rows": 300}', cwd=cwd)
    return cwd, p


def test_acceptance_command(acceptance_run, tiny_model_dir):
    cwd, p = acceptance_run
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    out = json.loads(p.stdout)  # stdout is exactly one JSON object
    assert {"env", "model", "num_examples", "rollouts_per_example", "metrics", "errors", "results_dir"} <= set(out)
    assert out["env"] == "pii-masking"
    assert out["model"] == tiny_model_dir
    assert out["num_examples"] == 10 and out["rollouts_per_example"] == 2
    assert set(out["metrics"]) == METRICS
    assert all(0.0 <= out["metrics"][k] <= 1.0 for k in METRICS - {"reward"})
    assert 0.0 <= out["metrics"]["reward"] <= 1.6
    assert out["errors"] == 0
    results_dir = cwd / out["results_dir"]
    assert results_dir.is_dir()
    assert Path(out["results_dir"]).parts[:2] == ("outputs", "evals")
    records = [json.loads(line) for line in (results_dir / "results.jsonl").read_text().splitlines()]
    assert len(records) == 20
    assert all(set(r) == RECORD_KEYS for r in records)
    assert sorted((r["example_id"], r["rollout_idx"]) for r in records) == [(e, i) for e in range(10) for i in range(2)]
    assert all(0 < r["completion_tokens"] <= 32 for r in records)
    assert all(r["completion"][0]["role"] == "assistant" for r in records)
    meta = json.loads((results_dir / "metadata.json").read_text())
    assert meta["status"] == "done"
    assert meta["env"] == "pii-masking" and meta["env_args"] == {"num_rows": 300}
    assert meta["sampling_args"]["max_tokens"] == 32


def test_verifiers_01_env_file_runs_under_verity_eval(tiny_model_dir, tmp_path):
    # tests/data/vf01_env.py is a verifiers 0.1.x environment with only its import changed
    env_file = Path(__file__).parent / "data" / "vf01_env.py"
    p = verity("eval", str(env_file), "-m", tiny_model_dir, "-n", "4", "-r", "2", "-t", "8", "--json",
               "-a", '{"num_examples": 6}', "-o", str(tmp_path / "o"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert set(out["metrics"]) == {"reward", "correct_answer_reward_func", "<lambda>", "<lambda>_2",
                                   "format_reward_func"}
    assert out["errors"] == 0
    records = [json.loads(line) for line in (tmp_path / "o" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 8
    system = records[0]["prompt"][0]
    assert system["role"] == "system" and "<[ answer | final ]>" in system["content"]  # get_format_str()
    # each rollout's reward is the 0.1.x weighted sum of its scores (weights 1.0, 0.25, 0.0, 0.2)
    for r in records:
        s = r["scores"]
        want = s["correct_answer_reward_func"] + 0.25 * s["<lambda>"] + 0.0 * s["<lambda>_2"] \
            + 0.2 * s["format_reward_func"]
        assert r["reward"] == pytest.approx(want, abs=1e-12)
        assert s["<lambda>_2"] == pytest.approx(int(r["info"]["a"]) / 10)


def test_resume_continues(acceptance_run, tiny_model_dir):
    cwd, p = acceptance_run
    assert p.returncode == 0, p.stderr
    results_dir = cwd / json.loads(p.stdout)["results_dir"]
    res = results_dir / "results.jsonl"
    lines = res.read_text().splitlines(keepends=True)
    kept = lines[:15]
    res.write_text("".join(kept) + lines[15][:40])  # interrupted: 15 whole lines and a torn one
    q = verity("eval", "pii-masking", "-m", tiny_model_dir, "-n", "10", "-r", "2", "--json", "-t", "32",
               "-a", '{"num_rows": 300}', "--resume", "-o", str(results_dir), cwd=cwd)
    assert q.returncode == 0, q.stderr
    out = json.loads(q.stdout)
    assert out["errors"] == 0 and set(out["metrics"]) == METRICS
    records = [json.loads(line) for line in res.read_text().splitlines()]
    assert len(records) == 20
    assert records[:15] == [json.loads(line) for line in kept]  # finished rollouts kept as they were
    assert sorted((r["example_id"], r["rollout_idx"]) for r in records) == [(e, i) for e in range(10) for i in range(2)]
    # the same directory without --resume is refused with one line
    # (an endpoint model keeps this check cheap: the results dir is checked before any request)
    r = verity("eval", "pii-masking", "-b", "http://127.0.0.1:9/v1", "-m", "x", "-n", "10", "-r", "2",
               "-a", '{"num_rows": 300}', "-o", str(results_dir), cwd=cwd)
    assert_one_line_error(r, "--resume")


# ---------------------------------------------------------------- bad input: one line, no traceback
def test_unknown_env_id(tmp_path):
    assert_one_line_error(verity("eval", "no-such-env", "-m", "x", cwd=tmp_path), "no-such-env")


def test_bad_env_args_json(tmp_path):
    assert_one_line_error(verity("eval", "pii-masking", "-a", "{num_rows: 3}", cwd=tmp_path), "-a", "JSON")
    assert_one_line_error(verity("eval", "pii-masking", "-a", '{"num_rowz": 3}', cwd=tmp_path), "num_rowz")


def test_nonexistent_model_dir(tmp_path):
    p = verity("eval", "pii-masking", "-m", str(tmp_path / "no_model"), "-n", "2", "-r", "1",
               "-a", '{"num_rows": 50}', cwd=tmp_path)
    assert_one_line_error(p, "no_model")


def test_unreachable_endpoint(tmp_path):
    p = verity("eval", "pii-masking", "-b", "http://127.0.0.1:9/v1", "-m", "x", "-n", "2", "-r", "1",
               "-a", '{"num_rows": 50}', cwd=tmp_path)
    assert_one_line_error(p, "127.0.0.1:9")


def test_env_file_with_missing_column(tmp_path):
    env_file = tmp_path / "bad_env.py"
    env_file.write_text(textwrap.dedent("""
        import verity

        def load_environment():
            rows = [{"text": "a", "answer": "A"}]
            return verity.SingleTurnEnv(eval_dataset=rows, rubric=verity.Rubric([lambda answer: 1.0]))
    """))
    assert_one_line_error(verity("eval", str(env_file), "-m", "x", cwd=tmp_path), "question")


def test_bad_flag_values(tmp_path):
    assert_one_line_error(verity("eval", "pii-masking", "-r", "0", cwd=tmp_path), "-r")
    assert_one_line_error(verity("eval", "pii-masking", "--resume", cwd=tmp_path), "--resume")


# ---------------------------------------------------------------- other commands
def test_envs_lists_pii_masking(tmp_path):
    p = verity("envs", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    names = [line.split()[0] for line in p.stdout.splitlines() if line.strip()]
    assert {"pii-masking", "reverse-text", "arithmetic"} <= set(names)


def test_help(tmp_path):
    p = verity("--help", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "eval" in p.stdout and "envs" in p.stdout and "init" in p.stdout
    p = verity("eval", "--help", cwd=tmp_path)
    assert p.returncode == 0
    assert "--num-examples" in p.stdout and "--resume" in p.stdout
    p = verity(cwd=tmp_path)
    assert p.returncode == 0 and "usage" in p.stdout.lower()
