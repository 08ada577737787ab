"""Start-up: `verity --help` and `verity eval` against an endpoint import no torch, and pii-masking
builds only the rows it is asked for (the same rows and splits as building all of them)."""

import json
import random
import subprocess
import sys
import textwrap

import pytest

from verity.envs.pii_masking import load_environment
from verity.envs.pii_masking.generator import KNOWN_REDRAWS, generate_rows, row_builder

# A stdlib OpenAI-compatible server in a thread, then the CLI in the same process; prints the heavy
# modules that ended up imported.
PROBE = textwrap.dedent("""
    import json, sys, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    ANSWER = "<masked_output>\\n[PII] met [PII].\\n</masked_output>"

    class H(BaseHTTPRequestHandler):
        def _send(self, obj):
            body = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._send({"object": "list", "data": [{"id": "m", "object": "model"}]})

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self._send({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": ANSWER}}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    argv = [a.replace("URL", f"http://127.0.0.1:{srv.server_address[1]}/v1") for a in sys.argv[1:]]
    from verity.cli.main import main
    try:
        main(argv)
    except SystemExit as e:
        code = e.code
    heavy = sorted(m for m in ("torch", "transformers", "datasets", "pyarrow") if m in sys.modules)
    print("PROBE " + json.dumps({"code": code, "heavy": heavy}))
""")


def probe(tmp_path, *argv: str) -> dict:
    p = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("PROBE ")), None)
    assert line is not None, p.stderr[-2000:]
    return json.loads(line[len("PROBE "):])


def test_endpoint_eval_imports_no_torch(tmp_path):
    r = probe(tmp_path, "eval", "pii-masking", "-b", "URL", "-m", "m", "-n", "3", "-r", "2", "--json",
              "-o", str(tmp_path / "out"))
    assert r["code"] in (0, None)
    assert r["heavy"] == []
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 6 and json.loads(lines[0])["reward"] > 0  # the answer parses: format reward


def test_help_imports_no_torch(tmp_path):
    r = probe(tmp_path, "--help")
    assert r["code"] == 0 and r["heavy"] == []


def test_command_summaries_match_their_modules():
    """`verity --help` lists each command with the one-line help its own module registers."""
    from verity.cli.main import COMMANDS, build_parser

    parser, mods = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    registered = {a.dest: a.help for a in sub._choices_actions}
    assert set(mods) == set(COMMANDS)
    assert registered == {name: summary for name, (_, summary) in COMMANDS.items()}


def test_rows_built_on_their_own_equal_generate_rows():
    """KNOWN_REDRAWS is right: every row of the default 30,000 built alone equals the de-duplicated set."""
    n, redraws = KNOWN_REDRAWS[42]
    rows = generate_rows(n)
    row = row_builder(n)
    assert all(row(i) == rows[i] for i in range(n))
    assert row_builder(120)(7) == rows[7]  # a prefix: same rows
    with pytest.raises(IndexError):
        row_builder(120)(120)
    # the splits: the eager construction of the environment, compared with what it builds now
    env = load_environment()
    order = list(range(n))
    random.Random(42).shuffle(order)
    assert [e.answer for e in env.get_examples("eval", 100)] == [rows[i]["answer"] for i in order[:100]]
    cols = list(rows[0])  # the generator's columns (the environment adds prompt and example_id)
    assert [{k: r[k] for k in cols} for r in env.eval_dataset.select(range(50, 60))] == [rows[i] for i in order[50:60]]
    assert {k: env.dataset[0][k] for k in cols} == rows[order[n // 5]] and len(env.dataset) == n - n // 5


def test_other_seeds_and_sizes_keep_their_rows():
    rows = generate_rows(300, seed=3)
    order = list(range(300))
    random.Random(3).shuffle(order)
    env = load_environment(num_rows=300, random_seed=3, num_eval_examples=40, num_train_examples=100)
    cols = list(rows[0])  # the generator's columns (the environment adds prompt and example_id)
    assert [{k: r[k] for k in cols} for r in env.eval_dataset] == [rows[i] for i in order[:40]]
    assert [{k: r[k] for k in cols} for r in env.dataset] == [rows[i] for i in order[40:140]]
    # anything beyond the rows themselves is answered by a datasets.Dataset of the same rows
    assert env.eval_dataset["answer"][:3] == [rows[i]["answer"] for i in order[:3]]
    assert len(env.eval_dataset) == 40
