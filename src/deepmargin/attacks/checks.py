"""Warnings for robustness evaluations that may be unreliable.

The checks follow AutoAttack's ``checks.py`` (Croce & Hein, 2020) and the evaluation
guidelines of Carlini et al. (2019, "On Evaluating Adversarial Robustness"): a model left
in training mode, outputs that look like probabilities instead of logits, a randomised
forward pass, a large share of zero input gradients (gradient masking), and a black-box
(transfer) attack that beats the white-box one. Each check emits a
:class:`ReliabilityWarning` through :func:`warnings.warn` and returns whether it fired, so
callers can filter the warnings with the standard ``warnings`` machinery::

    import warnings
    from deepmargin.attacks import ReliabilityWarning
    warnings.simplefilter("error", ReliabilityWarning)   # make them fatal in CI
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..capture.modes import eval_mode
from ..checks import check_real

logger = logging.getLogger(__name__)

__all__ = [
    "ReliabilityWarning",
    "warn_if_training",
    "warn_if_probabilities",
    "warn_if_zero_gradients",
    "warn_if_randomized",
    "warn_if_transfer_beats_whitebox",
    "check_model",
    "cross_entropy_input_gradient",
]


class ReliabilityWarning(UserWarning):
    """A robustness evaluation may be unreliable (AutoAttack-style check)."""


def _warn(message: str, stacklevel: int) -> None:
    logger.debug("ReliabilityWarning: %s", message)
    warnings.warn(message, ReliabilityWarning, stacklevel=stacklevel + 1)


def _check_share(max_share: float, owner: str) -> float:
    return check_real(max_share, "max_share", owner, low=0, high=1, high_open=True, type_exc=ValueError)


def warn_if_training(model: nn.Module, *, stacklevel: int = 2) -> bool:
    """Warn when ``model`` (or any submodule) is in training mode.

    Dropout and batch norm make a model in training mode random and batch dependent, so
    accuracies measured on it are not those of the deployed model. The attacks of this
    package run the model in eval mode and restore its mode afterwards; this warning says
    that the caller left it in training mode.

    Args:
        model: the evaluated model.
        stacklevel: passed to :func:`warnings.warn`.

    Returns:
        ``True`` if the warning was emitted.

    Example:
        >>> warn_if_training(nn.Linear(2, 2).eval())
        False
    """
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if not training:
        return False
    shown = ", ".join(training[:3]) + (", ..." if len(training) > 3 else "")
    _warn(
        f"The model is in training mode (modules: {shown}). Attacks run it in eval mode and "
        "restore its mode afterwards, but accuracies computed in training mode differ; call "
        "model.eval() before evaluating robustness.",
        stacklevel + 1,
    )
    return True


def warn_if_probabilities(outputs: torch.Tensor, *, atol: float = 1e-4, stacklevel: int = 2) -> bool:
    """Warn when model outputs look like probabilities (rows non-negative, summing to 1).

    Attacks expect logits: a softmax inside the model saturates the cross-entropy gradient
    and makes gradient attacks look weaker than they are (AutoAttack's ``check_range_output``).

    Args:
        outputs: model outputs for a batch.
        atol: tolerance on the row sums.
        stacklevel: passed to :func:`warnings.warn`.

    Shape:
        outputs: ``(N, C)``.

    Returns:
        ``True`` if the warning was emitted.

    Example:
        >>> warn_if_probabilities(torch.tensor([[2.0, -1.0]]))
        False
    """
    if outputs.dim() != 2 or outputs.shape[1] < 2 or outputs.numel() == 0:
        return False
    with torch.no_grad():
        out = outputs.detach()
        looks = bool((out.min() >= 0).item()) and bool(
            ((out.sum(dim=1) - 1).abs().max() <= atol).item()
        )
    if looks:
        _warn(
            "The model outputs look like probabilities (every row is non-negative and sums to 1). "
            "Attacks and the losses of this package expect logits; remove the final softmax.",
            stacklevel + 1,
        )
    return looks


def warn_if_zero_gradients(
    grad: torch.Tensor, *, max_share: float = 0.05, stacklevel: int = 2
) -> bool:
    """Warn when too many inputs have an exactly zero input gradient (gradient masking).

    A zero gradient stops every gradient attack at its start point; a large share of
    them usually means saturated outputs or a non-differentiable defence, and the attack
    accuracy is then an overestimate (AutoAttack's ``check_zero_gradients``).

    Args:
        grad: gradients of the attack loss with respect to the inputs.
        max_share: the largest share of all-zero gradients that passes silently. Default 0.05.
        stacklevel: passed to :func:`warnings.warn`.

    Shape:
        grad: ``(N, *)``.

    Returns:
        ``True`` if the warning was emitted.

    Example:
        >>> warn_if_zero_gradients(torch.ones(4, 3))
        False
    """
    max_share = _check_share(max_share, "warn_if_zero_gradients")
    if grad.numel() == 0:
        return False
    zero = (grad.detach().reshape(grad.shape[0], -1) == 0).all(dim=1)
    share = int(zero.sum().item()) / zero.numel()
    if share > max_share:
        _warn(
            f"{share:.1%} of the inputs have an all-zero input gradient (threshold {max_share:.1%}): "
            "gradient attacks cannot move them, which suggests gradient masking. Try loss='margin', "
            "check for saturated outputs or non-differentiable layers, and add a black-box attack.",
            stacklevel + 1,
        )
        return True
    return False


def warn_if_randomized(
    model: nn.Module, x: torch.Tensor, *, atol: float = 1e-5, stacklevel: int = 2
) -> bool:
    """Warn when two forward passes of ``model`` (in eval mode) on ``x`` disagree.

    A randomised model needs expectation-over-transformation attacks; single-sample
    gradient attacks overestimate its robustness (AutoAttack's ``check_randomized``).

    Args:
        model: the evaluated model.
        x: a batch of inputs.
        atol: largest absolute difference between the two outputs that passes silently.
        stacklevel: passed to :func:`warnings.warn`.

    Returns:
        ``True`` if the warning was emitted.

    Example:
        >>> warn_if_randomized(nn.Linear(3, 2), torch.zeros(1, 3))
        False
    """
    with torch.no_grad(), eval_mode(model):
        first = model(x)
        second = model(x)
    diff = (first - second).abs().max().item() if first.numel() else 0.0
    if diff > atol:
        _warn(
            f"Two forward passes on the same inputs differ by up to {diff:.3g} in eval mode: the model "
            "is randomised, and single-sample gradient attacks overestimate its robustness.",
            stacklevel + 1,
        )
        return True
    return False


def warn_if_transfer_beats_whitebox(
    rows: Iterable[Mapping[str, Any]], *, tol: float = 0.0, stacklevel: int = 2
) -> list[dict[str, Any]]:
    """Warn when a transfer (black-box) attack lowers a model's accuracy more than white-box ones.

    For each ``(model, norm, eps)`` the best white-box accuracy (the lowest over all white-box
    attacks) is compared with each transfer row; a transfer row more than ``tol`` below it means
    the white-box attacks are weak on that model (gradient masking or too few steps).

    Args:
        rows: tidy result rows with keys ``model``, ``norm``, ``eps``, ``accuracy`` and
            ``setting`` (``'white-box'`` or ``'transfer'``; other settings are ignored), as
            written by :func:`deepmargin.attacks.accuracy_vs_epsilon`.
        tol: allowed accuracy gap (a fraction, e.g. ``0.01`` for one percentage point). Default 0.
        stacklevel: passed to :func:`warnings.warn`.

    Returns:
        One dict per offending transfer row: ``model``, ``attack``, ``source``, ``norm``,
        ``eps``, ``transfer_accuracy``, ``whitebox_accuracy``. A single warning lists them.

    Example:
        >>> rows = [dict(model="m", attack="pgd", norm="linf", eps=0.1, accuracy=0.5, setting="white-box"),
        ...         dict(model="m", attack="pgd", norm="linf", eps=0.1, accuracy=0.6, setting="transfer")]
        >>> warn_if_transfer_beats_whitebox(rows)
        []
    """
    check_real(tol, "tol", "warn_if_transfer_beats_whitebox", low=0, finite=False, type_exc=ValueError)
    rows = list(rows)
    white: dict[tuple, float] = {}
    for row in rows:
        if row.get("setting") == "white-box":
            key = (row["model"], str(row["norm"]), float(row["eps"]))
            white[key] = min(white.get(key, math.inf), float(row["accuracy"]))
    offending = []
    for row in rows:
        if row.get("setting") != "transfer":
            continue
        key = (row["model"], str(row["norm"]), float(row["eps"]))
        if key in white and float(row["accuracy"]) < white[key] - tol:
            offending.append(
                dict(
                    model=row["model"], attack=row.get("attack"), source=row.get("source"),
                    norm=row["norm"], eps=float(row["eps"]),
                    transfer_accuracy=float(row["accuracy"]), whitebox_accuracy=white[key],
                )
            )
    if offending:
        shown = "; ".join(
            f"{o['model']} {o['norm']} eps={o['eps']:g}: transfer {o['transfer_accuracy']:.3f} "
            f"< white-box {o['whitebox_accuracy']:.3f}"
            for o in offending[:5]
        )
        more = f" (and {len(offending) - 5} more)" if len(offending) > 5 else ""
        _warn(
            f"A transfer (black-box) attack beats every white-box attack: {shown}{more}. The white-box "
            "attacks are unreliable on these models (gradient masking or too few steps); use more steps, "
            "random restarts, loss='margin' or a minimum-norm attack.",
            stacklevel + 1,
        )
    return offending


def cross_entropy_input_gradient(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, str | None]:
    """The input gradient of the summed cross-entropy at ``x``, and why there is none (``None`` when there is one).

    A model that detaches its input or computes under ``torch.no_grad()`` has no input gradient,
    and one whose backward pass raises gives none; the gradient is then all zeros (gradient attacks
    cannot move such inputs) and the reason says which case it is. A ``ClassifierAdapter`` that
    found its model without one (``input_gradient = False``) reports it the same way.

    Shape:
        x: ``(N, *)``; y: ``(N,)`` int64; gradient: like ``x``.

    Example:
        >>> grad, missing = cross_entropy_input_gradient(nn.Linear(3, 2), torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
        >>> tuple(grad.shape), missing
        ((4, 3), None)
    """
    if getattr(model, "input_gradient", None) is False:
        return torch.zeros_like(x), str(getattr(model, "input_gradient_problem", None) or "found when it was loaded")
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(xg), y.to(torch.int64), reduction="sum")
        if not loss.requires_grad:
            return torch.zeros_like(x), "its output does not require a gradient (computed under torch.no_grad()?)"
        try:
            (grad,) = torch.autograd.grad(loss, xg, allow_unused=True)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as err:
            text = " ".join(str(err).split())[:200]
            return torch.zeros_like(x), f"its backward pass raised {type(err).__name__}: {text}"
    if grad is None:
        return torch.zeros_like(x), "its output does not depend on its input through autograd (the input is detached?)"
    return grad, None


def check_model(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    max_zero_share: float = 0.05,
    stacklevel: int = 2,
) -> dict[str, bool]:
    """Run every model-level check on one batch: training mode, probabilities, randomness, zero gradients.

    The zero-gradient check uses the cross-entropy input gradient at ``x`` (only when ``y``
    is given); a model without any input gradient (it detaches its input, computes under
    ``torch.no_grad()``, or its backward pass raises) fires it too, with a warning that says why
    (:func:`cross_entropy_input_gradient`). The model is evaluated in eval mode and its mode restored.

    Args:
        model: the evaluated model (returns logits).
        x: a batch of inputs.
        y: its labels, int64; optional.
        max_zero_share: threshold of :func:`warn_if_zero_gradients`.
        stacklevel: passed to :func:`warnings.warn`.

    Shape:
        x: ``(N, *)``; y: ``(N,)``.

    Returns:
        Which checks fired: keys ``training``, ``probabilities``, ``randomized``, ``zero_gradients``.

    Example:
        >>> check_model(nn.Linear(3, 2), torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))["training"]
        True
    """
    level = stacklevel + 1
    fired = {"training": warn_if_training(model, stacklevel=level)}
    with eval_mode(model):
        with torch.no_grad():
            fired["probabilities"] = warn_if_probabilities(model(x), stacklevel=level)
        fired["randomized"] = warn_if_randomized(model, x, stacklevel=level)
        fired["zero_gradients"] = False
        if y is not None:
            grad, missing = cross_entropy_input_gradient(model, x, y)
            if missing is not None and x.shape[0]:
                _warn(
                    f"The model has no input gradient: {missing}. Gradient attacks cannot move its inputs (they "
                    "break none of them), so their accuracies overestimate its robustness; trust a gradient-free "
                    "attack (square, AutoAttack's Square) instead.",
                    level,
                )
                fired["zero_gradients"] = True
            else:
                fired["zero_gradients"] = warn_if_zero_gradients(grad, max_share=max_zero_share, stacklevel=level)
    return fired
