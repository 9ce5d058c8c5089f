"""The training objective chosen by a :class:`TrainConfig`: cross-entropy, hinge or large margin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import TrainConfig

__all__ = ["Objective", "build_objective", "default_margin_layers"]


def default_margin_layers(model: nn.Module) -> list[str]:
    """The model's ``margin_layers`` when it has them (the wide ResNet: the paper's 5 evenly spaced
    layers), else ``["input", *model.hidden_layers]``: the input and every hidden representation (the
    paper's "all layers" setting); just ``["input"]`` for a model without either attribute."""
    from ..capture import unwrap_model

    model = unwrap_model(model)
    chosen = getattr(model, "margin_layers", None)
    if chosen:
        return list(chosen)
    return ["input", *getattr(model, "hidden_layers", ())]


class Objective:
    """A callable ``objective(x, y) -> (loss, logits)`` wrapping the configured loss.

    Attributes:
        name: ``"ce"``, ``"hinge"`` or ``"margin"``.
        needs_input_grad: True for the margin loss, which differentiates with respect to the
            activations and therefore cannot run under ``torch.no_grad()`` even for evaluation.
        layers: the resolved margin layers (``None`` for the other losses).
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
        self.needs_input_grad = name == "margin" if needs_input_grad is None else bool(needs_input_grad)
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


def _on_logits(
    model: nn.Module, criterion: Callable[[Tensor, Tensor], Tensor]
) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """``(x, y) -> (criterion(logits, y), logits)`` with ``logits = model(x)``: a loss of the logits only."""

    def fn(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = model(x)
        return criterion(logits, y), logits

    return fn


def build_objective(config: TrainConfig, model: nn.Module) -> Objective:
    """Build the loss of ``config`` for ``model``.

    - ``"ce"``: ``F.cross_entropy(model(x), y)``.
    - ``"hinge"``: :class:`deepmargin.losses.MulticlassHingeLoss` with ``hinge_margin`` and
      ``hinge_ce_weight`` (Elsayed et al. 2018, Sec. 4.2, second baseline).
    - ``"margin"``: :class:`deepmargin.losses.LargeMarginLoss` on ``config.layers`` (or
      :func:`default_margin_layers`) with the margin options and ``ce_weight``.
    - a name of :data:`deepmargin.losses.LOSS_REGISTRY`: its ``build(model, config.loss_options)``.
    """
    if config.loss == "ce":
        return Objective("ce", _on_logits(model, F.cross_entropy), None)
    from ..losses.registry import LOSS_REGISTRY

    if config.loss in LOSS_REGISTRY:
        spec = LOSS_REGISTRY[config.loss]
        criterion = spec.build(model, config.loss_options)

        def registered_fn(x: Tensor, y: Tensor, **kwargs: Any) -> tuple[Tensor, Tensor]:
            with torch.enable_grad():
                return criterion(x, y, **kwargs)

        reweighting = spec.reweighting(config.loss_options) if spec.reweighting is not None else None
        return Objective(config.loss, registered_fn if spec.needs_input_grad else criterion, None,
                         needs_input_grad=spec.needs_input_grad, reweighting=reweighting,
                         accepts_unlabelled=spec.accepts_unlabelled)
    if config.loss == "hinge":
        from ..losses import MulticlassHingeLoss

        hinge = MulticlassHingeLoss(margin=config.hinge_margin, ce_weight=config.hinge_ce_weight)
        return Objective("hinge", _on_logits(model, hinge), None)
    from ..losses import LargeMarginLoss

    layers = list(config.layers) if config.layers is not None else default_margin_layers(model)
    criterion = LargeMarginLoss(
        model,
        layers,
        gamma=config.gamma,
        alpha=config.alpha,
        top_k=config.top_k,
        norm=config.norm,
        aggregation=config.aggregation,
        layer_weights=config.layer_weights,
        epsilon=config.epsilon,
        approximate=config.approximate,
        scores=config.scores,
        exact_per_sample=config.exact_per_sample,
        margin_weight=config.margin_weight,
        ce_weight=config.ce_weight,
    )

    def margin_fn(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            return criterion(x, y)

    return Objective("margin", margin_fn, layers)
