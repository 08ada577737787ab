"""The main job (`verity demo`) runs end to end on the bundled starter (a reduced-size run)."""

import json
import subprocess
import sys


def test_demo_small(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "verity", "demo", "--steps", "1", "--group-size", "2",
                        "--groups-per-batch", "2", "--max-tokens", "16", "--eval-examples", "2", "-o", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| reward |" in r.stdout and "total reward: base" in r.stdout
    comp = json.loads((out / "compare" / "comparison.json").read_text())
    assert [m["label"] for m in comp["models"]] == ["verity-tiny", "trained"]
    assert (out / "run" / "reward_curve.png").is_file() and (out / "trained" / "config.json").is_file()
    again = subprocess.run([sys.executable, "-m", "verity", "demo", "-o", str(out)], capture_output=True, text=True,
                           timeout=120)
    assert again.returncode != 0 and "already holds" in again.stderr and "Traceback" not in again.stderr
