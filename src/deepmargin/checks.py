"""The package's argument validators and its one error template (scikit-learn's wording).

Every validator builds its message with :func:`param_error`, so that all of them read the same way::

    The 'top_k' parameter of large_margin_loss must be an int in [1, num_classes - 1]. Got 12 instead.

and every scalar validator takes its arguments in one order, ``(value, name, owner, ...)``, with
keyword-only options after them:

* :func:`check_int`, :func:`check_real`, :func:`check_bool`, :func:`check_choice`: one value;
  ``expected`` replaces the default wording where a caller documents another one, and
  ``type_exc`` is the exception for a value of the wrong kind (``TypeError``, or ``ValueError``
  where a caller has always raised that).
* :func:`check_per_layer`: one positive float per layer, from one float or a sequence.
* :func:`parse_norm`: ``p`` of an l_p norm and its dual exponent ``q`` (``1/p + 1/q = 1``).
* :func:`check_reduction` and :func:`reduce`: the ``'none' | 'mean' | 'sum'`` of torch's losses.
* :func:`check_logits_target`, :func:`check_x`, :func:`check_inputs`: the tensors of a batch.

This module imports nothing from the package, so any subpackage can use it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Sequence

import torch

__all__ = [
    "REDUCTIONS",
    "check_bool",
    "check_choice",
    "check_inputs",
    "check_int",
    "check_logits_target",
    "check_per_layer",
    "check_real",
    "check_reduction",
    "check_x",
    "param_error",
    "parse_norm",
    "reduce",
]

REDUCTIONS = ("none", "mean", "sum")

# the names a norm may be given by, besides a number
_NORM_NAMES = {"inf": math.inf, "linf": math.inf, "l_inf": math.inf, "l2": 2.0, "l1": 1.0}


def param_error(owner: str, name: str, expected: str, got: object, exc: type[Exception] = ValueError) -> Exception:
    """Build (not raise) the error "The '<name>' parameter of <owner> must be <expected>. Got <got!r> instead."

    Args:
        owner: the function or class that received the argument, e.g. ``'large_margin_loss'``.
        name: the parameter's name.
        expected: what it must be, phrased to follow "must be", e.g. ``'an int >= 1'``.
        got: what came; quoted with ``repr`` (pass a description string such as
            ``'shape (3, 4)'`` to quote that instead).
        exc: the exception class, ``ValueError`` (default) or ``TypeError``.

    Returns:
        The exception, for ``raise param_error(...)``.

    Example:
        >>> param_error("MLP", "dropout", "a float in [0, 1)", 1.5)
        ValueError("The 'dropout' parameter of MLP must be a float in [0, 1). Got 1.5 instead.")
    """
    return exc(f"The '{name}' parameter of {owner} must be {expected}. Got {got!r} instead.")


# --------------------------------------------------------------------------- scalars


def _interval(noun: str, low: object, high: object, low_open: bool, high_open: bool) -> str:
    """``'an int >= 1'``, ``'a finite float > 0'``, ``'a float in [0, 1)'`` ... (bounds quoted as given)."""
    if low is not None and high is not None:
        return f"{noun} in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{noun} {'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{noun} {'<' if high_open else '<='} {high}"
    return noun


def _within(v: float, low: float | None, high: float | None, low_open: bool, high_open: bool) -> bool:
    if low is not None and (v <= low if low_open else v < low):
        return False
    return high is None or (v < high if high_open else v <= high)


def check_int(
    value: object,
    name: str,
    owner: str,
    *,
    low: int | None = None,
    high: int | None = None,
    expected: str | None = None,
    type_exc: type[Exception] = TypeError,
) -> int:
    """Return ``value`` as an int after checking it is an integer (not a bool) in ``[low, high]``.

    Args:
        value, name, owner: the value, its parameter's name and the function or class that got it.
        low, high: inclusive bounds; ``None`` for none.
        expected: the wording after "must be"; default ``'an int >= low'`` / ``'an int in [low, high]'``.
        type_exc: raised for a value that is not an int (a range error is always a ``ValueError``).

    Example:
        >>> check_int(3, "steps", "PGD", low=1)
        3
        >>> check_int(0, "steps", "PGD", low=1)
        Traceback (most recent call last):
        ...
        ValueError: The 'steps' parameter of PGD must be an int >= 1. Got 0 instead.
    """
    text = expected or _interval("an int", low, high, False, False)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise param_error(owner, name, text, value, type_exc)
    if not _within(int(value), low, high, False, False):
        raise param_error(owner, name, text, value)
    return int(value)


def check_real(
    value: object,
    name: str,
    owner: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
    expected: str | None = None,
    type_exc: type[Exception] = TypeError,
) -> float:
    """Return ``value`` as a float after checking it is a real number (not a bool) in the given interval.

    Args:
        value, name, owner: the value, its parameter's name and the function or class that got it.
        low, high: bounds (``None`` for none), quoted in the message as given (``0`` or ``0.0``).
        low_open, high_open: whether ``low`` / ``high`` themselves are excluded.
        finite: whether ``inf`` is rejected (NaN always is).
        expected: the wording after "must be"; default e.g. ``'a finite float > 0'``,
            ``'a float in [0, 1)'``.
        type_exc: raised for a value that is not a finite real number (a bool, a string, NaN, and
            ``inf`` when ``finite``); a value outside the interval is always a ``ValueError``.

    Example:
        >>> check_real(0.5, "dropout", "MLP", low=0, high=1, high_open=True)
        0.5
        >>> check_real(0.0, "eps", "PGD", low=0, low_open=True)
        Traceback (most recent call last):
        ...
        ValueError: The 'eps' parameter of PGD must be a finite float > 0. Got 0.0 instead.
    """
    noun = "a float" if (low is not None and high is not None) or not finite else "a finite float"
    text = expected or _interval(noun, low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise param_error(owner, name, text, value, type_exc)
    v = float(value)
    if math.isnan(v) or (finite and math.isinf(v)):
        raise param_error(owner, name, text, value, type_exc)
    if not _within(v, low, high, low_open, high_open):
        raise param_error(owner, name, text, value)
    return v


def check_bool(value: object, name: str, owner: str) -> bool:
    """Return ``value`` if it is a bool, else raise a ``TypeError``.

    Example:
        >>> check_bool("yes", "batch_norm", "MLP")
        Traceback (most recent call last):
        ...
        TypeError: The 'batch_norm' parameter of MLP must be a bool. Got 'yes' instead.
    """
    if not isinstance(value, bool):
        raise param_error(owner, name, "a bool", value, TypeError)
    return value


def check_choice(
    value: object, name: str, owner: str, choices: Collection[object], *, expected: str | None = None
) -> object:
    """Return ``value`` if it is one of ``choices``, else raise a ``ValueError``.

    Example:
        >>> check_choice("max", "aggregation", "large_margin_loss", ("max", "sum"))
        'max'
        >>> check_choice("mean", "aggregation", "large_margin_loss", ("max", "sum"))
        Traceback (most recent call last):
        ...
        ValueError: The 'aggregation' parameter of large_margin_loss must be one of ['max', 'sum']. Got 'mean' instead.
    """
    try:
        ok = value in choices
    except (TypeError, ValueError):  # an unhashable value asked of a set, an array
        ok = False
    if isinstance(value, bool) and not any(isinstance(c, bool) for c in choices):
        ok = False  # True == 1: a bool is no stand-in for a number
    if not ok:
        raise param_error(owner, name, expected or f"one of {list(choices)}", value)
    return value


def check_per_layer(
    value: object, name: str, owner: str, num_layers: int, *, allow_zero: bool = False, expected: str | None = None
) -> list[float]:
    """One float > 0 (``>= 0`` with ``allow_zero``) for all layers, or a sequence of one per layer -> list of floats.

    ``expected`` is the wording for one element (default ``'a finite float > 0'``).

    Example:
        >>> check_per_layer(0.5, "gamma", "large_margin_loss", 2)
        [0.5, 0.5]
        >>> check_per_layer([1, 2, 3], "gamma", "large_margin_loss", 2)
        Traceback (most recent call last):
        ...
        ValueError: The 'gamma' parameter of large_margin_loss must be a float or a sequence of 2 floats (one per layer). Got 'a sequence of length 3' instead.
    """
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != num_layers:
            raise param_error(owner, name, f"a float or a sequence of {num_layers} floats (one per layer)",
                              f"a sequence of length {len(value)}")
        values = list(value)
    else:
        values = [value] * num_layers
    return [check_real(v, name, owner, low=0, low_open=not allow_zero, expected=expected) for v in values]


def parse_norm(
    value: object,
    name: str,
    owner: str,
    *,
    allowed: Collection[float] | None = None,
    expected: str | None = None,
    type_exc: type[Exception] = TypeError,
) -> tuple[float, float]:
    """Parse the ``p`` of an l_p norm and return ``(p, q)`` with ``1/p + 1/q = 1``.

    ``value`` is a real ``p >= 1``, ``math.inf``, or one of the names ``'inf'``, ``'linf'``,
    ``'l_inf'``, ``'l2'``, ``'l1'`` (any case). With ``allowed``, ``p`` must also be one of them.

    Args:
        value, name, owner: the value, its parameter's name and the function or class that got it.
        allowed: the norms the caller supports, e.g. ``(2.0, math.inf)``; ``None``: any ``p >= 1``.
        expected: the wording after "must be"; default ``'a real number p >= 1 or math.inf'``, or
            ``'one of [...]'`` with ``allowed``.
        type_exc: raised for a value that is not a norm at all (a bool, an unknown string, NaN).

    Example:
        >>> parse_norm(2, "norm", "f"), parse_norm("linf", "norm", "f"), parse_norm(1, "norm", "f")
        ((2.0, 2.0), (inf, 1.0), (1.0, inf))
        >>> parse_norm(3, "norm", "f")
        (3.0, 1.5)
        >>> parse_norm(1, "norm", "PGD", allowed=(2.0, math.inf))
        Traceback (most recent call last):
        ...
        ValueError: The 'norm' parameter of PGD must be one of [2.0, inf]. Got 1 instead.
    """
    text = expected or ("a real number p >= 1 or math.inf" if allowed is None else f"one of {list(allowed)}")
    p = _NORM_NAMES.get(value.lower()) if isinstance(value, str) else value
    if p is None or isinstance(p, bool) or not isinstance(p, numbers.Real) or math.isnan(float(p)):
        raise param_error(owner, name, text, value, type_exc)
    p = float(p)
    if p < 1 or (allowed is not None and p not in allowed):
        raise param_error(owner, name, text, value)
    if p == 1:
        return p, math.inf
    if math.isinf(p):
        return p, 1.0
    return p, p / (p - 1)


# --------------------------------------------------------------------------- reductions


def check_reduction(value: object, owner: str) -> str:
    """Return ``value`` if it is ``'none'``, ``'mean'`` or ``'sum'`` (torch's loss reductions).

    Example:
        >>> check_reduction("avg", "multiclass_hinge_loss")
        Traceback (most recent call last):
        ...
        ValueError: The 'reduction' parameter of multiclass_hinge_loss must be one of ['none', 'mean', 'sum']. Got 'avg' instead.
    """
    return check_choice(value, "reduction", owner, REDUCTIONS)


def reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce per-sample losses ``(N,)`` as torch's losses do: ``'mean'``, ``'sum'`` or ``'none'`` (unchanged).

    Example:
        >>> reduce(torch.tensor([1.0, 2.0, 6.0]), "mean"), reduce(torch.tensor([1.0, 2.0]), "sum")
        (tensor(3.), tensor(3.))
    """
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise param_error("reduce", "reduction", f"one of {list(REDUCTIONS)}", reduction)


# --------------------------------------------------------------------------- tensors of a batch


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of dtype {x.dtype}"
    return type(x).__name__


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


def check_x(x: object, owner: str) -> None:
    """Check that ``x`` is a floating-point tensor."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"The 'x' parameter of {owner} must be a floating-point tensor. Got {type(x).__name__} instead.")


def check_inputs(x: torch.Tensor, y: torch.Tensor, owner: str) -> None:
    """Check that ``x`` is a float batch and ``y`` a matching int64 (or int32) label vector."""
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
