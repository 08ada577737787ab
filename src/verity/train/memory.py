"""The memory plan of a training run, from a model's config.json alone (no weights loaded).

:func:`plan_memory` adds up what a run holds: the fp32 weights, LoRA parameters, AdamW states,
gradients, the sampler's bf16 weight copy, its KV cache, the activations a micro-batch keeps
for backward (with or without gradient checkpointing) and the completion logits. It backs
``verity train/sft --dry-run``, ``--micro-batch-size auto`` (:func:`pick_micro_batch`),
``--max-decode-batch auto`` and ``--gradient-checkpointing auto``.

The activation terms are bytes per token per decoder layer, measured with
``torch.autograd.graph.saved_tensors_hooks`` on Qwen3-architecture layers under bf16 autocast
(fp32 master weights) while varying one dimension at a time; each term is linear in the
hidden size h, the MLP width i, the query and key/value widths (heads × head_dim) and the
number of query heads (the attention's log-sum-exp). The plan's accuracy against the peak of
real train steps is measured by ``benchmarks/memory_plan.py`` (recorded in benchmarks/README.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verity.errors import ConfigError

MiB = 1 << 20
GiB = 1 << 30
#: Share of the budget a plan may use: the rest is left for the allocator's fragmentation,
#: the CUDA context / Python runtime and kernels' workspaces.
HEADROOM = 0.85
#: Allocator and runtime slack of a training process (glibc arenas, thread pools, autograd's
#: bookkeeping): peaks of identical small runs on the CPU differed by up to ~100 MiB.
SLACK = 128 * MiB
#: float32 working chunk of the chunked log-softmax (``verity.algos.logprobs.CHUNK_ELEMENTS``).
CHUNK_BYTES = (1 << 24) * 4


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only transformer that memory depends on."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    qk_norm: bool = False
    """RMSNorm on queries and keys (Qwen3)."""
    qkv_bias: bool = False
    """Biases on the q/k/v projections (Qwen2, or ``attention_bias``)."""

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ModelShape:
        try:
            h, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
            return cls(hidden=h, layers=int(cfg["num_hidden_layers"]), heads=heads,
                       kv_heads=int(cfg.get("num_key_value_heads") or heads),
                       head_dim=int(cfg.get("head_dim") or h // heads),
                       intermediate=int(cfg["intermediate_size"]), vocab=int(cfg["vocab_size"]),
                       tied=bool(cfg.get("tie_word_embeddings", False)),
                       qk_norm=str(cfg.get("model_type", "")).startswith("qwen3"),
                       qkv_bias=cfg.get("model_type") == "qwen2" or bool(cfg.get("attention_bias", False)))
        except KeyError as e:
            raise ConfigError(f"model config has no {e.args[0]!r}: not a decoder-only transformer verity can plan for"
                              ) from None

    @classmethod
    def from_model(cls, name: str) -> ModelShape:
        """From a model directory's config.json (``verity-tiny``, a local path; nothing else is read)."""
        from verity.models.loading import resolve_model

        path = Path(resolve_model(name)) / "config.json"
        if not path.is_file():
            raise ConfigError(f"-m {name}: --dry-run reads a local model directory's config.json; none at {path}")
        try:
            cfg = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: not a readable JSON config ({e})") from None
        return cls.from_config(cfg.get("text_config", cfg))

    @property
    def layer_linears(self) -> list[tuple[int, int]]:
        """(in, out) of each linear layer of one decoder layer (q, k, v, o, gate, up, down)."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    @property
    def params(self) -> int:
        per_layer = sum(a * b for a, b in self.layer_linears) + 2 * self.hidden
        per_layer += 2 * self.head_dim if self.qk_norm else 0
        per_layer += (self.heads + 2 * self.kv_heads) * self.head_dim if self.qkv_bias else 0
        embed = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * per_layer + embed + self.hidden

    def lora_params(self, rank: int) -> int:
        """LoRA (``target_modules="all-linear"``: every linear of the decoder layers) of ``rank``."""
        return self.layers * sum(rank * (a + b) for a, b in self.layer_linears) if rank > 0 else 0

    def activation_bytes_per_token(self, lora: bool, checkpointing: bool, recompute_mlp: bool = True,
                                   compute_bytes: int = 2) -> float:
        """Bytes one token keeps for backward across all decoder layers and the final norm.

        Measured terms (bf16 autocast): a checkpointed layer keeps its fp32 input (4·h);
        otherwise 26·h (18·h with LoRA, whose frozen weights need no input for their gradient)
        + 10 per query and key/value width + 12 per head, + 8·i unless the MLP is recomputed.
        Under fp32 compute the terms other than the residual stream's double.
        """
        h, i, q, kv = self.hidden, self.intermediate, self.heads * self.head_dim, self.kv_heads * self.head_dim
        if checkpointing:
            per_layer, rest = 4.0 * h, (4.0 if lora else 8.0) * h
        else:
            scale = 1.0 if compute_bytes == 2 else 2.0
            per_layer = (18.0 if lora else 26.0) * h + scale * (10.0 * q + (8.0 if lora else 10.0) * kv
                                                               + 12.0 * self.heads)
            if not recompute_mlp:
                per_layer += scale * 8.0 * i
            rest = 0.0 if lora else 8.0 * h
        return self.layers * per_layer + rest

    def kv_bytes_per_token(self, compute_bytes: int = 2) -> int:
        return self.layers * 2 * self.kv_heads * self.head_dim * compute_bytes


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes a run holds, by part; ``total`` is the peak (sampling and training do not overlap)."""

    weights: int
    lora: int
    optimizer: int
    grads: int
    autocast_copies: int
    sampling_copy: int
    kv_cache: int
    sampling_logits: int
    activations: int
    logits: int
    micro_batch: int
    decode_batch: int
    checkpointing: bool

    @property
    def resident(self) -> int:
        """Held for the whole run: weights, LoRA, optimizer states, the sampler's weight copy."""
        return self.weights + self.lora + self.optimizer + self.sampling_copy

    @property
    def train_step(self) -> int:
        """What one micro-batch's forward/backward adds on top of :attr:`resident`."""
        return self.grads + self.autocast_copies + self.activations + self.logits

    @property
    def sampling(self) -> int:
        """What decoding adds on top of :attr:`resident`."""
        return self.kv_cache + self.sampling_logits

    @property
    def total(self) -> int:
        return self.resident + max(self.train_step, self.sampling) + SLACK

    def lines(self) -> list[str]:
        ck = "on" if self.checkpointing else "off"
        rows = [("weights (fp32)", self.weights), ("LoRA parameters", self.lora),
                ("optimizer states (AdamW, fp32)", self.optimizer), ("gradients", self.grads),
                ("bf16 weight copies (autocast)", self.autocast_copies),
                ("sampling copy (bf16)", self.sampling_copy),
                (f"KV cache ({self.decode_batch} sequences)", self.kv_cache),
                ("sampling logits", self.sampling_logits),
                (f"activations (micro-batch {self.micro_batch}, checkpointing {ck})", self.activations),
                ("logits (+ gradient, fp32 chunk)", self.logits)]
        out = [f"  {name:<58} {b / GiB:9.3f} GiB" for name, b in rows]
        out += [f"  {'allocator / runtime slack':<58} {SLACK / GiB:9.3f} GiB",
                f"  {'= training step peak':<58} {(self.resident + self.train_step + SLACK) / GiB:9.3f} GiB",
                f"  {'= sampling peak':<58} {(self.resident + self.sampling + SLACK) / GiB:9.3f} GiB",
                f"  {'= peak':<58} {self.total / GiB:9.3f} GiB"]
        return out


def plan_memory(shape: ModelShape, *, micro_batch: int, seq_len: int, completion_len: int, lora_rank: int,
                checkpointing: bool, recompute_mlp: bool = True, compute_bytes: int = 2, decode_batch: int = 0,
                decode_len: int = 0, sampler: bool = True) -> MemoryPlan:
    """The plan for micro-batches of ``micro_batch`` rows of ``seq_len`` tokens whose last
    ``completion_len`` are scored, and (``sampler``) decoding ``decode_batch`` sequences of up to
    ``decode_len`` tokens; ``compute_bytes`` 2 = bf16 autocast over fp32 weights, 4 = fp32."""
    n, lora = shape.params, shape.lora_params(lora_rank)
    trainable = lora if lora_rank > 0 else n
    # autocast's bf16 weight copies that backward keeps: lm_head's, the attention's unless the layer is
    # recomputed, the MLP's unless it is recomputed
    lin = shape.layer_linears
    kept = 0 if checkpointing else sum(a * b for a, b in lin[:4]) + (0 if recompute_mlp else
                                                                   sum(a * b for a, b in lin[4:]))
    linears = shape.layers * kept + shape.vocab * shape.hidden
    tokens = micro_batch * seq_len
    acts = shape.activation_bytes_per_token(lora_rank > 0, checkpointing, recompute_mlp, compute_bytes) * tokens
    if checkpointing:  # backward recomputes one layer at a time: its activations and their gradients
        one = ModelShape(**{**shape.__dict__, "layers": 1})
        acts += 2 * one.activation_bytes_per_token(lora_rank > 0, False, recompute_mlp, compute_bytes) * tokens
    full_logits = micro_batch * (completion_len + 1) * shape.vocab * compute_bytes
    chunk = min(CHUNK_BYTES, micro_batch * completion_len * shape.vocab * 4)
    # logits and their gradient live together at the start of backward, with the fp32 chunks
    logits = 2 * full_logits + 3 * chunk
    copies = compute_bytes == 2
    return MemoryPlan(
        weights=4 * n, lora=4 * lora, optimizer=8 * trainable, grads=4 * trainable,
        autocast_copies=2 * linears if copies else 0,
        sampling_copy=2 * (n + lora) if sampler and copies else 0,
        kv_cache=decode_batch * decode_len * shape.kv_bytes_per_token(compute_bytes) if sampler else 0,
        sampling_logits=4 * 4 * decode_batch * shape.vocab if sampler else 0,
        activations=int(acts), logits=int(logits), micro_batch=micro_batch, decode_batch=decode_batch,
        checkpointing=checkpointing)


def memory_budget(device: str) -> int:
    """Bytes a run may plan for: ``VERITY_MEMORY_BUDGET_MB`` if set, else the device's free memory
    plus what this process already holds there (the plan counts the loaded weights too)."""
    env = os.environ.get("VERITY_MEMORY_BUDGET_MB")
    if env:
        try:
            mb = float(env)
        except ValueError:
            raise ConfigError(f"VERITY_MEMORY_BUDGET_MB={env!r}: expected a number of MiB") from None
        if mb <= 0:
            raise ConfigError(f"VERITY_MEMORY_BUDGET_MB={env!r}: must be > 0")
        return int(mb * MiB)
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info()
        return int(free + torch.cuda.memory_allocated())
    return _available_ram() + _rss()


def _proc_bytes(path: str, key: str) -> int:
    """A ``key: N kB`` line of a /proc file in bytes (0 where /proc is not there)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _available_ram() -> int:
    avail = _proc_bytes("/proc/meminfo", "MemAvailable:")
    if avail:
        return avail
    try:
        import psutil
    except ImportError:
        raise ConfigError("cannot read the free memory here (no /proc/meminfo, no psutil): "
                          "set VERITY_MEMORY_BUDGET_MB or give --micro-batch-size N") from None
    return int(psutil.virtual_memory().available)


def _rss() -> int:
    return _proc_bytes("/proc/self/status", "VmRSS:")


def pick_micro_batch(shape: ModelShape, budget: int, ceiling: int, **settings: Any) -> int:
    """The largest micro-batch <= ``ceiling`` whose plan fits ``HEADROOM`` of ``budget`` bytes
    (``settings``: :func:`plan_memory`'s other arguments); a one-line error if not even 1 fits."""
    lo, hi = 0, ceiling
    while lo < hi:  # the plan grows with the micro-batch: binary search
        mid = (lo + hi + 1) // 2
        if plan_memory(shape, micro_batch=mid, **settings).total <= HEADROOM * budget:
            lo = mid
        else:
            hi = mid - 1
    if lo == 0:
        need = plan_memory(shape, micro_batch=1, **settings).total
        raise ConfigError(f"--micro-batch-size auto: even 1 sequence needs {need / GiB:.1f} GiB, more than "
                          f"{HEADROOM:.0%} of the {budget / GiB:.1f} GiB available (try LoRA, "
                          f"--gradient-checkpointing on or a shorter --max-tokens)")
    return lo


def pick_decode_batch(shape: ModelShape, budget: int, ceiling: int, **settings: Any) -> int:
    """The largest decode batch <= ``ceiling`` whose KV cache fits beside the resident parts (at least 1)."""
    lo, hi = 1, ceiling
    while lo < hi:
        mid = (lo + hi + 1) // 2
        p = plan_memory(shape, decode_batch=mid, **settings)
        if p.resident + p.sampling + SLACK <= HEADROOM * budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def wants_checkpointing(shape: ModelShape, device: str, budget: int, ceiling: int, **settings: Any) -> bool:
    """``--gradient-checkpointing auto``: on for CUDA devices (activations are what limits the
    micro-batch there), and elsewhere when micro-batches of ``ceiling`` would not fit without it."""
    if device.startswith("cuda"):
        return True
    p = plan_memory(shape, micro_batch=ceiling, checkpointing=False, **settings)
    return p.total > HEADROOM * budget


@dataclass(frozen=True)
class MemorySettings:
    """What ``auto`` resolved to for a run, with the plan it was chosen from."""

    micro_batch: int
    decode_batch: int
    checkpointing: bool
    plan: MemoryPlan
    budget: int
    device: str

    def lines(self) -> list[str]:
        return [f"device {self.device}, budget {self.budget / GiB:.1f} GiB "
                f"({'VERITY_MEMORY_BUDGET_MB' if os.environ.get('VERITY_MEMORY_BUDGET_MB') else 'free memory'}); "
                f"micro-batch {self.micro_batch}, decode batch {self.decode_batch}, "
                f"gradient checkpointing {'on' if self.checkpointing else 'off'}", *self.plan.lines()]


def resolve_settings(shape: ModelShape, device: str, *, micro_batch: int | str, ceiling: int,
                     decode_batch: int | str, decode_ceiling: int, checkpointing: str, seq_len: int,
                     completion_len: int, lora_rank: int, compute_bytes: int, decode_len: int = 0,
                     budget: int | None = None) -> MemorySettings:
    """Resolve ``auto`` micro-batch / decode batch / checkpointing against ``budget`` (default:
    :func:`memory_budget` of ``device``); ``decode_ceiling`` 0 = no sampler (SFT)."""
    budget = memory_budget(device) if budget is None else budget
    common: dict[str, Any] = dict(seq_len=seq_len, completion_len=completion_len, lora_rank=lora_rank,
                                  compute_bytes=compute_bytes, decode_len=decode_len, sampler=decode_ceiling > 0)
    mb_cap = ceiling if micro_batch == "auto" else int(micro_batch)
    ckpt = checkpointing == "on" or (checkpointing == "auto" and
                                     wants_checkpointing(shape, device, budget, mb_cap, **common))
    if decode_ceiling <= 0:
        dec = 0
    elif decode_batch == "auto":
        dec = pick_decode_batch(shape, budget, decode_ceiling, micro_batch=1, checkpointing=ckpt, **common)
    else:
        dec = min(int(decode_batch), decode_ceiling)
    if micro_batch == "auto":
        mb = pick_micro_batch(shape, budget, ceiling, decode_batch=dec, checkpointing=ckpt, **common)
    else:
        mb = int(micro_batch)
    plan = plan_memory(shape, micro_batch=mb, decode_batch=dec, checkpointing=ckpt, **common)
    return MemorySettings(micro_batch=mb, decode_batch=dec, checkpointing=ckpt, plan=plan, budget=budget,
                          device=device)
