"""Load test for ``verity serve``: many concurrent OpenAI clients, batched vs one request at a time.

Starts ``verity serve`` on 127.0.0.1 (a free port; never another host) once per
``--max-batch-size`` value, sends ``--clients`` concurrent clients × ``--requests`` chat
completions each through the official async ``openai`` client (no retries, so a 429 or any
other failure counts as an error), streamed unless ``--no-stream``, and prints requests/s,
completion tokens/s, time to first token (TTFT: request sent → first content delta) and latency
percentiles, the server's mean batch size and the error count. The run is bounded: at most
2048 requests per setting and a per-request timeout.

    python scripts/load_test_serve.py                      # tiny random model (hidden 128)
    python scripts/load_test_serve.py --model PATH --max-tokens 64 --json out.json
    python scripts/load_test_serve.py --toy qwen3-0.6b --batch-sizes 64 --max-tokens 128   # GPU check

``--toy qwen3-0.6b`` serves a random-init model with Qwen3-0.6B's layer shapes (28 layers, hidden
1024, 16 heads / 8 KV heads of 128, MLP 3072) and the toy Qwen3 tokenizer's vocabulary
(:mod:`verity.models.toy`); ``--device cpu`` hides any GPU from the server.

Exits 1 when any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from typing import Any

MAX_TOTAL_REQUESTS = 2048


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model to serve (default: a tiny random model built in a temp dir)")
    p.add_argument("--hidden", type=int, default=128, help="hidden size of the tiny model (default 128)")
    p.add_argument("--clients", type=int, default=64, help="concurrent clients (default 64)")
    p.add_argument("--requests", type=int, default=4, help="requests per client (default 4)")
    p.add_argument("--max-tokens", type=int, default=32, help="completion tokens per request (default 32)")
    p.add_argument("--batch-sizes", default="64,1", help="comma-separated --max-batch-size values (default 64,1)")
    p.add_argument("--timeout", type=float, default=300.0, help="per-request timeout in seconds")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="OMP_NUM_THREADS for the server (1 helps on a small CPU box shared with other work)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--toy", choices=("qwen3-0.6b", "qwen3-1.7b", "qwen3-tiny"), default=None,
                   help="serve a random-init model of this shape")
    p.add_argument("--device", choices=("auto", "cpu"), default="auto", help="cpu: hide GPUs from the server")
    p.add_argument("--no-stream", dest="stream", action="store_false", help="plain (non-streamed) requests")
    a = p.parse_args(argv)
    if a.clients < 1 or a.requests < 1 or a.clients * a.requests > MAX_TOTAL_REQUESTS:
        p.error(f"--clients × --requests must be 1..{MAX_TOTAL_REQUESTS}")
    return a


async def _client(aclient: Any, cid: int, a: argparse.Namespace, lat: list[float], ttft: list[float],
                  errs: list[str], tokens: list[int]) -> None:
    for r in range(a.requests):
        t0 = time.perf_counter()
        msgs = [{"role": "user", "content": f"client {cid} request {r}: tell me a story"}]
        try:
            if not a.stream:
                resp = await aclient.chat.completions.create(model="load-test", max_tokens=a.max_tokens,
                                                             temperature=1.0, messages=msgs)
                tokens.append(resp.usage.completion_tokens)
            else:
                stream = await aclient.chat.completions.create(
                    model="load-test", max_tokens=a.max_tokens, temperature=1.0, messages=msgs, stream=True,
                    stream_options={"include_usage": True})
                first = None
                async for chunk in stream:
                    if first is None and chunk.choices and chunk.choices[0].delta.content:
                        first = time.perf_counter() - t0
                    if chunk.usage is not None:
                        tokens.append(chunk.usage.completion_tokens)
                ttft.append(first if first is not None else time.perf_counter() - t0)
            lat.append(time.perf_counter() - t0)
        except Exception as e:  # every failure is counted, none retried
            errs.append(f"{type(e).__name__}: {e}"[:200])


def _pct(xs: list[float]) -> tuple[float, float]:
    """(p50, p95) of ``xs`` (NaN when fewer than 2)."""
    q = statistics.quantiles(xs, n=20) if len(xs) >= 2 else [float("nan")] * 19
    return q[9], q[18]


async def _drive(base_url: str, a: argparse.Namespace) -> dict[str, Any]:
    import openai

    aclient = openai.AsyncOpenAI(base_url=base_url, api_key="load-test", max_retries=0, timeout=a.timeout)
    await aclient.chat.completions.create(model="load-test", max_tokens=2,
                                          messages=[{"role": "user", "content": "warm up"}])
    lat: list[float] = []
    ttft: list[float] = []
    errs: list[str] = []
    tokens: list[int] = []
    t0 = time.perf_counter()
    await asyncio.gather(*(_client(aclient, c, a, lat, ttft, errs, tokens) for c in range(a.clients)))
    wall = time.perf_counter() - t0
    await aclient.close()
    (p50, p95), (t50, t95) = _pct(lat), _pct(ttft)
    return {"requests": a.clients * a.requests, "ok": len(lat), "errors": len(errs), "error_samples": errs[:3],
            "wall_s": wall, "req_per_s": len(lat) / wall, "completion_tok_per_s": sum(tokens) / wall,
            "latency_p50_s": p50, "latency_p95_s": p95, "ttft_p50_s": t50, "ttft_p95_s": t95,
            "streamed": a.stream}


def run_setting(model: str, max_batch: int, a: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from verity.serve.launch import ServerProcess

    env = {"OMP_NUM_THREADS": str(a.torch_threads)} if a.torch_threads else {}
    if a.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    with ServerProcess(model, "--served-model-name", "load-test", "--max-batch-size", str(max_batch),
                       "--max-queue", str(max(256, a.clients * 2)), env=env or None) as srv:
        before = httpx.get(srv.url + "/health").json()
        res = asyncio.run(_drive(srv.base_url, a))
        after = httpx.get(srv.url + "/health").json()
        res["server_alive"] = srv.alive()
    batches = after["batches"] - before["batches"]
    res["max_batch_size"] = max_batch
    res["mean_batch"] = (after["sequences"] - before["sequences"]) / batches if batches else 0.0
    res["batches"] = batches
    res["generation_s"] = after["generation_s"] - before["generation_s"]
    return res


def _table(results: list[dict[str, Any]]) -> str:
    head = ("| --max-batch-size | requests | errors | wall s | req/s | completion tok/s | p50 TTFT s | p95 TTFT s | "
            "p50 latency s | p95 latency s | batches | mean batch | generating s |")
    rows = [head, "|" + "---:|" * 13]
    for r in results:
        rows.append(f"| {r['max_batch_size']} | {r['requests']} | {r['errors']} | {r['wall_s']:.2f} | "
                    f"{r['req_per_s']:.1f} | {r['completion_tok_per_s']:.0f} | {r['ttft_p50_s']:.3f} | "
                    f"{r['ttft_p95_s']:.3f} | {r['latency_p50_s']:.2f} | "
                    f"{r['latency_p95_s']:.2f} | {r['batches']} | {r['mean_batch']:.1f} | {r['generation_s']:.2f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    sizes = [int(s) for s in a.batch_sizes.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="verity-load-") as tmp:
        model = a.model
        if a.toy is not None:
            from verity.models.toy import QWEN3_SHAPES, save_toy

            model = save_toy(f"{tmp}/toy", "qwen3", **QWEN3_SHAPES[a.toy])
        elif model is None:
            from verity.envs.pii_masking import tokenizer_corpus
            from verity.models.tokenizer import make_tiny_model

            model = make_tiny_model(f"{tmp}/tiny", tokenizer_corpus(), hidden_size=a.hidden,
                                    max_position_embeddings=1024)
        results = []
        for b in sizes:
            print(f"--max-batch-size {b}: {a.clients} clients × {a.requests} requests × {a.max_tokens} tokens ...",
                  file=sys.stderr, flush=True)
            results.append(run_setting(model, b, a))
    print(_table(results))
    if len(results) >= 2 and results[-1]["req_per_s"] > 0:
        print(f"\nspeed-up of --max-batch-size {results[0]['max_batch_size']} over {results[-1]['max_batch_size']}: "
              f"{results[0]['req_per_s'] / results[-1]['req_per_s']:.1f}x requests/s")
    for r in results:
        if r["errors"]:
            print(f"errors with --max-batch-size {r['max_batch_size']}: {r['error_samples']}", file=sys.stderr)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"settings": vars(a), "results": results}, f, indent=2)
    return 1 if any(r["errors"] or not r["server_alive"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
