"""Client-side cost of evaluating against an endpoint: ``verity eval`` vs verifiers' ``vf-eval``.

One ``verity serve`` (a subprocess on 127.0.0.1, a free port) serves a tiny random-init Qwen2
model whose EOS can never be sampled (see :mod:`benchmarks.common`), so every request decodes
exactly ``-t`` tokens and the server does the same work for every client. Against it, each
client evaluates the PII-masking environment with the same n, r, concurrency and max tokens:

* ``verity eval pii-masking -b URL -m NAME -n N -r R -c C -t T -T 1.0 --json -o TMP``
* ``vf-eval benchmarks.vf_pii_env -b URL -m NAME -n N -r R -c C -t T -T 1.0`` (verifiers 0.1.6.post0;
  the environment module :mod:`benchmarks.vf_pii_env` rebuilds pii-masking with verifiers classes)
* a floor: a plain ``asyncio`` + ``openai.AsyncOpenAI`` loop sending the same requests (no scoring).

Each client runs as its own process, once with n=1, r=1 (its start-up) and once with the full
n×r; wall times are medians over ``--repeats``. Per-rollout client time = (full − start-up) ÷
(n·r − 1). Requests go to loopback only and their number is bounded by n·r.

    python -m benchmarks.eval_vs_verifiers [-n 100] [-r 6] [-c 64] [-t 8] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, build_model, build_tokenizer, emit, machine_info, median, print_table

CLIENTS = ("verity", "verifiers", "plain_openai")


def build_server_model(out_dir: str, hidden: int, layers: int) -> str:
    """A tiny Qwen2 + 512-token BPE tokenizer trained on pii-masking text, EOS never sampled."""
    from verity.envs.pii_masking import SYSTEM_PROMPT
    from verity.envs.pii_masking.generator import generate_rows

    rows = generate_rows(300, seed=0)
    tok, model_vocab = build_tokenizer([], texts=[SYSTEM_PROMPT] + [r["question"] + "\n" + r["answer"] for r in rows])
    model = build_model(tok, model_vocab, hidden, layers, max_positions=2048)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def bin_path(name: str) -> str | None:
    """A console script of this venv (``verity``, ``vf-eval``), else one on PATH."""
    p = Path(sys.executable).parent / name
    return str(p) if p.exists() else shutil.which(name)


def client_cmd(client: str, url: str, model: str, n: int, r: int, c: int, t: int, env_args: str) -> list[str]:
    common = ["-b", url, "-m", model, "-n", str(n), "-r", str(r), "-c", str(c), "-t", str(t), "-T", "1.0",
              "-a", env_args]
    if client == "verity":
        exe = bin_path("verity")
        head = [exe] if exe else [sys.executable, "-m", "verity"]
        return head + ["eval", "pii-masking", *common, "--json", "-o", tempfile.mkdtemp(prefix="bench-eval-")]
    if client == "verifiers":
        exe = bin_path("vf-eval")
        if exe is None:
            raise FileNotFoundError("vf-eval not found: pip install 'verifiers==0.1.6.post0' (or the 'bench' extra)")
        return [exe, "benchmarks.vf_pii_env", *common]
    return [sys.executable, "-m", "benchmarks.eval_vs_verifiers", "--child", *common]


def run_client(client: str, url: str, model: str, n: int, r: int, c: int, t: int, env_args: str,
               timeout: float) -> dict[str, Any]:
    """One client process, timed from spawn to exit; reward / loop time parsed from its output."""
    try:
        cmd = client_cmd(client, url, model, n, r, c, t, env_args)
    except FileNotFoundError as e:
        return {"error": str(e)}
    pythonpath = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": pythonpath,
           "OPENAI_API_KEY": os.environ.get("OPENAI_API_KEY", "EMPTY")}
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=tempfile.mkdtemp(prefix="bench-cwd-"), env=env, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s", "cmd": " ".join(cmd)}
    out: dict[str, Any] = {"wall_s": time.perf_counter() - t0, "rc": p.returncode}
    if p.returncode != 0:
        out["error"] = f"exit {p.returncode}"
        out["log_tail"] = (p.stderr or p.stdout)[-2000:]
        return out
    out.update(parse_output(client, p.stdout))
    return out


def parse_output(client: str, stdout: str) -> dict[str, Any]:
    """The mean reward each client reports (a sanity check that both really scored)."""
    if client == "verity":
        line = next((ln for ln in reversed(stdout.splitlines()) if ln.startswith("{")), "{}")
        return {"reward": json.loads(line).get("metrics", {}).get("reward")}
    if client == "verifiers":
        m = re.search(r"reward: avg - ([-0-9.naninf]+)", stdout)
        return {"reward": float(m.group(1)) if m else None}
    line = next((ln for ln in stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    return json.loads(line[len("BENCH_JSON "):]) if line else {}


# ------------------------------------------------------------------------------ plain-client floor
def child_plain(a: argparse.Namespace) -> None:
    """The floor: the same chat requests through a bare AsyncOpenAI loop with a semaphore."""
    import asyncio

    t_import = time.perf_counter()
    import openai

    from verity.config import parse_env_args
    from verity.envs.pii_masking import load_environment

    env = load_environment(**parse_env_args(a.env_args))
    prompts = [list(ex.prompt) for ex in env.get_examples("eval", a.num_examples)] * a.rollouts_per_example
    setup_s = time.perf_counter() - t_import

    async def go() -> tuple[float, int]:
        client = openai.AsyncOpenAI(base_url=a.base_url, api_key="EMPTY", max_retries=3)
        sem = asyncio.Semaphore(a.concurrency)

        async def one(msgs: list[Any]) -> bool:
            async with sem:
                try:
                    await client.chat.completions.create(model=a.model, messages=msgs, max_tokens=a.max_tokens,
                                                         temperature=a.temperature)
                    return True
                except openai.OpenAIError:
                    return False

        t0 = time.perf_counter()
        ok = await asyncio.gather(*(one(p) for p in prompts))
        return time.perf_counter() - t0, sum(not x for x in ok)

    loop_s, errors = asyncio.run(go())
    emit({"loop_s": loop_s, "setup_s": setup_s, "requests": len(prompts), "errors": errors})


# ------------------------------------------------------------------------------ parent
def warm_up(base_url: str, model: str, t: int) -> None:
    import httpx

    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": t}
    httpx.post(base_url + "/chat/completions", json=body, timeout=120).raise_for_status()


def measure(a: argparse.Namespace, base_url: str, name: str) -> dict[str, dict[str, Any]]:
    """Every client, start-up run (n=1, r=1) and full run, ``--repeats`` times, interleaved."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {c: {"startup": [], "full": []} for c in a.clients}
    for rep in range(a.repeats):
        for client in a.clients:
            for kind, (n, r) in (("startup", (1, 1)), ("full", (a.num_examples, a.rollouts_per_example))):
                if not a.json:
                    print(f"[{rep + 1}/{a.repeats}] {client} {kind} (n={n}, r={r}) ...", file=sys.stderr, flush=True)
                runs[client][kind].append(run_client(client, base_url, name, n, r, a.concurrency, a.max_tokens,
                                                     a.env_args, a.timeout))
    return {c: summarize_client(v, a.num_examples * a.rollouts_per_example) for c, v in runs.items()}


def summarize_client(v: dict[str, list[dict[str, Any]]], rollouts: int) -> dict[str, Any]:
    errs = [r for k in ("startup", "full") for r in v[k] if "error" in r]
    if errs:
        return {"error": errs[0]["error"], "log_tail": errs[0].get("log_tail", "")}
    start, full = median([r["wall_s"] for r in v["startup"]]), median([r["wall_s"] for r in v["full"]])
    out = {"startup_wall_s": start, "full_wall_s": full, "rollouts": rollouts,
           "per_rollout_ms": 1000 * (full - start) / max(rollouts - 1, 1),
           "reward": v["full"][-1].get("reward"), "full_walls": [r["wall_s"] for r in v["full"]]}
    if "loop_s" in v["full"][-1]:
        loop = median([r["loop_s"] for r in v["full"]])
        out.update(loop_s=loop, loop_per_rollout_ms=1000 * loop / rollouts,
                   request_errors=v["full"][-1].get("errors"))
    return out


def print_report(res: dict[str, Any]) -> None:
    rows = []
    base = res["clients"].get("verity", {}).get("full_wall_s")
    for c, r in res["clients"].items():
        if "error" in r:
            rows.append([c, "ERROR: " + r["error"], None, None, None, None])
            continue
        rows.append([c, r["startup_wall_s"], r["full_wall_s"], r["per_rollout_ms"], r.get("loop_s"),
                     (r["full_wall_s"] / base) if base else None])
    print(f"n={res['n']} r={res['r']} c={res['c']} t={res['max_tokens']} ({res['n'] * res['r']} rollouts), "
          + ("server: benchmarks.instant_server (answers at once)" if res["server"]["kind"] == "instant" else
             f"server: verity serve, hidden {res['server']['hidden']}, {res['server']['layers']} layers"))
    print_table(["client", "start-up s (n=1,r=1)", "wall s (n×r)", "ms/rollout", "request loop s", "wall ÷ verity"],
                rows)
    if res.get("ratio_verifiers_over_verity"):
        print(f"vf-eval / verity eval wall: {res['ratio_verifiers_over_verity']:.2f}x")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.eval_vs_verifiers", description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--num-examples", type=int, default=100)
    p.add_argument("-r", "--rollouts-per-example", type=int, default=6)
    p.add_argument("-c", "--concurrency", type=int, default=64)
    p.add_argument("-t", "--max-tokens", type=int, default=8, help="completion tokens per request (forced)")
    p.add_argument("-T", "--temperature", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("-a", "--env-args", default="{}", help="JSON args for the pii-masking environment (both clients)")
    p.add_argument("--repeats", type=int, default=3, help="runs per client; medians are reported")
    p.add_argument("--clients", type=lambda s: s.split(","), default=list(CLIENTS), help=",".join(CLIENTS))
    p.add_argument("--server", choices=("serve", "instant"), default="serve",
                   help="serve: verity serve with a tiny model; instant: benchmarks.instant_server (no model), "
                        "for start-up and client overhead alone")
    p.add_argument("--hidden", type=int, default=64, help="served model width")
    p.add_argument("--layers", type=int, default=2, help="served model depth")
    p.add_argument("--timeout", type=float, default=900.0, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-b", "--base-url", help=argparse.SUPPRESS)
    p.add_argument("-m", "--model", help=argparse.SUPPRESS)
    return p.parse_args(argv)


@contextlib.contextmanager
def instant_server() -> Iterator[str]:
    """:mod:`benchmarks.instant_server` on a free loopback port; yields its base URL."""
    import httpx

    from verity.serve.launch import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.instant_server", str(port)], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("benchmarks.instant_server did not start") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.child:
        child_plain(a)
        return 0
    from verity.serve.launch import ServerProcess

    name = "bench-tiny"
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as root:
        tempfile.tempdir = root  # the model, every client's cwd and verity's -o dirs go here, removed at the end
        if a.server == "instant":
            with instant_server() as url:
                clients = measure(a, url, "m")
        else:
            model_dir = build_server_model(tempfile.mkdtemp(prefix="serve-"), a.hidden, a.layers)
            with ServerProcess(model_dir, "--served-model-name", name, "--max-batch-size", str(a.concurrency),
                               "--max-queue", str(max(256, 2 * a.concurrency))) as srv:
                warm_up(srv.base_url, name, a.max_tokens)
                clients = measure(a, srv.base_url, name)
        tempfile.tempdir = None
    res: dict[str, Any] = {"n": a.num_examples, "r": a.rollouts_per_example, "c": a.concurrency,
                           "max_tokens": a.max_tokens, "repeats": a.repeats, "clients": clients,
                           "server": {"kind": a.server, "hidden": a.hidden, "layers": a.layers},
                           "machine": machine_info()}
    v, f = clients.get("verity", {}), clients.get("verifiers", {})
    if "full_wall_s" in v and "full_wall_s" in f:
        res["ratio_verifiers_over_verity"] = f["full_wall_s"] / v["full_wall_s"]
        res["startup_ratio_verifiers_over_verity"] = f["startup_wall_s"] / v["startup_wall_s"]
        if v["per_rollout_ms"] > 0 and f["per_rollout_ms"] > 0:  # noise can make a difference negative
            res["per_rollout_ratio_verifiers_over_verity"] = f["per_rollout_ms"] / v["per_rollout_ms"]
    if a.json:
        print(json.dumps(res, default=float))
    else:
        print_report(res)
    return 1 if any("error" in c for c in clients.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
