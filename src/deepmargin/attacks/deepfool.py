"""DeepFool (Moosavi-Dezfooli et al., CVPR 2016) in l2 and l_inf, batched over inputs and classes."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import nn

from ..checks import check_int, check_real, parse_norm
from ..losses.large_margin import linearized_margin
from ._base import check_bounds, eval_mode
from ._minnorm_base import MinNormResult, _MinNormAttack, check_eps, check_logits, dual_norm_exponent, flat_norm

__all__ = ["DeepFool", "logit_difference_gradients"]

logger = logging.getLogger(__name__)

NORMS = (2.0, math.inf)


def logit_difference_gradients(
    model: nn.Module, x: torch.Tensor, reference: torch.Tensor, others: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Logit differences ``f_k = z_{others_k} - z_{reference}`` and their input gradients.

    One forward pass, then one backward pass per column of ``others`` (the graph is kept between
    them), each for the whole batch at once.

    Args:
        model: maps ``x`` to logits ``(N, C)``. Its mode is left as it is.
        x: inputs ``(N, *)``.
        reference: ``(N,)`` class whose logit is subtracted.
        others: ``(N, K)`` classes to compare against.

    Returns:
        ``(logits, f, grads)``: logits ``(N, C)`` (detached), ``f`` ``(N, K)`` and
        ``grads`` ``(N, K, *)`` with ``grads[:, k] = grad_x f[:, k]``.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        f = logits.gather(1, others) - logits.gather(1, reference[:, None])
        num = others.shape[1]
        grads = [
            torch.autograd.grad(f[:, k].sum(), x, retain_graph=k < num - 1)[0] for k in range(num)
        ]
    return logits.detach(), f.detach(), torch.stack(grads, dim=1)


class DeepFool(_MinNormAttack):
    r"""DeepFool in l2 or l_inf: iterate to the closest linearised class boundary.

    At the current point ``x_i``, for each candidate class ``k`` (the ``candidates - 1`` classes
    other than ``y`` with the highest clean logits) with ``f_k = z_k - z_y`` and
    ``w_k = grad_x f_k``, DeepFool picks ``l = argmin_k |f_k| / ||w_k||_q`` and steps exactly onto
    that linearised boundary (paper, Algorithms 2 and 3)::

        l2:    r_i = (|f_l| / ||w_l||_2 + nudge) * w_l / ||w_l||_2
        l_inf: r_i = (|f_l| / ||w_l||_1 + nudge) * sign(w_l)

    The iterate is ``x_{i+1} = clip(x_0 + (1 + overshoot) * sum_j r_j)`` (overshoot on the total
    perturbation as in the paper; clipping to ``bounds``). Each input stops as soon as it is
    misclassified; only the still-correct inputs are forwarded and updated. All inputs and all
    candidate classes are handled together (one forward and ``candidates - 1`` backward passes per
    step), no per-sample loop.

    Args:
        norm: 2 or ``math.inf`` (also ``'l2'``, ``'linf'``). Default 2.
        steps: maximum number of steps. Default 50.
        overshoot: ``eta`` in ``(1 + eta) * r_total``. Default 0.02.
        candidates: how many of the top classes take part, counting the true class (as in foolbox
            and the authors' code); ``None`` uses all classes. Default 10 (clipped to ``C``).
        nudge: added to every step's linearised distance, as the authors' code and foolbox do
            (``1e-4``). Without it, iterates whose steps are partly removed by clipping to the
            bounds approach the boundary geometrically from inside and end on an exact tie
            (about a third of a small digits MLP's inputs). ``0`` gives the textbook step, which
            lands exactly on the linearised boundary. Default 1e-4.
        bounds: ``(low, high)`` input bounds. Default ``(0, 1)``.
        eps: ``None`` (default: ``__call__`` returns the minimal adversarial), a float, or a
            sequence of floats (``__call__`` returns one batch per epsilon, the found perturbation
            projected onto each epsilon ball, from a single run).

    Shape:
        ``x``: ``(N, *)`` floating point inside ``bounds``; ``y``: ``(N,)`` int64. Output shaped like ``x``.
        Where the attack fails within ``steps`` the last iterate is returned (``success`` False in ``run``).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(4, 3)
        >>> x, y = torch.rand(8, 4), torch.randint(0, 3, (8,))
        >>> x_adv = DeepFool(norm=2, steps=50)(model, x, y)
        >>> x_adv.shape
        torch.Size([8, 4])

    Reference:
        S.-M. Moosavi-Dezfooli, A. Fawzi, P. Frossard. "DeepFool: a simple and accurate method to
        fool deep neural networks", CVPR 2016, Algorithms 2 and 3, eq. 17 (l_inf).
    """

    def __init__(
        self,
        *,
        norm: float | str = 2,
        steps: int = 50,
        overshoot: float = 0.02,
        candidates: int | None = 10,
        nudge: float = 1e-4,
        bounds: Sequence[float] = (0.0, 1.0),
        eps: float | Sequence[float] | None = None,
    ) -> None:
        owner = "DeepFool"
        self.norm, _ = parse_norm(norm, "norm", owner, allowed=NORMS, type_exc=ValueError)
        self.steps = check_int(steps, "steps", owner, low=1, type_exc=ValueError)
        self.overshoot = check_real(overshoot, "overshoot", owner, low=0.0, type_exc=ValueError)
        self.candidates = (
            None if candidates is None else check_int(candidates, "candidates", owner, low=2, type_exc=ValueError)
        )
        self.nudge = check_real(nudge, "nudge", owner, low=0.0, type_exc=ValueError)
        self.bounds = check_bounds(bounds, owner)
        self.eps = check_eps(eps, owner)

    def __repr__(self) -> str:
        return (
            f"DeepFool(norm={self.norm}, steps={self.steps}, overshoot={self.overshoot}, "
            f"candidates={self.candidates}, nudge={self.nudge}, bounds={self.bounds}, eps={self.eps})"
        )

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> MinNormResult:
        """Run DeepFool on the whole batch.

        Args:
            model: any ``nn.Module`` mapping ``x`` to logits ``(N, C)``; put in eval mode for the
                attack and restored afterwards.
            x: inputs inside ``bounds``, ``(N, *)``.
            y: true labels, ``(N,)``.

        Returns:
            ``MinNormResult(x_adv, delta_norm, success)``. Misclassified inputs come back unchanged
            with ``delta_norm == 0``; failed ones as the last iterate with ``delta_norm == inf``.
        """
        owner = "DeepFool"
        x0, y, view = self._prepare(x, y, owner)
        low, high = self.bounds
        q = dual_norm_exponent(self.norm)
        n = x0.shape[0]

        x_adv = x0.clone()
        r_total = torch.zeros_like(x0)
        with eval_mode(model):
            with torch.no_grad():
                logits = model(x0)
            num_classes = check_logits(logits, y, owner)
            k = num_classes if self.candidates is None else min(self.candidates, num_classes)
            # the k - 1 most likely classes other than y, fixed from the clean logits
            others = logits.scatter(1, y[:, None], float("-inf")).topk(k - 1, dim=1).indices
            active = logits.argmax(dim=1) == y  # still correctly classified
            stuck = 0

            for step in range(self.steps + 1):
                idx = active.nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                if step == self.steps:  # only check the last iterate
                    with torch.no_grad():
                        active[idx] = model(x_adv[idx]).argmax(dim=1) == y[idx]
                    break
                out, f, w = logit_difference_gradients(model, x_adv[idx], y[idx], others[idx])
                still = out.argmax(dim=1) == y[idx]
                active[idx] = still
                if not bool(still.any()):
                    break
                idx, f, w = idx[still], f[still], w[still]

                w_norm = flat_norm(w.flatten(0, 1), q).reshape(f.shape)  # (m, k - 1)
                # unsigned step lengths; a zero gradient never reaches the boundary (+inf, "stuck")
                dist = linearized_margin(f.abs(), w_norm, zero_gradient="inf")
                best = dist.argmin(dim=1)
                rows = torch.arange(best.shape[0], device=best.device)
                d, w_best, w_best_norm = dist[rows, best], w[rows, best], w_norm[rows, best]
                movable = torch.isfinite(d)
                stuck = max(stuck, int((~movable).sum()))
                d = torch.where(movable, d + self.nudge, torch.zeros_like(d))
                if self.norm == 2:
                    scale = d / torch.where(movable, w_best_norm, torch.ones_like(w_best_norm))
                    r = scale.reshape(view) * w_best
                else:
                    r = d.reshape(view) * w_best.sign()
                r_total[idx] += r
                x_adv[idx] = (x0[idx] + (1 + self.overshoot) * r_total[idx]).clamp(low, high)

        if stuck:
            logger.warning(
                "DeepFool: up to %d inputs had zero input gradients for every candidate class and "
                "could not move (gradient masking?)",
                stuck,
            )
        success = ~active
        delta_norm = flat_norm(x_adv - x0, self.norm)
        delta_norm = torch.where(success, delta_norm, torch.full_like(delta_norm, math.inf))
        if not bool(success.all()):
            logger.debug("DeepFool: %d of %d inputs still correct after %d steps", int(active.sum()), n, self.steps)
        return MinNormResult(x_adv, delta_norm, success)
