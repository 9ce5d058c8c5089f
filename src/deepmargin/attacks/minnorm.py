"""Minimum-norm attacks: the result type they share and FMN (Pintor et al., 2021) in l2 and l_inf.

A minimum-norm attack looks for the smallest perturbation ``delta`` (in the l_p norm) with
``argmax f(x + delta) != y`` and ``x + delta`` inside the input bounds. Its per-sample
``||delta||_p`` is an upper bound on the true distance to the decision boundary, which is what
the robustness metrics (median adversarial distance, error at epsilon, margin reports) need.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from ._base import check_bounds, check_float, check_inputs, check_int, check_norm, check_within_bounds, eval_mode

__all__ = ["FMN", "MinNormResult"]

logger = logging.getLogger(__name__)


class MinNormResult(NamedTuple):
    """What a minimum-norm attack found for each input of a batch.

    Attributes:
        x_adv: the adversarial batch, shaped like ``x``. Where the attack failed it holds what the
            attack documents (``x`` itself for FMN, the last iterate for DeepFool).
        delta_norm: ``(N,)`` l_p norm of ``x_adv - x`` where ``success``, ``inf`` where the attack
            failed. Inputs that are misclassified to begin with have ``delta_norm == 0``.
        success: ``(N,)`` bool, ``argmax model(x_adv) != y``.
    """

    x_adv: torch.Tensor
    delta_norm: torch.Tensor
    success: torch.Tensor


# --------------------------------------------------------------------------------------------
# helpers shared with DeepFool and the robustness metrics


def flat_norm(t: torch.Tensor, p: float) -> torch.Tensor:
    """Per-sample l_p norm of a batch ``(N, ...)`` -> ``(N,)`` for ``p`` in {1, 2, inf}."""
    flat = t.flatten(1)
    if p == math.inf:
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(flat.shape[0])
    if p == 1:
        return flat.abs().sum(dim=1)
    return flat.norm(p=2, dim=1)


def dual_norm_exponent(p: float) -> float:
    """The q with 1/p + 1/q = 1 for p in {1, 2, inf}."""
    return {1.0: math.inf, 2.0: 2.0, math.inf: 1.0}[float(p)]


def project_to_ball(delta: torch.Tensor, radius: torch.Tensor, p: float) -> torch.Tensor:
    """Project each ``delta[i]`` onto the l_p ball of radius ``radius[i]`` (p = 2 or inf).

    l2: ``delta * min(1, r / ||delta||_2)``; l_inf: clamp every coordinate to ``[-r, r]``.
    ``radius`` may contain ``inf`` (no projection).
    """
    shape = (-1,) + (1,) * (delta.dim() - 1)
    r = radius.reshape(shape)
    if p == math.inf:
        return torch.maximum(torch.minimum(delta, r), -r)
    norms = flat_norm(delta, 2.0).reshape(shape)
    scale = torch.where(norms > r, r / norms.clamp_min(torch.finfo(delta.dtype).tiny), torch.ones_like(norms))
    return delta * scale


def check_eps(eps: object, owner: str) -> float | tuple[float, ...] | None:
    """Validate ``eps``: ``None``, one float >= 0, or a non-empty sequence of them."""
    if eps is None:
        return None
    if isinstance(eps, torch.Tensor):
        eps = eps.tolist()
    if isinstance(eps, Sequence) and not isinstance(eps, (str, bytes)):
        values = tuple(eps)
        if values and all(
            isinstance(e, numbers.Real) and not isinstance(e, bool) and 0 <= float(e) < math.inf for e in values
        ):
            return tuple(float(e) for e in values)
    elif isinstance(eps, numbers.Real) and not isinstance(eps, bool) and 0 <= float(eps) < math.inf:
        return float(eps)
    raise ValueError(
        f"The 'eps' parameter of {owner} must be None, a finite float >= 0 or a non-empty sequence "
        f"of them. Got {eps!r} instead."
    )


def check_logits(logits: torch.Tensor, y: torch.Tensor, owner: str) -> int:
    """Check that the model returned ``(N, C)`` logits with ``C >= 2`` and that ``y < C``."""
    if logits.dim() != 2 or logits.shape[0] != y.shape[0] or logits.shape[1] < 2:
        raise ValueError(
            f"The 'model' parameter of {owner} must return logits of shape (N, C) with C >= 2 for "
            f"N = {y.shape[0]} inputs. Got {tuple(logits.shape)} instead."
        )
    num_classes = logits.shape[1]
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"The 'y' parameter of {owner} must hold class indices in [0, {num_classes - 1}]. "
            f"Got values in [{int(y.min())}, {int(y.max())}] instead."
        )
    return num_classes


def runner_up_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j`` per row: positive iff the input is classified as ``y`` (no ties)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return true - others.amax(dim=1)


class _MinNormAttack:
    """Common ``__call__`` of the minimum-norm attacks: run once, then cut to every ``eps``.

    Subclasses set ``norm``, ``bounds``, ``eps`` and implement ``run(model, x, y)``.
    """

    norm: float
    bounds: tuple[float, float]
    eps: float | tuple[float, ...] | None

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> MinNormResult:  # pragma: no cover
        raise NotImplementedError

    def _prepare(
        self, x: torch.Tensor, y: torch.Tensor, owner: str
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
        """Check ``x`` (inside the bounds), ``y``; return the detached ``x``, int64 labels on its
        device, and the shape ``(-1, 1, ..., 1)`` that broadcasts a per-sample ``(N,)`` tensor
        against ``x``."""
        check_inputs(x, y, owner)
        check_within_bounds(x, self.bounds, owner)
        x0 = x.detach()
        return x0, y.to(device=x.device, dtype=torch.int64), (-1,) + (1,) * (x0.dim() - 1)

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor | list[torch.Tensor]:
        """Attack ``x`` (labels ``y``) and return the adversarial batch shaped like ``x``.

        With ``eps=None`` this is the minimal adversarial found (see ``run``). With a float ``eps``
        the found perturbation is projected onto the l_p ball of radius ``eps`` (as foolbox does for
        minimisation attacks), so the batch is a valid attack at that budget; with a sequence of
        epsilons a list with one batch per epsilon is returned from a single attack run.
        """
        result = self.run(model, x, y)
        if self.eps is None:
            return result.x_adv
        return self.restrict(x, result.x_adv, self.eps)

    def restrict(
        self, x: torch.Tensor, x_adv: torch.Tensor, eps: float | Sequence[float]
    ) -> torch.Tensor | list[torch.Tensor]:
        """Project ``x_adv - x`` onto the l_p ball of radius ``eps`` (or each of several) and clip to bounds."""
        eps_checked = check_eps(eps, type(self).__name__)
        if eps_checked is None:
            return x_adv
        low, high = self.bounds
        x = x.detach()
        delta = x_adv.detach() - x

        def cut(e: float) -> torch.Tensor:
            radius = torch.full((x.shape[0],), e, dtype=x.dtype, device=x.device)
            return (x + project_to_ball(delta, radius, self.norm)).clamp(low, high)

        if isinstance(eps_checked, tuple):
            return [cut(e) for e in eps_checked]
        return cut(eps_checked)


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
        self.norm = check_norm(norm, owner)
        self.steps = check_int(steps, "steps", owner, 1)
        self.alpha_init = check_float(alpha_init, "alpha_init", owner, strict=True)
        self.alpha_final = (
            self.alpha_init / 100
            if alpha_final is None
            else check_float(alpha_final, "alpha_final", owner, strict=True)
        )
        for name, value in (("gamma_init", gamma_init), ("gamma_final", gamma_final)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) < 1:
                raise ValueError(
                    f"The '{name}' parameter of {owner} must be a float in (0, 1). Got {value!r} instead."
                )
        self.gamma_init = float(gamma_init)
        self.gamma_final = float(gamma_final)
        if init not in self.INITS:
            raise ValueError(
                f"The 'init' parameter of {owner} must be one of {list(self.INITS)}. Got {init!r} instead."
            )
        self.init = init
        self.binary_search_steps = check_int(binary_search_steps, "binary_search_steps", owner, 0)
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
                from .deepfool import DeepFool  # deepfool imports this module

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
