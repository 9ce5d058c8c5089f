r"""Logit-margin training objectives of Kesidis, Miller & Xiang, eqs. (6)-(9), with per-sample weights.

With ``f`` the outputs, ``c`` the true class and ``mu`` the target margin:

- ``"ratio"`` (6): :math:`-\log\bigl(f_c / ((C-1)\mu + \sum_{i \ne c} f_i)\bigr)`, the margin added to
  the non-target outputs inside the ratio (Tsuzuku et al.'s suggestion); needs outputs ``f >= 0``
  (their assumption (1): ``rectify=True``, or a model whose outputs are nonnegative).
- ``"shifted-ce"`` (7): softmax cross-entropy with ``mu`` added to the non-target logits.
- ``"normalized-violation"`` (8): :math:`(\max_{i \ne c} f_i + \mu - f_c) / ((C-1)\mu + \sum_j f_j)`;
  needs ``f >= 0`` like (6).
- ``"violation"`` (9): :math:`\max_{i \ne c} f_i + \mu - f_c`.
- ``"hinged-violation"``: :math:`\max(0, \max_{i \ne c} f_i + \mu - f_c)`, (9) hinged.

Each is multiplied by the sample's weight :math:`\lambda_x` (the dual variables of the margin
constraints, updated between rounds by :class:`deepmargin.training.reweight.Reweighting`).

Trained long: (9) as written is unbounded below (it keeps growing every margin past ``mu``, and on
logits the loss goes to minus infinity as the weights of the last layer grow: use a weight decay,
gradient clipping or the hinged form); the hinged form stops at zero once every margin reaches
``mu``, so a model can meet all constraints and stop learning; (8) is bounded in [-1, 1] for
``f >= 0``; (6) and (7) are cross-entropies that keep pushing the margin beyond ``mu`` ever more
slowly, like cross-entropy itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_bool, check_choice, check_logits_target, check_real, check_reduction, param_error, reduce
from ._checks import POSITIVE
from .registry import (LossOption, LossSpec, int_at_least_0, int_at_least_1, one_of, positive_float, register_loss,
                       true_or_false)

__all__ = ["OBJECTIVES", "logit_margin_loss", "LogitMarginLoss"]

OWNER = "logit_margin_loss"

#: Values of ``objective``: the equation each stands for.
OBJECTIVES = {
    "ratio": "(6)",
    "shifted-ce": "(7)",
    "normalized-violation": "(8)",
    "violation": "(9)",
    "hinged-violation": "(9) hinged: max(0, .)",
}
_NEEDS_NONNEGATIVE = ("ratio", "normalized-violation")
_TINY = 1e-12


def _check_weights(weights: object, n: int, logits: torch.Tensor, owner: str) -> torch.Tensor | None:
    if weights is None:
        return None
    if not isinstance(weights, torch.Tensor) or not weights.is_floating_point():
        raise param_error(owner, "weights", f"None or a floating-point tensor of shape ({n},)", type(weights).__name__, TypeError)
    if weights.shape != (n,):
        raise param_error(owner, "weights", f"a tensor of shape ({n},)", f"shape {tuple(weights.shape)}")
    if weights.numel() and (not torch.isfinite(weights).all() or bool((weights < 0).any())):
        raise param_error(owner, "weights", "finite values >= 0", "a negative or non-finite weight")
    return weights.to(logits.dtype)


def logit_margin_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    mu: float,
    objective: str = "violation",
    weights: torch.Tensor | None = None,
    rectify: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Kesidis, Miller & Xiang's margin objectives (6)-(9), weighted per sample by ``weights``.

    Args:
        logits: ``(N, C)`` outputs ``f``. target: int64 ``(N,)`` true classes ``c``.
        mu: the target margin ``mu`` > 0 (in output units).
        objective: ``"ratio"`` (6), ``"shifted-ce"`` (7), ``"normalized-violation"`` (8),
            ``"violation"`` (9, the default) or ``"hinged-violation"`` (9 hinged at 0); see the
            module docstring for what each does when trained long.
        weights: ``(N,)`` per-sample weights ``lambda_x >= 0``; ``None`` is all ones.
        rectify: apply ``relu`` to the outputs first (their assumption (1)). ``"ratio"`` and
            ``"normalized-violation"`` need nonnegative outputs: without ``rectify`` a negative
            output is an error. With it, a sample whose target output is rectified to 0 gets no
            gradient through it under ``"ratio"`` (``log`` of a floor of 1e-12 instead of 0).
        reduction: ``'none'`` (the weighted per-sample terms), ``'mean'`` (their sum over ``N``:
            the weights are not renormalised) or ``'sum'``.

    Returns:
        A scalar, or ``(N,)`` with ``reduction='none'``.

    Example:
        >>> logits = torch.tensor([[3.0, 1.0, 0.0], [0.5, 1.0, 0.0]])
        >>> logit_margin_loss(logits, torch.tensor([0, 0]), mu=1.0, objective="hinged-violation", reduction="none")
        tensor([0.0000, 1.5000])

    Reference: Kesidis, Miller & Xiang, "Notes on Margin Training and Margin p-Values for Deep
    Neural Network Classifiers", Sec. III, eqs. (6)-(9).
    """
    target = check_logits_target(logits, target, OWNER)
    mu = check_real(mu, "mu", OWNER, low=0, low_open=True, expected=POSITIVE)
    check_choice(objective, "objective", OWNER, OBJECTIVES)
    check_bool(rectify, "rectify", OWNER)
    check_reduction(reduction, OWNER)
    weights = _check_weights(weights, logits.shape[0], logits, OWNER)
    f = F.relu(logits) if rectify else logits
    if objective in _NEEDS_NONNEGATIVE and not rectify and f.numel() and bool((f.detach() < 0).any()):
        raise param_error(
            OWNER, "logits", f"nonnegative outputs for objective={objective!r} (their assumption (1); "
            "pass rectify=True to apply relu)", f"a minimum of {float(f.detach().min()):.4g}",
        )
    num_classes = f.shape[1]
    own_mask = F.one_hot(target, num_classes).bool()
    own = f.gather(1, target[:, None]).squeeze(1)
    if objective == "shifted-ce":
        loss = F.cross_entropy(f + mu * (~own_mask).to(f.dtype), target, reduction="none")
    elif objective == "ratio":
        rivals = f.masked_fill(own_mask, 0.0).sum(dim=1)
        loss = torch.log((num_classes - 1) * mu + rivals) - torch.log(own.clamp_min(_TINY))
    else:
        violation = f.masked_fill(own_mask, float("-inf")).amax(dim=1) + mu - own
        if objective == "normalized-violation":
            loss = violation / ((num_classes - 1) * mu + f.sum(dim=1))
        elif objective == "hinged-violation":
            loss = F.relu(violation)
        else:
            loss = violation
    if weights is not None:
        loss = loss * weights
    return reduce(loss, reduction)


class LogitMarginLoss(nn.Module):
    """Module form of :func:`logit_margin_loss` that runs the model: ``criterion(x, y, weights=None)``
    returns ``(loss, logits)``.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> criterion = LogitMarginLoss(net, mu=1.0, objective="shifted-ce")
        >>> loss, logits = criterion(torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1]))
    """

    def __init__(self, model: nn.Module, *, mu: float, objective: str = "violation", rectify: bool = False,
                 reduction: str = "mean") -> None:
        super().__init__()
        owner = "LogitMarginLoss"
        if not isinstance(model, nn.Module):
            raise param_error(owner, "model", "an nn.Module", type(model).__name__, TypeError)
        check_choice(objective, "objective", owner, OBJECTIVES)
        check_bool(rectify, "rectify", owner)
        self.model = model
        self.mu = check_real(mu, "mu", owner, low=0, low_open=True, expected=POSITIVE)
        self.objective = objective
        self.rectify = rectify
        self.reduction = check_reduction(reduction, owner)

    def forward(self, x: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        loss = logit_margin_loss(logits, target, mu=self.mu, objective=self.objective, weights=weights,
                                 rectify=self.rectify, reduction=self.reduction)
        return loss, logits

    def extra_repr(self) -> str:
        return f"mu={self.mu}, objective={self.objective!r}, rectify={self.rectify}, reduction={self.reduction!r}"


def _reweighting(options):
    from .reweighting import Reweighting

    if options["reweight"] == "none":
        return None
    return Reweighting(
        rule=options["reweight"], delta=options["delta"], round_epochs=options["round_epochs"],
        max_rounds=options["max_rounds"], decrease=options["decrease"], mu=options["mu"], rectify=options["rectify"],
    )


def _check_options(options) -> None:
    if options["round_epochs"] < 1:
        raise ValueError(f"The 'round_epochs' option of loss 'kesidis' must be an int >= 1. Got {options['round_epochs']!r} instead.")
    if options["reweight"] == "multiply" and options["delta"] <= 1:
        raise ValueError(f"The 'delta' option of loss 'kesidis' must be > 1 with reweight='multiply' (a factor). "
                         f"Got {options['delta']!r} instead.")


register_loss(LossSpec(
    name="kesidis",
    summary="lambda_x-weighted logit-margin objectives (6)-(9), with the dual reweighting loop (reweight=...)",
    reference="Kesidis, Miller & Xiang, Notes on Margin Training and Margin p-Values (eqs. 6-9, Sec. III)",
    options=(
        LossOption("mu", 1.0, positive_float, "the target margin of the outputs"),
        LossOption("objective", "violation", one_of(*OBJECTIVES), "ratio (6), shifted-ce (7), normalized-violation (8), "
                   "violation (9), hinged-violation (9 with max(0, .))"),
        LossOption("rectify", False, true_or_false, "relu on the outputs first (their assumption (1); needed by (6), (8))"),
        LossOption("reweight", "none", one_of("none", "multiply", "add", "violation"),
                   "dual loop after each round: lambda *= delta, lambda += delta, or lambda += delta * violation, "
                   "for every sample whose margin is below mu"),
        LossOption("delta", 2.0, positive_float, "the factor (> 1 for multiply) or increment of the reweighting"),
        LossOption("round_epochs", 1, int_at_least_1, "epochs per round of the reweighting loop"),
        LossOption("max_rounds", 0, int_at_least_0, "rounds before training stops (0: as many as 'epochs' allows)"),
        LossOption("decrease", False, true_or_false, "also undo one step (floored at 1) for a sample whose margin is met"),
    ),
    build=lambda model, o: LogitMarginLoss(model, mu=o["mu"], objective=o["objective"], rectify=o["rectify"]),
    needs_input_grad=False,
    reweighting=_reweighting,
    check=_check_options,
    output_margin=lambda o: (bool(o["rectify"]), float(o["mu"])),
))
