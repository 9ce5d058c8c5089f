"""The dual reweighting loop of Kesidis, Miller & Xiang (Sec. III) in training: the margins of the
training samples that each round measures (:func:`training_margins`). The rule itself
(:class:`Reweighting`: multiply, add, violation; rounds, stopping) is part of the loss, in
:mod:`deepmargin.losses.reweighting`, and re-exported here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..capture import eval_mode
from ..losses.reweighting import RULES, Reweighting
from ..metrics.logit_margin import logit_margins

__all__ = ["Reweighting", "RULES", "training_margins"]  # Reweighting and RULES live in deepmargin.losses.reweighting


@torch.no_grad()
def training_margins(model: nn.Module, x: Tensor, y: Tensor, *, rectify: bool = False, batch_size: int = 512) -> Tensor:
    """``mu_f`` of every ``(x, y)`` by the labels ``y``, in eval mode (each module's own mode is restored)."""
    with eval_mode(model):
        parts = [logit_margins(model(x[s:s + batch_size]), y[s:s + batch_size], rectify=rectify)
                 for s in range(0, len(y), batch_size)]
    return torch.cat(parts) if parts else torch.empty(0, device=x.device)
