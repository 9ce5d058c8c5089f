"""Cross-entropy as a training loss (``TrainConfig(loss="ce")``), and the wrapper that turns any loss of
the logits alone into the ``(x, y) -> (loss, logits)`` criterion the training loop calls."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .registry import LossSpec, register_loss

__all__ = ["LogitsCriterion"]


class LogitsCriterion(nn.Module):
    """``criterion(x, y) -> (loss_fn(model(x), y), model(x))``: a loss of the logits only, on a model.

    Args:
        model: the classifier.
        loss_fn: ``(logits, target) -> scalar loss``, e.g. ``F.cross_entropy``.

    Example:
        >>> model = nn.Linear(3, 2)
        >>> loss, logits = LogitsCriterion(model, F.cross_entropy)(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
        >>> logits.shape
        torch.Size([4, 2])
    """

    def __init__(self, model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        return self.loss_fn(logits, target), logits


register_loss(LossSpec(
    name="ce",
    summary="cross-entropy",
    reference="the baseline of every seed paper",
    options=(),
    build=lambda model, o: LogitsCriterion(model, F.cross_entropy),
    needs_input_grad=False,
    config_fields=True,
    grid_family="default",
))
