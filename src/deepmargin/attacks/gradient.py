r"""Gradient attacks with a fixed budget: FGSM, iterative FGSM (IFGSM) and PGD, in l_inf and l_2.

All three ascend a per-input loss :math:`L(x) = \ell(f(x), y)` (cross-entropy of the logits by
default) with steps along the steepest-ascent direction of the norm and stay inside the
:math:`\epsilon`-ball around the clean input and inside the input bounds:

.. math::
    x^{(t+1)} = \mathrm{clip}_{[a, b]}\Big(\Pi_{\|x' - x\|_p \le \epsilon}
        \big(x^{(t)} + \alpha\, s(\nabla_x L(x^{(t)}))\big)\Big),
    \qquad s(g) = \mathrm{sign}(g)\ (p = \infty),\quad s(g) = g / \|g\|_2\ (p = 2).

FGSM is one step with :math:`\alpha = \epsilon` from :math:`x^{(0)} = x` (Goodfellow et al., 2015);
IFGSM takes several fixed steps from :math:`x` (Kurakin et al., 2017, "Adversarial examples in the
physical world"; the attack of Elsayed et al., 2018, Sec. 4.2.3); PGD starts from a random point
of the ball (Madry et al., 2018). The update order (step, project onto the ball, clip to the bounds)
is foolbox's, so the attacks agree with foolbox 3 at the same settings.

Attacks are configuration objects: construct with keyword arguments, call as
``attack(model, x, y)`` for one :math:`\epsilon`, or ``attack.sweep(model, x, y, epsilons)`` for a
list of adversarial batches, one per epsilon, in the order given.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._base import (
    check_bool,
    check_bounds,
    check_epsilons,
    check_float,
    check_generator,
    check_inputs,
    check_int,
    check_norm,
    check_seed,
    check_within_bounds,
    eval_mode,
    lp_norms,
    per_sample,
    resolve_generator,
)
from .checks import warn_if_probabilities, warn_if_training, warn_if_zero_gradients

logger = logging.getLogger(__name__)

__all__ = ["GradientAttack", "FGSM", "IFGSM", "PGD", "fgsm", "norm_name", "attack_loss", "steepest_direction"]

_LOSSES = ("ce", "margin")
_NORM_NAMES = {math.inf: "linf", 2.0: "l2"}


def norm_name(norm: float) -> str:
    """Row label of a norm: ``'linf'`` for ``inf``, ``'l2'`` for 2, ``'l<p>'`` otherwise.

    Example:
        >>> norm_name(float("inf")), norm_name(2)
        ('linf', 'l2')
    """
    return _NORM_NAMES.get(float(norm), f"l{float(norm):g}")


def attack_loss(logits: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    r"""Per-input loss that the gradient attacks ascend.

    ``'ce'``: cross-entropy :math:`-\log \mathrm{softmax}(z)_y`. ``'margin'``: the logit margin
    :math:`\max_{j \ne y} z_j - z_y` (Carlini & Wagner, 2017), which does not saturate.

    Args:
        logits: model outputs.
        y: class indices.
        loss: ``'ce'`` or ``'margin'``.

    Shape:
        logits: ``(N, C)``; y: ``(N,)``; output: ``(N,)``.

    Example:
        >>> attack_loss(torch.tensor([[2.0, 0.0, 1.0]]), torch.tensor([0]), "margin").item()
        -1.0
    """
    fn = _ATTACK_LOSSES.get(loss) if isinstance(loss, str) else None
    if fn is None:
        raise ValueError(f"The 'loss' parameter of attack_loss must be one of {list(_LOSSES)}. Got {loss!r} instead.")
    return fn(logits, y)


def _cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def _logit_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return other - true


#: The objectives the gradient attacks ascend, by name (an attack's own option, not a training loss).
_ATTACK_LOSSES = {"ce": _cross_entropy, "margin": _logit_margin}


# --------------------------------------------------------------------------- tensor helpers


def steepest_direction(grad: torch.Tensor, p: float) -> torch.Tensor:
    """Steepest-ascent direction of unit ``p``-norm: ``sign(g)`` (``p = inf``) or ``g / ||g||_2``
    per sample (0 where ``g = 0``)."""
    if math.isinf(p):
        return grad.sign()
    norms = lp_norms(grad, 2.0).clamp_min(1e-12)
    return grad / per_sample(norms, grad)


def _loss_gradient(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, loss: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(grad, logits, labels)``: the input gradient of ``sum_i attack_loss(f(x)_i, labels_i)``, with
    ``labels = y``, or the model's predictions ``argmax f(x)`` (of the same forward pass) when ``y`` is
    ``None``. Only the input gradient is computed (``torch.autograd.grad``); the model runs as it is."""
    xg = x.detach().requires_grad_(True)
    logits = model(xg)
    labels = logits.detach().argmax(dim=1) if y is None else y
    (grad,) = torch.autograd.grad(attack_loss(logits, labels, loss).sum(), xg)
    return grad, logits, labels


def _fast_gradient_step(
    x0: torch.Tensor, grad: torch.Tensor, eps: float | torch.Tensor, p: float, bounds: Sequence[float] | None
) -> torch.Tensor:
    """``x0 + eps * s(grad)``, clipped to ``bounds`` when given; ``eps`` a number or per-sample radii ``(N,)``."""
    if isinstance(eps, torch.Tensor):
        eps = eps.to(dtype=x0.dtype, device=x0.device)
        if eps.dim() == 1:
            eps = per_sample(eps, x0)
    x = x0 + eps * steepest_direction(grad, p)
    return x if bounds is None else x.clamp(float(bounds[0]), float(bounds[1]))


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    eps: float | torch.Tensor,
    norm: float | str = math.inf,
    bounds: Sequence[float] | None = None,
    loss: str = "ce",
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One fast gradient step from ``x``, the primitive of :class:`FGSM` and of adversarial training.

    .. math::
        x_{adv} = \mathrm{clip}_{[a, b]}\big(x + \epsilon_i\, s(\nabla_x L(f(x), y))\big), \qquad
        s(g) = \mathrm{sign}(g)\ (p = \infty),\quad s(g) = g / \|g\|_2\ (p = 2).

    With ``y=None`` the labels are the model's predictions :math:`\hat y = \arg\max_j f_j(x)`
    (Kurakin et al. 2016 craft adversarial training examples this way, so that the perturbation does
    not leak the true label). The model runs in eval mode (each submodule's mode is restored: no
    batch-norm statistics change, no dropout) and only the input gradient is computed, so the
    parameters' ``.grad`` stay as they are. Unlike :class:`FGSM` no input checks or reliability
    warnings run, which suits a training loop.

    Args:
        model: returns logits ``(N, C)``.
        x: clean inputs ``(N, *)``.
        y: labels ``(N,)`` int64, or ``None`` for the model's predictions.
        eps: the radius (a number) or one radius per sample ``(N,)``, in the units of ``x``.
        norm: ``inf`` (FGSM, default) or ``2`` (fast gradient method with normalised gradient).
        bounds: ``(low, high)`` of valid inputs; ``None`` for unbounded inputs.
        loss: ``'ce'`` (default) or ``'margin'`` (see :func:`attack_loss`).

    Returns:
        ``(x_adv, labels)``: the examples (like ``x``, detached) and the labels they were crafted with.

    Example:
        >>> model = nn.Linear(4, 3)
        >>> x_adv, pred = fgsm(model, torch.rand(5, 4), eps=torch.full((5,), 0.1), bounds=(0.0, 1.0))
        >>> tuple(x_adv.shape), tuple(pred.shape)
        ((5, 4), (5,))

    Reference:
        Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015;
        Kurakin, Goodfellow & Bengio, "Adversarial Machine Learning at Scale", ICLR 2017.
    """
    p = check_norm(norm, "fgsm")
    if loss not in _LOSSES:
        raise ValueError(f"The 'loss' parameter of fgsm must be one of {list(_LOSSES)}. Got {loss!r} instead.")
    x0 = x.detach()
    with eval_mode(model), torch.enable_grad():
        grad, _, labels = _loss_gradient(model, x0, y, loss)
    return _fast_gradient_step(x0, grad, eps, p, bounds).detach(), labels


def _project(x_adv: torch.Tensor, x0: torch.Tensor, eps: float, p: float) -> torch.Tensor:
    """Project ``x_adv`` onto the ``p``-ball of radius ``eps`` around ``x0``."""
    delta = x_adv - x0
    if math.isinf(p):
        return x0 + delta.clamp(-eps, eps)
    norms = lp_norms(delta, 2.0).clamp_min(1e-12)
    factor = (eps / norms).clamp(max=1.0)
    return x0 + delta * per_sample(factor, delta)


def _random_start(x0: torch.Tensor, eps: float, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform sample from the ``p``-ball of radius ``eps`` around ``x0`` (l_inf cube or l_2 ball)."""
    device = generator.device if generator is not None else x0.device
    if math.isinf(p):
        u = torch.rand(x0.shape, generator=generator, device=device, dtype=x0.dtype).to(x0.device)
        return x0 + eps * (2 * u - 1)
    n, d = x0.shape[0], x0[0].numel()
    z = torch.randn((n, d), generator=generator, device=device, dtype=x0.dtype).to(x0.device)
    r = torch.rand((n, 1), generator=generator, device=device, dtype=x0.dtype).to(x0.device)
    z = z / torch.linalg.vector_norm(z, dim=1, keepdim=True).clamp_min(1e-12)
    return x0 + eps * (z * r.pow(1.0 / d)).reshape(x0.shape)


# --------------------------------------------------------------------------- validation


def _check_steps(steps: int | None, owner: str, optional: bool) -> int | None:
    if steps is None and optional:
        return None
    return check_int(steps, "steps", owner, 1)


def _check_step_size(step_size: float | None, owner: str) -> float | None:
    if step_size is None:
        return None
    if (
        isinstance(step_size, bool)
        or not isinstance(step_size, numbers.Real)
        or not math.isfinite(step_size)
        or step_size <= 0
    ):
        raise ValueError(
            f"The 'step_size' parameter of {owner} must be a finite float > 0 or None. Got {step_size!r} instead."
        )
    return float(step_size)


# --------------------------------------------------------------------------- attacks


class GradientAttack:
    r"""Fixed-budget gradient attack: steps of size ``step_size`` projected on the ``eps``-ball and the bounds.

    Base of :class:`FGSM`, :class:`IFGSM` and :class:`PGD` (which only change the defaults);
    see the module docstring for the update. Subclasses set :attr:`name` and :meth:`schedule`.

    Args:
        eps: radius of the perturbation ball, in the units of ``x``.
        norm: ``inf`` (or ``'linf'``) or ``2`` (``'l2'``).
        steps: number of gradient steps.
        step_size: absolute step size :math:`\alpha`.
        random_start: start from a uniform sample of the ball (clipped to the bounds).
        bounds: ``(low, high)`` of valid inputs. Default ``(0, 1)``.
        loss: ``'ce'`` (cross-entropy) or ``'margin'`` (see :func:`attack_loss`).
        seed: seeds a fresh generator on every call (reproducible calls); exclusive with ``generator``.
        generator: a ``torch.Generator`` for the random start (its state advances from call to call).

    Shape:
        x: ``(N, *)`` within ``bounds``; y: ``(N,)`` int64; output: like ``x``.
    """

    name = "gradient"

    def __init__(
        self,
        *,
        eps: float,
        norm: float | str = math.inf,
        steps: int | None = 10,
        step_size: float | None = None,
        random_start: bool = False,
        bounds: Sequence[float] = (0.0, 1.0),
        loss: str = "ce",
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        owner = type(self).__name__
        self.eps = check_float(eps, "eps", owner, low=0)
        self.norm = check_norm(norm, owner)
        self.steps = _check_steps(steps, owner, optional=True)
        self.step_size = _check_step_size(step_size, owner)
        self.random_start = check_bool(random_start, "random_start", owner)
        self.bounds = check_bounds(bounds, owner)
        if loss not in _LOSSES:
            raise ValueError(f"The 'loss' parameter of {owner} must be one of {list(_LOSSES)}. Got {loss!r} instead.")
        self.loss = loss
        check_seed(seed, generator, owner)
        self.seed = seed
        self.generator = generator

    # -- configuration -----------------------------------------------------------------

    @property
    def norm_name(self) -> str:
        """``'linf'`` or ``'l2'`` (the ``norm`` column of result rows)."""
        return norm_name(self.norm)

    def schedule(self, eps: float) -> tuple[int, float]:
        """Number of steps and absolute step size used at radius ``eps``."""
        steps = self.steps if self.steps is not None else 10
        return steps, self.step_size if self.step_size is not None else eps / steps

    def __repr__(self) -> str:
        fields = ["eps", "norm", "steps", "step_size", "random_start", "bounds", "loss", "seed"]
        return f"{type(self).__name__}(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in fields) + ")"

    # -- calling -----------------------------------------------------------------------

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Adversarial batch at radius ``self.eps``.

        Args:
            model: any ``nn.Module`` returning logits ``(N, C)``; run in eval mode, its mode restored.
            x: clean inputs within ``bounds``.
            y: true labels.
            generator: overrides the attack's ``seed``/``generator`` for this call.

        Returns:
            ``x_adv`` shaped like ``x`` (same dtype and device), detached.
        """
        return self.sweep(model, x, y, [self.eps], generator=generator)[0]

    def sweep(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        epsilons: Sequence[float],
        *,
        generator: torch.Generator | None = None,
    ) -> list[torch.Tensor]:
        """Adversarial batches for every radius in ``epsilons``, in the same order.

        ``sweep(model, x, y, [e])[0]`` equals ``attack(model, x, y)`` for an attack built with
        ``eps=e`` and the same ``seed``. With a ``seed``, every radius uses a fresh generator
        seeded with it (the random starts of all radii share one direction, scaled by the radius).

        Args:
            model: any ``nn.Module`` returning logits ``(N, C)``; run in eval mode, its mode restored.
            x: clean inputs within ``bounds``.
            y: true labels.
            epsilons: radii, each ``>= 0``.
            generator: overrides the attack's ``seed``/``generator`` for this call.

        Returns:
            A list of ``len(epsilons)`` tensors shaped like ``x``.

        Example:
            >>> model = nn.Linear(4, 3).eval()
            >>> x, y = torch.rand(5, 4), torch.tensor([0, 1, 2, 0, 1])
            >>> advs = PGD(eps=0.1, steps=5, seed=0).sweep(model, x, y, [0.0, 0.1, 0.2])
            >>> [tuple(a.shape) for a in advs]
            [(5, 4), (5, 4), (5, 4)]
        """
        owner = f"{type(self).__name__}.sweep"
        check_inputs(x, y, owner)
        epsilons = check_epsilons(epsilons, owner)
        check_generator(generator, owner)
        check_within_bounds(x, self.bounds, owner)
        warn_if_training(model, stacklevel=3)
        x0 = x.detach()
        y = y.to(torch.int64)  # int32 labels are accepted; cross-entropy needs int64
        with eval_mode(model), torch.enable_grad():
            return self._sweep(model, x0, y, epsilons, generator)

    # -- implementation ----------------------------------------------------------------

    def _generator(self, override: torch.Generator | None) -> torch.Generator | None:
        return resolve_generator(override, self.generator, self.seed)

    def _gradient(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, check: bool) -> torch.Tensor:
        grad, logits, _ = _loss_gradient(model, x, y, self.loss)
        if check:
            warn_if_probabilities(logits, stacklevel=5)
            warn_if_zero_gradients(grad, stacklevel=5)
        return grad

    def _sweep(
        self, model: nn.Module, x0: torch.Tensor, y: torch.Tensor, epsilons: list[float], generator
    ) -> list[torch.Tensor]:
        out = []
        for i, eps in enumerate(epsilons):
            out.append(self._run(model, x0, y, eps, self._generator(generator), check=i == 0))
        return out

    def _run(
        self, model: nn.Module, x0: torch.Tensor, y: torch.Tensor, eps: float, generator, check: bool
    ) -> torch.Tensor:
        if eps == 0 or x0.numel() == 0:
            return x0.clone()
        low, high = self.bounds
        steps, alpha = self.schedule(eps)
        logger.debug("%s: eps=%g steps=%d step_size=%g", self.name, eps, steps, alpha)
        if self.random_start:
            x = _random_start(x0, eps, self.norm, generator).clamp(low, high)
        else:
            x = x0
        for t in range(steps):
            grad = self._gradient(model, x, y, check=check and t == 0)
            x = x.detach() + alpha * steepest_direction(grad, self.norm)
            x = _project(x, x0, eps, self.norm).clamp(low, high)
        return x.detach()


class FGSM(GradientAttack):
    r"""Fast gradient sign method: one step of size ``eps`` (Goodfellow et al., 2015).

    .. math::
        x_{adv} = \mathrm{clip}_{[a, b]}\big(x + \epsilon\, \mathrm{sign}(\nabla_x L(x))\big)
        \quad (p = \infty), \qquad
        x_{adv} = \mathrm{clip}_{[a, b]}\big(x + \epsilon\, \nabla_x L / \|\nabla_x L\|_2\big) \quad (p = 2).

    A sweep computes the gradient once and reuses it for every radius.

    Args:
        eps: perturbation size, in the units of ``x``.
        norm: ``inf`` (FGSM, default) or ``2`` (fast gradient method with normalised gradient).
        bounds: ``(low, high)`` of valid inputs. Default ``(0, 1)``.
        loss: ``'ce'`` (default) or ``'margin'``.

    Shape:
        x: ``(N, *)``; y: ``(N,)``; output: like ``x``.

    Example:
        >>> model = nn.Linear(4, 3).eval()
        >>> x, y = torch.rand(5, 4), torch.tensor([0, 1, 2, 0, 1])
        >>> x_adv = FGSM(eps=0.1)(model, x, y)
        >>> bool(((x_adv - x).abs() <= 0.1 + 1e-6).all())
        True

    Reference:
        Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015;
        used by Elsayed et al. (2018), Sec. 4.2.3.
    """

    name = "fgsm"

    def __init__(
        self,
        *,
        eps: float,
        norm: float | str = math.inf,
        bounds: Sequence[float] = (0.0, 1.0),
        loss: str = "ce",
    ) -> None:
        super().__init__(eps=eps, norm=norm, steps=1, step_size=None, random_start=False, bounds=bounds, loss=loss)

    def schedule(self, eps: float) -> tuple[int, float]:
        return 1, eps

    def _sweep(self, model, x0, y, epsilons, generator) -> list[torch.Tensor]:
        if x0.numel() == 0 or all(e == 0 for e in epsilons):
            return [x0.clone() for _ in epsilons]
        low, high = self.bounds
        grad = self._gradient(model, x0, y, check=True)
        out = []
        for eps in epsilons:
            if eps == 0:
                out.append(x0.clone())
                continue
            x = _fast_gradient_step(x0, grad, eps, self.norm, None)  # the step of fgsm(); the projection
            out.append(_project(x, x0, eps, self.norm).clamp(low, high).detach())  # keeps it in the ball
        return out


class IFGSM(GradientAttack):
    r"""Iterative FGSM (basic iterative method) of Kurakin et al. (2017): fixed steps, clip after each.

    .. math::
        x^{(0)} = x, \quad
        x^{(t+1)} = \mathrm{clip}_{[a, b]}\big(\mathrm{clip}_{x, \epsilon}(x^{(t)} + \alpha\,
        \mathrm{sign}(\nabla_x L(x^{(t)})))\big).

    Default schedule (Kurakin et al.'s, stated for 8-bit images): one grey level per step,
    :math:`\alpha = (b - a)/255`, and :math:`T = \lfloor\min(\epsilon/\alpha + 4,\ 1.25\,\epsilon/\alpha)\rfloor`
    steps (at least 1), enough to reach the ball's surface. Giving ``steps`` alone sets
    :math:`\alpha = \epsilon / T`; giving ``step_size`` alone keeps Kurakin's rule for :math:`T`;
    giving both uses them as they are.

    Args:
        eps: radius of the ball, in the units of ``x``.
        norm: ``inf`` (default; the paper's IFGSM) or ``2`` (normalised-gradient steps).
        steps: number of steps, or ``None`` for Kurakin's rule.
        step_size: absolute step :math:`\alpha`, or ``None`` (see above).
        bounds: ``(low, high)`` of valid inputs. Default ``(0, 1)``.
        loss: ``'ce'`` (default) or ``'margin'``.

    Shape:
        x: ``(N, *)``; y: ``(N,)``; output: like ``x``.

    Example:
        >>> IFGSM(eps=0.1).schedule(0.1)  # 0.1 * 255 = 25.5 grey levels
        (29, 0.00392156862745098)
        >>> IFGSM(eps=0.1, steps=10).schedule(0.1)
        (10, 0.01)

    Reference:
        Kurakin, Goodfellow & Bengio, "Adversarial examples in the physical world", 2017;
        Elsayed et al., "Large Margin Deep Networks for Classification", NeurIPS 2018, Sec. 4.2.3.
    """

    name = "ifgsm"

    def __init__(
        self,
        *,
        eps: float,
        norm: float | str = math.inf,
        steps: int | None = None,
        step_size: float | None = None,
        bounds: Sequence[float] = (0.0, 1.0),
        loss: str = "ce",
    ) -> None:
        super().__init__(
            eps=eps, norm=norm, steps=steps, step_size=step_size, random_start=False, bounds=bounds, loss=loss
        )
        if steps is None and step_size is None and not math.isfinite(self.bounds[1] - self.bounds[0]):
            raise ValueError(
                "The 'steps' parameter of IFGSM must be given when the bounds are infinite (the default step "
                f"size is one grey level, (high - low) / 255). Got steps=None with bounds={self.bounds} instead."
            )

    def schedule(self, eps: float) -> tuple[int, float]:
        if self.steps is not None and self.step_size is not None:
            return self.steps, self.step_size
        if self.steps is not None:
            return self.steps, eps / self.steps
        alpha = self.step_size if self.step_size is not None else (self.bounds[1] - self.bounds[0]) / 255.0
        ratio = eps / alpha
        return max(1, int(min(ratio + 4, 1.25 * ratio) + 1e-9)), alpha


class PGD(GradientAttack):
    r"""Projected gradient descent (ascent on the loss) in l_inf or l_2, with optional random start.

    .. math::
        x^{(0)} \sim \mathcal{U}(B_p(x, \epsilon)) \text{ clipped to } [a, b]\ \text{(or } x\text{)}, \quad
        x^{(t+1)} = \mathrm{clip}_{[a, b]}\big(\Pi_{B_p(x, \epsilon)}(x^{(t)} + \alpha\, s(\nabla_x L(x^{(t)})))\big).

    The l_inf start is uniform on the cube, the l_2 start uniform in the ball. Defaults: 40 steps
    (Madry et al. on MNIST) of :math:`\alpha = 2.5\,\epsilon / T` (the step rule of Madry's group's
    ``robustness`` library; Madry et al. used 0.01 for eps 0.3), random start on.

    Args:
        eps: radius of the ball, in the units of ``x``.
        norm: ``inf`` (default) or ``2``.
        steps: number of steps. Default 40.
        step_size: absolute step :math:`\alpha`; ``None`` for ``2.5 * eps / steps``.
        random_start: start from a uniform point of the ball. Default ``True``.
        bounds: ``(low, high)`` of valid inputs. Default ``(0, 1)``.
        loss: ``'ce'`` (default) or ``'margin'``.
        seed: seeds a fresh generator on every call (reproducible calls); exclusive with ``generator``.
        generator: a ``torch.Generator`` for the random start (its state advances between calls).

    Shape:
        x: ``(N, *)``; y: ``(N,)``; output: like ``x``.

    Example:
        >>> model = nn.Linear(4, 3).eval()
        >>> x, y = torch.rand(5, 4), torch.tensor([0, 1, 2, 0, 1])
        >>> x_adv = PGD(eps=0.5, norm=2, steps=10, seed=0)(model, x, y)
        >>> bool(((x_adv - x).norm(dim=1) <= 0.5 + 1e-6).all())
        True

    Reference:
        Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
        Adversarial Attacks", ICLR 2018.
    """

    name = "pgd"

    def __init__(
        self,
        *,
        eps: float,
        norm: float | str = math.inf,
        steps: int = 40,
        step_size: float | None = None,
        random_start: bool = True,
        bounds: Sequence[float] = (0.0, 1.0),
        loss: str = "ce",
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(
            eps=eps,
            norm=norm,
            steps=_check_steps(steps, "PGD", optional=False),
            step_size=step_size,
            random_start=random_start,
            bounds=bounds,
            loss=loss,
            seed=seed,
            generator=generator,
        )

    def schedule(self, eps: float) -> tuple[int, float]:
        steps = self.steps if self.steps is not None else 40
        return steps, self.step_size if self.step_size is not None else 2.5 * eps / steps
