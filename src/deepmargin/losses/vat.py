"""Virtual adversarial training (Miyato et al., 2015/2018): the local distributional smoothness loss.

The virtual adversarial perturbation is the direction in which the model's predictive
distribution changes fastest around ``x``: the top eigenvector of the Hessian of
``r -> KL(p(x) || p(x + r))`` at ``r = 0``, found by power iteration with finite differences
(one backward pass per iteration), scaled to length ``eps``. No labels are needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_int, check_real, check_reduction, param_error, reduce
from ._checks import NONNEGATIVE, POSITIVE
from .registry import LossOption, LossSpec, int_at_least_0, nonneg_float, positive_float, register_loss

__all__ = ["vat_loss", "VATLoss"]

OWNER = "vat_loss"


def vat_loss(
    model: nn.Module,
    x: torch.Tensor,
    *,
    eps: float,
    xi: float = 1e-6,
    power_iterations: int = 1,
    reduction: str = "mean",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Virtual adversarial loss ``KL(p(x) || p(x + r_adv))`` per sample (Miyato et al.).

    .. math::

        r_{adv} = \varepsilon \frac{d}{\lVert d \rVert_2}, \qquad
        d \leftarrow \frac{\nabla_r \mathrm{KL}\big(p(\cdot|x)\,\|\,p(\cdot|x + r)\big)\big|_{r = \xi d}}
                         {\lVert \cdot \rVert_2}, \qquad
        \ell(x) = \mathrm{KL}\big(\hat p(\cdot|x)\,\|\,p(\cdot|x + r_{adv})\big)

    starting from a random standard normal ``d`` (each sample's ``d`` normalised on its own),
    ``power_iterations`` times. Near ``r = 0`` the KL is ``r^T H r / 2`` with ``H`` the Hessian
    (for logits ``W x + b``, ``H = W^T (diag(p) - p p^T) W``), and the step is one power iteration
    on ``H``. ``p(x)`` is a constant (computed without grad) and ``r_adv`` is detached, so the
    loss backpropagates only through ``p(x + r_adv)``.

    The model is used in the mode it is in (``train()`` / ``eval()`` are not changed); it runs
    ``power_iterations + 2`` times, so batch norm in training mode updates its running statistics
    on the perturbed batches too. The random start uses ``generator`` or torch's global RNG.

    Args:
        model: any ``nn.Module`` mapping ``x`` to logits ``(N, K)``.
        x: the batch ``(N, ...)``, floating point (labels are not needed).
        eps: the norm ``epsilon`` > 0 of the perturbation (l_2, per sample).
        xi: the finite-difference step ``xi`` > 0 of the power iteration. Default 1e-6.
        power_iterations: int >= 0; 0 uses the random direction itself. Default 1.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'`` over samples. Default ``'mean'``.
        generator: optional ``torch.Generator`` for the random start.

    Returns:
        The loss: a scalar, or ``(N,)`` with ``reduction='none'``.

    Shape:
        - x: ``(N, *)``; output: scalar, or ``(N,)`` if ``reduction='none'``.

    Example::

        >>> import torch
        >>> from deepmargin.losses import vat_loss
        >>> _ = torch.manual_seed(0)
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> loss = vat_loss(net, torch.randn(6, 4), eps=0.5)
        >>> loss.backward()
        >>> bool(loss >= 0)
        True

    Reference:
        T. Miyato, S. Maeda, M. Koyama, S. Ishii. Virtual Adversarial Training: a Regularization
        Method for Supervised and Semi-supervised Learning. IEEE TPAMI 2018 (arXiv:1704.03976).
    """
    _check_vat_args(model, x, eps, xi, power_iterations, reduction, OWNER)
    with torch.no_grad():
        clean_logits = model(x)
    loss = _vat_from_logits(model, x, clean_logits, eps, xi, int(power_iterations), generator)
    return reduce(loss, reduction)


def _check_vat_args(model, x, eps, xi, power_iterations, reduction, owner) -> None:
    if not isinstance(model, nn.Module):
        raise param_error(owner, "model", "an nn.Module", type(model).__name__, TypeError)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() == 0:
        raise param_error(owner, "x", "a floating-point tensor of shape (N, ...)",
                          type(x).__name__ if not isinstance(x, torch.Tensor) else f"dtype {x.dtype}",
                          TypeError)
    check_real(eps, "eps", owner, low=0, low_open=True, expected=POSITIVE)
    check_real(xi, "xi", owner, low=0, low_open=True, expected=POSITIVE)
    check_int(power_iterations, "power_iterations", owner, low=0, type_exc=ValueError)
    check_reduction(reduction, owner)


def _normalize(d: torch.Tensor) -> torch.Tensor:
    """Each sample's slice of ``d`` scaled to unit l_2 norm (zero slices stay zero)."""
    norms = torch.linalg.vector_norm(d.flatten(1), ord=2, dim=1)
    norms = norms.clamp_min(torch.finfo(d.dtype).tiny).view(-1, *([1] * (d.dim() - 1)))
    return d / norms


def _kl(clean_log_p: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per-sample ``KL(p || q)`` from log p (constant) and the logits of q -> ``(N,)``."""
    return F.kl_div(F.log_softmax(logits, dim=1), clean_log_p, reduction="none", log_target=True).sum(dim=1)


def _check_logits(logits: torch.Tensor, n: int, owner: str) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != n:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise param_error(owner, "model", f"a module returning logits of shape (N={n}, K)",
                          f"an output of shape {shape}")


def _adversarial_direction(model, x, clean_log_p, xi, power_iterations, generator) -> torch.Tensor:
    """Unit (per sample) direction ``d`` after ``power_iterations`` steps from a random start."""
    x = x.detach()
    d = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    d = _normalize(d)
    for _ in range(power_iterations):
        d = d.requires_grad_(True)
        kl = _kl(clean_log_p, model(x + xi * d)).sum()
        (grad,) = torch.autograd.grad(kl, d)
        d = _normalize(grad.detach())
    return d.detach()


def _vat_from_logits(model, x, clean_logits, eps, xi, power_iterations, generator) -> torch.Tensor:
    """Per-sample VAT loss given the clean logits (detached here)."""
    _check_logits(clean_logits, x.shape[0], OWNER)
    clean_log_p = F.log_softmax(clean_logits.detach(), dim=1)
    d = _adversarial_direction(model, x, clean_log_p, float(xi), power_iterations, generator)
    return _kl(clean_log_p, model(x.detach() + float(eps) * d))


class VATLoss(nn.Module):
    r"""Cross-entropy on the labelled samples plus the VAT loss on all samples.

    .. math::

        \mathcal{L} = \mathrm{ce\_weight} \cdot \mathrm{CE}_{\text{labelled}}
            + \mathrm{VAT}_{\text{all}}

    ``forward(x, y)`` returns ``(loss, logits)``. ``y`` holds class indices in ``[0, K)``, or
    ``-1`` for an unlabelled sample, which contributes only the VAT term (semi-supervised
    training). With ``reduction='mean'`` each term is averaged over its own samples, as in
    Miyato et al.: the cross-entropy over the labelled samples (0 when there are none) and the
    VAT term over all samples, so it is not the mean of the ``'none'`` output when some samples are
    unlabelled. ``'none'`` gives per sample ``ce_weight * CE_n`` (0 if unlabelled) ``+ VAT_n`` and
    ``'sum'`` its sum. The clean forward pass that gives ``logits`` also gives the (detached)
    reference distribution ``p(x)`` of the VAT term.

    Args:
        model: any ``nn.Module`` mapping a batch to logits ``(N, K)``.
        eps, xi, power_iterations, generator: as :func:`vat_loss`.
        ce_weight: weight >= 0 of the cross-entropy. Default 1.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default ``'mean'``.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> from deepmargin.losses import VATLoss
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 3))
        >>> criterion = VATLoss(net, eps=1.0)
        >>> y = torch.tensor([0, 2, -1, -1, 1, -1])  # -1: unlabelled
        >>> loss, logits = criterion(torch.rand(6, 1, 4, 4), y)
        >>> loss.backward()
    """

    def __init__(self, model: nn.Module, *, eps: float, xi: float = 1e-6, power_iterations: int = 1,
                 ce_weight: float = 1.0, reduction: str = "mean",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        owner = "VATLoss"
        if not isinstance(model, nn.Module):
            raise param_error(owner, "model", "an nn.Module", type(model).__name__, TypeError)
        self.model = model
        self.eps = check_real(eps, "eps", owner, low=0, low_open=True, expected=POSITIVE)
        self.xi = check_real(xi, "xi", owner, low=0, low_open=True, expected=POSITIVE)
        self.power_iterations = check_int(power_iterations, "power_iterations", owner, low=0, type_exc=ValueError)
        self.ce_weight = check_real(ce_weight, "ce_weight", owner, low=0, expected=NONNEGATIVE)
        self.reduction = check_reduction(reduction, owner)
        self.generator = generator

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        owner = "VATLoss"
        _check_vat_args(self.model, x, self.eps, self.xi, self.power_iterations, self.reduction, owner)
        logits = self.model(x)
        _check_logits(logits, x.shape[0], owner)
        labelled = _check_semi_target(target, logits, owner)
        vat = _vat_from_logits(self.model, x, logits, self.eps, self.xi, self.power_iterations, self.generator)
        safe_target = target.to(torch.int64).clamp_min(0)
        ce = F.cross_entropy(logits, safe_target, reduction="none") * labelled.to(logits.dtype)
        if self.reduction == "none":
            return self.ce_weight * ce + vat, logits
        if self.reduction == "sum":
            return self.ce_weight * ce.sum() + vat.sum(), logits
        n_labelled = int(labelled.sum())
        ce_mean = ce.sum() / n_labelled if n_labelled else ce.sum()  # 0 (kept in the graph) if none
        return self.ce_weight * ce_mean + vat.mean(), logits

    def extra_repr(self) -> str:
        return (f"eps={self.eps}, xi={self.xi}, power_iterations={self.power_iterations}, "
                f"ce_weight={self.ce_weight}, reduction={self.reduction!r}")


def _check_semi_target(target: object, logits: torch.Tensor, owner: str) -> torch.Tensor:
    """``target`` (N,) integers in ``[-1, K)``; return the boolean mask of labelled samples."""
    if not isinstance(target, torch.Tensor):
        raise param_error(owner, "target", "an int64 tensor of class indices (-1: unlabelled)",
                          type(target).__name__, TypeError)
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise param_error(owner, "target", "an integer (int64) tensor of class indices (-1: unlabelled)",
                          f"dtype {target.dtype}", TypeError)
    if target.shape != logits.shape[:1]:
        raise param_error(owner, "target", f"a tensor of shape ({logits.shape[0]},) matching logits",
                          f"shape {tuple(target.shape)}")
    k = logits.shape[1]
    bad = (target < -1) | (target >= k)
    if bool(bad.any()):
        raise param_error(owner, "target", f"class indices in [0, {k - 1}] or -1 (unlabelled)",
                          f"a target of {target[bad][0].item()}")
    return target != -1


register_loss(LossSpec(
    name="vat",
    summary="ce_weight x cross-entropy + KL(p(x) || p(x + r_adv)), r_adv by power iteration",
    reference="Miyato et al., TPAMI 2018 (virtual adversarial training)",
    options=(
        LossOption("eps", 1.0, positive_float, "norm (l_2) of the virtual adversarial perturbation"),
        LossOption("xi", 1e-6, positive_float, "finite-difference step of the power iteration"),
        LossOption("power_iterations", 1, int_at_least_0, "power iterations"),
        LossOption("ce_weight", 1.0, nonneg_float, "weight of the cross-entropy term"),
    ),
    build=lambda model, o: VATLoss(model, eps=o["eps"], xi=o["xi"], power_iterations=o["power_iterations"],
                                   ce_weight=o["ce_weight"]),
    accepts_unlabelled=True,
))
