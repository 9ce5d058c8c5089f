"""Small argument checks shared by the data modules: keyword forms of ``deepmargin.checks``' validators, and predicates."""

from __future__ import annotations

import numbers

import numpy as np

from ..checks import check_int, check_real

__all__ = ["check_fraction", "check_seed", "derive_seed", "is_int", "is_nonnegative_real"]


def is_int(value: object) -> bool:
    """Whether ``value`` is an integer that is not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_nonnegative_real(value: object) -> bool:
    """Whether ``value`` is a finite real number ``>= 0`` (not a bool)."""
    return _is_real(value) and bool(np.isfinite(float(value))) and float(value) >= 0.0  # type: ignore[arg-type]


def check_fraction(value: object, *, name: str, owner: str, low_open: bool, high_open: bool) -> float:
    """Return ``value`` as a float after checking it lies in the stated interval (``deepmargin.checks.check_real``).

    Args:
        value: the user's value.
        name: parameter name used in the message.
        owner: function name used in the message.
        low_open: whether 0 is excluded.
        high_open: whether 1 is excluded.
    """
    return check_real(value, name, owner, low=0, high=1, low_open=low_open, high_open=high_open, type_exc=ValueError)


def check_seed(seed: object, *, owner: str) -> int:
    """Return ``seed`` after checking it is a non-negative int (``deepmargin.checks.check_int`` in this wording)."""
    return check_int(seed, "seed", owner, low=0, expected="a non-negative int")


def derive_seed(seed: int, stage: int) -> int:
    """An independent 32-bit seed for one stage of a seeded pipeline.

    Different ``stage`` values give statistically independent streams for the same ``seed``
    (``numpy.random.SeedSequence`` hashing), so e.g. the validation split and the label noise
    never share random numbers.
    """
    return int(np.random.SeedSequence([seed, stage]).generate_state(1)[0])
