"""Data-parallel training on several processes (``torchrun``) with PyTorch's DistributedDataParallel.

``torchrun --nproc_per_node N -m deepmargin train ...`` starts N processes; each calls
:func:`init_distributed` (the command line does it), which joins the process group of the
environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``): gloo on CPU, NCCL on CUDA. :func:`deepmargin.training.train` then sees the group
and:

- wraps the model in ``DistributedDataParallel``; every rank starts from the same seeded weights;
- seeds every rank's global generators per epoch with ``seed + rank`` (:func:`~deepmargin.training.trainer.epoch_seed`;
  rank 0 as a single process), so the ranks draw their own crops, adversarial epsilons and
  dropout masks, while the shuffling generator is common to all of them;
- splits every global batch of ``batch_size`` samples (the same seeded order on every rank) into
  ``world_size`` interleaved shards, one per rank; the local loss is scaled by
  ``n_local * world_size / n_global`` so that DDP's average of the ranks' gradients is the
  gradient of the mean over the global batch (exact also for a trailing batch of uneven shards);
- sums the epoch's loss and accuracy counts over the ranks (one all-reduce per epoch, the counts
  stay on the device in between, :mod:`.meters`), so ``metrics.jsonl`` holds the numbers of the
  global batches;
- lets rank 0 alone write config, metrics, checkpoints and results (atomically, as always); every
  rank reads the same ``last.pt`` to resume;
- checks at the end of every epoch, in that same all-reduce, that the loss stayed finite on every
  rank, so a diverging rank stops all of them with the same error instead of leaving the others
  waiting; torchrun stops the other workers when one fails for another reason, and collectives
  time out after ``timeout``.

The margin loss's per-class gradient passes are ``torch.autograd.grad`` calls with respect to
activations or inputs, not parameters: they never reach the parameters' gradient accumulators,
where DDP's all-reduce hooks sit, so the gradients are all-reduced once per step, in the final
``backward``. Equal results to one process hold for losses that are means of per-sample terms on
models without batch norm in training mode; batch norm normalises each rank's shard with its own
statistics and tulip's batch maximum is taken over each rank's shard.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["BACKENDS", "DistContext", "context", "init_distributed", "shard"]

#: Values of ``--dist-backend``.
BACKENDS = ("auto", "gloo", "nccl")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the process group (``world_size == 1`` without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context() -> DistContext:
    """The current process group's rank and size (a single process when none is initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def launched_by_torchrun() -> bool:
    """Whether the environment describes a process group of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(backend: str = "auto", *, device: str = "cpu", timeout_s: float = 600.0) -> DistContext:
    """Join the process group torchrun describes in the environment (no-op for a single process).

    Args:
        backend: ``"auto"`` (NCCL for a CUDA ``device``, else gloo), ``"gloo"`` or ``"nccl"``.
        device: the training device; with CUDA each rank takes ``cuda:LOCAL_RANK``.
        timeout_s: how long a collective waits for the other ranks before failing.

    Returns:
        The :class:`DistContext`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"The 'backend' parameter of init_distributed must be one of {list(BACKENDS)}. Got {backend!r} instead.")
    if not launched_by_torchrun():
        return DistContext()
    if dist.is_initialized():
        return context()
    cuda = str(device).startswith("cuda")
    chosen = ("nccl" if cuda else "gloo") if backend == "auto" else backend
    if chosen == "nccl" and not cuda:
        raise ValueError(f"The nccl backend needs a CUDA device. Got device {device!r}; use --dist-backend gloo on CPU.")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(chosen, timeout=datetime.timedelta(seconds=timeout_s))
    return context()


def local_device(device: torch.device, ctx: DistContext) -> torch.device:
    """``cuda:LOCAL_RANK`` for a CUDA device under a process group; ``device`` otherwise."""
    if ctx.enabled and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def shard(idx: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This rank's share of a global batch: every ``world_size``-th index from ``rank``."""
    return idx[ctx.rank::ctx.world_size] if ctx.enabled else idx


def all_sum(values: list[float], device: torch.device, ctx: DistContext) -> list[float]:
    """``values`` summed over the ranks (unchanged for a single process)."""
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_sum_tensor(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """``values`` (a tensor on this rank's device) summed over the ranks, in place (unchanged for a single process)."""
    if ctx.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def any_rank(flag: bool, device: torch.device, ctx: DistContext) -> bool:
    """Whether ``flag`` holds on at least one rank."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()
