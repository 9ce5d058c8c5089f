"""Minimum-norm attacks: FMN (Pintor et al., 2021) in l2 and l_inf, and the result type and helpers they share.

A minimum-norm attack looks for the smallest perturbation ``delta`` (in the l_p norm) with
``argmax f(x + delta) != y`` and ``x + delta`` inside the input bounds. Its per-sample
``||delta||_p`` is an upper bound on the true distance to the decision boundary, which is what
the robustness metrics (median adversarial distance, error at epsilon, margin reports) need.

The shared pieces (:class:`MinNormResult`, ``flat_norm``, ``project_to_ball``, ``check_eps`` ...)
are defined in ``_minnorm_base.py``, below both DeepFool and FMN (FMN starts from DeepFool), and
importable from here as before.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import nn

from ..checks import check_choice, check_int, check_real, parse_norm
from ._base import check_bounds, eval_mode
from ._minnorm_base import (  # re-exported
    MinNormResult,
    _MinNormAttack,
    check_eps,
    check_logits,
    dual_norm_exponent,
    flat_norm,
    project_to_ball,
    runner_up_margin,
)
from .deepfool import NORMS, DeepFool

__all__ = ["FMN", "MinNormResult"]

logger = logging.getLogger(__name__)


class FMN(_MinNormAttack):
    r"""Fast Minimum-Norm attack (Pintor et al., NeurIPS 2021) in l2 and l_inf.

    FMN alternates a normalised gradient step on the logit margin
    ``L(x) = z_y(x) - max_{j != y} z_j(x)`` with a projection onto an l_p ball whose radius
    ``epsilon_k`` adapts per sample (paper, Algorithm 1)::

        g        = grad_delta L(x + delta)
        epsilon  = max(||delta||_p + L / ||g||_q,
                       (1 + gamma_k) ||delta||_p)            if no adversarial found yet
                   epsilon * (1 + gamma_k)                   if found before, not adversarial now
                   min(epsilon * (1 - gamma_k), ||delta*||_p) if adversarial now
        delta    = clip_bounds(Proj_{||.||_p <= epsilon}(delta - alpha_k * g / ||g||_2))

    with ``1/p + 1/q = 1``, and ``alpha_k`` and ``gamma_k`` decaying from their initial to their
    final values by cosine annealing. The smallest adversarial perturbation seen (``delta*``) is
    returned. ``epsilon`` never exceeds the largest perturbation the bounds allow.

    Two changes to the paper's algorithm, both inactive away from the input bounds and ties:
    ``g`` is zeroed on coordinates that sit on a bound and that the step would push outside it
    (so the linear estimate ``L / ||g||_q`` and the step direction only use coordinates that can
    move; with the full gradient, ``epsilon`` stalls below the boundary on images with many
    saturated pixels), and the ``(1 + gamma_k) ||delta||_p`` floor keeps an iterate that lands
    exactly on a boundary (a tie, which counts as correctly classified) moving outwards.

    FMN follows the runner-up class (the largest other logit), so from ``x`` it can settle on a
    boundary that is not the closest one (e.g. a linear 3-class model where the second-largest
    logit's boundary is farther than the third's). ``init='deepfool'`` (the default) therefore
    starts from DeepFool's adversarial (default settings, same norm and bounds), moved back
    to the boundary by a binary search over the ball radius, as the paper does for given starting
    points; FMN then only shrinks it, so its distance never exceeds DeepFool's. ``init='zero'``
    is the paper's cold start from ``delta = 0``.

    Args:
        norm: 2 or ``math.inf`` (also ``'l2'``, ``'linf'``). Default 2.
        steps: number of iterations (one forward and one backward each, plus a final check).
            Default 100.
        alpha_init: initial gradient step size (an l2 length). Default 1.0.
        alpha_final: final step size; ``None`` means ``alpha_init / 100``.
        gamma_init: initial relative epsilon step, in (0, 1). Default 0.05.
        gamma_final: final relative epsilon step, in (0, 1). Default 0.001.
        init: ``'deepfool'`` (default) or ``'zero'``, see above.
        binary_search_steps: bisection steps that move a starting point to the boundary. Default 10.
        bounds: ``(low, high)`` input bounds. Default ``(0, 1)``.
        eps: ``None`` (default: ``__call__`` returns the minimal adversarial), a float, or a
            sequence of floats (``__call__`` returns one batch per epsilon; see ``__call__``).

    Shape:
        ``x``: ``(N, *)`` floating point inside ``bounds``; ``y``: ``(N,)`` int64. Output shaped like ``x``.
        Inputs where no adversarial is found come back unchanged (``success`` False in ``run``).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(4, 3)
        >>> x, y = torch.rand(8, 4), torch.randint(0, 3, (8,))
        >>> res = FMN(norm=2, steps=20).run(model, x, y)
        >>> res.x_adv.shape, res.delta_norm.shape, res.success.dtype
        (torch.Size([8, 4]), torch.Size([8]), torch.bool)

    Reference:
        M. Pintor, F. Roli, W. Brendel, B. Biggio. "Fast Minimum-norm Adversarial Attacks through
        Adaptive Norm Constraints", NeurIPS 2021, Algorithm 1.
    """

    INITS = ("deepfool", "zero")

    def __init__(
        self,
        *,
        norm: float | str = 2,
        steps: int = 100,
        alpha_init: float = 1.0,
        alpha_final: float | None = None,
        gamma_init: float = 0.05,
        gamma_final: float = 0.001,
        init: str = "deepfool",
        binary_search_steps: int = 10,
        bounds: Sequence[float] = (0.0, 1.0),
        eps: float | Sequence[float] | None = None,
    ) -> None:
        owner = "FMN"
        self.norm, _ = parse_norm(norm, "norm", owner, allowed=NORMS, type_exc=ValueError)
        self.steps = check_int(steps, "steps", owner, low=1, type_exc=ValueError)
        self.alpha_init = check_real(alpha_init, "alpha_init", owner, low=0.0, low_open=True, type_exc=ValueError)
        self.alpha_final = (
            self.alpha_init / 100
            if alpha_final is None
            else check_real(alpha_final, "alpha_final", owner, low=0.0, low_open=True, type_exc=ValueError)
        )
        self.gamma_init, self.gamma_final = (
            check_real(value, name, owner, low=0, high=1, low_open=True, high_open=True, type_exc=ValueError)
            for name, value in (("gamma_init", gamma_init), ("gamma_final", gamma_final))
        )
        self.init = check_choice(init, "init", owner, self.INITS)
        self.binary_search_steps = check_int(binary_search_steps, "binary_search_steps", owner, low=0,
                                             type_exc=ValueError)
        self.bounds = check_bounds(bounds, owner)
        self.eps = check_eps(eps, owner)

    def __repr__(self) -> str:
        return (
            f"FMN(norm={self.norm}, steps={self.steps}, alpha_init={self.alpha_init}, "
            f"alpha_final={self.alpha_final}, gamma_init={self.gamma_init}, "
            f"gamma_final={self.gamma_final}, init={self.init!r}, "
            f"binary_search_steps={self.binary_search_steps}, bounds={self.bounds}, eps={self.eps})"
        )

    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        starting_points: torch.Tensor | None = None,
    ) -> MinNormResult:
        """Run FMN on the whole batch and return the smallest adversarial found per input.

        Args:
            model: any ``nn.Module`` mapping ``x`` to logits ``(N, C)``; put in eval mode for the
                attack and restored afterwards.
            x: inputs inside ``bounds``, ``(N, *)``.
            y: true labels, ``(N,)``.
            starting_points: optional adversarial points shaped like ``x`` to start from (overrides
                ``init``); rows that are not adversarial start from ``x``.

        Returns:
            ``MinNormResult(x_adv, delta_norm, success)``; failed inputs have ``x_adv == x`` and
            ``delta_norm == inf``.
        """
        owner = "FMN"
        x0, y, view = self._prepare(x, y, owner)
        if starting_points is not None and (
            not isinstance(starting_points, torch.Tensor) or starting_points.shape != x.shape
        ):
            raise ValueError(
                f"The 'starting_points' parameter of FMN.run must be a tensor of shape {tuple(x.shape)}. "
                f"Got {getattr(starting_points, 'shape', type(starting_points).__name__)} instead."
            )
        low, high = self.bounds
        p, q = self.norm, dual_norm_exponent(self.norm)
        n = x0.shape[0]
        tiny = torch.finfo(x0.dtype).tiny
        inf = torch.full((n,), math.inf, dtype=x0.dtype, device=x0.device)

        with eval_mode(model):
            with torch.no_grad():
                check_logits(model(x0), y, owner)
            if starting_points is None and self.init == "deepfool":
                start = DeepFool(norm=p, bounds=self.bounds).run(model, x0, y)
                starting_points = start.x_adv
            if starting_points is None:
                delta = torch.zeros_like(x0)
                started = torch.zeros(n, dtype=torch.bool, device=x0.device)
            else:
                delta, started = self._to_boundary(model, x0, y, starting_points.detach().to(x0))
            epsilon = torch.where(started, flat_norm(delta, p), inf)
            best_norm = epsilon.clone()
            best_adv = x0 + delta
            found = started.clone()
            # the largest perturbation that stays inside the bounds
            worst = flat_norm(torch.maximum(x0 - low, high - x0), p)

            with torch.enable_grad():
                for k in range(self.steps + 1):
                    delta.requires_grad_(True)
                    logits = model(x0 + delta)
                    margin = runner_up_margin(logits, y)
                    is_adv = logits.argmax(dim=1) != y
                    delta_norm = flat_norm(delta.detach(), p)
                    better = is_adv & (delta_norm < best_norm)
                    best_norm = torch.where(better, delta_norm, best_norm)
                    best_adv = torch.where(better.reshape(view), (x0 + delta).detach(), best_adv)
                    found |= is_adv
                    if k == self.steps:  # the last iterate has been checked; no more steps
                        break
                    (grad,) = torch.autograd.grad(margin.sum(), delta)
                    delta = delta.detach()
                    margin = margin.detach()
                    # only coordinates that can move: descending along -grad must not leave the bounds
                    x_now = x0 + delta
                    blocked = ((x_now <= low) & (grad > 0)) | ((x_now >= high) & (grad < 0))
                    grad = grad.masked_fill(blocked, 0)

                    cosine = (1 + math.cos(math.pi * k / self.steps)) / 2
                    alpha = self.alpha_final + (self.alpha_init - self.alpha_final) * cosine
                    gamma = self.gamma_final + (self.gamma_init - self.gamma_final) * cosine

                    # linear estimate of the boundary; at least (1 + gamma) ||delta|| so that an
                    # iterate sitting exactly on a boundary (a tie counts as correct) moves out
                    to_boundary = margin.abs() / flat_norm(grad, q).clamp_min(tiny)
                    first_guess = torch.maximum(delta_norm + to_boundary, delta_norm * (1 + gamma))
                    epsilon = torch.where(
                        is_adv,
                        torch.minimum(epsilon * (1 - gamma), best_norm),
                        torch.where(found, epsilon * (1 + gamma), first_guess),
                    )
                    epsilon = torch.minimum(epsilon, worst)

                    step = grad / flat_norm(grad, 2.0).clamp_min(tiny).reshape(view)
                    delta = project_to_ball(delta - alpha * step, epsilon, p)
                    delta = (x0 + delta).clamp(low, high) - x0

        success = best_norm.isfinite()
        best_adv = torch.where(success.reshape(view), best_adv, x0)
        if not bool(success.all()):
            logger.debug("FMN: no adversarial found for %d of %d inputs", int((~success).sum()), n)
        return MinNormResult(best_adv, best_norm, success)

    def _to_boundary(
        self, model: nn.Module, x0: torch.Tensor, y: torch.Tensor, start: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Bisect the ball radius so that ``x0 + Proj_r(start - x0)`` is adversarial with ``r`` small.

        Returns the perturbation (zero where ``start`` is not adversarial) and which rows started.
        """
        low, high = self.bounds
        view = (-1,) + (1,) * (x0.dim() - 1)
        with torch.no_grad():
            delta0 = start.clamp(low, high) - x0
            started = model(x0 + delta0).argmax(dim=1) != y
            delta0 = torch.where(started.reshape(view), delta0, torch.zeros_like(delta0))
            radius = flat_norm(delta0, self.norm)
            lo, hi = torch.zeros_like(radius), torch.ones_like(radius)
            for _ in range(self.binary_search_steps):
                mid = (lo + hi) / 2
                cand = x0 + project_to_ball(delta0, mid * radius, self.norm)
                adv = model(cand).argmax(dim=1) != y
                hi = torch.where(adv, mid, hi)
                lo = torch.where(adv, lo, mid)
            return project_to_ball(delta0, hi * radius, self.norm), started
