"""The losses' wording for the package's validators (``deepmargin.checks``), and the old helper names.

The losses quote positive numbers as "a number > 0" (``POSITIVE``; "a number >= 0" is
``NONNEGATIVE``); everything else reads as in :mod:`deepmargin.checks`.
"""

from __future__ import annotations

from .. import checks
from ..checks import REDUCTIONS, check_logits_target, check_reduction, param_error  # noqa: F401 - re-exported

POSITIVE = "a number > 0"
NONNEGATIVE = "a number >= 0"


# ---------------------------------------------------------------- kept for compatibility: old names and orders


def check_positive(value: object, owner: str, name: str, *, allow_zero: bool = False) -> float:
    """Kept for compatibility: ``checks.check_real(value, name, owner, low=0, ...)`` in the losses' wording."""
    return checks.check_real(value, name, owner, low=0, low_open=not allow_zero,
                             expected=NONNEGATIVE if allow_zero else POSITIVE)


def check_per_layer(value: object, num_layers: int, owner: str, name: str) -> list[float]:
    """Kept for compatibility: ``checks.check_per_layer(value, name, owner, num_layers, expected=POSITIVE)``."""
    return checks.check_per_layer(value, name, owner, num_layers, expected=POSITIVE)


def dual_exponent(norm: object, owner: str) -> tuple[float, float]:
    """Kept for compatibility: ``checks.parse_norm(norm, 'norm', owner)``."""
    return checks.parse_norm(norm, "norm", owner)
