"""Shared plumbing for attacks: model mode handling, per-sample tensor helpers and argument checks."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from ..capture.modes import eval_mode  # noqa: F401 - re-exported: the attacks use the package's one


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a ``(N,)`` tensor to broadcast against ``like`` of shape ``(N, *)``."""
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


def lp_norms(t: torch.Tensor, p: float) -> torch.Tensor:
    """Per-sample l_p norm of a batch ``(N, *)`` -> ``(N,)`` (max-abs for ``p = inf``)."""
    flat = t.reshape(t.shape[0], -1)
    return flat.abs().amax(dim=1) if math.isinf(p) else torch.linalg.vector_norm(flat, ord=p, dim=1)


def resolve_generator(
    override: torch.Generator | None, generator: torch.Generator | None, seed: int | None
) -> torch.Generator | None:
    """The generator of one call: ``override``, else ``generator``, else a fresh one seeded with ``seed``."""
    if override is not None:
        return override
    if generator is not None:
        return generator
    if seed is not None:
        return torch.Generator().manual_seed(seed)
    return None


# --------------------------------------------------------------------------- argument checks


def check_int(value: object, name: str, owner: str, low: int) -> int:
    """Validate an int parameter ``>= low`` (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(
            f"The '{name}' parameter of {owner} must be an int >= {low}. Got {value!r} instead."
        )
    return int(value)


def check_float(value: object, name: str, owner: str, *, low: float = 0.0, strict: bool = False) -> float:
    """Validate a finite real parameter ``>= low`` (``> low`` when ``strict``); ``low`` is quoted as given."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and math.isfinite(float(value))
        and (float(value) > low if strict else float(value) >= low)
    )
    if not ok:
        bound = f"> {low}" if strict else f">= {low}"
        raise ValueError(
            f"The '{name}' parameter of {owner} must be a finite float {bound}. Got {value!r} instead."
        )
    return float(value)


def check_bool(value: object, name: str, owner: str) -> bool:
    """Validate a bool parameter (a TypeError otherwise)."""
    if not isinstance(value, bool):
        raise TypeError(f"The '{name}' parameter of {owner} must be a bool. Got {value!r} instead.")
    return value


def check_epsilons(epsilons: Sequence[float], owner: str) -> list[float]:
    """Validate a non-empty sequence (or tensor) of finite radii ``>= 0``; return them as floats."""
    if isinstance(epsilons, (str, bytes)) or not isinstance(epsilons, (Sequence, torch.Tensor)):
        raise TypeError(
            f"The 'epsilons' parameter of {owner} must be a sequence of floats >= 0. Got {epsilons!r} instead."
        )
    values = epsilons.tolist() if isinstance(epsilons, torch.Tensor) else list(epsilons)
    if not values:
        raise ValueError(f"The 'epsilons' parameter of {owner} must be non-empty. Got {epsilons!r} instead.")
    return [check_float(e, "epsilons", owner, low=0) for e in values]


def check_generator(generator: object, owner: str) -> None:
    """Validate an optional ``torch.Generator`` (a TypeError otherwise)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"The 'generator' parameter of {owner} must be a torch.Generator or None. "
            f"Got {type(generator).__name__} instead."
        )


def check_seed(seed: int | None, generator: torch.Generator | None, owner: str) -> None:
    """Validate an optional ``seed >= 0`` and an optional ``generator``, which exclude each other."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"The 'seed' parameter of {owner} must be an int >= 0 or None. Got {seed!r} instead.")
    check_generator(generator, owner)
    if seed is not None and generator is not None:
        raise ValueError(f"The 'seed' and 'generator' parameters of {owner} are exclusive. Got both instead.")


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


def check_x(x: object, owner: str) -> None:
    """Check that ``x`` is a floating-point tensor."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"The 'x' parameter of {owner} must be a floating-point tensor. Got {type(x).__name__} instead.")


def check_inputs(x: torch.Tensor, y: torch.Tensor, owner: str) -> None:
    """Check that ``x`` is a float batch and ``y`` a matching int64 label vector."""
    check_x(x, owner)
    if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32):
        raise TypeError(
            f"The 'y' parameter of {owner} must be an integer tensor of class indices. "
            f"Got {getattr(y, 'dtype', type(y).__name__)} instead."
        )
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"The 'y' parameter of {owner} must have shape ({x.shape[0]},) to match x. Got {tuple(y.shape)} instead."
        )


def check_within_bounds(x: torch.Tensor, bounds: tuple[float, float], owner: str) -> None:
    """Raise ``ValueError`` when ``x`` has values outside ``bounds`` (a data/bounds mismatch)."""
    if x.numel() == 0:
        return
    low, high = bounds
    lo, hi = x.min().item(), x.max().item()
    if lo < low or hi > high:
        raise ValueError(
            f"The 'x' parameter of {owner} must lie within bounds={bounds}. Got values in [{lo:.4g}, {hi:.4g}] "
            "instead; pass the bounds of your data (e.g. bounds=(x.min(), x.max()) for normalised data) "
            "or attack raw inputs through a Normalize module."
        )
