"""Robustness metrics from minimum-norm attacks: rho_adv, median distance, error at epsilon, margin reports.

* ``rho_adv`` (Moosavi-Dezfooli et al. 2016, eq. 15; used by Matyasko & Chau 2017): the mean of
  ``||r(x)||_2 / ||x||_2`` with ``r`` from DeepFool.
* ``median_adversarial_distance`` and ``error_at_eps`` (Finlay, Oberman et al. 2018, the table of
  "median distance" and "% Err at epsilon" in l2 and l_inf) from per-input minimum adversarial
  distances (``adversarial_distances``): misclassified inputs have distance 0, inputs the attack
  could not fool have distance ``inf``.
* ``margin_report``: per input, the linearised distance to the boundary at the input layer (the
  ``d`` of Elsayed et al. 2018, eq. 7, minimised over classes), the minimum-norm attack's distance
  (an upper bound on the true distance) and their gap.

All functions work on whole batches (in chunks of ``batch_size``), put the model in eval mode and
restore its mode, and return tensors on the device of ``x``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import nn

from ..attacks.deepfool import NORMS, DeepFool
from ..attacks.minnorm import FMN, check_eps, check_logits, flat_norm
from ..capture.modes import eval_mode
from ..checks import check_choice, check_inputs, check_int, check_x, parse_norm
from ..losses.large_margin import linearized_margin

__all__ = [
    "rho_adv",
    "adversarial_distances",
    "median_adversarial_distance",
    "error_at_eps",
    "distance_summary",
    "linearized_input_margins",
    "margin_report",
]

logger = logging.getLogger(__name__)

REFERENCES = ("prediction", "label")


def _check_args(
    x: torch.Tensor, y: torch.Tensor, norm: float | str, batch_size: object, owner: str
) -> tuple[float, int]:
    """The checks of the attack-based metrics, in order: ``norm``, ``x`` and ``y``, ``batch_size``."""
    p, _ = parse_norm(norm, "norm", owner, allowed=NORMS, type_exc=ValueError)
    check_inputs(x, y, owner)
    return p, check_int(batch_size, "batch_size", owner, low=1, type_exc=ValueError)


def _check_attack(attack: object, norm: float, owner: str) -> None:
    if not callable(getattr(attack, "run", None)):
        raise TypeError(
            f"The 'attack' parameter of {owner} must be a minimum-norm attack with a "
            f"run(model, x, y) -> MinNormResult method (e.g. DeepFool or FMN). Got {type(attack).__name__} instead."
        )
    attack_norm = getattr(attack, "norm", None)
    if attack_norm is not None and float(attack_norm) != norm:
        raise ValueError(
            f"The 'attack' parameter of {owner} must measure the l{norm} norm. "
            f"Got an attack with norm={attack_norm} instead."
        )


def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    if x.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=x.device)
    with eval_mode(model), torch.no_grad():
        return torch.cat([model(chunk).argmax(dim=1) for chunk in x.split(batch_size)])


def adversarial_distances(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: float | str = 2,
    attack: object | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    r"""Per-input distance to the closest adversarial found by a minimum-norm attack.

    .. math::

        D(x) = \begin{cases} 0 & \arg\max f(x) \ne y \\ \|\delta^*\|_p & \text{attack found } \delta^* \\
               \infty & \text{attack failed} \end{cases}

    Args:
        model: ``nn.Module`` returning logits ``(N, C)``.
        x: inputs ``(N, *)`` inside the attack's bounds.
        y: labels ``(N,)``.
        norm: 2 or ``math.inf``. Default 2.
        attack: an object with ``run(model, x, y) -> MinNormResult`` measuring ``norm`` (DeepFool,
            FMN). Default ``FMN(norm=norm)`` (DeepFool warm start, 100 steps, bounds ``(0, 1)``).
        batch_size: inputs per attack call. Default 256.

    Shape:
        ``(N,)``, dtype and device of ``x``.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(4, 3)
        >>> x = torch.rand(6, 4)
        >>> adversarial_distances(model, x, model(x).argmax(1), norm=2).shape
        torch.Size([6])

    Reference:
        C. Finlay, A. Oberman, B. Abbasi. "Improved robustness to adversarial examples using
        Lipschitz regularization of the loss", 2018 (median distance / error at epsilon tables).
    """
    owner = "adversarial_distances"
    p, batch_size = _check_args(x, y, norm, batch_size, owner)
    attack = FMN(norm=p) if attack is None else attack
    _check_attack(attack, p, owner)
    parts = [attack.run(model, xb, yb).delta_norm for xb, yb in zip(x.split(batch_size), y.split(batch_size))]
    return torch.cat(parts) if parts else x.new_empty(0)


def median_adversarial_distance(distances: torch.Tensor) -> torch.Tensor:
    """Median of per-input adversarial distances (``inf`` entries count as the largest).

    For an even count the two middle values are averaged (as ``numpy.median``); ``inf`` results
    when at least half of the inputs could not be attacked.

    Args:
        distances: ``(N,)`` from ``adversarial_distances`` (0 misclassified, ``inf`` failed).

    Shape:
        a 0-dim tensor.

    Example:
        >>> import math, torch
        >>> median_adversarial_distance(torch.tensor([0.0, 0.2, 0.4, math.inf]))
        tensor(0.3000)
    """
    d = _check_distances(distances, "median_adversarial_distance")
    _check_nonempty(d, "median_adversarial_distance")
    s = d.sort().values
    n = s.numel()
    if n % 2:
        return s[n // 2]
    lo, hi = s[n // 2 - 1], s[n // 2]
    return torch.where(hi.isinf(), hi, (lo + hi) / 2)


def error_at_eps(distances: torch.Tensor, eps: float | Sequence[float]) -> torch.Tensor:
    """Fraction of inputs with adversarial distance ``<= eps`` (the error under a budget-``eps`` attack).

    Misclassified inputs (distance 0) count at every ``eps``, so ``error_at_eps(d, 0)`` is the clean
    error; failed attacks (``inf``) never count.

    Args:
        distances: ``(N,)`` from ``adversarial_distances``.
        eps: a float >= 0 or a sequence of them.

    Shape:
        0-dim for a float ``eps``, ``(len(eps),)`` for a sequence.

    Example:
        >>> import math, torch
        >>> error_at_eps(torch.tensor([0.0, 0.2, 0.4, math.inf]), [0.1, 0.3])
        tensor([0.2500, 0.5000])
    """
    owner = "error_at_eps"
    d = _check_distances(distances, owner)
    e = check_eps(eps, owner)
    if e is None:
        raise ValueError(
            f"The 'eps' parameter of {owner} must be a float >= 0 or a sequence of them. Got None instead."
        )
    _check_nonempty(d, owner)
    grid = torch.as_tensor(e, dtype=d.dtype, device=d.device)
    return (d[None, :] <= grid.reshape(-1, 1)).to(d.dtype).mean(dim=1).reshape(grid.shape)


def _check_distances(distances: object, owner: str) -> torch.Tensor:
    if not isinstance(distances, torch.Tensor) or not distances.is_floating_point() or distances.dim() != 1:
        raise TypeError(
            f"The 'distances' parameter of {owner} must be a 1-D floating-point tensor. "
            f"Got {getattr(distances, 'shape', type(distances).__name__)} instead."
        )
    if bool(distances.isnan().any()) or bool((distances < 0).any()):
        raise ValueError(
            f"The 'distances' parameter of {owner} must hold values >= 0 (inf allowed). "
            "Got NaN or negative values instead."
        )
    return distances


def _check_nonempty(distances: torch.Tensor, owner: str) -> None:
    if distances.numel() == 0:
        raise ValueError(f"The 'distances' parameter of {owner} must be non-empty. Got 0 values instead.")


def distance_summary(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: float | str = 2,
    eps: float | Sequence[float] = (),
    attack: object | None = None,
    batch_size: int = 256,
) -> dict[str, object]:
    """One attack run -> Finlay/Oberman's row: median distance and error at each ``eps``.

    Args:
        model, x, y, norm, attack, batch_size: as in ``adversarial_distances``.
        eps: budgets for the error column (a float or a sequence; may be empty).

    Returns:
        ``{"norm": float, "median_distance": 0-dim tensor, "eps": tuple of floats,
        "error": (len(eps),) tensor, "clean_error": 0-dim tensor, "distances": (N,) tensor}``.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(4, 3)
        >>> x = torch.rand(6, 4)
        >>> row = distance_summary(model, x, model(x).argmax(1), norm=2, eps=[0.1, 0.5])
        >>> row["error"].shape
        torch.Size([2])
    """
    owner = "distance_summary"
    p, _ = parse_norm(norm, "norm", owner, allowed=NORMS, type_exc=ValueError)
    empty = isinstance(eps, Sequence) and not isinstance(eps, (str, bytes)) and len(eps) == 0
    checked = () if empty else check_eps(eps, owner)
    grid = (checked,) if isinstance(checked, float) else tuple(checked or ())
    d = adversarial_distances(model, x, y, norm=p, attack=attack, batch_size=batch_size)
    return {
        "norm": p,
        "median_distance": median_adversarial_distance(d),
        "eps": grid,
        "error": error_at_eps(d, list(grid)) if grid else d.new_empty(0),
        "clean_error": error_at_eps(d, 0.0),
        "distances": d,
    }


def rho_adv(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    attack: object | None = None,
    reference: str = "prediction",
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    r"""Average robustness ``rho_adv`` (DeepFool, eq. 15; Matyasko & Chau 2017).

    .. math::

        \rho_{adv}(f) = \frac{1}{|D|} \sum_{x \in D} \frac{\|r(x)\|_2}{\|x\|_2}

    with ``r(x)`` the perturbation DeepFool finds. Following DeepFool's definition, ``r(x)`` changes
    the classifier's *estimated* label ``argmax f(x)`` and the mean runs over every input of the
    test set (``reference='prediction'``, the default; ``y`` is then not used). With
    ``reference='label'`` the true labels are attacked instead: misclassified inputs have
    ``r = 0`` and still count in the mean. Inputs the attack fails on within its step budget are
    left out of the mean (a warning is logged); ``ratio`` is ``inf`` for them.

    ``r`` is clipped to the attack's input bounds (``(0, 1)`` by default), unlike the paper's
    unconstrained DeepFool.

    Args:
        model: ``nn.Module`` returning logits ``(N, C)``.
        x: inputs ``(N, *)``.
        y: labels ``(N,)``; required for ``reference='label'``.
        attack: an l2 minimum-norm attack with ``run``. Default ``DeepFool(norm=2)`` (50 steps,
            overshoot 0.02, 10 candidate classes, bounds ``(0, 1)``).
        reference: ``'prediction'`` (default) or ``'label'``.
        batch_size: inputs per attack call. Default 256.

    Returns:
        ``{"rho_adv": 0-dim tensor, "ratio": (N,) ||r||_2/||x||_2, "success": (N,) bool,
        "labels": (N,) the labels that were attacked}``.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(4, 3)
        >>> out = rho_adv(model, torch.rand(6, 4))
        >>> out["ratio"].shape
        torch.Size([6])

    Reference:
        S.-M. Moosavi-Dezfooli, A. Fawzi, P. Frossard. "DeepFool", CVPR 2016, eq. 15;
        A. Matyasko, L.-P. Chau. "Margin maximization for robust classification using deep
        learning", IJCNN 2017.
    """
    owner = "rho_adv"
    check_choice(reference, "reference", owner, REFERENCES)
    batch_size = check_int(batch_size, "batch_size", owner, low=1, type_exc=ValueError)
    check_x(x, owner)
    if reference == "label":
        if y is None:
            raise ValueError(f"The 'y' parameter of {owner} must be given when reference='label'. Got None instead.")
        check_inputs(x, y, owner)
        labels = y.to(device=x.device, dtype=torch.int64)
    else:
        if y is not None:
            check_inputs(x, y, owner)
        labels = _predict(model, x, batch_size)
    attack = DeepFool(norm=2) if attack is None else attack
    _check_attack(attack, 2.0, owner)
    results = [attack.run(model, xb, yb) for xb, yb in zip(x.split(batch_size), labels.split(batch_size))]
    norms = torch.cat([r.delta_norm for r in results])
    success = torch.cat([r.success for r in results])
    ratio = norms / flat_norm(x.detach(), 2.0)
    kept = success & ratio.isfinite()
    if not bool(kept.all()):
        logger.warning("rho_adv: %d of %d inputs left out (attack failed or ||x|| = 0)", int((~kept).sum()), x.shape[0])
    value = ratio[kept].mean() if bool(kept.any()) else ratio.new_tensor(math.nan)
    return {"rho_adv": value, "ratio": ratio, "success": success, "labels": labels}


def linearized_input_margins(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: float | str = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Signed linearised distance to the closest class boundary at the input layer.

    .. math::

        d(x) = \min_{i \ne y} \frac{z_y(x) - z_i(x)}{\|\nabla_x (z_y(x) - z_i(x))\|_q},
        \qquad 1/p + 1/q = 1

    (Elsayed et al. 2018, eq. 7 at the input, without the loss's epsilon). Negative for
    misclassified inputs; exact for a linear model without bounds; ``+-inf`` where the gradient
    of a class difference is zero. One forward pass and ``C - 1`` backward passes for the whole batch.

    Args:
        model: ``nn.Module`` returning logits ``(N, C)`` (its mode is left as it is).
        x: inputs ``(N, *)``.
        y: labels ``(N,)``.
        norm: ``p``: 2 or ``math.inf``. Default 2.

    Returns:
        ``(d, nearest)``: ``(N,)`` distances and ``(N,)`` the minimising class ``i``.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(4, 3)
        >>> d, i = linearized_input_margins(model, torch.rand(5, 4), torch.zeros(5, dtype=torch.long))
        >>> d.shape, i.shape
        (torch.Size([5]), torch.Size([5]))

    Reference:
        G. Elsayed, D. Krishnan, H. Mobahi, K. Regan, S. Bengio. "Large Margin Deep Networks for
        Classification", NeurIPS 2018, eq. 7.
    """
    owner = "linearized_input_margins"
    p, q = parse_norm(norm, "norm", owner, allowed=NORMS, type_exc=ValueError)
    check_inputs(x, y, owner)
    y = y.to(device=x.device, dtype=torch.int64)
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xg)
        num_classes = check_logits(logits, y, owner)
        cols = torch.arange(num_classes - 1, device=x.device)
        others = cols[None, :] + (cols[None, :] >= y[:, None]).long()  # (N, C - 1), every i != y
        f = logits.gather(1, y[:, None]) - logits.gather(1, others)
        grad_norms = []
        for k in range(num_classes - 1):
            (g,) = torch.autograd.grad(f[:, k].sum(), xg, retain_graph=k < num_classes - 2)
            grad_norms.append(flat_norm(g, q))
    w = torch.stack(grad_norms, dim=1)
    # a zero gradient: the linearised boundary is infinitely far (on the side given by the sign of f)
    d = linearized_margin(f.detach(), w)
    best = d.argmin(dim=1)
    rows = torch.arange(d.shape[0], device=x.device)
    return d[rows, best], others[rows, best]


def margin_report(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: float | str = 2,
    attack: object | None = None,
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    """Per-input margin report at the input layer: linearised estimate, attack distance, gap.

    * ``linearized``: ``linearized_input_margins`` (signed; negative when misclassified).
    * ``min_norm``: ``adversarial_distances`` (0 when misclassified, ``inf`` when the attack fails),
      an upper bound on the true distance to the boundary.
    * ``gap = min_norm - linearized``: how far the first-order estimate is from a real
      adversarial (0 for a linear model without bounds; can be either sign for deep nets).

    Args:
        model, x, y, norm, attack, batch_size: as in ``adversarial_distances``.

    Returns:
        a dict of ``(N,)`` tensors (one row per input, ready for ``pandas.DataFrame``):
        ``index, label, pred, correct, nearest_class, linearized, min_norm, gap``.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(4, 3)
        >>> x = torch.rand(5, 4)
        >>> rows = margin_report(model, x, model(x).argmax(1), norm=2)
        >>> sorted(rows)
        ['correct', 'gap', 'index', 'label', 'linearized', 'min_norm', 'nearest_class', 'pred']

    Reference:
        G. Elsayed et al., NeurIPS 2018, eq. 7 (the linearised distance the loss uses).
    """
    owner = "margin_report"
    p, batch_size = _check_args(x, y, norm, batch_size, owner)
    y = y.to(device=x.device, dtype=torch.int64)
    lin, nearest = [], []
    with eval_mode(model):
        for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
            d, i = linearized_input_margins(model, xb, yb, norm=p)
            lin.append(d)
            nearest.append(i)
    linearized = torch.cat(lin) if lin else x.new_empty(0)
    min_norm = adversarial_distances(model, x, y, norm=p, attack=attack, batch_size=batch_size)
    pred = _predict(model, x, batch_size)
    return {
        "index": torch.arange(x.shape[0], device=x.device),
        "label": y,
        "pred": pred,
        "correct": pred == y,
        "nearest_class": torch.cat(nearest) if nearest else y.new_empty(0),
        "linearized": linearized,
        "min_norm": min_norm,
        "gap": min_norm - linearized,
    }
