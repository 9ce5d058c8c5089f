"""What the minimum-norm attacks share: their result type, the ``__call__``/``restrict`` of a minimum-norm attack, and
per-sample norm, projection and check helpers (also used by the robustness metrics).

DeepFool (``deepfool.py``) and FMN (``minnorm.py``, which starts from DeepFool) both build on it,
so neither has to import the other's module to get them.
"""

from __future__ import annotations

from typing import Any

import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from ..checks import check_inputs
from ._base import check_within_bounds

__all__ = [
    "MinNormResult",
    "check_eps",
    "check_logits",
    "dual_norm_exponent",
    "flat_norm",
    "project_to_ball",
    "runner_up_margin",
]


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
# helpers shared with DeepFool, FMN and the robustness metrics


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
        return restrict_to_balls(x, x_adv, eps, norm=self.norm, bounds=self.bounds, owner=type(self).__name__)


def restrict_to_balls(
    x: torch.Tensor, x_adv: torch.Tensor, eps: float | Sequence[float] | None, *, norm: Any,
    bounds: tuple[float, float], owner: str,
) -> torch.Tensor | list[torch.Tensor]:
    """``x_adv - x`` projected onto the l_p ball of radius ``eps`` (or of each of several radii: a
    list) and clipped to ``bounds``; ``eps=None`` returns ``x_adv``. The cut every minimum-norm
    attack (DeepFool, FMN, FAB) applies to report a fixed-budget result."""
    eps_checked = check_eps(eps, owner)
    if eps_checked is None:
        return x_adv
    low, high = bounds
    x = x.detach()
    delta = x_adv.detach() - x

    def cut(e: float) -> torch.Tensor:
        radius = torch.full((x.shape[0],), e, dtype=x.dtype, device=x.device)
        return (x + project_to_ball(delta, radius, norm)).clamp(low, high)

    if isinstance(eps_checked, tuple):
        return [cut(e) for e in eps_checked]
    return cut(eps_checked)
