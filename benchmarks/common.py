"""Shared pieces of the benchmarks: the task, tokenizer, model, reward, and child-process plumbing.

Every tool in a comparison gets the *same* work, built here:

* prompts ``"Reverse: <word>"`` (words of 3-8 letters a-j, a fixed seed), as one chat user message;
* a byte-level BPE tokenizer of vocabulary 512 trained on them with verity's
  :func:`~verity.models.tokenizer.train_bpe_tokenizer` (so the chat template is verity's);
* a random-init Qwen2 model (4 heads, MLP 4×hidden, tied embeddings) built from a fixed seed;
* a cheap reward with non-constant values: the fraction of vowels in the completion text.

**Fixed completion length.** The tokenizer's EOS is replaced by an extra special token
``<|never|>`` whose id (512) lies *outside* the model's 512-row output layer, and the model's
``generation_config.eos_token_id`` points to it as well (``config.eos_token_id`` stays None, which
avoids transformers' out-of-vocabulary warning; both tools read the tokenizer and the generation
config). No sampler can ever draw it, so verity's sampler and ``transformers.generate`` (TRL) both run exactly
``max_tokens`` decode steps for every completion: identical work, with no logits processor
added to either side.

Each tool/setting runs in its own subprocess (``python -m benchmarks.X --child ...``), which
prints one line ``BENCH_JSON {...}``; :func:`run_child` collects it, so peak RSS is per tool.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
JSON_MARK = "BENCH_JSON "
NEVER_EOS = "<|never|>"
VOCAB_SIZE = 512
VOWELS = frozenset("aeiouAEIOU")


@dataclass(frozen=True)
class GRPOBench:
    """One GRPO benchmark configuration (the same for every tool)."""

    name: str
    hidden: int
    layers: int
    completions: int  # per step
    max_tokens: int  # per completion (forced: see module docstring)
    group_size: int = 8
    lr: float = 1e-4
    heads: int = 4
    kv_heads: int | None = None  # None: = heads
    intermediate: int | None = None  # None: 4 × hidden
    model_vocab: int | None = None  # None: the tokenizer's 512 (see build_tokenizer)

    @property
    def groups(self) -> int:
        return self.completions // self.group_size

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


CONFIGS = {
    "small": GRPOBench("small", hidden=256, layers=4, completions=64, max_tokens=64),
    "medium": GRPOBench("medium", hidden=512, layers=8, completions=32, max_tokens=64),
}
#: Real-size shapes for a GPU (not in ``--config all``): Qwen2.5-0.5B's published config (hidden 896,
#: 24 layers, 14 heads / 2 KV heads, MLP 4864, vocabulary 151,936, tied embeddings), random weights.
GPU_CONFIGS = {
    "qwen2.5-0.5b": GRPOBench("qwen2.5-0.5b", hidden=896, layers=24, completions=64, max_tokens=128, heads=14,
                              kv_heads=2, intermediate=4864, model_vocab=151936),
}


# ------------------------------------------------------------------------------ task
def make_words(n: int = 2000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(3, 8))) for _ in range(n)]


def prompt_text(word: str) -> str:
    return f"Reverse: {word}"


def vowel_fraction(text: str) -> float:
    """The benchmark reward: cheap, in [0, 1], and almost never constant within a group."""
    return sum(ch in VOWELS for ch in text) / max(len(text), 1)


def completion_text(completion: Any) -> str:
    """Text of a completion given as a string or as chat messages (verity, TRL and verifiers all differ)."""
    if isinstance(completion, str):
        return completion
    for m in reversed(list(completion or [])):
        if isinstance(m, dict) and m.get("role") == "assistant":
            return m.get("content") or ""
    return ""


# ------------------------------------------------------------------------------ tokenizer + model
def build_tokenizer(words: Sequence[str], vocab_size: int = VOCAB_SIZE, texts: Sequence[str] | None = None
                    ) -> tuple[Any, int]:
    """verity's BPE tokenizer (vocab ``vocab_size``) with an EOS the model can never sample.

    Trained on the reverse-task prompts, or on ``texts`` when given. Returns
    ``(tokenizer, model_vocab)``: the model gets ``model_vocab`` output rows, and the EOS id
    equals ``model_vocab`` (one past the last row).
    """
    from verity.models.tokenizer import train_bpe_tokenizer

    if texts is None:
        texts = [prompt_text(w) for w in words] + [w[::-1] for w in words]
    tok = train_bpe_tokenizer(texts, vocab_size=vocab_size)
    model_vocab = len(tok)
    tok.add_special_tokens({"eos_token": NEVER_EOS})
    assert tok.eos_token_id == model_vocab, (tok.eos_token_id, model_vocab)
    return tok, model_vocab


def build_model(tokenizer: Any, model_vocab: int, hidden: int, layers: int, heads: int = 4, seed: int = 0,
                max_positions: int = 512, kv_heads: int | None = None, intermediate: int | None = None) -> Any:
    """Random-init Qwen2 (MLP 4×hidden unless given, tied embeddings), fp32 weights, EOS = the never-sampled
    id (when ``model_vocab`` is larger than the tokenizer, as for real-size shapes, the tokenizer's EOS is
    inside the vocabulary and can be sampled, rarely: the completion-length column shows it)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=model_vocab, hidden_size=hidden, intermediate_size=intermediate or 4 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads or heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=None,  # set on generation_config below
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model


def num_params(model: Any) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


# ------------------------------------------------------------------------------ measurement
def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch threads and library versions (recorded with every result)."""
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    try:
        text = Path("/proc/cpuinfo").read_text()
        names = (ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name"))
        info["cpu"] = next(names, "?")
        info["avx512_bf16"] = "avx512_bf16" in text
        info["amx_bf16"] = "amx_bf16" in text
    except OSError:
        pass
    for mod in ("torch", "transformers", "trl", "verifiers", "openai"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            info[mod] = None
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except Exception:
        pass
    return info


def emit(result: dict[str, Any]) -> None:
    """Child side: print the result line the parent looks for."""
    print(JSON_MARK + json.dumps(result, default=float), flush=True)


def run_child(module: str, args: Sequence[str], timeout: float = 3600.0, env: dict[str, str] | None = None,
              quiet: bool = False) -> dict[str, Any]:
    """Run ``python -m module *args`` in a fresh process; return its ``BENCH_JSON`` dict (or an error dict)."""
    cmd = [sys.executable, "-m", module, *args]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=str(REPO), capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s", "cmd": " ".join(cmd)}
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(JSON_MARK)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-3000:]
        if not quiet:
            print(tail, file=sys.stderr)
        return {"error": f"exit {proc.returncode}", "log_tail": tail, "cmd": " ".join(cmd)}
    out = json.loads(lines[-1][len(JSON_MARK):])
    out["process_wall_s"] = wall
    return out


def fmt(x: Any, nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain Markdown table on stdout."""
    cells = [[fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + " |")
