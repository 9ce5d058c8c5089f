"""The training objective chosen by a :class:`TrainConfig`: the loss registered under ``config.loss``.

Nothing here knows a loss by name: :func:`build_objective` asks :data:`deepmargin.losses.LOSS_REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..losses.large_margin import default_margin_layers
from ..losses.registry import loss_options_of, loss_spec
from .config import TrainConfig

__all__ = ["Objective", "build_objective", "default_margin_layers"]


class Objective:
    """A callable ``objective(x, y) -> (loss, logits)`` wrapping the configured loss.

    Attributes:
        name: the loss's registered name (``"ce"``, ``"margin"``, ...).
        needs_input_grad: the loss differentiates with respect to the input or the activations
            (the margin loss, ...) and therefore cannot run under ``torch.no_grad()`` even for
            evaluation (default: as its registry entry says).
        layers: the resolved margin layers (``None`` for a loss without layers).
        reweighting: the dual reweighting loop of the loss
            (:class:`~deepmargin.training.reweight.Reweighting`), or ``None``; when set, the
            objective takes per-sample weights: ``objective(x, y, weights=w)``.
        accepts_unlabelled: the objective takes samples labelled ``-1`` (semi-supervised).
    """

    def __init__(
        self, name: str, fn: Callable[..., tuple[Tensor, Tensor]], layers: list[str] | None,
        *, needs_input_grad: bool | None = None, reweighting: Any = None, accepts_unlabelled: bool = False,
    ) -> None:
        self.name = name
        self._fn = fn
        if needs_input_grad is None:
            from ..losses.registry import LOSS_REGISTRY

            spec = LOSS_REGISTRY.get(name)
            needs_input_grad = spec.needs_input_grad if spec is not None else False
        self.needs_input_grad = bool(needs_input_grad)
        self.layers = layers
        self.reweighting = reweighting
        self.accepts_unlabelled = accepts_unlabelled

    def __call__(self, x: Tensor, y: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if weights is None:
            return self._fn(x, y)
        if self.reweighting is None:
            raise TypeError(f"The {self.name!r} objective takes no per-sample weights (only a loss with a reweighting loop does).")
        return self._fn(x, y, weights=weights)

    def __repr__(self) -> str:
        return f"Objective({self.name!r}, layers={self.layers})"


def build_objective(config: TrainConfig, model: nn.Module) -> Objective:
    """Build the loss of ``config`` for ``model``: its registry entry's ``build(model, options)``,
    with the options read from the configuration (:func:`deepmargin.losses.loss_options_of`).

    A loss that differentiates with respect to its inputs runs with gradients enabled even when
    called under ``torch.no_grad()``; a loss with layers (``margin``) records the resolved layer
    names in ``Objective.layers``; a loss with a reweighting loop gets its
    :class:`~deepmargin.losses.reweighting.Reweighting`.
    """
    spec = loss_spec(config.loss)
    options = loss_options_of(config)
    criterion = spec.build(model, options)

    def with_grad(x: Tensor, y: Tensor, **kwargs: Any) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            return criterion(x, y, **kwargs)

    layers = list(criterion.layers) if spec.uses_layers else None
    reweighting = spec.reweighting(options) if spec.reweighting is not None else None
    return Objective(config.loss, with_grad if spec.needs_input_grad else criterion, layers,
                     needs_input_grad=spec.needs_input_grad, reweighting=reweighting,
                     accepts_unlabelled=spec.accepts_unlabelled)
