"""The worst-case robust accuracy the studies report beside IFGSM: one AutoAttack evaluation.

:func:`run_autoattack` runs :class:`~deepmargin.attacks.AutoAttack` (l_inf) on a model's test inputs
and returns its result with the reliability flags that fired, as text for the rows. The adversarial
study's evaluation cell and compare-methods' measurement cell both call it, so their numbers are
the same measurement. A model whose IFGSM accuracy exceeds its AutoAttack accuracy by more than
:data:`MASKING_POINTS` points is reported as suspected gradient masking
(:func:`deepmargin.reports.study.masking_section`).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any

__all__ = ["MASKING_POINTS", "run_autoattack"]

logger = logging.getLogger(__name__)

#: IFGSM accuracy above the AutoAttack accuracy, in points, beyond which a model is flagged as
#: suspected gradient masking (Croce & Hein's check: a weaker attack should not do much better).
MASKING_POINTS = 5.0


def run_autoattack(
    model: Any, x: Any, y: Any, *, version: str | None, eps: float, bounds: Sequence[float], seed: int, label: str = "",
) -> tuple[Any, str] | None:
    """``(AutoAttackResult, flags)`` of AutoAttack ``version`` at l_inf radius ``eps``, or ``None``
    when ``version`` is ``None`` / ``"none"`` or the input bounds are not finite (AutoAttack needs a box).

    ``flags`` lists the reliability checks that fired, ``;``-separated. Their warnings are logged once
    each (with ``label``) rather than raised, so a study's log names the model they concern.
    """
    from ..attacks import AutoAttack, ReliabilityWarning

    if version in (None, "none") or not all(math.isfinite(float(b)) for b in bounds):
        return None
    attack = AutoAttack(norm="linf", eps=float(eps), version=str(version), bounds=tuple(bounds), seed=int(seed))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ReliabilityWarning)
        result = attack.evaluate(model, x, y, large_eps=True)  # also: does the accuracy fall to 0 at a huge eps?
    for w in caught:
        if issubclass(w.category, ReliabilityWarning):
            logger.warning("%s AutoAttack at eps %g: %s", label, eps, w.message)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result, ";".join(k for k, v in result.flags.items() if v)
