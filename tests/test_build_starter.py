"""The starter-model build script runs end to end (a reduced-size run of scripts/build_starter.py)."""

import json
import subprocess
import sys
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "build_starter.py"


def test_build_starter_small(tmp_path):
    out, run = tmp_path / "model", tmp_path / "run"
    r = subprocess.run([sys.executable, str(SCRIPT), "--steps", "3", "--decay-steps", "1", "--rows", "300",
                        "--hidden", "64", "--layers", "1", "--vocab", "600", "--batch-size", "8",
                        "--out", str(out), "--run-dir", str(run)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and model.config.model_type == "qwen2"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3]
    # and the result is a model verity can evaluate
    r = subprocess.run([sys.executable, "-m", "verity", "eval", "pii-masking", "-m", str(out), "-n", "2", "-r", "1",
                        "-t", "8", "--json", "-a", '{"num_rows": 300}', "-o", str(tmp_path / "ev")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    # stage 2: continue from that model on weakly labelled PII answers (dates/emails left unmasked)
    r = subprocess.run([sys.executable, str(SCRIPT), "--init", str(out), "--weak-labels", "date,email:0.8",
                        "--steps", "2", "--decay-steps", "1", "--rows", "300", "--batch-size", "8",
                        "--out", str(tmp_path / "weak"),
                        "--run-dir", str(tmp_path / "run2")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "weak").config.hidden_size == model.config.hidden_size
    r = subprocess.run([sys.executable, str(SCRIPT), "--weak-labels", "order:0.5", "--steps", "1", "--rows", "300",
                        "--out", str(tmp_path / "bad"), "--run-dir", str(tmp_path / "run3")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "unknown PII kind" in r.stderr
