"""Bad sampling values, bad endpoints and unsafe serve flags through the real CLI (issue 11:
Medium 4, 5, 9, the Low items on -T / --top-p / non-JSON endpoints, and --host without a key).

Each case runs ``python -m verity ...`` in a subprocess and must exit non-zero with exactly one
line on stderr that names the problem, and no traceback. Endpoint cases run against a local
misbehaving server (``tests/fake_endpoint.py``, loopback only); rollouts that finished are kept.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_endpoint import FakeEndpoint

EVAL = ["eval", "reverse-text", "-n", "2", "-r", "1"]
ENDPOINT = ["-m", "m", "-b", "{url}"]
CASES = [
    # id, argv, fake endpoint mode, text the one stderr line must hold, rows kept in results.jsonl
    ("eval-top-p-0", [*EVAL, "--top-p", "0"], None, "--top-p 0.0: must be in (0, 1]", None),
    ("eval-top-p-2", [*EVAL, "--top-p", "2"], None, "--top-p 2.0: must be in (0, 1]", None),
    ("eval-temperature-negative", [*EVAL, "-T", "-1"], None, "-T -1.0: must be a number >= 0", None),
    ("eval-max-tokens-0", [*EVAL, "-t", "0"], None, "-t 0: must be an integer >= 1", None),
    ("eval-S-top-p-0", [*EVAL, "-S", '{"top_p": 0}'], None, "top_p 0: must be in (0, 1]", None),
    ("eval-past-context", [*EVAL, "-t", "2000"], None, "max_tokens 2000: a prompt of", None),
    ("eval-timeout-0", [*EVAL, "--timeout", "0"], None, "--timeout 0.0: must be > 0", None),
    ("eval-max-retries-negative", [*EVAL, "--max-retries", "-1"], None, "--max-retries -1: must be >= 0", None),
    ("train-top-p-0", ["train", "reverse-text", "--top-p", "0"], None, "--top-p 0.0: must be in (0, 1]", None),
    ("train-temperature-negative", ["train", "reverse-text", "--temperature", "-1"], None,
     "--temperature -1.0: must be a number >= 0", None),
    ("train-temperature-0", ["train", "reverse-text", "--temperature", "0"], None, "--temperature 0: RL samples", None),
    ("train-past-context", ["train", "reverse-text", "--max-tokens", "2000", "--group-size", "2",
                            "--groups-per-batch", "1", "--steps", "1"], None, "max_tokens 2000: a prompt of", None),
    ("demo-max-tokens-0", ["demo", "--max-tokens", "0", "--steps", "1"], None, "--max-tokens 0: must be an integer",
     None),
    ("serve-public-host-without-key", ["serve", "verity-tiny", "--host", "0.0.0.0"], None,
     "--host 0.0.0.0: serving beyond this machine without an API key", None),
    ("serve-header-timeout-0", ["serve", "verity-tiny", "--header-timeout", "0"], None,
     "--header-timeout 0.0: must be > 0", None),
    ("endpoint-hangs", [*EVAL, *ENDPOINT, "--timeout", "1", "--max-retries", "1"], "hang",
     "stopped answering: a chat completion got no answer within 1 s (2 tries)", None),
    ("endpoint-not-json", [*EVAL, *ENDPOINT, "--max-retries", "0"], "html",
     "all 2 rollouts failed, e.g. endpoint answered a non-JSON body ('<html><body>Bad gateway</body></html>')", 2),
    ("endpoint-no-choices", [*EVAL, *ENDPOINT, "--max-retries", "0"], "nochoices",
     "all 2 rollouts failed, e.g. endpoint answered JSON without choices", 2),
    ("endpoint-always-500", [*EVAL, *ENDPOINT, "--max-retries", "0"], "500",
     "all 2 rollouts failed, e.g. InternalServerError", 2),
]


def _run(argv: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("VERITY_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "verity", *argv], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess, float, Path]]:
    """Every case's subprocess, run a few at a time (most of each is Python start-up), endpoints up meanwhile."""
    modes = {c[2] for c in CASES if c[2]}
    with contextlib.ExitStack() as stack:
        urls = {m: stack.enter_context(FakeEndpoint(m)).base_url for m in modes}

        def one(case: tuple) -> tuple[subprocess.CompletedProcess, float, Path]:
            name, argv, mode, _, _ = case
            cwd = tmp_path_factory.mktemp(name)
            out = cwd / "out"
            argv = [*argv, "-o", str(out)] if argv[0] in ("eval", "train", "demo") else argv
            t0 = time.monotonic()
            p = _run([a.replace("{url}", urls.get(mode, "")) for a in argv], cwd)
            return p, time.monotonic() - t0, out

        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
            return dict(zip([c[0] for c in CASES], pool.map(one, CASES), strict=True))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_non_zero(case: tuple, runs: dict) -> None:
    name, _, mode, expected, rows = case
    p, took, out = runs[name]
    lines = p.stderr.strip().splitlines()
    assert p.returncode != 0, p.stdout[-500:]
    assert "Traceback" not in p.stderr and len(lines) == 1, p.stderr[-3000:]
    assert expected in lines[0], lines[0]
    if rows is not None:  # the failed rollouts are recorded, and the run says it failed
        assert len((out / "results.jsonl").read_text().splitlines()) == rows
        assert json.loads((out / "metadata.json").read_text())["status"] == "failed"
    if mode == "hang":
        assert took < 150, f"a hanging endpoint took {took:.0f}s to give up on (start-up included)"


def test_insecure_allows_a_public_host_and_a_key_does_too() -> None:
    from verity.cli.serve_cmd import ServeConfig
    from verity.errors import ConfigError

    ServeConfig(model="m", host="0.0.0.0", insecure=True).validate()
    os.environ["VERITY_TEST_SERVE_KEY"] = "k"
    try:
        ServeConfig(model="m", host="0.0.0.0", api_key_env="VERITY_TEST_SERVE_KEY").validate()
    finally:
        del os.environ["VERITY_TEST_SERVE_KEY"]
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        ServeConfig(model="m", host=host).validate()
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.org"):
        with pytest.raises(ConfigError, match="--insecure"):
            ServeConfig(model="m", host=host).validate()
