r"""Fast Adaptive Boundary attack (FAB; Croce & Hein, ICML 2020): minimum-norm adversarials in l_inf and l_2.

FAB looks for the smallest perturbation that changes the decision. At the iterate :math:`x^{(i)}` it
linearises the boundary between the true class :math:`y` and a class :math:`s`,

.. math::
    \pi_s(z) = g_s(x^{(i)}) + \langle \nabla g_s(x^{(i)}), z - x^{(i)} \rangle = 0, \qquad g_s = f_s - f_y,

where :math:`s` is the target class (FAB-T) or, untargeted, the class of the closest linearised
boundary :math:`\arg\min_{s \ne y} |g_s| / \|\nabla g_s\|_q`. It projects both the iterate and the
original point onto that hyperplane intersected with the input box (the exact minimum-norm
projection, :func:`project_on_hyperplane_box`), giving :math:`\delta^{(i)}` and
:math:`\delta_{orig}^{(i)}`, and moves to a biased combination, extrapolated by :math:`\eta`:

.. math::
    \alpha = \min\Big(\frac{\|\delta^{(i)}\|_p}{\|\delta^{(i)}\|_p + \|\delta_{orig}^{(i)}\|_p},\ \alpha_{max}\Big),
    \qquad x^{(i+1)} = \mathrm{clip}\big((1 - \alpha)(x^{(i)} + \eta\, \delta^{(i)})
        + \alpha\, (x_{orig} + \eta\, \delta_{orig}^{(i)})\big).

When :math:`x^{(i+1)}` is misclassified it is recorded (if closer than the best so far) and pulled
back towards the original point, :math:`x^{(i+1)} \leftarrow (1 - \beta)\, x_{orig} + \beta\, x^{(i+1)}`.
Defaults are the paper's :math:`\alpha_{max} = 0.1`, :math:`\eta = 1.05`, :math:`\beta = 0.9`.
The first run starts at :math:`x_{orig}`; further restarts start from a uniform point of the ball of
radius half the best distance so far (or half ``eps``, whichever is smaller).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import nn

from ..checks import check_int, check_real
from ._base import check_bool, check_bounds, check_inputs, check_within_bounds, eval_mode
from ._minnorm_base import MinNormResult, check_eps, check_logits, project_to_ball, restrict_to_balls
from ._robust_common import (
    check_attack_norm,
    flat_lp,
    make_generator,
    misclassified,
    random_in_ball,
    rival_classes,
    view_per_sample,
)
from .checks import warn_if_training
from .deepfool import logit_difference_gradients
from .gradient import norm_name

logger = logging.getLogger(__name__)

__all__ = ["FAB", "project_on_hyperplane_box"]


def project_on_hyperplane_box(
    point: torch.Tensor, w: torch.Tensor, r: torch.Tensor, bounds: Sequence[float], norm: float | str
) -> torch.Tensor:
    r"""Smallest perturbation (in l_inf or l_2) that moves each point onto a hyperplane inside a box.

    Solves, per sample, :math:`\min_\delta \|\delta\|_p` subject to :math:`\langle w, \delta \rangle = r`
    and :math:`low \le point + \delta \le high`, exactly: the optimal :math:`\delta` moves each
    coordinate in the direction of :math:`\mathrm{sign}(r\, w_i)` by :math:`\min(t, room_i)` (l_inf) or
    :math:`\min(t |w_i|, room_i)` (l_2), with :math:`room_i` the distance to the bound in that
    direction and :math:`t` found by sorting the breakpoints of the piecewise-linear
    :math:`t \mapsto \langle w, \delta(t) \rangle`. When the box does not reach the hyperplane the
    result goes as far as it can (every useful coordinate at its bound).

    Args:
        point: ``(N, *)`` points inside the box.
        w: ``(N, *)`` normals.
        r: ``(N,)`` the required :math:`\langle w, \delta \rangle`.
        bounds: ``(low, high)``.
        norm: ``'linf'`` or ``'l2'`` (also ``math.inf``, 2).

    Returns:
        ``delta`` shaped like ``point``.

    Example:
        >>> p = torch.tensor([[0.5, 0.5]]); w = torch.tensor([[1.0, 1.0]])
        >>> project_on_hyperplane_box(p, w, torch.tensor([0.2]), (0.0, 1.0), "linf")
        tensor([[0.1000, 0.1000]])
        >>> project_on_hyperplane_box(p, w, torch.tensor([0.8]), (0.0, 0.8), "l2")  # the box stops it at 0.3
        tensor([[0.3000, 0.3000]])
    """
    p_norm = check_attack_norm(norm, "project_on_hyperplane_box")
    low, high = float(bounds[0]), float(bounds[1])
    shape = point.shape
    pt, wf = point.reshape(shape[0], -1), w.reshape(shape[0], -1)
    target = r.abs()[:, None]
    direction = torch.sign(wf) * torch.sign(r)[:, None]  # the sign each coordinate moves with
    room = torch.where(direction > 0, high - pt, pt - low).clamp_min(0)
    room = torch.where(direction == 0, torch.zeros_like(room), room)
    aw = wf.abs()
    useful = aw > 0
    if math.isinf(p_norm):
        slope, breaks = aw, room
    else:
        slope, breaks = aw * aw, room / aw.clamp_min(torch.finfo(aw.dtype).tiny)
    cap = aw * room
    slope = torch.where(useful, slope, torch.zeros_like(slope))
    breaks = torch.where(useful, breaks, torch.zeros_like(breaks))
    cap = torch.where(useful, cap, torch.zeros_like(cap))
    order = breaks.argsort(dim=1)
    b_sorted, a_sorted, c_sorted = breaks.gather(1, order), slope.gather(1, order), cap.gather(1, order)
    cum_c = c_sorted.cumsum(dim=1)
    total_a = a_sorted.sum(dim=1, keepdim=True)
    tail_a = (total_a - a_sorted.cumsum(dim=1)).clamp_min(0)
    reach = cum_c + torch.where(tail_a > 0, b_sorted * tail_a, torch.zeros_like(tail_a))  # value at each breakpoint
    k = (reach < target).sum(dim=1, keepdim=True)  # first breakpoint that reaches the target
    d = pt.shape[1]
    feasible = k < d
    prev_c = torch.cat([torch.zeros_like(cum_c[:, :1]), cum_c], dim=1).gather(1, k)
    prev_tail = torch.cat([total_a, tail_a], dim=1).gather(1, k)
    t = (target - prev_c) / prev_tail.clamp_min(torch.finfo(pt.dtype).tiny)
    t_max = b_sorted[:, -1:] if d else torch.zeros_like(target)
    t = torch.where(feasible, t, t_max)
    t = torch.where(target > 0, t, torch.zeros_like(t))
    if math.isinf(p_norm):
        magnitude = torch.minimum(t.expand_as(room), room)
    else:
        magnitude = torch.minimum(t * aw, room)
    delta = direction * torch.where(useful, magnitude, torch.zeros_like(magnitude))
    return delta.reshape(shape)


class FAB:
    r"""Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), minimum-norm, in l_inf or l_2.

    See the module docstring for the iteration. Targeted (FAB-T, the default, as in AutoAttack) it
    follows in turn the boundaries towards the ``n_target_classes`` rival classes with the largest
    clean logits, ``restarts`` runs each; untargeted it follows the closest linearised boundary at
    every step (one backward pass per class). Success is any misclassification; the smallest
    adversarial found over all runs is kept.

    With ``eps`` the attack stops for an input as soon as it has an adversarial within ``eps``, and
    calling it returns a batch inside the ``eps``-ball (adversarials found farther away are projected
    onto the ball, as the other minimum-norm attacks do). Without ``eps`` it returns the smallest
    adversarial found (the clean input where none was found).

    Args:
        norm: ``'linf'`` (default) or ``'l2'`` (also ``math.inf``, 2).
        eps: ``None`` (default) or a radius ``>= 0`` at which to stop.
        targeted: FAB-T (default ``True``) or the untargeted FAB.
        n_target_classes: rival classes a targeted attack follows (at most ``C - 1``). Default 9.
        steps: iterations per run. Default 100.
        restarts: runs per input (per target class when targeted). Default 1.
        seed: seeds the random restarts. Default 0.
        bounds: ``(low, high)`` of valid inputs. Default ``(0, 1)``.
        alpha_max, eta, beta: the paper's bias cap, extrapolation and backward step. Defaults 0.1, 1.05, 0.9.

    Shape:
        x: ``(N, *)`` within ``bounds``; y: ``(N,)`` int64; output: like ``x``.

    Example:
        >>> model = nn.Linear(4, 3).double().eval()
        >>> x, y = torch.rand(5, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
        >>> res = FAB(norm="l2", steps=20, bounds=(-10, 10)).run(model, x, y)
        >>> res.delta_norm.shape, res.success.dtype
        (torch.Size([5]), torch.bool)

    Reference:
        F. Croce, M. Hein. "Minimally distorted adversarial examples with a fast adaptive boundary
        attack", ICML 2020, Algorithm 1.
    """

    #: FAB needs input gradients (AutoAttack's black-box check tells gradient attacks from the rest).
    gradient_free = False

    def __init__(
        self,
        *,
        norm: float | str = "linf",
        eps: float | None = None,
        targeted: bool = True,
        n_target_classes: int = 9,
        steps: int = 100,
        restarts: int = 1,
        seed: int = 0,
        bounds: Sequence[float] = (0.0, 1.0),
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
    ) -> None:
        owner = "FAB"
        self.norm = check_attack_norm(norm, owner)
        self.eps = None if eps is None else check_real(
            eps, "eps", owner, low=0, expected="None or a finite float >= 0", type_exc=ValueError)
        self.targeted = check_bool(targeted, "targeted", owner)
        self.n_target_classes = check_int(n_target_classes, "n_target_classes", owner, low=1, type_exc=ValueError)
        self.steps = check_int(steps, "steps", owner, low=1, type_exc=ValueError)
        self.restarts = check_int(restarts, "restarts", owner, low=1, type_exc=ValueError)
        self.seed = check_int(seed, "seed", owner, low=0, type_exc=ValueError)
        self.bounds = check_bounds(bounds, owner)
        self.alpha_max = check_real(alpha_max, "alpha_max", owner, low=0, high=1, type_exc=ValueError)
        self.eta = check_real(eta, "eta", owner, low=1, type_exc=ValueError)
        self.beta = check_real(beta, "beta", owner, low=0, high=1, low_open=True, high_open=True, type_exc=ValueError)

    @property
    def name(self) -> str:
        """``'fab-t'`` or ``'fab'``."""
        return "fab-t" if self.targeted else "fab"

    @property
    def norm_name(self) -> str:
        """``'linf'`` or ``'l2'``."""
        return norm_name(self.norm)

    def __repr__(self) -> str:
        return (f"FAB(norm={self.norm_name!r}, eps={self.eps!r}, targeted={self.targeted!r}, "
                f"n_target_classes={self.n_target_classes!r}, steps={self.steps!r}, restarts={self.restarts!r}, "
                f"seed={self.seed!r}, bounds={self.bounds!r}, alpha_max={self.alpha_max!r}, eta={self.eta!r}, "
                f"beta={self.beta!r})")

    # -- calling -----------------------------------------------------------------------

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The adversarial batch: the smallest adversarial found, cut to the ``eps``-ball when ``eps`` is set."""
        result = self.run(model, x, y)
        return result.x_adv if self.eps is None else self.restrict(x, result.x_adv, self.eps)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> MinNormResult:
        """Attack ``x``; return ``MinNormResult(x_adv, delta_norm, success)``.

        ``delta_norm`` is the l_p distance of the smallest adversarial found (``inf`` where none, 0 for
        inputs misclassified to begin with); ``success`` whether one was found (at any distance: compare
        ``delta_norm <= eps`` for success within ``eps``). The model runs in eval mode (each submodule's
        mode restored afterwards).
        """
        check_inputs(x, y, "FAB.run")
        check_within_bounds(x, self.bounds, "FAB.run")
        warn_if_training(model, stacklevel=3)
        x0, y = x.detach(), y.to(device=x.device, dtype=torch.int64)
        with eval_mode(model):
            return self._run(model, x0, y, self.eps)

    def restrict(
        self, x: torch.Tensor, x_adv: torch.Tensor, eps: float | Sequence[float]
    ) -> torch.Tensor | list[torch.Tensor]:
        """Project ``x_adv - x`` onto the l_p ball of radius ``eps`` (or each of several) and clip to the bounds."""
        return restrict_to_balls(x, x_adv, eps, norm=self.norm, bounds=self.bounds, owner="FAB")

    # -- implementation ----------------------------------------------------------------

    def _run(self, model: nn.Module, x0: torch.Tensor, y: torch.Tensor, eps: float | None) -> MinNormResult:
        n = x0.shape[0]
        dev = x0.device
        best = torch.full((n,), math.inf, dtype=x0.dtype, device=dev)
        best_adv = x0.clone()
        if n == 0:
            return MinNormResult(best_adv, best, torch.zeros(0, dtype=torch.bool, device=dev))
        with torch.no_grad():
            logits = model(x0)
        num_classes = check_logits(logits, y, "FAB")
        best = torch.where(misclassified(logits, y), torch.zeros_like(best), best)
        generator = make_generator(self.seed)
        if self.targeted:
            rivals = rival_classes(logits, y, min(self.n_target_classes, num_classes - 1))
            targets = [rivals[:, k] for k in range(rivals.shape[1])]
        else:
            targets = [None]
        scale = torch.full((n,), math.inf, dtype=x0.dtype, device=dev)  # first linearised distance
        stop = 0.0 if eps is None else eps  # inputs at distance <= stop are done (0: misclassified ones)
        for target in targets:
            for restart in range(self.restarts):
                todo = (best > stop).nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
                if restart == 0:
                    start = x0[todo]
                else:
                    radius = best[todo].clamp(max=math.inf if eps is None else eps)
                    radius = torch.where(torch.isfinite(radius), radius, scale[todo])
                    radius = torch.where(torch.isfinite(radius), 0.5 * radius, torch.zeros_like(radius))
                    start = random_in_ball(x0[todo], radius, self.norm, generator).clamp(*self.bounds)
                sub_best, sub_adv, sub_scale = self._single_run(
                    model, x0[todo], y[todo], None if target is None else target[todo], start,
                    best[todo], best_adv[todo], stop, num_classes,
                )
                best[todo], best_adv[todo] = sub_best, sub_adv
                scale[todo] = torch.minimum(scale[todo], sub_scale)
        success = torch.isfinite(best)
        logger.debug("%s: %d of %d inputs broken", self.name, int(success.sum()), n)
        return MinNormResult(best_adv, best, success)

    def _linearise(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, num_classes: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, g, w)`` at ``x``: ``g = f_s - f_y`` and ``w = grad g`` for the followed class ``s``."""
        if target is not None:
            logits, f, grads = logit_difference_gradients(model, x, y, target[:, None])
            return logits, f[:, 0], grads[:, 0]
        classes = torch.arange(num_classes, device=x.device).expand(x.shape[0], -1)
        others = classes[classes != y[:, None]].reshape(x.shape[0], num_classes - 1)
        logits, f, grads = logit_difference_gradients(model, x, y, others)
        q = 1.0 if math.isinf(self.norm) else 2.0
        gnorm = grads.flatten(2).norm(p=q, dim=2)
        dist = torch.where(gnorm > 0, f.abs() / gnorm.clamp_min(torch.finfo(f.dtype).tiny), torch.full_like(f, math.inf))
        pick = dist.argmin(dim=1)
        rows = torch.arange(x.shape[0], device=x.device)
        return logits, f[rows, pick], grads[rows, pick]

    def _single_run(
        self,
        model: nn.Module,
        x0: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        start: torch.Tensor,
        best: torch.Tensor,
        best_adv: torch.Tensor,
        stop: float,
        num_classes: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One FAB run from ``start``: the updated ``(best, best_adv)`` and the first linearised distance."""
        low, high = self.bounds
        p = self.norm
        best, best_adv = best.clone(), best_adv.clone()
        scale = torch.full_like(best, math.inf)
        idx = torch.arange(x0.shape[0], device=x0.device)
        x = start.clone()
        xo, lab, tgt = x0, y, target

        def record(xs: torch.Tensor, rows: torch.Tensor, adv: torch.Tensor) -> None:
            dist = flat_lp(xs - xo[rows], p)
            better = adv & (dist < best[idx[rows]])
            if bool(better.any()):
                where = idx[rows[better]]
                best[where] = dist[better]
                best_adv[where] = xs[better]

        def drop() -> None:
            nonlocal idx, x, xo, lab, tgt
            keep = best[idx] > stop
            if bool(keep.all()):
                return
            idx, x, xo, lab = idx[keep], x[keep], xo[keep], lab[keep]
            tgt = None if tgt is None else tgt[keep]

        for i in range(self.steps + 1):
            if idx.numel() == 0:
                break
            if i == self.steps:  # the last iterate: only check it
                with torch.no_grad():
                    record(x, torch.arange(idx.numel(), device=x.device), misclassified(model(x), lab))
                break
            logits, g, w = self._linearise(model, x, lab, tgt, num_classes)
            adv = misclassified(logits, lab)
            if bool(adv.any()):
                rows = adv.nonzero().squeeze(1)
                record(x[rows], rows, torch.ones_like(rows, dtype=torch.bool))
                x = x.clone()
                x[rows] = (1 - self.beta) * xo[rows] + self.beta * x[rows]
                _, g_b, w_b = self._linearise(model, x[rows], lab[rows], None if tgt is None else tgt[rows], num_classes)
                g, w = g.clone(), w.clone()
                g[rows], w[rows] = g_b, w_b
                keep = best[idx] > stop
                if not bool(keep.all()):
                    g, w = g[keep], w[keep]
                    drop()
                    if idx.numel() == 0:
                        break
            r = -g
            r_orig = -(g + (w * (xo - x)).flatten(1).sum(dim=1))
            both = project_on_hyperplane_box(torch.cat([x, xo]), torch.cat([w, w]), torch.cat([r, r_orig]),
                                             (low, high), p)
            delta, delta_orig = both[: x.shape[0]], both[x.shape[0]:]
            n1, n2 = flat_lp(delta, p), flat_lp(delta_orig, p)
            if i == 0:
                scale[idx] = n2
            alpha = torch.where(n1 + n2 > 0, n1 / (n1 + n2).clamp_min(torch.finfo(n1.dtype).tiny), torch.zeros_like(n1))
            alpha = view_per_sample(alpha.clamp(0, self.alpha_max), x)
            x = ((1 - alpha) * (x + self.eta * delta) + alpha * (xo + self.eta * delta_orig)).clamp(low, high)
        return best, best_adv, scale
