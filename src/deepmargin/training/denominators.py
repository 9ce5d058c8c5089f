"""Margin denominators cached for a few epochs and refreshed on a schedule (``denominator_refresh``).

Under the paper's first-order approximation (Elsayed et al. 2018, Sec. 4.1) the denominators of
the large-margin loss, ``G[n, i, l] = ||grad_{h_l}(s_y - s_i)(x_n)||_q / w_l``, are constants for
backpropagation. With ``TrainConfig.denominator_refresh = R > 0`` the trainer keeps them for every
training sample ``n``, every class ``i`` and every margin layer ``l`` (a ``(N, C, L)`` table in the
training dtype, the dtype of the model's parameters: ``4 N C L`` bytes in float32, twice that in
float64, whose runs keep their precision) and:

- recomputes the whole table at the start of epochs ``1, 1 + R, 1 + 2R, ...`` (the schedule depends
  on the epoch number only), with the model in **eval mode**: dropout off and batch norm on its
  running statistics, so each sample's denominators do not depend on the batch it was computed in
  nor on a random mask that would then be frozen for ``R`` epochs, and the refresh leaves the batch
  norm statistics untouched. A refresh costs one forward pass and ``C - 1`` activation-gradient
  passes per training sample (no parameter gradients, no graph kept): about an epoch of
  ``top_k = C - 1`` steps without their parameter backward. It runs ``batch_size`` samples at a
  time, so its peak memory stays near a training step's (and, unlike ``eval_batch_size``, which may
  change on resume, the batch size is part of the run, so a resumed run refreshes identically);
- in every step in between, computes the loss from one forward pass in training mode: the rival
  classes (the ``top_k`` highest current scores) and the numerators ``s_y - s_i`` come from the
  current logits, the denominators from the table (rows of the batch's sample indices), so a step
  costs about a cross-entropy step (:func:`deepmargin.losses.large_margin.large_margin_loss_from_norms`).

At ``R = 1`` the table is recomputed every epoch but still held fixed within it. A step equals the
exact first-order step when the table was computed at the same weights in the same mode (tested);
otherwise the denominators are up to ``R`` epochs old. The table is saved in ``last.pt``
(``extra["margin_denominators"]``), so a resumed run reads the same denominators as an
uninterrupted one. The validation loss (``val_loss``) is still the exact objective.

Size (float32): ``4 N C L`` bytes, e.g. 9 MB for MNIST (55 000 x 10 x 4), 10 MB for CIFAR-10 with the wide
ResNet's 5 layers, but 25.6 GB for ImageNet (1.28 M x 1000 x 5), whose refresh would also take 999
gradient passes per sample: there (and whenever ``top_k`` is far below ``C - 1``) use the exact
step. A table above 1 GiB is announced with a warning.

With several processes (DDP) each rank refreshes every ``world_size``-th sample, after taking rank
0's buffers (batch norm statistics), and the slices are summed over the ranks, so every rank holds
the same table; the steps look up the rows of the local shard.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch import Tensor, nn

from ..capture import eval_mode
from .config import TrainConfig

__all__ = ["CHECKPOINT_KEY", "DenominatorCache", "build_denominator_cache", "margin_criterion"]

logger = logging.getLogger(__name__)

#: The key of the table in a checkpoint's ``extra``.
CHECKPOINT_KEY = "margin_denominators"

_WARN_BYTES = 1 << 30


def margin_criterion(config: TrainConfig, model: nn.Module, layers: list[str]) -> Any:
    """The criterion of ``config``'s loss (a loss with cached denominators: ``margin``) on ``model``
    and ``layers``: what :func:`deepmargin.training.build_objective` builds, by the same registry entry."""
    from ..losses.registry import loss_options_of, loss_spec

    return loss_spec(config.loss).build(model, {**loss_options_of(config), "layers": list(layers)})


class DenominatorCache:
    """The ``(N, C, L)`` table of margin denominators, its refresh schedule and the cached step.

    Args:
        refresh_criterion: the margin criterion on the plain model (runs the refresh passes).
        step_criterion: the same criterion on the model the training steps run (the DDP wrapper
            under several processes, else the plain model).
        every: ``R``, refresh at the start of epochs ``1, 1 + R, 1 + 2R, ...``.
        num_samples: ``N``, the number of training samples (indices ``0 .. N - 1``).

    Attributes:
        table: the ``(N, C, L)`` table in the model's parameter dtype, ``None`` before the first refresh
            (or load).
        refreshes: how many refreshes this object has run.
    """

    def __init__(self, refresh_criterion: Any, step_criterion: Any, *, every: int, num_samples: int) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"The 'every' parameter of DenominatorCache must be an int >= 1. Got {every!r} instead.")
        self.refresh_criterion = refresh_criterion
        self.step_criterion = step_criterion
        self.every = every
        self.num_samples = int(num_samples)
        self.table: Tensor | None = None
        self.refreshes = 0

    def due(self, epoch: int) -> bool:
        """Whether the table is recomputed at the start of ``epoch`` (1-based): epochs 1, 1 + R, ..."""
        return (epoch - 1) % self.every == 0

    def prepare(self, epoch: int, model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int, ctx: Any = None) -> bool:
        """Refresh the table when ``epoch`` is due; return whether it did.

        Raises:
            ValueError: ``epoch`` is not due and there is no table (a resumed run whose checkpoint
                lacks it: its denominators are gone, the run cannot continue as it would have).
        """
        if self.due(epoch):
            self.refresh(model, x, y, batch_size=batch_size, ctx=ctx)
            return True
        if self.table is None:
            raise ValueError(
                f"The margin denominators of epoch {epoch} were computed at the start of epoch "
                f"{epoch - (epoch - 1) % self.every}, but the checkpoint holds no '{CHECKPOINT_KEY}' table, so the "
                "run cannot continue as it would have. Start it again (--overwrite) or resume from a checkpoint "
                "written by the same version."
            )
        return False

    @torch.no_grad()
    def _sync_buffers(self, model: nn.Module, ctx: Any) -> None:
        import torch.distributed as dist

        for buf in model.buffers():
            dist.broadcast(buf, 0)

    def refresh(self, model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int, ctx: Any = None) -> Tensor:
        """Recompute the table for all ``N`` samples ``(x, y)``, in eval mode, ``batch_size`` at a time.

        Each module's own mode is restored afterwards (:func:`deepmargin.capture.eval_mode`); no
        random numbers are drawn.
        """
        if len(y) != self.num_samples:
            raise ValueError(f"The 'y' parameter of DenominatorCache.refresh must hold the {self.num_samples} training "
                             f"samples the cache was built for. Got {len(y)} instead.")
        distributed = ctx is not None and ctx.enabled
        if distributed:
            self._sync_buffers(model, ctx)
        tic = time.perf_counter()
        dtype = _parameter_dtype(model)
        with eval_mode(model):
            mine = torch.arange(self.num_samples, device=y.device)
            if distributed:
                mine = mine[ctx.rank::ctx.world_size]
            table = None
            for start in range(0, len(mine), batch_size):
                idx = mine[start:start + batch_size]
                part = self.refresh_criterion.rival_grad_norms(x[idx], y[idx]).to(dtype)
                if table is None:
                    table = torch.zeros(self.num_samples, *part.shape[1:], dtype=part.dtype, device=part.device)
                table[idx] = part
            if table is None:  # a rank without samples still takes part in the sum
                part = self.refresh_criterion.rival_grad_norms(x[:1], y[:1]).to(dtype)
                table = torch.zeros(self.num_samples, *part.shape[1:], dtype=part.dtype, device=part.device)
        if distributed:
            import torch.distributed as dist

            dist.all_reduce(table, op=dist.ReduceOp.SUM)
        size = table.numel() * table.element_size()
        if self.table is None and size > _WARN_BYTES:
            logger.warning("the margin denominator cache takes %.1f GiB (%d samples x %d classes x %d layers, %s)",
                           size / 2**30, *table.shape, str(table.dtype).removeprefix("torch."))
        self.table = table
        self.refreshes += 1
        logger.debug("refreshed the margin denominators of %d samples in %.2fs", self.num_samples,
                     time.perf_counter() - tic)
        return table

    def step(self, x: Tensor, y: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        """``(loss, logits)`` of the training batch ``(x, y)`` of sample indices ``idx``, with the
        denominators read from the table (one forward pass)."""
        if self.table is None:
            raise RuntimeError("DenominatorCache.step needs a table: call refresh (or prepare) first.")
        return self.step_criterion(x, y, grad_norms=self.table[idx])

    def state(self) -> dict[str, Tensor]:
        """What goes into the checkpoint's ``extra`` (nothing before the first refresh)."""
        return {} if self.table is None else {CHECKPOINT_KEY: self.table}

    def load(self, table: Tensor | None, *, device: torch.device | None = None) -> None:
        """Take a table saved by :meth:`state` (``None``: nothing saved)."""
        if table is None:
            return
        if table.dim() != 3 or table.shape[0] != self.num_samples or table.shape[2] != len(self.refresh_criterion.layers):
            raise ValueError(
                f"The margin denominators in the checkpoint have shape {tuple(table.shape)}, not "
                f"({self.num_samples}, C, {len(self.refresh_criterion.layers)}) for this run's training samples and "
                "layers; the run cannot be resumed with this data."
            )
        dtype = _parameter_dtype(getattr(self.refresh_criterion, "model", None))
        self.table = table.to(device=device if device is not None else table.device, dtype=dtype)


def _parameter_dtype(model: nn.Module | None) -> torch.dtype:
    """The dtype the model trains in: that of its first floating parameter (float32 without one)."""
    if isinstance(model, nn.Module):
        for p in model.parameters():
            if p.is_floating_point():
                return p.dtype
    return torch.float32


def build_denominator_cache(
    config: TrainConfig, model: nn.Module, net: nn.Module, layers: list[str] | None, num_samples: int
) -> DenominatorCache | None:
    """The cache of ``config`` (``None`` when ``config.denominator_refresh`` is 0).

    Args:
        config: the run configuration (validated: margin loss, first order, no augmentation).
        model: the plain model (refresh passes).
        net: the model the training steps run (``model``, or its DDP wrapper).
        layers: the resolved margin layers.
        num_samples: the number of training samples.
    """
    if not config.denominator_refresh:
        return None
    if layers is None:
        raise ValueError("build_denominator_cache needs the margin layers (loss='margin').")
    return DenominatorCache(margin_criterion(config, model, layers), margin_criterion(config, net, layers),
                            every=config.denominator_refresh, num_samples=num_samples)
