"""Data-parallel training under ``torchrun``: process group, batch sharding, gradient all-reduce.

``torchrun --nproc_per_node P -m verity train …`` starts P processes with ``RANK``/``WORLD_SIZE``
set; :func:`init_distributed` joins them (gloo on CPU, NCCL on GPU, each rank on
``cuda:LOCAL_RANK``). The trainers split each step's global batch into P contiguous shards
(:func:`shard_range`); after the backward passes :func:`all_reduce_grads` *sums* the gradients,
because every rank's loss is already its share of the global-batch loss (normalised by
global counts), so the summed gradient is the single-process gradient of the same batch.
Outside torchrun every function here is a no-op and the single-process path is unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import torch

from verity.errors import ConfigError

T = TypeVar("T")
_OWNED = False  # True when init_distributed created the process group (so finish_distributed ends it)


def is_distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def init_distributed() -> int:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (idempotent); returns the world size."""
    global _OWNED
    import torch.distributed as dist

    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        return world_size()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    use_cuda = torch.cuda.is_available()
    if use_cuda:  # more ranks than GPUs share them (NCCL refuses that; gloo accepts it)
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    backend = os.environ.get("VERITY_DIST_BACKEND") or ("nccl" if use_cuda else "gloo")
    dist.init_process_group(backend=backend)
    _OWNED = True
    return dist.get_world_size()


def finish_distributed() -> None:
    """Leave the process group that :func:`init_distributed` joined (end of a CLI run)."""
    global _OWNED
    import torch.distributed as dist

    if _OWNED and dist.is_initialized():
        dist.destroy_process_group()
    _OWNED = False


def run_and_leave(fn: Callable[[], T]) -> tuple[T, bool]:
    """``fn()``, then leave the process group (also on error); returns (result, is this rank 0)."""
    try:
        return fn(), rank() == 0
    finally:
        finish_distributed()


def shard_range(n: int, size: int | None = None, at: int | None = None) -> tuple[int, int]:
    """``[lo, hi)`` of rank ``at``'s contiguous share of ``n`` items (n must divide evenly)."""
    size = world_size() if size is None else size
    at = rank() if at is None else at
    if n % size:
        raise ConfigError(f"{n} items do not split evenly over {size} ranks")
    k = n // size
    return at * k, (at + 1) * k


def _device() -> torch.device:
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_grads(params: Sequence[torch.Tensor]) -> None:
    """Sum the gradients of ``params`` over ranks (a missing gradient counts as zeros), in one flat buffer."""
    if not is_distributed():
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    # gloo reduces on the CPU: CUDA gradients make the round trip
    flat = torch.cat([p.grad.reshape(-1) for p in params]).to(_device())  # pyright: ignore[reportOptionalMemberAccess]
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    off = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[off:off + n].view_as(p))  # pyright: ignore[reportOptionalMemberAccess]
        off += n


def broadcast_params(params: Iterable[torch.Tensor]) -> None:
    """Copy rank 0's values of ``params`` to every rank (identical starting weights)."""
    if not is_distributed():
        return
    import torch.distributed as dist

    for p in params:
        buf = p.data.to(_device())
        dist.broadcast(buf, src=0)
        p.data.copy_(buf)


def all_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64, so counts and loss sums stay exact)."""
    if not is_distributed():
        return [float(v) for v in values]
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's equally-shaped ``t`` along dim 0, in rank order."""
    if not is_distributed():
        return t
    import torch.distributed as dist

    src = t.to(_device())
    out = [torch.empty_like(src) for _ in range(world_size())]
    dist.all_gather(out, src)
    return torch.cat(out).to(t.device)


def all_gather_list(items: list[Any]) -> list[Any]:
    """Concatenate every rank's list of picklable objects, in rank order."""
    if not is_distributed():
        return items
    import torch.distributed as dist

    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, items)
    return [x for part in out for x in part]


def barrier() -> None:
    if is_distributed():
        import torch.distributed as dist

        dist.barrier()
