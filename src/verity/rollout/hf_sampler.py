"""In-process sampler for Hugging Face causal LMs: a KV-cached decode loop returning tokens + log-probs.

The loop is deliberately small: one prefill that keeps only the last position's logits,
then one forward per new token with the KV cache, temperature / top-p sampling from a
seeded generator (or one generator per row when rows carry their own seeds, as batched server
requests do), and the sampling log-prob of each chosen token (plus the top-k alternatives when
``SamplingArgs.top_logprobs`` asks for them); the loop itself (no host sync between checks of the
batch) is :mod:`verity.rollout.decode`. Prompts are sorted by
length and left-padded into batches so padding stays small. Generation runs in a worker
thread, so the event loop (the server, async environments) stays responsive.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from verity.rollout.decode import GREEDY_BELOW
from verity.types import ChatOrText, Completion, FinishReason, SamplingArgs, check_context


class HFSampler:
    """Samples from a ``transformers`` causal LM held in this process."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 64, name: str | None = None,
                 autocast_dtype: Any = None, check_every: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.name = name or getattr(model.config, "_name_or_path", "local-model")
        self.autocast_dtype = autocast_dtype
        #: Decode tokens between two host checks of the batch (stop, compaction); None: every token on a
        #: CPU (same outputs as before, finished rows leave at once), every 16 on an accelerator.
        self.check_every = check_every
        self._lock = threading.Lock()
        self.eos_ids = stop_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        #: Context window in tokens (prompt + completion), None when the config does not say.
        self.context: int | None = getattr(model.config, "max_position_embeddings", None)

    @classmethod
    def from_pretrained(cls, name: str, batch_size: int = 64, dtype: str = "auto", device: str = "auto",
                        chat_template: str | None = None,
                        template_kwargs: Mapping[str, Any] | None = None) -> HFSampler:
        from verity.models.loading import configure_chat, load_model

        model, tok = load_model(name, dtype=dtype, device=device)
        return cls(model, configure_chat(tok, chat_template, template_kwargs), batch_size=batch_size, name=name)

    def render(self, prompt: ChatOrText, tools: Sequence[Mapping[str, Any]] | None = None) -> list[int]:
        """Prompt token ids through the tokenizer's chat template (tools offered when given); plain
        text (completion mode) is tokenized as is."""
        if isinstance(prompt, str):
            return list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        from verity.models.chat import render

        return render(self.tokenizer, prompt, tools)

    async def generate(self, prompts: Sequence[ChatOrText], args: SamplingArgs,
                       tools: Sequence[Mapping[str, Any]] | None = None) -> list[Completion]:
        return await asyncio.to_thread(self.generate_sync, prompts, args, tools)

    def generate_sync(self, prompts: Sequence[ChatOrText], args: SamplingArgs,
                      tools: Sequence[Mapping[str, Any]] | None = None) -> list[Completion]:
        rendered = [self.render(p, tools) for p in prompts]
        return self.generate_ids(rendered, args)

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], args: SamplingArgs,
                     seeds: Sequence[int] | None = None) -> list[Completion]:
        """Sample one completion per tokenised prompt (sorted into length buckets).

        With ``seeds`` (one per prompt) each row samples from its own generator, so a row's
        completion does not depend on what else is in the batch; otherwise one generator seeded
        with ``args.seed`` serves the whole call. A prompt that leaves no room for
        ``args.max_tokens`` in the context window is a :class:`~verity.errors.ContextLengthError`,
        raised before anything is generated.
        """
        import torch

        if not prompt_ids:
            return []
        if seeds is not None and len(seeds) != len(prompt_ids):
            raise ValueError(f"{len(seeds)} seeds for {len(prompt_ids)} prompts")
        check_context(max(len(p) for p in prompt_ids), args.max_tokens, self.context)
        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
        out: list[Completion | None] = [None] * len(prompt_ids)
        dev = next(self.model.parameters()).device  # generators live on the decode device: no host draws
        gen = _seeded(args.seed if args.seed is not None else int(torch.randint(0, 2**31 - 1, (1,))), dev)
        with self._lock:
            model = self._sampling_model()
            for s in range(0, len(order), self.batch_size):
                idx = order[s:s + self.batch_size]
                t0 = time.perf_counter()
                row_gen = gen if seeds is None else [_seeded(seeds[i], dev) for i in idx]
                done = self._decode(model, [prompt_ids[i] for i in idx], args, row_gen)
                dt = time.perf_counter() - t0
                for i, d in zip(idx, done, strict=True):
                    out[i] = self._completion(prompt_ids[i], d, args, dt)
        return out  # type: ignore[return-value]

    def _sampling_model(self) -> Any:
        """The weights to sample with: the model itself, or a low-precision copy synced from it.

        A training model keeps fp32 master weights; sampling it under autocast re-casts every
        weight at every op. Instead the sampler keeps its own bf16 copy and syncs it from the
        learner's weights once per call (in-process "weight sync"; an inference server would
        receive the same tensors). A LoRA model's copy has its adapters merged
        (:mod:`verity.rollout.weights`).
        """
        from verity.rollout.weights import sampling_copy, sync_copy

        params = list(self.model.parameters())
        if self.autocast_dtype is None or params[0].dtype == self.autocast_dtype:
            return self.model
        if getattr(self, "_shadow", None) is None:
            self._shadow = sampling_copy(self.model, self.autocast_dtype)
        sync_copy(self._shadow, self.model)
        return self._shadow

    def generate_continuous(self, prompt_ids: Sequence[Sequence[int]], args: SamplingArgs,
                            seeds: Sequence[int] | None, admit: Any, on_tokens: Any = None) -> list[Completion]:
        """One batch that other rows join while it decodes (continuous batching, as the server uses it).

        ``admit(n_live)`` is called between decode steps; it returns ``(prompt_ids, seed)`` pairs of
        rows that join now (seed None when greedy), or nothing. ``on_tokens(rows, tok, valid)`` sees
        every step's tokens (device tensors; row numbers count the initial prompts, then the joined
        rows in order). Returns one completion per row in that order.
        """

        if seeds is not None and len(seeds) != len(prompt_ids):
            raise ValueError(f"{len(seeds)} seeds for {len(prompt_ids)} prompts")
        check_context(max(len(p) for p in prompt_ids), args.max_tokens, self.context)
        dev = next(self.model.parameters()).device
        if args.temperature >= GREEDY_BELOW and seeds is None:
            raise ValueError("continuous batching samples each row from its own seed")
        prompts: list[Sequence[int]] = [list(p) for p in prompt_ids]  # _decode appends the rows that join
        with self._lock:
            t0 = time.perf_counter()
            gen = [] if seeds is None else [_seeded(s, dev) for s in seeds]
            done = self._decode(self._sampling_model(), prompts, args, gen, admit=admit, on_tokens=on_tokens)
            dt = time.perf_counter() - t0
        return [self._completion(p, d, args, dt) for p, d in zip(prompts, done, strict=True)]

    def _completion(self, prompt: Sequence[int], done: tuple[list[int], list[float], tuple[Any, ...], FinishReason],
                    args: SamplingArgs, dt: float) -> Completion:
        ids, lps, top, finish = done
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        text, ids, lps, finish = _apply_stop(text, ids, lps, finish, args.stop, self.tokenizer)
        return Completion(text=text, finish_reason=finish, prompt_ids=tuple(prompt), completion_ids=tuple(ids),
                          logprobs=tuple(lps), latency_s=dt,
                          usage={"prompt_tokens": len(prompt), "completion_tokens": len(ids)},
                          top_logprobs=top[:len(ids)])

    def _decode(self, model: Any, prompts: list[Sequence[int]], args: SamplingArgs, gen: Any,
                admit: Any = None, on_tokens: Any = None,
                ) -> list[tuple[list[int], list[float], tuple[Any, ...], FinishReason]]:
        """(token ids, log-probs, top log-probs, finish reason) per prompt; ``gen`` is one
        generator for all rows or a list with one per row (see :func:`~verity.rollout.decode.decode_loop`).
        With ``admit`` (see :meth:`generate_continuous`) rows join between steps; ``prompts`` and
        ``gen`` are extended with them."""
        import torch

        from verity.rollout.decode import CHECK_EVERY_ACCELERATOR, decode_loop, results
        from verity.rollout.joins import can_join, join_rows

        dev = next(model.parameters()).device
        # Identical prompts (a GRPO group) are prefilled once; their KV rows are then repeated.
        uniq: dict[tuple[int, ...], int] = {}
        inverse = [uniq.setdefault(tuple(p), len(uniq)) for p in prompts]
        B, U, P = len(prompts), len(uniq), max(len(p) for p in prompts)
        T = args.max_tokens
        input_ids = torch.full((U, P), self.pad_id, dtype=torch.long)
        attn = torch.zeros((U, P + T), dtype=torch.long)  # room for every decode step: no growing mask
        for u, p in enumerate(uniq):  # left padding
            input_ids[u, P - len(p):] = torch.tensor(p, dtype=torch.long)
            attn[u, P - len(p):] = 1
        attn[:, P:] = 1  # the decode steps' columns, read up to the current step
        input_ids, attn = input_ids.to(dev), attn.to(dev)
        pos = (attn[:, :P].cumsum(-1) - 1).clamp(min=0)
        eos = torch.tensor(self.eos_ids, device=dev)
        was_training = model.training
        model.eval()
        ckw = _cache_kwarg(model)
        check = self.check_every or (1 if dev.type == "cpu" else CHECK_EVERY_ACCELERATOR)
        try:
            with torch.inference_mode():
                out = model(input_ids=input_ids, attention_mask=attn[:, :P], position_ids=pos, use_cache=True,
                            logits_to_keep=1)
                st = {"past": _get_cache(out), "attn": attn, "pos": pos[:, -1:], "n": P,
                      "first": [P - len(p) for p in prompts]}
                logits = out.logits[:, -1]
                if U < B:
                    expand = torch.tensor(inverse, device=dev)
                    _select_rows(st["past"], expand)
                    logits, st["attn"], st["pos"] = logits[expand], attn[expand], st["pos"][expand]
                _set_attn(model, decode_attention_for(model, dev.type))
                _preallocate(st["past"], T)

                def step(tok: Any) -> Any:
                    st["n"] += 1
                    st["pos"] = st["pos"] + 1
                    o = model(input_ids=tok[:, None], attention_mask=st["attn"][:, :st["n"]], position_ids=st["pos"],
                              use_cache=True, **{ckw: st["past"]})
                    st["past"] = _get_cache(o)
                    return o.logits[:, -1]

                def compact(keep: Any) -> None:
                    st["attn"], st["pos"] = st["attn"][keep], st["pos"][keep]
                    _select_rows(st["past"], keep)
                    if admit is not None:
                        st["first"] = [st["first"][i] for i in keep.tolist()]

                def join(n_live: int) -> Any:
                    new = admit(n_live) if can_join(st["past"]) else None
                    if not new:
                        return None
                    prompts.extend(p for p, _ in new)
                    gens = [_seeded(seed, dev) for _, seed in new if seed is not None]
                    return join_rows(model, st, [p for p, _ in new], T, self.pad_id), gens

                rows = decode_loop(step, logits, B, args, gen, eos, self.pad_id, check, compact,
                                   admit=None if admit is None else join, on_tokens=on_tokens)
        finally:
            _set_attn(model, None)
            if was_training:
                model.train()
        return results(rows, args.top_logprobs)


def stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """Token ids that end a completion: the tokenizer's EOS, ``generation_config``'s EOS, and the
    chat template's end-of-turn token(s) (``<|im_end|>``, ``<|eot_id|>``, ... — a base checkpoint's
    EOS is end-of-text, so without them rollouts would run past the end of the turn)."""
    from verity.models.chat import end_of_turn_ids

    eos = tokenizer.eos_token_id
    extra = getattr(model.generation_config, "eos_token_id", None) if hasattr(model, "generation_config") else None
    ids = {eos} if isinstance(eos, int) else set(eos or [])
    ids |= {extra} if isinstance(extra, int) else set(extra or [])
    ids |= set(end_of_turn_ids(tokenizer))
    return sorted(i for i in ids if i is not None)


def _preallocate(cache: Any, extra: int) -> None:
    """Give each layer of a DynamicCache room for ``extra`` more positions, written in place.

    The stock DynamicLayer concatenates on every decode step, copying the whole cache each
    time (the largest cost of CPU decoding here); this writes into a preallocated buffer.
    """
    from transformers.cache_utils import DynamicLayer

    prealloc = _prealloc_cls()
    for layer in getattr(cache, "layers", []):
        keys = getattr(layer, "keys", None)
        if type(layer) is DynamicLayer and keys is not None and keys.dim() == 4:
            layer.__class__ = prealloc
            prealloc.reserve(layer, extra)


def _prealloc_layer_class() -> Any:
    from transformers.cache_utils import DynamicLayer

    class PreallocLayer(DynamicLayer):
        """A DynamicLayer whose keys/values are views into a buffer with spare capacity."""

        def reserve(self, extra: int) -> None:
            keys, values = self.keys, self.values
            if keys is None or values is None:
                raise RuntimeError("PreallocLayer.reserve: the layer holds no keys/values yet")
            B, H, L, D = keys.shape
            # zero-filled: _decode_attention reads the spare positions (masked out, finite)
            self._k = keys.new_zeros(B, H, L + extra, D)
            self._v = values.new_zeros(B, H, L + extra, D)
            self._k[:, :, :L], self._v[:, :, :L] = keys, values
            self._n = L
            self._view()

        def _view(self) -> None:
            self.keys, self.values = self._k[:, :, : self._n], self._v[:, :, : self._n]

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
            n = key_states.shape[-2]
            if self._n + n > self._k.shape[-2]:
                return super().update(key_states, value_states, *args, **kwargs)
            self._k[:, :, self._n:self._n + n] = key_states
            self._v[:, :, self._n:self._n + n] = value_states
            self._n += n
            self._view()
            return self.keys, self.values

        def batch_select_indices(self, indices: Any) -> None:
            self._k, self._v = self._k[indices], self._v[indices]
            self._view()

    return PreallocLayer


def _set_attn(model: Any, impl: str | None) -> None:
    """Switch the attention implementation (None = restore the one the model was loaded with)."""
    base = getattr(model, "get_base_model", lambda: model)()
    cfg = base.config
    if impl is None:
        impl = getattr(base, "_verity_attn", None)
        if impl is None:
            return
    elif not hasattr(base, "_verity_attn"):
        base._verity_attn = cfg._attn_implementation
    if cfg._attn_implementation != impl:
        with contextlib.suppress(AttributeError, ValueError):
            base.set_attn_implementation(impl)


def _decode_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                      scaling: float, dropout: float = 0.0, **kwargs: Any) -> tuple[Any, Any]:
    """Attention for one new query token over the preallocated KV cache (CPU decode only).

    Shapes: query [B, H, 1, D]; key/value [B, H, L, D], views of a zero-filled [B, H, Lmax, D]
    buffer (``PreallocLayer``); attention_mask [B, 1, 1, L] additive. A matmul on the
    non-contiguous L-slice copies the whole cache at every layer and step; attending over the
    contiguous Lmax buffer with positions >= L masked out is ~3× faster here despite the extra
    columns. Any other layout or shape falls back to eager attention.
    """
    import torch
    from transformers.models.qwen2.modeling_qwen2 import eager_attention_forward

    B, H, Q, _ = query.shape
    full = _whole_buffer(key), _whole_buffer(value)
    special = any(kwargs.get(k) is not None for k in ("sliding_window", "softcap", "s_aux"))
    if Q != 1 or key.shape[1] != H or module.training or special or full[0] is None or full[1] is None:
        return eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    k, v = full
    L, Lmax = key.shape[2], k.shape[2]
    w = torch.matmul(query, k.transpose(2, 3)) * scaling  # [B, H, 1, Lmax]
    pad = w.new_full((1, 1, 1, Lmax - L), torch.finfo(w.dtype).min)
    mask = pad.expand(B, 1, 1, -1) if attention_mask is None else torch.cat(
        [attention_mask[..., :L].to(w.dtype), pad.expand(attention_mask.shape[0], 1, 1, -1)], dim=-1)
    w = (w + mask).float().softmax(dim=-1).to(query.dtype)
    return torch.matmul(w, v).transpose(1, 2), None  # [B, 1, H, D]


def _whole_buffer(x: Any) -> Any:
    """The [B, H, Lmax, D] buffer that the [B, H, L, D] view ``x`` slices, or None if ``x`` is not
    such a view (checked against its strides and its storage's size)."""
    B, H, L, D = x.shape
    s0, s1, s2, s3 = x.stride()
    if s3 != 1 or s2 != D or s1 % D or s0 != H * s1 or s1 // D <= L:
        return None
    lmax = s1 // D
    need = (x.storage_offset() + (B - 1) * s0 + (H - 1) * s1 + lmax * D) * x.element_size()
    if need > x.untyped_storage().nbytes():
        return None
    return x.as_strided((B, H, lmax, D), (s0, s1, s2, s3))


# Architectures whose eager attention is exactly Qwen2's (scaled dot product, additive mask, GQA
# by repeat): the only ones the decode fast path is used for; others keep their own eager code.
_PLAIN_ATTENTION = {"qwen2", "qwen3", "llama"}


def _decode_attention_name(model: Any) -> str:
    """Register :func:`_decode_attention` with transformers once (eager masks); its name, or
    "eager" for architectures outside ``_PLAIN_ATTENTION``."""
    base = getattr(model, "get_base_model", lambda: model)()
    if getattr(base.config, "model_type", None) not in _PLAIN_ATTENTION:
        return "eager"
    return _register_decode_attention()


def decode_attention_for(model: Any, device_type: str) -> str | None:
    """The attention implementation decode steps use (None: the model's own).

    On a CPU, :func:`_decode_attention` (for one query token, plain batched matmuls beat SDPA's
    CPU kernel). Elsewhere SDPA with an additive mask built without looking at its values:
    transformers' SDPA mask reads ``padding_mask.all()`` on the host at every forward (to skip the
    mask when nothing is padded), a device sync per decode token.
    """
    if device_type == "cpu":
        return _decode_attention_name(model)
    base = getattr(model, "get_base_model", lambda: model)()
    if getattr(base.config, "model_type", None) not in _PLAIN_ATTENTION:
        return None
    return _register_sdpa_no_sync()


@functools.cache
def _register_sdpa_no_sync() -> str:
    name = "verity_sdpa"
    try:
        from transformers import AttentionInterface
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        from transformers.masking_utils import AttentionMaskInterface, eager_mask
    except ImportError:  # older transformers: the model's own attention
        return "sdpa"
    AttentionInterface.register(name, sdpa_attention_forward)
    AttentionMaskInterface.register(name, eager_mask)
    return name


@functools.cache
def _register_decode_attention() -> str:
    name = "verity_decode"
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, eager_mask
    except ImportError:  # older transformers: plain eager
        return "eager"
    AttentionInterface.register(name, _decode_attention)
    AttentionMaskInterface.register(name, eager_mask)
    return name


def _select_rows(cache: Any, keep: Any) -> None:
    """Keep only rows ``keep`` of a KV cache (DynamicCache or legacy tuple-of-tuples)."""
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(keep)
    else:  # pragma: no cover - legacy caches
        raise TypeError(f"cannot select rows of a {type(cache).__name__}")


def _cache_kwarg(model: Any) -> str:
    """Name of the KV-cache argument: ``cache`` in newer transformers, ``past_key_values`` before."""
    import inspect

    base = getattr(model, "get_base_model", lambda: model)()
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _get_cache(out: Any) -> Any:
    c = getattr(out, "cache", None)
    return c if c is not None else out.past_key_values


_PREALLOC: list[Any] = []


def _prealloc_cls() -> Any:
    """The PreallocLayer class, built on first use (importing this module must not import transformers)."""
    if not _PREALLOC:
        _PREALLOC.append(_prealloc_layer_class())
    return _PREALLOC[0]


def _seeded(seed: int, device: Any = "cpu") -> Any:
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def _apply_stop(text: str, ids: list[int], lps: list[float], finish: FinishReason, stop: Sequence[str],
                tok: Any) -> tuple[str, list[int], list[float], FinishReason]:
    """Cut the completion at the first stop string (tokens are trimmed to match)."""
    if not stop:
        return text, ids, lps, finish
    cut = min((text.find(s) for s in stop if s in text), default=-1)
    if cut < 0:
        return text, ids, lps, finish
    text = text[:cut]
    keep = len(ids)
    while keep > 0 and len(tok.decode(ids[:keep], skip_special_tokens=True)) > cut + max(len(s) for s in stop):
        keep -= 1
    return text, ids[:keep], lps[:keep], "stop"
