"""How far the test inputs of trained checkpoints are from their decision boundary (``deepmargin robustness``).

For every checkpoint and norm, one minimum-norm attack run (FMN or DeepFool) gives each input's
distance to the closest adversarial, and the linearised distance at the input layer is computed
beside it (:func:`deepmargin.metrics.margin_report`); :func:`measure` turns one run into the summary
numbers, :func:`certify` adds the certified l2 radii from Lipschitz upper bounds, and
:func:`measure_checkpoints` does both for every checkpoint.
:func:`deepmargin.reports.robustness.write_robustness_run` writes the result.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..attacks.factory import MIN_NORM_ATTACKS

from .progress import StepProgress

logger = logging.getLogger(__name__)

__all__ = [
    "CERTIFIED_FIELDS",
    "DEFAULT_EPS",
    "MIN_NORM_ATTACKS",
    "RobustnessRun",
    "SUMMARY_FIELDS",
    "certify",
    "measure",
    "measure_checkpoints",
    "min_norm_attack",
    "resolve_eps",
]

#: Error-at-epsilon budgets when ``--eps-l2`` / ``--eps-linf`` are not given (inputs in [0, 1]).
DEFAULT_EPS = {"l2": (0.1, 0.5, 1.0, 2.0), "linf": (0.05, 0.1, 0.2, 0.3)}
#: Column order of ``summary.csv``.
SUMMARY_FIELDS = (
    "model", "norm", "attack", "n", "clean_accuracy", "median_distance", "eps", "error_at_eps",
    "mean_linearized", "mean_min_norm", "failed", "rho_adv", "lipschitz_l2", "lipschitz_linf_l2",
    "median_certified_kesidis", "median_certified_tsuzuku", "dataset", "checkpoint", "steps",
)
#: Per-input columns ``margins.csv`` adds to :data:`deepmargin.reports.margins.MARGIN_FIELDS` (empty off the l2 rows).
CERTIFIED_FIELDS = ("certified_kesidis", "certified_tsuzuku")


def resolve_eps(
    norms: Sequence[str], eps_l2: Sequence[float] | None, eps_linf: Sequence[float] | None
) -> dict[str, list[float]]:
    """Sorted, de-duplicated budgets per requested norm; a list given for a norm not requested is an error."""
    given = {"l2": eps_l2, "linf": eps_linf}
    for norm, values in given.items():
        if values is not None and norm not in norms:
            raise ValueError(
                f"The '--eps-{norm}' option of deepmargin robustness needs {norm} in --norms. "
                f"Got --norms {' '.join(norms)} instead."
            )
    return {norm: sorted(set(given[norm] if given[norm] is not None else DEFAULT_EPS[norm])) for norm in norms}


def min_norm_attack(name: str, norm: str, *, steps: int | None = None, bounds: Sequence[float] = (0.0, 1.0)) -> Any:
    """The minimum-norm attack ``name`` (``'fmn'`` or ``'deepfool'``) for ``norm`` (``'l2'``/``'linf'``).

    ``steps=None`` keeps the attack's default (FMN 100, DeepFool 50); built by
    :func:`~deepmargin.attacks.build_attack`.

    Example:
        >>> min_norm_attack("deepfool", "l2", steps=10)
        DeepFool(norm=2.0, steps=10, overshoot=0.02, candidates=10, nudge=0.0001, bounds=(0.0, 1.0), eps=None)
    """
    from ..attacks.factory import build_attack

    if name not in MIN_NORM_ATTACKS:
        raise ValueError(
            f"The 'name' parameter of min_norm_attack must be one of {list(MIN_NORM_ATTACKS)}. Got {name!r} instead."
        )
    return build_attack(name, norm=norm, steps=steps, bounds=bounds)


def _mean(values: torch.Tensor) -> float | None:
    return float(values.double().mean()) if values.numel() else None


def measure(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str,
    attack: Any,
    eps: Sequence[float],
    batch_size: int = 256,
    on_batch: Any = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """One minimum-norm attack run -> the summary numbers and the per-input margin report.

    The attack runs once, inside :func:`deepmargin.metrics.margin_report` (called per chunk of
    ``batch_size`` inputs); the summary is computed from its ``min_norm`` column with
    :func:`~deepmargin.metrics.median_adversarial_distance` and
    :func:`~deepmargin.metrics.error_at_eps`.

    Args:
        model: ``nn.Module`` returning logits.
        x: inputs ``(N, *)``. y: labels ``(N,)``.
        norm: ``'l2'`` or ``'linf'``.
        attack: a minimum-norm attack measuring ``norm`` (see :func:`min_norm_attack`).
        eps: budgets of the error column (sorted ascending for a non-decreasing column).
        batch_size: inputs per attack call.
        on_batch: called with no argument after each chunk (progress bars).

    Returns:
        ``(summary, report)``: ``summary`` has ``n, clean_accuracy, median_distance, eps,
        error_at_eps, mean_linearized, mean_min_norm, failed`` (means over the correctly
        classified inputs with a finite distance; ``failed``: correctly classified inputs the
        attack did not fool); ``report`` is ``margin_report``'s dict of ``(N,)`` tensors with
        ``index`` counted over the whole of ``x``.
    """
    from ..metrics import error_at_eps, margin_report, median_adversarial_distance

    if x.shape[0] == 0:
        raise ValueError("The 'x' parameter of measure must hold at least one input. Got 0 instead.")
    parts = []
    for start in range(0, x.shape[0], batch_size):
        part = margin_report(model, x[start:start + batch_size], y[start:start + batch_size], norm=norm,
                             attack=attack, batch_size=batch_size)
        part["index"] = part["index"] + start
        parts.append(part)
        if on_batch is not None:
            on_batch()
    report = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    d, correct = report["min_norm"], report["correct"]
    ok = correct & d.isfinite()
    summary = {
        "n": int(d.numel()),
        "clean_accuracy": float(correct.double().mean()),
        "median_distance": float(median_adversarial_distance(d)),
        "eps": [float(e) for e in eps],
        "error_at_eps": [float(v) for v in error_at_eps(d, list(eps))] if len(eps) else [],
        "mean_linearized": _mean(report["linearized"][ok & report["linearized"].isfinite()]),
        "mean_min_norm": _mean(d[ok]),
        "failed": int((correct & ~d.isfinite()).sum()),
    }
    return summary, report


def certify(
    model: nn.Module, x: torch.Tensor, *, iterations: int = 100, batch_size: int = 256
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Lipschitz upper bounds of ``model`` and the certified l2 radius of each input under both theorems.

    Returns:
        ``({"l2": L_2, "linf-l2": L_inf}, {"certified_kesidis": (N,), "certified_tsuzuku": (N,)})``:
        :func:`deepmargin.metrics.purity_radius` with ``theorem='kesidis'`` and ``L_inf``, and with
        ``theorem='tsuzuku'`` and ``L_2``.

    Example:
        >>> bounds, radii = certify(nn.Linear(4, 3), torch.rand(5, 4))
        >>> sorted(bounds), radii["certified_kesidis"].shape
        (['l2', 'linf-l2'], torch.Size([5]))
    """
    from ..metrics import lipschitz_upper_bound, purity_radius

    shape = tuple(x.shape[1:])
    try:
        bounds = {norm: lipschitz_upper_bound(model, shape, norm=norm, iterations=iterations)
                  for norm in ("l2", "linf-l2")}
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{exc} Pass --no-certify to skip the certified radii.") from exc
    radii = {
        "certified_kesidis": purity_radius(model, x, lipschitz=bounds["linf-l2"], theorem="kesidis",
                                           batch_size=batch_size),
        "certified_tsuzuku": purity_radius(model, x, lipschitz=bounds["l2"], theorem="tsuzuku",
                                           batch_size=batch_size),
    }
    return bounds, radii


def _certified_summary(
    bounds: Mapping[str, float] | None, radii: Mapping[str, torch.Tensor] | None, correct: torch.Tensor
) -> dict[str, float | None]:
    """The summary's Lipschitz and median certified-radius cells (misclassified inputs count as 0)."""
    from ..metrics import median_adversarial_distance

    if bounds is None or radii is None:
        return {"lipschitz_l2": None, "lipschitz_linf_l2": None, "median_certified_kesidis": None,
                "median_certified_tsuzuku": None}
    medians = {f"median_{key}": float(median_adversarial_distance(torch.where(correct, r, torch.zeros_like(r))))
               for key, r in radii.items()}
    return {"lipschitz_l2": bounds["l2"], "lipschitz_linf_l2": bounds["linf-l2"], **medians}


def _report_rows(report: Mapping[str, torch.Tensor], **keys: Any) -> list[dict[str, Any]]:
    columns = {k: v.detach().cpu().tolist() for k, v in report.items()}
    n = len(columns["index"])
    return [{**keys, **{k: columns[k][i] for k in columns}} for i in range(n)]


@dataclass
class RobustnessRun:
    """Result of :func:`measure_checkpoints`.

    Attributes:
        summary_rows: one per (model, norm, attack), keys :data:`SUMMARY_FIELDS`.
        margin_rows: the per-input margin report of every model and norm, with the
            :data:`CERTIFIED_FIELDS` (``None`` off the l2 rows).
        config: what ``config.json`` records. dataset: its name. n: test inputs measured.
    """

    summary_rows: list[dict[str, Any]]
    margin_rows: list[dict[str, Any]]
    config: dict[str, Any]
    dataset: str
    n: int


def measure_checkpoints(
    checkpoints: Sequence[str],
    *,
    norms: Sequence[str] = ("l2", "linf"),
    eps_l2: Sequence[float] | None = None,
    eps_linf: Sequence[float] | None = None,
    attack: str = "fmn",
    steps: int | None = None,
    n: int | None = None,
    batch_size: int = 256,
    certified: bool = True,
    lipschitz_iterations: int = 100,
    dataset: str | None = None,
    data_root: str | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> RobustnessRun:
    """Distance to the boundary of every checkpoint's test inputs, per norm (``deepmargin robustness``).

    One minimum-norm attack run per checkpoint and norm (:func:`measure`); on the l2 rows also
    rho_adv (DeepFool in l2; Matyasko & Chau) and, with ``certified``, the Lipschitz bounds and
    certified radii (:func:`certify`). Budgets of the error-at-epsilon columns: :func:`resolve_eps`.
    Every checkpoint is read before any attack runs; the reliability checks run on each first.
    """
    from ..metrics import rho_adv
    from .checkpoints import check_models, load_checkpoints, load_test_split

    norms = list(dict.fromkeys(norms))
    eps_by_norm = resolve_eps(norms, eps_l2, eps_linf)
    models, metas = load_checkpoints(checkpoints, device)  # all read before any attack runs
    names = list(models)
    x, y, bounds, dataset, root = load_test_split(metas, command="robustness", data_root=data_root, n=n, device=device,
                                                  dataset=dataset)
    if x.shape[0] == 0:
        raise ValueError(f"The test split of {dataset!r} is empty; nothing to measure.")
    logger.info("dataset %s: %d test inputs, bounds %s", dataset, len(y), bounds)
    check_models(models, x[:batch_size], y[:batch_size])

    attacks = {norm: min_norm_attack(attack, norm, steps=steps, bounds=bounds) for norm in norms}
    # rho_adv is defined with DeepFool in l2 (Moosavi-Dezfooli et al.; Matyasko & Chau)
    rho_attack = min_norm_attack("deepfool", "l2", steps=steps if attack == "deepfool" else None, bounds=bounds)
    chunks = math.ceil(len(y) / batch_size)
    certifying = certified and "l2" in norms
    total = len(models) * (len(norms) * chunks + ("l2" in norms) + certifying)

    summary_rows: list[dict[str, Any]] = []
    margin_rows: list[dict[str, Any]] = []
    lipschitz: dict[str, dict[str, float]] = {}
    with StepProgress(total, "robustness", show=progress) as bar:
        for name, model in models.items():
            constants = radii = None
            if certifying:
                bar.set_postfix_str(f"{name} lipschitz")
                constants, radii = certify(model, x, iterations=lipschitz_iterations, batch_size=batch_size)
                lipschitz[name] = constants
                bar.update(1)
            for norm in norms:
                bar.set_postfix_str(f"{name} {norm} {attack}")
                summary, report = measure(model, x, y, norm=norm, attack=attacks[norm], eps=eps_by_norm[norm],
                                          batch_size=batch_size, on_batch=lambda: bar.update(1))
                rho = None
                if norm == "l2":
                    bar.set_postfix_str(f"{name} rho_adv")
                    rho = float(rho_adv(model, x, y, attack=rho_attack, batch_size=batch_size)["rho_adv"])
                    bar.update(1)
                on_l2 = norm == "l2"
                summary_rows.append({
                    "model": name, "norm": norm, "attack": attack, **summary, "rho_adv": rho,
                    **_certified_summary(constants if on_l2 else None, radii if on_l2 else None, report["correct"]),
                    "dataset": dataset, "checkpoint": str(checkpoints[names.index(name)]),
                    "steps": attacks[norm].steps,
                })
                columns = {**report, **radii} if on_l2 and radii is not None else report
                rows = _report_rows(columns, model=name, norm=norm, attack=attack)
                margin_rows += [{**{key: None for key in CERTIFIED_FIELDS}, **row} for row in rows]
                logger.debug("%s %s: median distance %.4g", name, norm, summary["median_distance"])

    config = {
        "command": "robustness",
        "checkpoints": dict(zip(names, [str(p) for p in checkpoints])),
        "dataset": dataset,
        "data_root": root,
        "n": len(y),
        "bounds": list(bounds),
        "norms": norms,
        "eps": eps_by_norm,
        "attack": attack,
        "steps": steps,
        "attack_objects": {norm: repr(a) for norm, a in attacks.items()},
        "rho_adv_attack": repr(rho_attack) if "l2" in norms else None,
        "batch_size": batch_size,
        "certify": certifying,
        "lipschitz_iterations": lipschitz_iterations if certifying else None,
        "lipschitz": lipschitz or None,
        "device": str(device),
        "torch_version": torch.__version__,
    }
    return RobustnessRun(summary_rows=summary_rows, margin_rows=margin_rows, config=config, dataset=dataset, n=len(y))
