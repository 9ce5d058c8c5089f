"""The registry of training losses: name, options, criterion. The only place that knows loss names.

Every training loss is an entry: ``ce``, ``hinge`` and ``margin`` as much as ``matyasko``,
``input_gradient``, ``kesidis`` and ``vat``. A loss is selected with ``TrainConfig(loss=NAME,
loss_options={...})`` or ``deepmargin train --loss NAME --loss-option KEY=VALUE``; ``deepmargin
losses`` lists every loss with its options and defaults. Adding a method means one file under
``losses/`` that defines the loss and calls :func:`register_loss` with a :class:`LossSpec`::

    register_loss(LossSpec(
        name="input_gradient", summary="...", reference="...",
        options=(LossOption("eps", 0.1, nonneg_float, "weight of the gradient norm"),),
        build=lambda model, o: InputGradientLoss(model, eps=o["eps"]),
    ))

``build(model, options)`` returns a callable ``(x, y) -> (loss, logits)`` (an ``nn.Module`` form
of the loss). The three losses that predate the registry (``ce``, ``hinge``, ``margin``) keep their
options in flat TrainConfig fields (``gamma``, ``top_k``, ``hinge_margin`` ...; their specs say
``config_fields=True``), so configurations written before the registry still load and resume;
:func:`loss_options_of` reads a loss's options from a configuration whichever way they are stored.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..checks import parse_norm

__all__ = ["LOSS_REGISTRY", "LossOption", "LossSpec", "as_norm", "foreign_options", "int_at_least_0", "int_at_least_1", "loss_options_of",
           "loss_spec", "nonneg_float", "norm_choice", "one_of", "positive_float", "register_loss",
           "resolve_loss_options", "true_or_false", "unregister_loss"]


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


def int_at_least_1(value: Any) -> int | None:
    """An int >= 1, or None."""
    return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1 else None


def norm_choice(value: Any) -> float | str | None:
    """1, 2 or ``"inf"`` (also ``math.inf``, ``"linf"``), or None."""
    try:
        p, _ = parse_norm(value.strip() if isinstance(value, str) else value, "norm", "norm_choice",
                          allowed=(1.0, 2.0, math.inf))
    except (TypeError, ValueError):
        return None
    return "inf" if math.isinf(p) else int(p)


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
             int_at_least_0: "an int >= 0", int_at_least_1: "an int >= 1", norm_choice: "1, 2 or 'inf'"}


@dataclass(frozen=True)
class LossOption:
    """One option of a registered loss: name, default, a checker (value -> normalised value or None), help.

    ``flag`` is the command-line flag of ``deepmargin train`` that sets it (``None``: ``--loss-option
    NAME=VALUE``). The options of a loss whose spec says ``config_fields=True`` are TrainConfig fields
    of the same name, checked by TrainConfig (``check=None``; ``expected`` then describes them).
    """

    name: str
    default: Any
    check: Callable[[Any], Any] | None
    help: str
    flag: str | None = None
    expected_text: str | None = None

    @property
    def expected(self) -> str:
        """What the checker accepts, for error messages and ``deepmargin losses``."""
        if self.expected_text is not None:
            return self.expected_text
        return _EXPECTED.get(self.check, getattr(self.check, "__doc__", "") or "a valid value")

    @property
    def setter(self) -> str:
        """How a command line sets it: its flag, or ``--loss-option NAME=VALUE``."""
        if self.flag is None:
            return f"--loss-option {self.name}=VALUE"
        same = self.flag.lstrip("-").replace("-", "_") == self.name
        return self.flag if same else f"{self.flag} (sets {self.name})"


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
        config_fields: the options are flat TrainConfig fields named as the options (``ce``,
            ``hinge``, ``margin``: configurations written before the registry), not ``loss_options``.
        uses_layers: the loss is imposed on named layers: the criterion's ``layers`` attribute holds
            the resolved layer names, which a run records (``config.json``'s ``layers``).
        caches_denominators: the criterion can read cached first-order denominators
            (``TrainConfig.denominator_refresh``; :mod:`deepmargin.training.denominators`).
        output_margin: ``(resolved options) -> (rectify, mu)``: whether the loss rectifies the
            outputs and the output margin it aims at (``None``: no output margin); margin p-values
            and detection read them.
        cost: ``(resolved options) -> float``: the cost of a step relative to a cross-entropy step,
            roughly (the studies order their cells by it).
        adapt: ``(resolved options, num_classes) -> dict of changed options`` fitting the options to a
            dataset (e.g. ``top_k`` at most ``num_classes - 1``).
        grid_family: the family of hyperparameter grids (``deepmargin experiment``) the loss's
            presets belong to (default: its name).
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
    config_fields: bool = False
    uses_layers: bool = False
    caches_denominators: bool = False
    output_margin: Callable[[Mapping[str, Any]], tuple[bool, float | None]] | None = None
    cost: Callable[[Mapping[str, Any]], float] | None = None
    adapt: Callable[[Mapping[str, Any], int], dict[str, Any]] | None = None
    grid_family: str | None = None

    @property
    def option_names(self) -> tuple[str, ...]:
        """The names of its options, in order."""
        return tuple(o.name for o in self.options)

    @property
    def family(self) -> str:
        """The grid family of its presets (``grid_family``, else its name)."""
        return self.grid_family or self.name


#: Registered losses by name (filled by the modules of :mod:`deepmargin.losses` when imported).
LOSS_REGISTRY: dict[str, LossSpec] = {}



def register_loss(spec: LossSpec) -> LossSpec:
    """Add ``spec`` to :data:`LOSS_REGISTRY` (a name may be registered once)."""
    if not isinstance(spec, LossSpec):
        raise TypeError(f"The 'spec' parameter of register_loss must be a LossSpec. Got {type(spec).__name__} instead.")
    if spec.name in LOSS_REGISTRY:
        raise ValueError(f"The loss name {spec.name!r} is already taken (registered: {sorted(LOSS_REGISTRY)}).")
    LOSS_REGISTRY[spec.name] = spec
    return spec


def unregister_loss(name: str) -> None:
    """Remove the loss ``name`` from :data:`LOSS_REGISTRY` (for tests and plug-ins that register
    a loss for a while); an unknown name is ignored."""
    LOSS_REGISTRY.pop(name, None)


def loss_spec(name: Any, *, owner: str = "TrainConfig", param: str = "loss") -> LossSpec:
    """The :class:`LossSpec` registered as ``name``.

    Raises:
        ValueError: no loss of that name is registered (the names are listed).
    """
    spec = LOSS_REGISTRY.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"The {param!r} parameter of {owner} must be one of {list(LOSS_REGISTRY)}. Got {name!r} instead.")
    return spec


def foreign_options(loss: str) -> list[tuple[str, LossOption]]:
    """``(owner, option)`` for every flat-field option (``config_fields=True``) of another loss that
    ``loss`` does not use itself: setting one of them with ``loss`` would be ignored.

    Example:
        >>> import deepmargin.losses  # registers the losses
        >>> [o.name for owner, o in foreign_options("hinge")][:3]
        ['layers', 'gamma', 'alpha']
    """
    chosen = LOSS_REGISTRY.get(loss)
    own = set(chosen.option_names) if chosen is not None and chosen.config_fields else set()
    return [(name, option) for name, spec in LOSS_REGISTRY.items() if spec.config_fields and name != loss
            for option in spec.options if option.name not in own]


def loss_options_of(config: Any) -> dict[str, Any]:
    """The options of the loss of ``config`` (a TrainConfig or its dict form), wherever they are stored:
    the flat fields for a loss with ``config_fields=True`` (defaults for fields missing from an old
    dict), else ``loss_options`` (as given; :func:`resolve_loss_options` fills in defaults).

    Example:
        >>> import deepmargin.losses  # registers the losses
        >>> loss_options_of({"loss": "hinge", "hinge_margin": 2.0})
        {'hinge_margin': 2.0, 'hinge_ce_weight': 0.1}
    """
    get = config.get if isinstance(config, Mapping) else lambda key, default=None: getattr(config, key, default)
    spec = loss_spec(get("loss", "ce"))
    if spec.config_fields:
        return {o.name: get(o.name, o.default) for o in spec.options}
    return dict(get("loss_options", None) or {})


def resolve_loss_options(loss: str, options: Mapping[str, Any] | None, *, owner: str = "TrainConfig") -> dict[str, Any]:
    """Every option of registered loss ``loss``: the given ones checked and normalised, the others at their defaults.

    Raises:
        ValueError: unknown option names (the known ones are listed) or a bad value.

    Example:
        >>> import deepmargin.losses  # registers the losses
        >>> resolve_loss_options("input_gradient", {"eps": 0.2})
        {'eps': 0.2, 'norm': 2, 'lipschitz': 0.0}
    """
    spec = loss_spec(loss, owner=owner)
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
        if option.check is None:
            out[name] = value
            continue
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
