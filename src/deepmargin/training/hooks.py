"""Work between the epochs: one object per job, behind one interface.

A hook is told when an epoch starts (:meth:`EpochHook.on_epoch_start`, timed with the epoch) and
when its training steps are done (:meth:`EpochHook.on_epoch_end`, after the validation pass); the
end may add fields to the epoch's metrics row and ask to stop training. :meth:`EpochHook.state`
holds the tensors a resumed run needs (saved in ``last.pt``'s ``extra``) and
:meth:`EpochHook.load_state` takes them back.

- :class:`ReweightingRounds`: the dual reweighting loop of a loss like ``kesidis``
  (:mod:`.reweight`): the per-sample weights, the ``violated`` column and the early stop.
- :class:`DenominatorRefresh`: the margin-denominator cache of ``denominator_refresh``
  (:mod:`.denominators`), recomputed at the start of epochs 1, 1 + R, ...

:func:`build_hooks` is the only place that maps a configuration to hooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .config import TrainConfig
from .denominators import CHECKPOINT_KEY as DENOMINATORS_KEY, DenominatorCache, build_denominator_cache
from .reweight import Reweighting, training_margins

__all__ = ["DenominatorRefresh", "EpochEnd", "EpochHook", "ReweightingRounds", "build_hooks"]

#: The key of the reweighting loop's weights in a checkpoint's ``extra``.
WEIGHTS_KEY = "sample_weights"


@dataclass
class EpochEnd:
    """What a hook reports at the end of an epoch.

    Attributes:
        fields: values for the epoch's metrics row (keys of ``METRIC_COLUMNS``).
        stop: why training ends after this epoch (``None``: it goes on).
    """

    fields: dict[str, Any] = field(default_factory=dict)
    stop: str | None = None


class EpochHook:
    """The interface of the between-epoch work (every method may be left as it is)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Before the training steps of ``epoch`` (1-based), after the epoch's reseeding."""

    def on_epoch_end(self, epoch: int) -> EpochEnd:
        """After the training steps and the validation pass of ``epoch``."""
        return EpochEnd()

    def state(self) -> dict[str, Tensor]:
        """Tensors for ``last.pt``'s ``extra`` (keys unique among the hooks)."""
        return {}

    def load_state(self, extra: Mapping[str, Tensor]) -> None:
        """Take back what :meth:`state` saved (``extra`` of the checkpoint resumed, maybe without it)."""

    def describe(self) -> list[str]:
        """Lines for the log of the run's start."""
        return []


class ReweightingRounds(EpochHook):
    """The reweighting loop (:class:`~deepmargin.training.reweight.Reweighting`) over the training set.

    After every epoch the margins of all training samples ``(x, y)`` are measured in eval mode and
    the number below ``mu`` becomes the row's ``violated``; at the end of a round the weights of
    those samples grow, or training stops (every margin met, or ``max_rounds`` rounds done).

    Args:
        reweighting: the loop's options.
        model: the plain model.
        x, y: the training set (on the training device).
        batch_size: samples per margin pass (``eval_batch_size``).

    Attributes:
        weights: ``(N,)`` the current weight of every training sample (1 at the start).
    """

    def __init__(self, reweighting: Reweighting, model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int) -> None:
        self.reweighting = reweighting
        self.model = model
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.weights = torch.ones(len(y), device=y.device)

    def on_epoch_end(self, epoch: int) -> EpochEnd:
        rw = self.reweighting
        margins = training_margins(self.model, self.x, self.y, rectify=rw.rectify, batch_size=self.batch_size)
        violated = int(rw.violated(margins).sum())
        stop = None
        if rw.round_end(epoch):
            if violated == 0:
                stop = f"every training margin reached mu={rw.mu:g} after epoch {epoch}"
            elif rw.last_round(epoch):
                stop = f"max_rounds={rw.max_rounds} rounds done after epoch {epoch} ({violated} margins below mu)"
            else:
                self.weights = rw.update(self.weights, margins)
        return EpochEnd({"violated": violated}, stop)

    def state(self) -> dict[str, Tensor]:
        return {WEIGHTS_KEY: self.weights}

    def load_state(self, extra: Mapping[str, Tensor]) -> None:
        saved = extra.get(WEIGHTS_KEY)
        if saved is None:
            return
        if saved.shape != self.weights.shape:
            raise ValueError(f"The sample weights in the checkpoint are for {saved.numel()} training samples, "
                             f"not {self.weights.numel()}; the run cannot be resumed with this data.")
        self.weights = saved.to(device=self.weights.device, dtype=self.weights.dtype)

    def describe(self) -> list[str]:
        rw = self.reweighting
        rounds = f", at most {rw.max_rounds} rounds" if rw.max_rounds else ""
        return [f"reweighting loop: {rw.rule} by {rw.delta:g} every {rw.round_epochs} epoch(s) for samples with "
                f"margin < {rw.mu:g}{rounds}"]


class DenominatorRefresh(EpochHook):
    """Recompute the margin-denominator ``cache`` at the start of its scheduled epochs.

    Args:
        cache: the :class:`~deepmargin.training.denominators.DenominatorCache` the cached step reads.
        model: the plain model (the refresh runs it in eval mode).
        x, y: the training set (on the training device).
        batch_size: samples per refresh pass (the run's ``batch_size``).
        ctx: the process group (each rank refreshes its share).
    """

    def __init__(self, cache: DenominatorCache, model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int,
                 ctx: Any = None) -> None:
        self.cache = cache
        self.model = model
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.ctx = ctx

    def on_epoch_start(self, epoch: int) -> None:
        self.cache.prepare(epoch, self.model, self.x, self.y, batch_size=self.batch_size, ctx=self.ctx)

    def state(self) -> dict[str, Tensor]:
        return self.cache.state()

    def load_state(self, extra: Mapping[str, Tensor]) -> None:
        self.cache.load(extra.get(DENOMINATORS_KEY), device=self.x.device)

    def describe(self) -> list[str]:
        return [f"margin denominators cached, recomputed (eval mode) every {self.cache.every} epoch(s)"]


def build_hooks(
    config: TrainConfig, objective: Any, model: nn.Module, net: nn.Module, x: Tensor, y: Tensor, *, ctx: Any = None
) -> list[EpochHook]:
    """The between-epoch hooks of ``config``.

    Args:
        config: the run configuration.
        objective: the training objective (its ``reweighting`` and ``layers``).
        model: the plain model.
        net: the model the training steps run (``model``, or its DDP wrapper).
        x, y: the training set, unlabelled samples included (on the training device).
        ctx: the process group.
    """
    hooks: list[EpochHook] = []
    cache = build_denominator_cache(config, model, net, objective.layers, len(y))
    if cache is not None:
        hooks.append(DenominatorRefresh(cache, model, x, y, batch_size=config.batch_size, ctx=ctx))
    if objective.reweighting is not None:
        hooks.append(ReweightingRounds(objective.reweighting, model, x, y, batch_size=config.eval_batch_size))
    return hooks
