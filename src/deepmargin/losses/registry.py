"""A registry of training losses beyond the built-in ``ce``, ``hinge`` and ``margin``: name, options, criterion.

A registered loss is selected with ``TrainConfig(loss=NAME, loss_options={...})`` or
``deepmargin train --loss NAME --loss-option KEY=VALUE``; ``deepmargin losses`` lists every loss
with its options and defaults. Adding a method means one file under ``losses/`` that defines the
loss and calls :func:`register_loss` with a :class:`LossSpec`::

    register_loss(LossSpec(
        name="input_gradient", summary="...", reference="...",
        options=(LossOption("eps", 0.1, nonneg_float, "weight of the gradient norm"),),
        build=lambda model, o: InputGradientLoss(model, eps=o["eps"]),
    ))

``build(model, options)`` returns a callable ``(x, y) -> (loss, logits)`` (an ``nn.Module`` form
of the loss). The built-in losses keep their flat TrainConfig fields (``gamma``, ``top_k``,
``hinge_margin`` ...), so configurations written before the registry still load and resume.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["LOSS_REGISTRY", "LossOption", "LossSpec", "as_norm", "int_at_least_0", "nonneg_float", "norm_choice",
           "one_of", "positive_float", "register_loss", "resolve_loss_options", "true_or_false"]


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(float(value))


def nonneg_float(value: Any) -> float | None:
    """A finite float >= 0, or None when ``value`` is not one."""
    return float(value) if _real(value) and 0 <= float(value) < math.inf else None


def positive_float(value: Any) -> float | None:
    """A finite float > 0, or None."""
    return float(value) if _real(value) and 0 < float(value) < math.inf else None


def int_at_least_0(value: Any) -> int | None:
    """An int >= 0, or None."""
    return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0 else None


def norm_choice(value: Any) -> float | str | None:
    """1, 2 or ``"inf"`` (also ``math.inf``, ``"linf"``), or None."""
    if isinstance(value, str) and value.strip().lower() in ("inf", "linf"):
        return "inf"
    if _real(value) and math.isinf(float(value)):
        return "inf"
    if _real(value) and float(value) in (1.0, 2.0):
        return int(value)
    return None


def true_or_false(value: Any) -> bool | None:
    """A bool (also the strings true/false/yes/no/1/0 a command line gives), or None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    return None


def one_of(*choices: str) -> Callable[[Any], str | None]:
    """A checker accepting exactly the strings ``choices``."""

    def check(value: Any) -> str | None:
        return value if isinstance(value, str) and value in choices else None

    check.__doc__ = "one of " + ", ".join(repr(c) for c in choices)
    return check


_EXPECTED = {true_or_false: "a bool", nonneg_float: "a finite float >= 0", positive_float: "a finite float > 0",
             int_at_least_0: "an int >= 0", norm_choice: "1, 2 or 'inf'"}


@dataclass(frozen=True)
class LossOption:
    """One option of a registered loss: name, default, a checker (value -> normalised value or None), help."""

    name: str
    default: Any
    check: Callable[[Any], Any]
    help: str

    @property
    def expected(self) -> str:
        """What the checker accepts, for error messages and ``deepmargin losses``."""
        return _EXPECTED.get(self.check, getattr(self.check, "__doc__", "") or "a valid value")


@dataclass(frozen=True)
class LossSpec:
    """A registered loss.

    Attributes:
        name: the name ``TrainConfig.loss`` and ``--loss`` take.
        summary: one line for ``deepmargin losses``.
        reference: the paper.
        options: its options, with defaults.
        build: ``(model, resolved options) -> callable (x, y) -> (loss, logits)``.
        needs_input_grad: the loss differentiates with respect to the input (it cannot run under
            ``torch.no_grad``, even for evaluation).
        accepts_unlabelled: the criterion takes samples with label ``-1`` (semi-supervised:
            ``TrainConfig(unlabelled=True)``).
        reweighting: ``(resolved options) -> Reweighting or None``: the loss takes per-sample
            weights (``criterion(x, y, weights=...)``) and the training loop updates them between
            rounds (:class:`deepmargin.training.reweight.Reweighting`).
        check: ``(resolved options) -> None``, raising ValueError for option values that are
            wrong together (each one alone being valid).
    """

    name: str
    summary: str
    reference: str
    options: tuple[LossOption, ...]
    build: Callable[[nn.Module, Mapping[str, Any]], Callable]
    needs_input_grad: bool = True
    accepts_unlabelled: bool = False
    reweighting: Callable[[Mapping[str, Any]], Any] | None = None
    check: Callable[[Mapping[str, Any]], None] | None = None


#: Registered losses by name (filled by the modules of :mod:`deepmargin.losses` when imported).
LOSS_REGISTRY: dict[str, LossSpec] = {}

_BUILT_IN = ("ce", "hinge", "margin")


def register_loss(spec: LossSpec) -> LossSpec:
    """Add ``spec`` to :data:`LOSS_REGISTRY` (a name may be registered once, and not as a built-in)."""
    if spec.name in _BUILT_IN or spec.name in LOSS_REGISTRY:
        raise ValueError(f"The loss name {spec.name!r} is already taken (built-in: {list(_BUILT_IN)}; registered: {sorted(LOSS_REGISTRY)}).")
    LOSS_REGISTRY[spec.name] = spec
    return spec


def resolve_loss_options(loss: str, options: Mapping[str, Any] | None, *, owner: str = "TrainConfig") -> dict[str, Any]:
    """Every option of registered loss ``loss``: the given ones checked and normalised, the others at their defaults.

    Raises:
        ValueError: unknown option names (the known ones are listed) or a bad value.

    Example:
        >>> import deepmargin.losses  # registers the losses
        >>> resolve_loss_options("input_gradient", {"eps": 0.2})
        {'eps': 0.2, 'norm': 2, 'lipschitz': 0.0}
    """
    spec = LOSS_REGISTRY[loss]
    options = dict(options or {})
    known = {o.name: o for o in spec.options}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"The 'loss_options' parameter of {owner} for loss {loss!r} must use the options {sorted(known)}. Got unknown {unknown} instead."
        )
    out = {}
    for name, option in known.items():
        value = options.get(name, option.default)
        checked = option.check(value)
        if checked is None:
            raise ValueError(f"The {name!r} option of loss {loss!r} ({owner}.loss_options) must be {option.expected}. Got {value!r} instead.")
        out[name] = checked
    if spec.check is not None:
        spec.check(out)
    return out


def as_norm(value: float | str) -> float:
    """A normalised norm option (1, 2 or ``"inf"``) as a float."""
    return math.inf if value == "inf" else float(value)
