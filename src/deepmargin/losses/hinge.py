"""Multiclass hinge loss, the paper's second baseline (hinge plus a small cross-entropy weight)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_choice, check_logits_target, check_real, check_reduction, reduce
from ._checks import NONNEGATIVE, POSITIVE
from .cross_entropy import LogitsCriterion
from .registry import LossOption, LossSpec, register_loss

__all__ = ["multiclass_hinge_loss", "MulticlassHingeLoss"]

OWNER = "multiclass_hinge_loss"


def multiclass_hinge_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    margin: float = 1.0,
    aggregation: str = "sum",
    ce_weight: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Multiclass hinge loss on logits, optionally plus a weighted cross-entropy.

    .. math::

        \ell(f, y) = \mathcal{A}_{i \ne y} \max(0, m - (f_y - f_i)) + \lambda\,\mathrm{CE}(f, y)

    with ``A`` the sum over classes (Weston & Watkins; torch's ``MultiMarginLoss`` times ``C``) or
    the max (Crammer & Singer).

    Args:
        logits: ``(N, C)`` scores. target: int64 ``(N,)``.
        margin: the output margin ``m`` > 0. Default 1.
        aggregation: ``'sum'`` (default) or ``'max'`` over the rival classes.
        ce_weight: weight ``lambda`` >= 0 of the cross-entropy term. Default 0.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.

    Shape: logits ``(N, C)``, target ``(N,)`` -> scalar, or ``(N,)`` with ``reduction='none'``.

    Example::

        >>> import torch
        >>> multiclass_hinge_loss(torch.tensor([[2.0, 0.5, 0.0]]), torch.tensor([0]))
        tensor(0.)

    Reference: Elsayed et al. (2018), Sec. 4.2, baseline "hinge loss combined with a small weight
    of cross-entropy".
    """
    target = check_logits_target(logits, target, OWNER)
    margin = check_real(margin, "margin", OWNER, low=0, low_open=True, expected=POSITIVE)
    ce_weight = check_real(ce_weight, "ce_weight", OWNER, low=0, expected=NONNEGATIVE)
    check_reduction(reduction, OWNER)
    check_choice(aggregation, "aggregation", OWNER, ("sum", "max"))
    true_score = logits.gather(1, target[:, None])
    viol = F.relu(margin - (true_score - logits))
    viol = viol.masked_fill(F.one_hot(target, logits.shape[1]).bool(), 0.0)
    loss = viol.sum(dim=1) if aggregation == "sum" else viol.amax(dim=1)
    if ce_weight:
        loss = loss + ce_weight * F.cross_entropy(logits, target, reduction="none")
    return reduce(loss, reduction)


class MulticlassHingeLoss(nn.Module):
    """Module form of :func:`multiclass_hinge_loss`; call it as ``criterion(logits, target)``."""

    def __init__(self, margin: float = 1.0, *, aggregation: str = "sum", ce_weight: float = 0.0,
                 reduction: str = "mean") -> None:
        super().__init__()
        self.margin = check_real(margin, "margin", "MulticlassHingeLoss", low=0, low_open=True, expected=POSITIVE)
        self.aggregation = aggregation
        self.ce_weight = check_real(ce_weight, "ce_weight", "MulticlassHingeLoss", low=0, expected=NONNEGATIVE)
        self.reduction = check_reduction(reduction, "MulticlassHingeLoss")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return multiclass_hinge_loss(logits, target, margin=self.margin, aggregation=self.aggregation,
                                     ce_weight=self.ce_weight, reduction=self.reduction)


register_loss(LossSpec(
    name="hinge",
    summary="multiclass hinge + hinge_ce_weight x cross-entropy (Elsayed et al.'s second baseline)",
    reference="Elsayed et al., NeurIPS 2018, Sec. 4.2",
    options=(
        LossOption("hinge_margin", 1.0, None, "the output margin of the hinge", flag="--hinge-margin",
                   expected_text="a float > 0"),
        LossOption("hinge_ce_weight", 0.1, None, "weight of the cross-entropy term", flag="--hinge-ce-weight",
                   expected_text="a float >= 0"),
    ),
    build=lambda model, o: LogitsCriterion(model, MulticlassHingeLoss(margin=o["hinge_margin"], ce_weight=o["hinge_ce_weight"])),
    needs_input_grad=False,
    config_fields=True,
    output_margin=lambda o: (False, float(o["hinge_margin"] or 1.0)),
    grid_family="default",
))
