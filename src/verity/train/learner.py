"""The learner: forward/backward and optimiser steps on a local torch model, behind a small interface.

:class:`Learner` is what the training loops talk to (Tinker-style ``forward_backward`` +
``optim_step``), so a distributed learner (torchrun/FSDP) or a remote one can replace
:class:`LocalLearner` without touching the loops. ``LocalLearner`` holds the model (with or
without LoRA), AdamW, the LR schedule, and computes token log-probs of completions without
materialising a [B, T, V] log-softmax.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch

from verity.algos.logprobs import entropy_from_logits, selective_log_softmax
from verity.types import Batch

LossFn = Callable[[torch.Tensor, Batch], tuple[torch.Tensor, dict[str, torch.Tensor]]]


class Learner(Protocol):
    def forward_backward(self, batch: Batch, loss_fn: LossFn, scale: float = 1.0) -> dict[str, float]: ...
    def optim_step(self) -> dict[str, float]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def add_lora(model: Any, rank: int, alpha: float | None = None) -> Any:
    """Wrap ``model`` with LoRA adapters on all linear layers (rank 0 = return it unchanged)."""
    if rank <= 0:
        return model
    from peft import LoraConfig, get_peft_model

    # peft annotates lora_alpha as int but only divides by it (scaling = alpha / r): a float alpha is fine
    cfg = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank,  # pyright: ignore[reportArgumentType]
                     lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft reads a property transformers deprecated: noise on every run's stderr
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, cfg)


def lr_lambda(warmup: int, total: int, schedule: str = "constant", floor: float = 0.1,
              decay_steps: int = 0) -> Callable[[int], float]:
    """LR multiplier: linear warm-up, then constant, cosine (to ``floor``), or WSD — constant,
    then linear decay to ``floor`` over the last ``decay_steps`` (Hu et al. 2024, MiniCPM)."""
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "wsd" and decay_steps > 0 and step >= total - decay_steps:
            return floor + (1 - floor) * max(0.0, (total - step) / decay_steps)
        if schedule == "cosine" and total > warmup:
            prog = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * prog))
        return 1.0
    return f


def shared_prefix_index(ids: torch.Tensor, attn: torch.Tensor, C: int,
                        min_saving: float = 0.25) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(first row of each distinct prompt [U], row -> distinct prompt [B]) when sharing pays.

    Rows are ``[pad… prompt | completion …pad]`` (``pack_rows``): the first ``P = L - C`` columns
    are the prompt. Sharing runs U·P + B·C tokens instead of B·(P+C); it is used only when
    that saves at least ``min_saving`` of the work (e.g. GRPO groups of 8 with long prompts).
    """
    B, L = ids.shape
    P = L - C
    if P < 1 or B < 2:
        return None
    key = ids[:, :P] * 2 + attn[:, :P]  # pad columns count too: equal keys = equal prompts
    uniq, inverse = torch.unique(key, dim=0, return_inverse=True)
    U = uniq.shape[0]
    if (1.0 - min_saving) * B * L < U * P + B * C:
        return None
    first = torch.full((U,), B, dtype=torch.long, device=ids.device)
    first.scatter_reduce_(0, inverse, torch.arange(B, device=ids.device), reduce="amin")
    return first, inverse


@contextlib.contextmanager
def _recomputed(mods: list[Any]) -> Iterator[int]:
    """Within the block, each module in ``mods`` keeps only its inputs for backward and recomputes
    its forward there (``torch.utils.checkpoint``, non-reentrant); yields how many it wrapped."""
    from torch.utils.checkpoint import checkpoint

    own = [m.__dict__.get("forward") for m in mods]  # an instance-level forward (hooks) to restore
    for m in mods:
        m.forward = functools.partial(checkpoint, m.forward, use_reentrant=False)
    try:
        yield len(mods)
    finally:
        for m, f in zip(mods, own, strict=True):
            if f is None:
                del m.forward
            else:
                m.forward = f


def recomputed_mlps(model: Any) -> contextlib.AbstractContextManager[int]:
    """Within the block, every module named ``mlp`` (the feed-forward block of each decoder layer
    in Qwen2/Llama-style models) keeps only its input for backward and recomputes its forward
    there (``torch.utils.checkpoint``); yields how many it wrapped.

    The MLP's intermediate activations ([tokens, intermediate] several times per layer) are
    the largest part of a training step's memory on small models; recomputing them costs one
    more MLP forward per step and gives the same gradient bits (same kernels on the same
    inputs, under the same autocast state).
    """
    return _recomputed([m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] == "mlp"])


def decoder_layers(model: Any) -> list[Any]:
    """The decoder layers of a Hugging Face causal LM (``….layers.<i>``), LoRA-wrapped or not."""
    out = []
    for name, m in model.named_modules():
        parts = name.rsplit(".", 2)
        if len(parts) >= 2 and parts[-2] == "layers" and parts[-1].isdigit():
            out.append(m)
    return out


def checkpointed_layers(model: Any) -> contextlib.AbstractContextManager[int]:
    """Gradient checkpointing: within the block each decoder layer keeps only its input hidden
    state ([tokens, hidden]) for backward and recomputes its whole forward there; yields how many
    layers it wrapped.

    Activation memory drops from every layer's intermediates to one [tokens, hidden] tensor per
    layer, for one more forward per step. The recomputation runs the same kernels on the same
    inputs, so the gradients are the same (``tests/test_checkpointing.py`` compares them). A layer
    that writes a KV cache would write it twice, so the shared-prompt forward is not used under it.
    """
    return _recomputed(decoder_layers(model))


class LocalLearner:
    """Trains a model in this process; bf16 autocast where the hardware is fast at it."""

    def __init__(self, model: Any, lr: float, weight_decay: float = 0.0, max_grad_norm: float = 1.0,
                 warmup_steps: int = 0, total_steps: int = 1, schedule: str = "constant",
                 autocast_dtype: torch.dtype | None = None, decay_steps: int = 0):
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.99))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(warmup_steps, total_steps, schedule, decay_steps=decay_steps))
        self.max_grad_norm = max_grad_norm
        self.autocast_dtype = autocast_dtype
        self.device = next(model.parameters()).device
        self.share_prefixes = True
        """Run each distinct prompt once per micro-batch (see :func:`shared_prefix_index`)."""
        self.recompute_mlp = True
        """Recompute each decoder layer's MLP in backward instead of keeping its activations
        (see :func:`recomputed_mlps`)."""
        self.gradient_checkpointing = False
        """Recompute each whole decoder layer in backward (:func:`checkpointed_layers`); it covers
        the MLP recomputation, and the shared-prompt forward is not used under it."""

    def autocast(self) -> Any:
        if self.autocast_dtype is None or self.autocast_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def completion_logprobs(self, batch: Batch, with_entropy: bool = False, disable_adapter: bool = False,
                            share: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs of the completion tokens, [B, C] (and entropy [B, C] if asked).

        The model's logits are the only [B, C, V] tensor: log-probs and entropies are computed
        from them in chunks (:mod:`verity.algos.logprobs`), piece by piece when the shared-prompt
        forward returns them in two pieces, and only the [B, C] results are concatenated.
        """
        C = batch.loss_mask.shape[1]
        ids = batch.input_ids.to(self.device)
        attn = batch.attention_mask.to(self.device)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        ctx = self.model.disable_adapter() if disable_adapter else contextlib.nullcontext()
        with ctx, self.autocast():
            shared = shared_prefix_index(ids, attn, C) if self.share_prefixes and share else None
            pieces = None
            if shared is not None:
                try:
                    pieces = self._shared_prefix_logits(ids, attn, pos, C, *shared)
                except (AttributeError, NotImplementedError, TypeError) as e:  # a cache type without row gather
                    self.share_prefixes = False
                    warnings.warn(f"shared-prompt forward unavailable for this model ({e}); using per-row forward",
                                  stacklevel=2)
            if pieces is None:
                # logits for positions P-1 .. P+C-2 predict completion tokens 0 .. C-1
                out = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False,
                                 logits_to_keep=C + 1)
                pieces = [out.logits[:, :-1]]  # [B, C, V], a view
        target = ids[:, -C:]  # [B, C]
        lps, ents, start = [], [], 0
        for logits in pieces:
            c = logits.shape[1]
            lps.append(selective_log_softmax(logits, target[:, start:start + c]))  # [B, c] float32
            if with_entropy:
                with torch.no_grad():
                    ents.append(entropy_from_logits(logits.detach(), chunk_size=8))
            start += c
        lp = lps[0] if len(lps) == 1 else torch.cat(lps, dim=1)
        ent = None if not ents else ents[0] if len(ents) == 1 else torch.cat(ents, dim=1)
        return lp, ent

    def _shared_prefix_logits(self, ids: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor, C: int,
                              first: torch.Tensor, inverse: torch.Tensor) -> list[torch.Tensor]:
        """Completion logits with each distinct prompt run once (GRPO groups share theirs), in two
        pieces: [B, 1, V] for completion token 0 and [B, C - 1, V] for the rest.

        The prompt's KV cache is built with grad for the U distinct prompts, gathered to the B
        rows, and the completions attend to it: the gradient through the shared keys/values sums
        over the group, exactly as if every row had recomputed the prompt.
        """
        P = ids.shape[1] - C
        pre = self.model(input_ids=ids[first, :P], attention_mask=attn[first, :P], position_ids=pos[first, :P],
                         use_cache=True, logits_to_keep=1)  # U prompts
        cache = pre.past_key_values
        cache.batch_select_indices(inverse)  # [U, H, P, D] -> [B, H, P, D], differentiable gather
        out = self.model(input_ids=ids[:, P:], attention_mask=attn, position_ids=pos[:, P:],
                         past_key_values=cache, use_cache=True, logits_to_keep=C)
        # the last prompt position predicts completion token 0; completion positions 0..C-2 the rest
        return [pre.logits[inverse], out.logits[:, :-1]]

    def recompute(self, mlp: bool | None = None) -> contextlib.AbstractContextManager[Any]:
        """What a forward with grad runs under: every decoder layer recomputed under gradient
        checkpointing, else the MLPs when ``mlp`` (default :attr:`recompute_mlp`), else nothing."""
        if self.gradient_checkpointing:
            return checkpointed_layers(self.model)
        if self.recompute_mlp if mlp is None else mlp:
            return recomputed_mlps(self.model)
        return contextlib.nullcontext()

    def forward_backward(self, batch: Batch, loss_fn: LossFn, scale: float = 1.0) -> dict[str, float]:
        """Accumulate gradients of ``scale × loss_fn(logprobs, batch)``; returns detached metrics."""
        self.model.train()
        with self.recompute():
            lp, ent = self.completion_logprobs(batch, with_entropy=True, share=not self.gradient_checkpointing)
        loss, metrics = loss_fn(lp, batch)
        (loss * scale).backward()
        mask = batch.loss_mask.to(lp.device)
        out = {k: float(v) for k, v in metrics.items()}
        out["loss"] = float(loss.detach())
        if ent is not None and mask.sum() > 0:
            out["entropy"] = float((ent * mask).sum() / mask.sum())
        return out

    def optim_step(self) -> dict[str, float]:
        """Sum gradients over ranks (under torchrun), clip, step AdamW and the LR schedule."""
        from verity.train.dist import all_reduce_grads

        all_reduce_grads(self.params)
        gn = torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm if self.max_grad_norm > 0 else float("inf"))
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"grad_norm": float(gn), "lr": lr}

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
