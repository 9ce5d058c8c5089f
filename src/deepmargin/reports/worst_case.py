"""IFGSM beside the worst case (AutoAttack) in the studies' report, and the models it shows masking gradients.

A robustness number from IFGSM alone is an upper bound that gradient masking can inflate (Croce &
Hein 2020). The adversarial study and compare-methods measure every chosen model under both, at the
same l_inf radius and on the same inputs; this section sets them side by side, lists every model
(preset and seed) whose IFGSM accuracy exceeds its AutoAttack accuracy by more than
:data:`~deepmargin.experiments.worst_case.MASKING_POINTS` points as *suspected gradient masking*, and
says, per margin model, whether its advantage over its reference survives the worst case.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from ..experiments.worst_case import MASKING_POINTS

__all__ = ["paired_attack_rows", "suspected_masking", "worst_case_section"]


def _close(a: Any, b: Any) -> bool:
    return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def paired_attack_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per model (study, loss, seed) and radius measured under both white-box IFGSM and
    AutoAttack: ``{study, loss, seed, eps, ifgsm, autoattack, gap, flags}`` (accuracies in [0, 1],
    ``gap = ifgsm - autoattack`` in points)."""
    aa = [r for r in rows if r.get("attack") == "autoattack" and r.get("test_acc") is not None]
    out = []
    for r in aa:
        match = [q for q in rows if q.get("attack") == "ifgsm" and q.get("box") == "white" and q.get("test_acc") is not None
                 and q.get("study") == r.get("study") and q.get("loss") == r.get("loss") and q.get("seed") == r.get("seed")
                 and _close(q.get("eps"), r.get("eps"))]
        if not match:
            continue
        ifgsm = float(match[0]["test_acc"])
        out.append({"study": r.get("study"), "loss": r.get("loss"), "seed": r.get("seed"), "eps": float(r["eps"]),
                    "ifgsm": ifgsm, "autoattack": float(r["test_acc"]), "gap": 100 * (ifgsm - float(r["test_acc"])),
                    "flags": r.get("flags") or ""})
    return out


def suspected_masking(rows: Sequence[Mapping[str, Any]], *, points: float = MASKING_POINTS) -> list[dict[str, Any]]:
    """The entries of :func:`paired_attack_rows` whose IFGSM accuracy exceeds the AutoAttack accuracy
    by more than ``points``.

    Example:
        >>> rows = [{"study": "adversarial", "loss": "m", "seed": 0, "eps": 0.1, "attack": "ifgsm", "box": "white", "test_acc": 0.9},
        ...         {"study": "adversarial", "loss": "m", "seed": 0, "eps": 0.1, "attack": "autoattack", "box": "white", "test_acc": 0.2}]
        >>> [(e["loss"], round(e["gap"], 1)) for e in suspected_masking(rows)]
        [('m', 70.0)]
    """
    return [e for e in paired_attack_rows(rows) if round(e["gap"], 6) > points]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def worst_case_section(doc: Any, rows: Sequence[Mapping[str, Any]], losses: Sequence[str], *,
                       verdict: Any = None, reference: Any = None) -> bool:
    """Add the IFGSM-vs-AutoAttack table, the suspected-masking list and (with ``verdict``, the
    study report's paired verdict function) whether each margin model's advantage survives the
    worst case. Returns False (and adds nothing) when no row holds an AutoAttack measurement."""
    pairs = paired_attack_rows(rows)
    if not pairs:
        return False
    table = []
    names = [n for n in dict.fromkeys([*losses, *(p["loss"] for p in pairs)]) if any(p["loss"] == n for p in pairs)]
    for name in names:
        mine = [p for p in pairs if p["loss"] == name]
        for eps in sorted({p["eps"] for p in mine}):
            at = [p for p in mine if _close(p["eps"], eps)]
            (im, isd), (am, asd) = _mean_std([p["ifgsm"] for p in at]), _mean_std([p["autoattack"] for p in at])
            gap = statistics.fmean(p["gap"] for p in at)
            flags = sorted({f for p in at for f in p["flags"].split(";") if f})
            table.append({"model": name, "eps": f"{eps:g}", "seeds": len(at), "IFGSM white (%)": f"{100 * im:.1f} ± {100 * isd:.1f}",
                          "AutoAttack (%)": f"{100 * am:.1f} ± {100 * asd:.1f}", "IFGSM - AA (points)": f"{gap:+.1f}",
                          "flags": ", ".join(flags) or "–",
                          "suspected masking": f"{sum(round(p['gap'], 6) > MASKING_POINTS for p in at)}/{len(at)} seeds"})
    doc.para(
        "IFGSM beside the worst case per input over AutoAttack's ensemble (white-box, same l_inf radius, same test inputs). "
        f"A model whose IFGSM accuracy exceeds its AutoAttack accuracy by more than {MASKING_POINTS:g} points is "
        "**suspected of gradient masking**: its IFGSM number overstates its robustness. The flags are AutoAttack's "
        "reliability checks (e.g. `black_box`: the gradient-free Square attack broke inputs the gradient attacks missed)."
    )
    doc.table(["model", "eps", "seeds", "IFGSM white (%)", "AutoAttack (%)", "IFGSM - AA (points)", "flags", "suspected masking"],
              table, "accuracy under attack: mean ± std over seeds")
    masked = suspected_masking(rows)
    if masked:
        doc.para(f"Suspected gradient masking (IFGSM - AutoAttack > {MASKING_POINTS:g} points), per model and seed:")
        doc.bullets([f"**{e['loss']}**, seed {e['seed']}, eps {e['eps']:g}: IFGSM {100 * e['ifgsm']:.1f}%, AutoAttack "
                     f"{100 * e['autoattack']:.1f}% ({e['gap']:+.1f} points)" for e in masked])
    else:
        doc.para(f"No model's IFGSM accuracy exceeds its AutoAttack accuracy by more than {MASKING_POINTS:g} points: no "
                 "suspected gradient masking.")
    if verdict is not None:
        ifgsm = [{**r, "attack": "ifgsm"} for r in rows if r.get("attack") == "ifgsm" and r.get("box") == "white"
                 and any(_close(r.get("eps"), p["eps"]) for p in pairs)]
        worst = [r for r in rows if r.get("attack") == "autoattack"]
        before, after = verdict(ifgsm, "eps", losses, "eps"), verdict(worst, "eps", losses, "eps")
        if after:
            doc.para("Does each margin model's robustness claim survive the stronger evaluation? Under white-box IFGSM:")
            doc.bullets(before or ["no margin model measured"])
            doc.para("Under AutoAttack (the worst case, which decides):")
            doc.bullets(after)
    return True
