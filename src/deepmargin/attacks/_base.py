"""Shared plumbing for attacks: model mode handling and argument checks."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` (and every submodule) in eval mode; restore each module's mode on exit."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was_training in modes:
            m.training = was_training


def check_bounds(bounds: Sequence[float], owner: str) -> tuple[float, float]:
    """Validate an input-bounds pair ``(low, high)`` with ``low < high``."""
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise TypeError(
            f"The 'bounds' parameter of {owner} must be a pair (low, high) of floats. "
            f"Got {bounds!r} instead."
        ) from None
    if not low < high:
        raise ValueError(
            f"The 'bounds' parameter of {owner} must satisfy low < high. Got {bounds!r} instead."
        )
    return low, high


def check_norm(norm: float | str, owner: str, allowed: Sequence[float] = (2.0, math.inf)) -> float:
    """Parse a norm given as a number or 'inf'/'linf'/'l2' and check that it is allowed."""
    text = {"inf": math.inf, "linf": math.inf, "l_inf": math.inf, "l2": 2.0, "l1": 1.0}
    value = text.get(norm.lower()) if isinstance(norm, str) else norm
    if value is None or isinstance(value, bool):
        raise ValueError(
            f"The 'norm' parameter of {owner} must be one of {list(allowed)}. Got {norm!r} instead."
        )
    value = float(value)
    if value not in allowed:
        raise ValueError(
            f"The 'norm' parameter of {owner} must be one of {list(allowed)}. Got {norm!r} instead."
        )
    return value


def check_inputs(x: torch.Tensor, y: torch.Tensor, owner: str) -> None:
    """Check that ``x`` is a float batch and ``y`` a matching int64 label vector."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"The 'x' parameter of {owner} must be a floating-point tensor. Got {type(x).__name__} instead.")
    if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32):
        raise TypeError(
            f"The 'y' parameter of {owner} must be an integer tensor of class indices. "
            f"Got {getattr(y, 'dtype', type(y).__name__)} instead."
        )
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"The 'y' parameter of {owner} must have shape ({x.shape[0]},) to match x. Got {tuple(y.shape)} instead."
        )
