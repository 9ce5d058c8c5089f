r"""Adversarial training with one-step attacks, as in Kurakin et al. (2016), for any training objective.

The recipe of Kurakin, Goodfellow & Bengio, "Adversarial Machine Learning at Scale" (ICLR 2017,
arXiv:1611.01236), Algorithm 1, which Elsayed et al. (2018, Sec. 4.2.3 and Fig. 3 right) combine
with the large-margin loss. For every training batch of :math:`m` samples:

1. :math:`k = \mathrm{round}(r\,m)` of them (``adv_ratio`` :math:`r`; halves round up, and never a
   part of a single sample, see :func:`adversarial_count`) are chosen at random (a permutation drawn from torch's global generator, which the trainer reseeds every
   epoch, so runs are reproducible and resumable);
2. each chosen sample gets its own radius :math:`\epsilon_i \sim |N(0, \sigma^2)|` truncated to
   :math:`[0, \epsilon_{max}]` with :math:`\sigma = \epsilon_{max} / 2` (Kurakin et al.: the
   interval :math:`[0, 16]` of 255 grey levels with :math:`\sigma = 8`; see :func:`sample_epsilons`);
3. it is replaced by its one-step adversarial example crafted on the current model, with the
   *predicted* class :math:`\hat y = \arg\max_j f_j(x)` of the clean input instead of the true label
   (this avoids the "label leaking" Kurakin et al. describe, where the perturbation itself reveals
   the true class), see :func:`craft`:

   .. math::
       x_{adv} = \mathrm{clip}_{[a, b]}\big(x + \epsilon_i\, \mathrm{sign}(\nabla_x\,
       \mathrm{CE}(f(x), \hat y))\big) \quad\text{(FGSM, ``adv_train="fgsm"``)};

4. the loss weighs the adversarial examples by :math:`\lambda` (``adv_weight``):

   .. math::
       L = \frac{\sum_{i \in \mathrm{clean}} L_i + \lambda \sum_{i \in \mathrm{adv}} L_i}{(m - k) + \lambda k},

   computed from the objective's batch means on the two parts (:func:`combine_losses`), so it
   works for every objective (cross-entropy, hinge, large margin) evaluated with the true labels.

Crafting mode: the examples are crafted with the model in **eval mode** (its modes are restored
afterwards). Crafting in training mode would update batch-norm running statistics with an extra,
clean-only batch and draw fresh dropout masks (noisy gradients, extra random draws); in eval mode
crafting has no side effect on the model and consumes no random numbers, and batch norm uses its
running statistics. The crafting gradient is taken with :func:`torch.autograd.grad` with respect
to the input only, so nothing accumulates into the parameters' ``.grad``. With batch norm in
training mode the two objective calls (clean part, adversarial part) normalise each part with its
own batch statistics and each updates the running statistics once.

Adding another one-step attack (e.g. ``"l2"``: :math:`x + \epsilon\, g / \|g\|_2`) takes an entry
in :data:`NORMS` and in :data:`deepmargin.training.config.ADV_TRAIN`.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..attacks.gradient import fgsm, steepest_direction

__all__ = [
    "DIRECTIONS",
    "NORMS",
    "AdversarialBatch",
    "adversarial_batch",
    "adversarial_count",
    "combine_losses",
    "craft",
    "sample_epsilons",
    "truncated_normal_mean",
]

logger = logging.getLogger(__name__)


#: The norm of each one-step attack of ``TrainConfig.adv_train`` (the ``norm`` of
#: :func:`deepmargin.attacks.gradient.fgsm`): ``"fgsm"`` x + eps sign(g) (l_inf), ``"l2"``
#: x + eps g / ||g||_2 (Finlay & Oberman's l_2 adversarial training, the counterpart of the J^2 penalty).
NORMS: dict[str, float] = {"fgsm": math.inf, "l2": 2.0}

#: The perturbation direction of each method, from the input gradient (kept for code written
#: against it; :func:`deepmargin.attacks.gradient.steepest_direction` is the one implementation).
DIRECTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    method: functools.partial(steepest_direction, p=p) for method, p in NORMS.items()
}


def truncated_normal_mean(eps_max: float, sigma: float | None = None) -> float:
    r"""Mean of :math:`|N(0, \sigma^2)|` truncated to :math:`[0, \epsilon_{max}]` (closed form).

    .. math::
        E[\epsilon] = \sigma \sqrt{2/\pi}\, \frac{1 - e^{-a^2/2}}{\mathrm{erf}(a / \sqrt 2)},
        \qquad a = \epsilon_{max} / \sigma.

    Args:
        eps_max: upper end of the interval, > 0.
        sigma: scale of the normal; ``None`` for ``eps_max / 2`` (Kurakin et al.'s ratio).

    Returns:
        The mean (about ``0.7228 * sigma`` for ``a = 2``).

    Example:
        >>> round(truncated_normal_mean(16.0), 3)  # Kurakin et al.: [0, 16] grey levels, sigma 8
        5.782
    """
    sigma = eps_max / 2 if sigma is None else sigma
    a = eps_max / sigma
    return sigma * math.sqrt(2 / math.pi) * (1 - math.exp(-a * a / 2)) / math.erf(a / math.sqrt(2))


def sample_epsilons(n: int, eps_max: float, *, sigma: float | None = None, generator: torch.Generator | None = None) -> Tensor:
    r"""``n`` radii from :math:`|N(0, \sigma^2)|` truncated to :math:`[0, \epsilon_{max}]`, float64 on the CPU.

    Exact inverse-CDF sampling (one uniform draw per radius, so a run draws a fixed amount of
    random numbers): the CDF of the truncated half-normal is
    :math:`F(t) = \mathrm{erf}(t / (\sigma\sqrt 2)) / \mathrm{erf}(\epsilon_{max} / (\sigma\sqrt 2))`, so
    :math:`\epsilon = \sigma \sqrt 2\, \mathrm{erfinv}(u\, \mathrm{erf}(\epsilon_{max} / (\sigma \sqrt 2)))`
    with :math:`u \sim U[0, 1)`.

    Args:
        n: number of radii, >= 0.
        eps_max: the largest radius, > 0.
        sigma: scale of the normal; ``None`` for ``eps_max / 2`` (Kurakin et al.: [0, 16] with sigma 8).
        generator: a CPU ``torch.Generator``; ``None`` for torch's global generator.

    Returns:
        A float64 tensor ``(n,)`` with values in ``[0, eps_max]``.

    Example:
        >>> eps = sample_epsilons(1000, 0.3, generator=torch.Generator().manual_seed(0))
        >>> bool(((eps >= 0) & (eps <= 0.3)).all())
        True
    """
    sigma = eps_max / 2 if sigma is None else sigma
    scale = math.sqrt(2.0) * sigma
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    eps = scale * torch.erfinv(u * math.erf(eps_max / scale))
    return eps.clamp_(0.0, eps_max)


def adversarial_count(m: int, ratio: float) -> int:
    """``k = round(ratio * m)`` (halves round up), the number of adversarial samples in a batch of ``m``.

    The clean and the adversarial part go through the objective separately, and batch norm cannot
    train on a part of a single sample; so when ``k = 1`` or ``m - k = 1`` (small batches, e.g. the
    last one of an epoch), ``k`` becomes the nearest count that leaves no part of one sample (ties
    go to the larger count; a batch of ``m = 2`` or ``3`` then is all adversarial). Batches of one
    sample keep ``k = round(ratio)``.

    Example:
        >>> adversarial_count(32, 0.5), adversarial_count(5, 0.5), adversarial_count(3, 0.1)
        (16, 3, 0)
        >>> adversarial_count(10, 0.9), adversarial_count(64, 0.02)  # 9 and 1 would leave a part of one
        (10, 2)
    """
    target = ratio * m
    k = min(m, max(0, int(math.floor(target + 0.5))))
    if m >= 2 and (k == 1 or m - k == 1):
        allowed = [c for c in range(m + 1) if c != 1 and m - c != 1]
        k = min(allowed, key=lambda c: (abs(c - target), -c))
    return k


def combine_losses(clean: Tensor | None, adv: Tensor | None, n_clean: int, n_adv: int, weight: float) -> Tensor:
    r"""Kurakin et al.'s weighted loss from the two batch means.

    .. math::
        L = \frac{n_{clean}\, \bar L_{clean} + \lambda\, n_{adv}\, \bar L_{adv}}{n_{clean} + \lambda\, n_{adv}}

    which is :math:`(\sum_{clean} L_i + \lambda \sum_{adv} L_i) / ((m - k) + \lambda k)` when the
    means are per-sample averages. A part with no samples (``n = 0``) may be ``None``.

    Args:
        clean, adv: batch-mean losses of the clean and the adversarial part (scalar tensors).
        n_clean, n_adv: their sizes (not both 0).
        weight: :math:`\lambda > 0`.

    Returns:
        The scalar loss (differentiable through both means).

    Example:
        >>> combine_losses(torch.tensor(1.0), torch.tensor(2.0), 2, 2, 0.5)  # (2 + 0.5 * 4) / 3
        tensor(1.3333)
    """
    if n_clean + n_adv == 0:
        raise ValueError("The 'n_clean' and 'n_adv' parameters of combine_losses must not both be 0. Got 0 and 0 instead.")
    if n_adv == 0:
        return clean  # type: ignore[return-value]
    if n_clean == 0:
        return adv  # type: ignore[return-value]
    return (n_clean * clean + weight * n_adv * adv) / (n_clean + weight * n_adv)  # type: ignore[operator]


def craft(
    model: nn.Module,
    x: Tensor,
    eps: Tensor | float,
    *,
    method: str = "fgsm",
    bounds: Sequence[float] | None = None,
) -> tuple[Tensor, Tensor]:
    r"""One-step adversarial examples of ``x`` at per-sample radii, with the model's predicted labels.

    .. math::
        \hat y = \arg\max_j f_j(x), \qquad
        x_{adv} = \mathrm{clip}_{[a, b]}\big(x + \epsilon_i\, d(\nabla_x \mathrm{CE}(f(x), \hat y))\big),

    with :math:`d = \mathrm{sign}` for ``"fgsm"``: :func:`deepmargin.attacks.gradient.fgsm` with
    ``y=None`` (the one FGSM of the library). The model runs in eval mode (its modes are restored;
    no batch-norm statistics change, no dropout) and only the input gradient is computed
    (:func:`torch.autograd.grad`), so the parameters' ``.grad`` stay as they are.

    Args:
        model: returns logits ``(N, C)``.
        x: clean inputs ``(N, *)``.
        eps: radii ``(N,)`` (or one float), in the units of ``x``.
        method: a key of :data:`NORMS`.
        bounds: ``(low, high)`` of valid inputs; ``None`` for unbounded inputs.

    Returns:
        ``(x_adv, y_pred)``: the examples (like ``x``, detached) and the predicted labels ``(N,)``
        they were crafted with.

    Example:
        >>> model = nn.Linear(4, 3)
        >>> x_adv, pred = craft(model, torch.rand(5, 4), torch.full((5,), 0.1), bounds=(0.0, 1.0))
        >>> tuple(x_adv.shape), tuple(pred.shape)
        ((5, 4), (5,))
    """
    if method not in NORMS:
        raise ValueError(f"The 'method' parameter of craft must be one of {list(NORMS)}. Got {method!r} instead.")
    return fgsm(model, x, None, eps=eps, norm=NORMS[method], bounds=bounds)


@dataclass
class AdversarialBatch:
    """One training batch of :func:`adversarial_batch`.

    Attributes:
        loss: the weighted loss (scalar, differentiable).
        logits: logits of every sample of the batch as it was fed (clean or adversarial), in the
            batch's order, detached.
        adv_idx: ``(k,)`` positions in the batch of the samples replaced by adversarial examples.
        adv_mask: ``(m,)`` bool, True at ``adv_idx``.
        x: the batch as fed (the adversarial examples in place of the chosen samples), detached.
        eps: the radii of the adversarial samples ``(k,)`` (float64, CPU), in the order of ``adv_idx``.
        y_pred: the labels they were crafted with (the model's predictions) ``(k,)``, same order.
    """

    loss: Tensor
    logits: Tensor
    adv_idx: Tensor
    adv_mask: Tensor
    x: Tensor
    eps: Tensor
    y_pred: Tensor

    @property
    def n_adv(self) -> int:
        """Number of adversarial samples ``k``."""
        return int(self.adv_mask.sum().item())


def adversarial_batch(
    objective: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    method: str = "fgsm",
    eps_max: float = 0.3,
    ratio: float = 0.5,
    weight: float = 0.3,
    bounds: Sequence[float] | None = None,
) -> AdversarialBatch:
    r"""Kurakin et al.'s adversarial-training loss of one batch (see the module docstring).

    Draws, from torch's global generator on the CPU (the same numbers on every device), first a
    permutation of the ``m`` samples (its first ``k = round(ratio * m)`` entries are replaced), then
    the ``k`` radii (:func:`sample_epsilons`); crafts the examples with :func:`craft`, calls
    ``objective`` on the clean part and on the adversarial part (true labels ``y``) and combines
    the two batch means with :func:`combine_losses`.

    Args:
        objective: ``objective(x, y) -> (batch-mean loss, logits)``, e.g. a
            :class:`deepmargin.training.Objective`.
        model: the model ``objective`` trains (used to craft the examples).
        x, y: the batch ``(m, *)`` and its labels ``(m,)``.
        method: one-step attack, a key of :data:`NORMS`.
        eps_max: the largest radius :math:`\epsilon_{max}`, in input units.
        ratio: share of the batch replaced, in (0, 1].
        weight: :math:`\lambda`, weight of the adversarial examples.
        bounds: ``(low, high)`` of valid inputs, ``None`` for unbounded inputs.

    Returns:
        An :class:`AdversarialBatch`.

    Example:
        >>> model = nn.Linear(4, 3)
        >>> objective = lambda x, y: (torch.nn.functional.cross_entropy(model(x), y), model(x))
        >>> out = adversarial_batch(objective, model, torch.rand(8, 4), torch.arange(8) % 3, bounds=(0.0, 1.0))
        >>> out.n_adv, tuple(out.logits.shape)
        (4, (8, 3))
    """
    m = len(y)
    k = adversarial_count(m, ratio)
    order = torch.randperm(m).to(x.device)
    adv_idx, clean_idx = order[:k], order[k:]
    eps = sample_epsilons(k, eps_max)
    x_fed = x.detach().clone()
    y_pred = y[:0]
    if k:
        x_fed[adv_idx], y_pred = craft(model, x[adv_idx], eps.to(x.device), method=method, bounds=bounds)
    clean_loss = adv_loss = None
    logits_parts = []
    if k < m:
        clean_loss, clean_logits = objective(x_fed[clean_idx], y[clean_idx])
        logits_parts.append((clean_idx, clean_logits))
    if k:
        adv_loss, adv_logits = objective(x_fed[adv_idx], y[adv_idx])
        logits_parts.append((adv_idx, adv_logits))
    loss = combine_losses(clean_loss, adv_loss, m - k, k, weight)
    first = logits_parts[0][1]
    logits = first.new_empty((m, *first.shape[1:]))
    for idx, part in logits_parts:
        logits[idx] = part.detach()
    mask = torch.zeros(m, dtype=torch.bool, device=x.device)
    mask[adv_idx] = True
    return AdversarialBatch(loss=loss, logits=logits, adv_idx=adv_idx, adv_mask=mask, x=x_fed, eps=eps, y_pred=y_pred)
