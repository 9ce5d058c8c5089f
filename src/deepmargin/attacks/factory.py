"""Attacks by name: the one place that maps ``'fgsm'``, ``'pgd'``, ``'fmn'``... to attack objects.

Commands and studies that take attack names (``deepmargin attack``, ``detect``, ``robustness``,
``compare-methods``) build their attacks here, so one name means one configuration everywhere.

Example:
    >>> build_attack("pgd", norm="l2", eps=0.5, seed=0)
    PGD(eps=0.5, norm=2.0, steps=40, step_size=None, random_start=True, bounds=(0.0, 1.0), loss='ce', seed=0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .apgd import APGD
from .autoattack import AutoAttack
from .deepfool import DeepFool
from .fab import FAB
from .gradient import FGSM, IFGSM, PGD
from .minnorm import FMN
from .noise import GaussianNoise
from .square import Square

__all__ = [
    "ATTACK_NAMES",
    "GRADIENT_ATTACKS",
    "MIN_NORM_ATTACKS",
    "NOISE_MODES",
    "RANDOMISED_ATTACKS",
    "AUTOATTACK_VERSIONS",
    "attack_norm",
    "build_attack",
]

#: Every name :func:`build_attack` knows.
ATTACK_NAMES = ("fgsm", "ifgsm", "pgd", "deepfool", "fmn", "noise", "apgd-ce", "apgd-dlr", "apgd-t", "fab", "square",
                "autoattack")
#: Fixed-budget gradient attacks (a radius ``eps``).
GRADIENT_ATTACKS = ("fgsm", "ifgsm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t")
#: Minimum-norm attacks (each input's distance to the closest adversarial).
MIN_NORM_ATTACKS = ("fmn", "deepfool")
#: Attacks whose result depends on their ``seed`` (PGD with a random start, noise).
RANDOMISED_ATTACKS = ("pgd", "noise", "apgd-ce", "apgd-dlr", "apgd-t", "fab", "square", "autoattack")
#: The versions of ``autoattack`` (Croce & Hein 2020): :data:`deepmargin.attacks.autoattack.VERSIONS`.
AUTOATTACK_VERSIONS = ("standard", "fast", "rand")
#: Levels of the ``noise`` attack: standard deviations or signal-to-noise ratios in dB.
NOISE_MODES = ("std", "snr")

_NORMS = {"linf": math.inf, "inf": math.inf, "l_inf": math.inf, "l2": 2.0, "2": 2.0}
#: Steps when ``steps=None``: PGD 40, DeepFool 50, FMN 100 (IFGSM: Kurakin's rule, see below).
_DEFAULT_STEPS = {"pgd": 40, "deepfool": 50, "fmn": 100, "apgd": 100, "fab": 100}


def attack_norm(norm: str | float) -> float:
    """``math.inf`` or ``2.0`` from ``'linf'``/``'inf'``/``'l2'``/``'2'`` (any case) or the number itself."""
    if isinstance(norm, str):
        key = norm.strip().lower()
        if key in _NORMS:
            return _NORMS[key]
    elif isinstance(norm, (int, float)) and not isinstance(norm, bool) and float(norm) in (2.0, math.inf):
        return float(norm)
    raise ValueError(f"The 'norm' parameter of build_attack must be one of 'linf', 'l2', inf, 2. Got {norm!r} instead.")


def build_attack(
    name: str,
    *,
    norm: str | float = "linf",
    bounds: Sequence[float] = (0.0, 1.0),
    eps: float = 0.0,
    steps: int | None = None,
    step_size: float | None = None,
    random_start: bool = True,
    loss: str = "ce",
    overshoot: float = 0.02,
    noise_mode: str = "std",
    seed: int | None = None,
    queries: int = 5000,
    version: str = "standard",
    n_target_classes: int = 9,
) -> Any:
    """The attack called ``name``, configured from keyword settings (each attack reads those it has).

    =========== ============================================================================
    name        attack
    =========== ============================================================================
    ``fgsm``    :class:`FGSM` (``eps``, ``norm``, ``loss``)
    ``ifgsm``   :class:`IFGSM` (``eps``, ``norm``, ``steps``, ``step_size``, ``loss``); with
                neither ``steps`` nor ``step_size`` and unbounded inputs, 10 steps (Kurakin's
                rule needs a bounded range)
    ``pgd``     :class:`PGD` (``eps``, ``norm``, ``steps`` default 40, ``step_size``,
                ``random_start``, ``loss``, ``seed``)
    ``deepfool`` :class:`DeepFool` (``norm``, ``steps`` default 50, ``overshoot``)
    ``fmn``     :class:`FMN` (``norm``, ``steps`` default 100)
    ``noise``   :class:`GaussianNoise` (``noise_mode='std'``: ``std=eps``; ``'snr'``: ``snr=inf``,
                the level set per sweep; ``seed``)
    ``apgd-ce`` :class:`APGD` with cross-entropy (``eps``, ``norm``, ``steps`` default 100, ``seed``)
    ``apgd-dlr`` :class:`APGD` with the DLR loss
    ``apgd-t``  :class:`APGD`, targeted DLR over ``n_target_classes`` rival classes
    ``fab``     :class:`FAB`, targeted (minimum norm; ``steps`` default 100, ``n_target_classes``)
    ``square``  :class:`Square` (``eps``, ``norm``, ``queries``, ``seed``; forward passes only)
    ``autoattack`` :class:`AutoAttack` (``eps``, ``norm``, ``version``: standard, fast or rand)
    =========== ============================================================================

    Args:
        name: one of :data:`ATTACK_NAMES`.
        norm: ``'linf'`` or ``'l2'`` (also ``'inf'``, ``'2'``, ``math.inf``, ``2``).
        bounds: input range ``(low, high)``; ``(-inf, inf)`` for unbounded inputs.
        eps: radius of the fixed-budget attacks (sweeps pass their own radii); noise std.
        steps: iterations (``None``: the attack's default above).
        step_size: absolute step size of ``ifgsm``/``pgd`` (``None``: the attack's rule).
        random_start: PGD starts at a random point of the ball (default ``True``).
        loss: ``'ce'`` or ``'margin'``, ascended by the gradient attacks.
        overshoot: DeepFool's overshoot.
        noise_mode: ``'std'`` or ``'snr'`` (:data:`NOISE_MODES`).
        seed: seed of the randomised attacks (PGD, noise, APGD, FAB, Square, AutoAttack; ``None``: 0 for
            the last four).
        queries: Square's query budget per input.
        version: AutoAttack's version (:data:`AUTOATTACK_VERSIONS`).
        n_target_classes: target classes of APGD-T and FAB.

    Raises:
        ValueError: an unknown ``name``, ``norm`` or ``noise_mode``, or a setting the attack refuses.

    Example:
        >>> build_attack("deepfool", norm="l2", steps=10)
        DeepFool(norm=2.0, steps=10, overshoot=0.02, candidates=10, nudge=0.0001, bounds=(0.0, 1.0), eps=None)
    """
    if name not in ATTACK_NAMES:
        raise ValueError(f"The 'name' parameter of build_attack must be one of {list(ATTACK_NAMES)}. Got {name!r} instead.")
    if noise_mode not in NOISE_MODES:
        raise ValueError(
            f"The 'noise_mode' parameter of build_attack must be one of {list(NOISE_MODES)}. Got {noise_mode!r} instead."
        )
    p = attack_norm(norm)
    bounds = tuple(bounds)
    if name == "fgsm":
        return FGSM(eps=eps, norm=p, bounds=bounds, loss=loss)
    if name == "ifgsm":
        if steps is None and step_size is None and not math.isfinite(bounds[1] - bounds[0]):
            steps = 10
        return IFGSM(eps=eps, norm=p, steps=steps, step_size=step_size, bounds=bounds, loss=loss)
    if name == "pgd":
        return PGD(eps=eps, norm=p, steps=steps or _DEFAULT_STEPS["pgd"], step_size=step_size,
                   random_start=random_start, bounds=bounds, loss=loss, seed=seed)
    if name == "deepfool":
        return DeepFool(norm=p, steps=steps or _DEFAULT_STEPS["deepfool"], overshoot=overshoot, bounds=bounds)
    if name == "fmn":
        return FMN(norm=p, steps=steps or _DEFAULT_STEPS["fmn"], bounds=bounds)
    fixed_seed = 0 if seed is None else seed
    if name in ("apgd-ce", "apgd-dlr", "apgd-t"):
        return APGD(norm=p, eps=eps, loss="ce" if name == "apgd-ce" else "dlr", targeted=name == "apgd-t",
                    n_target_classes=n_target_classes, steps=steps or _DEFAULT_STEPS["apgd"], seed=fixed_seed, bounds=bounds)
    if name == "fab":
        return FAB(norm=p, targeted=True, n_target_classes=n_target_classes, steps=steps or _DEFAULT_STEPS["fab"],
                   seed=fixed_seed, bounds=bounds)
    if name == "square":
        return Square(norm=p, eps=eps, queries=queries, seed=fixed_seed, bounds=bounds)
    if name == "autoattack":
        return AutoAttack(norm=p, eps=eps, version=version, seed=fixed_seed, bounds=bounds)
    if noise_mode == "std":
        return GaussianNoise(std=eps, bounds=bounds, seed=seed)
    return GaussianNoise(snr=math.inf, bounds=bounds, seed=seed)
