"""Shared plumbing for attacks: model mode handling, per-sample tensor helpers and argument checks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .. import checks
from ..capture.modes import eval_mode  # noqa: F401 - re-exported: the attacks use the package's one
from ..checks import check_bool, check_inputs, check_x  # noqa: F401 - re-exported: the package's validators


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
    """Kept for compatibility: ``checks.check_int(value, name, owner, low=low)``, a ValueError for any bad value."""
    return checks.check_int(value, name, owner, low=low, type_exc=ValueError)


def check_float(value: object, name: str, owner: str, *, low: float = 0.0, strict: bool = False) -> float:
    """Kept for compatibility: ``checks.check_real(value, name, owner, low=low, low_open=strict)``, a ValueError
    for any bad value; ``low`` is quoted as given."""
    return checks.check_real(value, name, owner, low=low, low_open=strict, type_exc=ValueError)


def check_epsilons(epsilons: Sequence[float], owner: str) -> list[float]:
    """Validate a non-empty sequence (or tensor) of finite radii ``>= 0``; return them as floats."""
    if isinstance(epsilons, (str, bytes)) or not isinstance(epsilons, (Sequence, torch.Tensor)):
        raise TypeError(
            f"The 'epsilons' parameter of {owner} must be a sequence of floats >= 0. Got {epsilons!r} instead."
        )
    values = epsilons.tolist() if isinstance(epsilons, torch.Tensor) else list(epsilons)
    if not values:
        raise ValueError(f"The 'epsilons' parameter of {owner} must be non-empty. Got {epsilons!r} instead.")
    return [checks.check_real(e, "epsilons", owner, low=0, type_exc=ValueError) for e in values]


def check_generator(generator: object, owner: str) -> None:
    """Validate an optional ``torch.Generator`` (a TypeError otherwise)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"The 'generator' parameter of {owner} must be a torch.Generator or None. "
            f"Got {type(generator).__name__} instead."
        )


def check_seed(seed: int | None, generator: torch.Generator | None, owner: str) -> None:
    """Validate an optional ``seed >= 0`` and an optional ``generator``, which exclude each other."""
    if seed is not None:
        checks.check_int(seed, "seed", owner, low=0, expected="an int >= 0 or None", type_exc=ValueError)
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
    """Kept for compatibility: ``p`` of ``checks.parse_norm(norm, 'norm', owner, allowed=allowed)``, a ValueError
    for any bad value."""
    return checks.parse_norm(norm, "norm", owner, allowed=allowed, type_exc=ValueError)[0]


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
