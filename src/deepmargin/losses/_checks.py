"""Argument validation shared by the losses (scikit-learn's message template)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from ..checks import param_error  # re-exported: the package's one error template

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: str, owner: str) -> str:
    if reduction not in REDUCTIONS:
        raise param_error(owner, "reduction", "one of 'none', 'mean', 'sum'", reduction)
    return reduction


def check_logits_target(logits: torch.Tensor, target: torch.Tensor, owner: str) -> torch.Tensor:
    """Check ``logits`` (N, C) and ``target`` (N,) integer indices in [0, C); return target as int64."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise param_error(owner, "logits", "a floating-point tensor of shape (N, C)", _describe(logits), TypeError)
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise param_error(owner, "logits", "a tensor of shape (N, C) with C >= 2", f"shape {tuple(logits.shape)}")
    if not isinstance(target, torch.Tensor):
        raise param_error(owner, "target", "an int64 tensor of class indices", type(target).__name__, TypeError)
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise param_error(owner, "target", "an integer (int64) tensor of class indices", f"dtype {target.dtype}", TypeError)
    if target.shape != logits.shape[:1]:
        raise param_error(owner, "target", f"a tensor of shape ({logits.shape[0]},) matching logits", f"shape {tuple(target.shape)}")
    num_classes = logits.shape[1]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        bad = target[(target < 0) | (target >= num_classes)][0].item()
        raise param_error(owner, "target", f"class indices in [0, {num_classes - 1}]", f"a target of {bad}")
    return target.to(torch.int64)


def check_positive(value: object, owner: str, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise param_error(owner, name, "a finite real number", value, TypeError)
    if float(value) < 0 or (not allow_zero and float(value) == 0):
        raise param_error(owner, name, "a number >= 0" if allow_zero else "a number > 0", value)
    return float(value)


def check_per_layer(value: object, num_layers: int, owner: str, name: str) -> list[float]:
    """A positive float, or a sequence of one positive float per layer -> list of floats."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != num_layers:
            raise param_error(
                owner, name, f"a float or a sequence of {num_layers} floats (one per layer)",
                f"a sequence of length {len(value)}",
            )
        return [check_positive(v, owner, name) for v in value]
    return [check_positive(value, owner, name)] * num_layers


def dual_exponent(norm: object, owner: str) -> tuple[float, float]:
    """Parse ``norm`` (p >= 1, or inf / 'inf') and return (p, q) with 1/p + 1/q = 1."""
    if isinstance(norm, str) and norm.lower() in ("inf", "linf"):
        norm = math.inf
    if isinstance(norm, bool) or not isinstance(norm, numbers.Real) or math.isnan(float(norm)):
        raise param_error(owner, "norm", "a real number p >= 1 or math.inf", norm, TypeError)
    p = float(norm)
    if p < 1:
        raise param_error(owner, "norm", "a real number p >= 1 or math.inf", norm)
    if p == 1:
        return p, math.inf
    if math.isinf(p):
        return p, 1.0
    return p, p / (p - 1)


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of dtype {x.dtype}"
    return type(x).__name__
