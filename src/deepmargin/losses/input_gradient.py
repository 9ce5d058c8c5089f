"""Input-gradient regularisation of the loss (Finlay & Oberman, 2018), functional form.

Adversarial training with a one-step attack of size ``eps`` is, to first order, the clean loss plus
``eps`` times the dual norm of the loss's input gradient::

    max_{||a|| <= eps} l(x + a) ~= l(x) + eps * ||grad_x l(x)||_*

so the expected ``l + eps ||grad_x l||_*`` is trained directly, by double backpropagation. The
Lipschitz ("tulip") variant adds ``lambda`` times the largest gradient norm over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_logits_target, check_real, check_reduction, param_error, reduce
from ._checks import NONNEGATIVE
from .gradient_margin import check_inputs, check_norm, input_grad, lp_norm
from .registry import LossOption, LossSpec, as_norm, nonneg_float, norm_choice, register_loss

__all__ = ["input_gradient_loss", "InputGradientLoss"]

OWNER = "input_gradient_loss"


def input_gradient_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    inputs: torch.Tensor,
    *,
    eps: float,
    norm: float = 2,
    lipschitz: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Cross-entropy plus the norm of its input gradient (Finlay & Oberman's J^1, J^2, J^{2-Lip}).

    .. math::

        J = \mathbb{E}_n\big[\ell_n + \varepsilon \lVert \nabla_x \ell_n \rVert_p\big]
            + \lambda \max_n \lVert \nabla_x \ell_n \rVert_2

    with ``l_n`` the cross-entropy of sample ``n``, ``p = norm`` and ``lambda = lipschitz``.
    ``grad_x l_n`` is each sample's own input gradient, taken as the gradient of ``sum_n l_n``
    with respect to ``inputs`` (``create_graph=True``, so the loss is differentiated through the
    norm). That equals the per-sample gradient when the samples are independent in the forward
    pass; batch norm in training mode couples them (use eval mode for exact per-sample gradients).

    ``norm=1`` gives ``J^1``: by the dual-norm relation ``max_{||a||_inf <= eps} a . g = eps ||g||_1``,
    it is the first-order value of adversarial training against l_inf attacks of size ``eps``,
    which FGSM (the signed gradient, the maximiser ``a = eps sign(g)``) approximates. ``norm=2``
    gives ``J^2`` (the l_2 attack ``a = eps g / ||g||_2``, its own dual). ``norm=math.inf`` is the
    first-order l_1 attack. ``lipschitz > 0`` with ``norm=2`` gives ``J^{2-Lip}`` ("tulip").

    The Lipschitz term is a batch term: it is added to every sample's value, so ``'none'``
    returns ``l_n + eps ||grad_x l_n||_p + lambda max_m ||grad_x l_m||_2``, ``'mean'`` is its mean
    (the formula above) and ``'sum'`` its sum (the batch term counted ``N`` times). With
    ``lipschitz > 0`` the per-sample values therefore depend on the rest of the batch.

    Args:
        logits: scores ``(N, K)`` computed from ``inputs``.
        target: int64 class indices ``(N,)`` in ``[0, K)``.
        inputs: the tensor ``(N, ...)`` with ``requires_grad=True`` that ``logits`` was computed from.
        eps: the weight ``epsilon`` >= 0 of the gradient norm (the attack size it stands for).
        norm: the norm of the loss gradient: 1, 2 (default) or ``math.inf``.
        lipschitz: ``lambda`` >= 0, weight of the batch maximum of ``||grad_x l_n||_2``. Default 0.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'`` over samples. Default ``'mean'``.

    Returns:
        The loss: a scalar, or ``(N,)`` with ``reduction='none'``.

    Shape:
        - logits: ``(N, K)``; target: ``(N,)``; inputs: ``(N, *)``.
        - output: scalar, or ``(N,)`` if ``reduction='none'``.

    Example::

        >>> import torch
        >>> from deepmargin.losses import input_gradient_loss
        >>> _ = torch.manual_seed(0)
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> x = torch.randn(5, 4, requires_grad=True)
        >>> y = torch.tensor([0, 1, 2, 0, 1])
        >>> loss = input_gradient_loss(net(x), y, x, eps=0.1, norm=2, lipschitz=0.01)
        >>> loss.backward()
        >>> bool(loss > torch.nn.functional.cross_entropy(net(x), y))
        True

    Reference:
        C. Finlay, A. Oberman, B. Abbasi. Improved robustness to adversarial examples using
        Lipschitz regularization of the loss. arXiv:1810.00953, 2018.
    """
    target = check_logits_target(logits, target, OWNER)
    inputs = check_inputs(inputs, logits, OWNER)
    eps = check_real(eps, "eps", OWNER, low=0, expected=NONNEGATIVE)
    p = check_norm(norm, OWNER)
    lipschitz = check_real(lipschitz, "lipschitz", OWNER, low=0, expected=NONNEGATIVE)
    check_reduction(reduction, OWNER)

    ce = F.cross_entropy(logits, target, reduction="none")
    g = input_grad(ce, inputs, OWNER)  # (N, *): each sample's grad_x l_n
    loss = ce + eps * lp_norm(g, p)
    if lipschitz:
        loss = loss + lipschitz * lp_norm(g, 2).max()
    return reduce(loss, reduction)


class InputGradientLoss(nn.Module):
    r"""Module form of :func:`input_gradient_loss` that runs the model itself.

    Makes a leaf copy of the input with ``requires_grad=True`` (unless the input already requires
    grad), runs the model and returns ``(loss, logits)``.

    Args:
        model: any ``nn.Module`` mapping a batch to logits ``(N, K)``.
        eps, norm, lipschitz, reduction: as :func:`input_gradient_loss`.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> from deepmargin.losses import InputGradientLoss
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 3))
        >>> criterion = InputGradientLoss(net, eps=0.1, norm=1)  # J^1, the first-order FGSM training
        >>> loss, logits = criterion(torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,)))
        >>> loss.backward()
    """

    def __init__(self, model: nn.Module, *, eps: float, norm: float = 2, lipschitz: float = 0.0,
                 reduction: str = "mean") -> None:
        super().__init__()
        owner = "InputGradientLoss"
        if not isinstance(model, nn.Module):
            raise param_error(owner, "model", "an nn.Module", type(model).__name__, TypeError)
        self.model = model
        self.eps = check_real(eps, "eps", owner, low=0, expected=NONNEGATIVE)
        self.norm = check_norm(norm, owner)
        self.lipschitz = check_real(lipschitz, "lipschitz", owner, low=0, expected=NONNEGATIVE)
        self.reduction = check_reduction(reduction, owner)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        logits = self.model(x)
        loss = input_gradient_loss(logits, target, x, eps=self.eps, norm=self.norm,
                                   lipschitz=self.lipschitz, reduction=self.reduction)
        return loss, logits

    def extra_repr(self) -> str:
        return (f"eps={self.eps}, norm={self.norm}, lipschitz={self.lipschitz}, "
                f"reduction={self.reduction!r}")


register_loss(LossSpec(
    name="input_gradient",
    summary="cross-entropy + eps ||grad_x CE||_norm (+ lipschitz x batch max ||grad_x CE||_2): J1, J2, tulip",
    reference="Finlay, Oberman & Calder, 2018 (J^1, J^2, J^{2-Lip})",
    options=(
        LossOption("eps", 0.1, nonneg_float, "weight of the input-gradient norm"),
        LossOption("norm", 2, norm_choice, "1 gives J^1 (FGSM training's first-order form), 2 gives J^2"),
        LossOption("lipschitz", 0.0, nonneg_float, "lambda of the tulip term (batch max of ||grad_x CE||_2)"),
    ),
    build=lambda model, o: InputGradientLoss(model, eps=o["eps"], norm=as_norm(o["norm"]), lipschitz=o["lipschitz"]),
))
