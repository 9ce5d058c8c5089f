"""What APGD, Square, FAB and AutoAttack share: norm parsing, seeded generators, sampling in and
projecting onto l_p balls intersected with the input box, rival classes, and per-input success.

Private to ``apgd.py``, ``square.py``, ``fab.py`` and ``autoattack.py``.
"""

from __future__ import annotations

import math

import torch

from ..checks import parse_norm

__all__ = [
    "NORMS",
    "check_attack_norm",
    "make_generator",
    "misclassified",
    "project_ball_box",
    "random_in_ball",
    "rival_classes",
    "view_per_sample",
]

#: The norms these attacks support: l_inf and l_2.
NORMS = (math.inf, 2.0)


def check_attack_norm(norm: object, owner: str) -> float:
    """``math.inf`` for ``'linf'``/``inf``, ``2.0`` for ``'l2'``/``2``; a ValueError for anything else."""
    return parse_norm(norm, "norm", owner, allowed=NORMS, expected="'linf' or 'l2' (or math.inf, 2)",
                      type_exc=ValueError)[0]


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (random draws are made on the CPU and moved to the inputs'
    device, so a seed gives the same attack on every device)."""
    return torch.Generator().manual_seed(seed)


def view_per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(N,)`` -> ``(N, 1, ..., 1)`` broadcasting against ``like`` of shape ``(N, *)``."""
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


def flat_lp(t: torch.Tensor, p: float) -> torch.Tensor:
    """Per-sample l_p norm (p = 2 or inf) of ``(N, *)`` -> ``(N,)``; 0 for an empty sample."""
    flat = t.reshape(t.shape[0], -1)
    if flat.shape[1] == 0:
        return flat.new_zeros(flat.shape[0])
    return flat.abs().amax(dim=1) if math.isinf(p) else flat.norm(p=2, dim=1)


def project_ball_box(
    x: torch.Tensor, x0: torch.Tensor, eps: float | torch.Tensor, p: float, low: float, high: float
) -> torch.Tensor:
    """Project ``x`` onto the l_p ball of radius ``eps`` around ``x0``, then clip to ``[low, high]``.

    For l_inf this is the exact projection onto the intersection. For l_2 it is the projection onto
    the ball followed by the clip (as in AutoAttack); the clip moves every coordinate towards ``x0``'s
    value (``x0`` is inside the box), so the result stays inside the ball.
    """
    delta = x - x0
    if isinstance(eps, torch.Tensor):
        eps_b = view_per_sample(eps.to(x), x)
    else:
        eps_b = eps
    if math.isinf(p):
        delta = torch.maximum(torch.minimum(delta, eps_b), -eps_b) if isinstance(eps_b, torch.Tensor) \
            else delta.clamp(-eps_b, eps_b)
    else:
        norms = view_per_sample(flat_lp(delta, 2.0), x)
        scale = torch.where(norms > eps_b, eps_b / norms.clamp_min(torch.finfo(x.dtype).tiny), torch.ones_like(norms))
        delta = delta * scale
    return (x0 + delta).clamp(low, high)


def random_in_ball(
    x0: torch.Tensor, eps: float | torch.Tensor, p: float, generator: torch.Generator
) -> torch.Tensor:
    """A uniform sample of the l_p ball of radius ``eps`` (a number or ``(N,)``) around each ``x0[i]``
    (l_inf: the cube; l_2: the ball), not clipped. Drawn on the CPU with ``generator``."""
    n = x0.shape[0]
    d = max(1, x0[0].numel()) if n else 1
    dtype = x0.dtype
    eps_t = eps.detach().cpu().to(dtype) if isinstance(eps, torch.Tensor) else torch.full((n,), float(eps), dtype=dtype)
    if math.isinf(p):
        u = 2 * torch.rand(x0.shape, generator=generator, dtype=dtype) - 1
        delta = u * view_per_sample(eps_t, u)
    else:
        z = torch.randn((n, d), generator=generator, dtype=dtype)
        r = torch.rand((n, 1), generator=generator, dtype=dtype).pow(1.0 / d)
        z = z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)
        delta = (z * r * eps_t[:, None]).reshape(x0.shape)
    return x0 + delta.to(x0.device)


def rival_classes(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` classes other than ``y`` with the largest logits, best first: ``(N, k)`` int64."""
    others = logits.detach().scatter(1, y[:, None], float("-inf"))
    return others.argsort(dim=1, descending=True)[:, :k]


def misclassified(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``argmax logits != y`` per row, ``(N,)`` bool (a tie resolved as ``argmax`` does)."""
    return logits.argmax(dim=1) != y
