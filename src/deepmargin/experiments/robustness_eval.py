"""How far the test inputs of trained checkpoints are from their decision boundary (``deepmargin robustness``).

For every checkpoint and norm, one minimum-norm attack run (FMN or DeepFool) gives each input's
distance to the closest adversarial, and the linearised distance at the input layer is computed
beside it (:func:`deepmargin.metrics.margin_report`); :func:`measure` turns one run into the summary
numbers, :func:`certify` adds the certified l2 radii from Lipschitz upper bounds, and
:func:`measure_checkpoints` does both for every checkpoint. With ``suite`` it also measures the
robust accuracy at each budget under :class:`~deepmargin.attacks.AutoAttack` (:func:`evaluate_suite`,
the worst case per input over the ensemble, in batches; :func:`suite_rows` turns one result into
tidy rows). :func:`deepmargin.reports.robustness.write_robustness_run` writes the result.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..attacks.autoattack import VERSIONS as SUITE_VERSIONS
from ..attacks.factory import MIN_NORM_ATTACKS
from ..checks import check_int, param_error

from .progress import StepProgress

if TYPE_CHECKING:
    from .external import ModelSource

logger = logging.getLogger(__name__)

__all__ = [
    "CERTIFIED_FIELDS",
    "DEFAULT_EPS",
    "MIN_NORM_ATTACKS",
    "RobustnessRun",
    "SUITE_FIELDS",
    "SUITE_VERSIONS",
    "SUMMARY_FIELDS",
    "certify",
    "evaluate_suite",
    "measure",
    "measure_checkpoints",
    "min_norm_attack",
    "resolve_eps",
    "suite_rows",
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
#: Column order of ``autoattack.csv``: one row per (model, norm, eps, stage); the stages are
#: ``'clean'``, each attack of the ensemble in the order run, and ``'autoattack'`` (the worst case).
SUITE_FIELDS = ("model", "norm", "eps", "version", "attack", "accuracy", "n", "flags", "dataset", "checkpoint", "seed")


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


def _clean_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                   on_batch: Callable[[], None] | None) -> int:
    """How many of ``x`` the model (in eval mode, each submodule's mode restored) classifies as ``y``."""
    from ..capture import eval_mode

    correct = torch.zeros((), dtype=torch.int64, device=y.device)
    with eval_mode(model), torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            logits = model(x[start:start + batch_size])
            correct += (logits.argmax(1) == y[start:start + batch_size]).sum()
            if on_batch is not None:
                on_batch()
    return int(correct)


def _report_caught(caught: Sequence[warnings.WarningMessage], where: str) -> bool:
    """Log each reliability warning once (tagged with ``where``); re-issue any other warning.

    Warnings of one check raised on several chunks count as one (the same category and message,
    numbers aside); the first message is logged with the number of chunks. Returns whether a
    :class:`~deepmargin.attacks.ReliabilityWarning` was among them.
    """
    from ..attacks import ReliabilityWarning

    first: dict[tuple[type[Warning], str], tuple[str, int]] = {}
    for w in caught:
        if issubclass(w.category, ReliabilityWarning):
            key = (w.category, re.sub(r"\d+(\.\d+)?", "#", str(w.message)))
            message, times = first.get(key, (str(w.message), 0))
            first[key] = (message, times + 1)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for (category, _), (message, times) in first.items():
        again = f" (in {times} batches)" if times > 1 else ""
        logger.warning("[%s] %s%s: %s", where, category.__name__, again, message)
    return bool(first)


def evaluate_suite(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str,
    eps: float,
    version: str = "standard",
    seed: int = 0,
    bounds: Sequence[float] = (0.0, 1.0),
    batch_size: int = 256,
    on_batch: Callable[[], None] | None = None,
    label: str = "model",
) -> dict[str, Any]:
    """The robust accuracy of ``model`` under :class:`~deepmargin.attacks.AutoAttack` over all of ``x``.

    The ensemble runs on chunks of ``batch_size`` inputs (each chunk with the same ``seed``), and
    the chunks are combined per input: an input counts as robust after an attack if neither the
    clean model nor that attack nor any before it broke it, so every accuracy is over all of
    ``x``, not an average of chunk accuracies. At ``eps == 0`` no attack runs: the robust accuracy
    is the clean accuracy. The reliability warnings raised during the evaluation are recorded in
    ``flags`` (the checks of :meth:`AutoAttack.evaluate` that fired in any chunk, in the order they
    are checked; ``'reliability'`` for a warning none of them names) and logged once per kind,
    tagged ``[label norm eps=...]``; other warnings are re-issued.

    Args:
        model: returns logits. x: inputs ``(N, *)`` within ``bounds``. y: labels ``(N,)``.
        norm: ``'linf'`` or ``'l2'``. eps: the radius (>= 0).
        version: ``'standard'``, ``'fast'`` or ``'rand'`` (see :mod:`deepmargin.attacks.autoattack`).
        seed: seed of every attack of the ensemble. bounds: ``(low, high)`` of valid inputs.
        batch_size: inputs per ensemble call. on_batch: called with no argument after each chunk.
        label: names the model in the logged warnings.

    Returns:
        ``{"norm", "eps", "version", "seed", "n", "clean_accuracy", "attacks" (names, in the order
        run), "accuracy_after" ({name: accuracy}, non-increasing), "robust_accuracy", "flags" (names)}``.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
        >>> x, y = torch.rand(6, 16), torch.tensor([0, 1, 2, 3, 0, 1])
        >>> r = evaluate_suite(model, x, y, norm="linf", eps=0.0, version="fast")
        >>> r["attacks"], r["robust_accuracy"] == r["clean_accuracy"]
        ([], True)
    """
    from ..attacks import AutoAttack

    owner = "evaluate_suite"
    batch_size = check_int(batch_size, "batch_size", owner, low=1, type_exc=ValueError)
    n = int(x.shape[0])
    if n == 0:
        raise param_error(owner, "x", "a batch of at least one input", "0 inputs")
    ensemble = AutoAttack(norm=norm, eps=eps, version=version, seed=seed, bounds=bounds)  # checks the settings
    norm = ensemble.norm_name
    entry: dict[str, Any] = {"norm": norm, "eps": ensemble.eps, "version": version, "seed": seed, "n": n}
    if ensemble.eps == 0:
        clean = _clean_correct(model, x, y, batch_size, on_batch)
        return {**entry, "clean_accuracy": clean / n, "attacks": [], "accuracy_after": {},
                "robust_accuracy": clean / n, "flags": []}
    names: list[str] | None = None
    survived: list[int] = []  # survived[i]: inputs still correct after attack i
    clean = robust = 0
    fired: dict[str, bool] = {}
    caught: list[warnings.WarningMessage] = []
    for start in range(0, n, batch_size):
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            # the large-radius check (robust accuracy must fall to 0 when eps spans the input box) once, on the first chunk
            result = ensemble.evaluate(model, x[start:start + batch_size], y[start:start + batch_size], large_eps=start == 0)
        caught += got
        if names is None:
            names, survived = list(result.attacks), [0] * len(result.attacks)
        elif list(result.attacks) != names:  # the ensemble depends only on the number of classes
            raise RuntimeError(f"AutoAttack ran {result.attacks} on one chunk and {names} on another.")
        stage = {name: i for i, name in enumerate(names)}
        for who in result.broken_by:
            if who == "clean":
                continue
            clean += 1
            robust += int(who == "")
            for i in range(stage.get(who, len(names))):  # still correct after every attack before the one that broke it
                survived[i] += 1
        for key, value in result.flags.items():
            fired[key] = fired.get(key, False) or bool(value)
        if on_batch is not None:
            on_batch()
    flags = [key for key, value in fired.items() if value]
    if _report_caught(caught, f"{label} {norm} eps={eps:g}") and not flags:
        flags.append("reliability")
    names = names or []
    return {**entry, "clean_accuracy": clean / n, "attacks": names,
            "accuracy_after": {name: count / n for name, count in zip(names, survived)},
            "robust_accuracy": robust / n, "flags": flags}


def suite_rows(entry: Mapping[str, Any], **extra: Any) -> list[dict[str, Any]]:
    """Tidy rows of one :func:`evaluate_suite` result: ``'clean'``, each attack in order, ``'autoattack'``.

    Keys :data:`SUITE_FIELDS` (``flags`` ``;``-separated, as :meth:`AutoAttackResult.rows`); ``extra``
    gives ``model``, ``dataset`` and ``checkpoint``.

    Example:
        >>> entry = dict(norm="linf", eps=0.1, version="fast", seed=0, n=4, clean_accuracy=1.0,
        ...              accuracy_after={"apgd-ce": 0.5}, robust_accuracy=0.5, flags=[])
        >>> [(r["attack"], r["accuracy"]) for r in suite_rows(entry, model="m")]
        [('clean', 1.0), ('apgd-ce', 0.5), ('autoattack', 0.5)]
    """
    stages = [("clean", entry["clean_accuracy"]), *entry["accuracy_after"].items(),
              ("autoattack", entry["robust_accuracy"])]
    base = {**{key: None for key in SUITE_FIELDS}, **extra, "norm": entry["norm"], "eps": entry["eps"],
            "version": entry["version"], "n": entry["n"], "flags": ";".join(entry["flags"]), "seed": entry["seed"]}
    return [{**base, "attack": name, "accuracy": accuracy} for name, accuracy in stages]


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
        suite_rows: with a suite, one per (model, norm, eps, stage), keys :data:`SUITE_FIELDS`
            (:func:`suite_rows`); empty without.
        suite_summary: with a suite, one :func:`evaluate_suite` result per (model, norm, eps), with
            ``model``, ``dataset`` and ``checkpoint``; empty without.
    """

    summary_rows: list[dict[str, Any]]
    margin_rows: list[dict[str, Any]]
    config: dict[str, Any]
    dataset: str
    n: int
    suite_rows: list[dict[str, Any]] = field(default_factory=list)
    suite_summary: list[dict[str, Any]] = field(default_factory=list)


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
    suite: str | None = None,
    suite_seed: int = 0,
    suite_batch_size: int | None = None,
    model_source: ModelSource | None = None,
) -> RobustnessRun:
    """Distance to the boundary of every checkpoint's test inputs, per norm (``deepmargin robustness``).

    One minimum-norm attack run per checkpoint and norm (:func:`measure`); on the l2 rows also
    rho_adv (DeepFool in l2; Matyasko & Chau) and, with ``certified``, the Lipschitz bounds and
    certified radii (:func:`certify`). Budgets of the error-at-epsilon columns: :func:`resolve_eps`.
    Every checkpoint is read before any attack runs; the reliability checks run on each first.

    With ``suite`` (``'standard'``, ``'fast'`` or ``'rand'``; default ``None``: none), also the
    robust accuracy of every model, norm and budget under that version of AutoAttack
    (:func:`evaluate_suite`, seeded with ``suite_seed``, ``suite_batch_size`` inputs per call,
    default ``batch_size``) in :attr:`RobustnessRun.suite_rows` and
    :attr:`RobustnessRun.suite_summary`, and its settings in ``config['suite']``.

    With ``model_source`` (any classifier: ``--model-file`` or ``--model``, see
    :class:`~deepmargin.experiments.external.ModelSource`) that model is measured instead of
    checkpoints (``checkpoints`` must be empty), on the ``x_test``/``y_test`` of the ``.npz`` file
    ``dataset`` (required then); its rows are named after the file's stem or the ``module:callable``,
    their ``checkpoint`` is the file or the ``module:callable``, and ``config['model_source']``
    records the source. Certification is skipped for it (the Lipschitz bound walks the layers of
    an ``nn.Module`` it can walk; ``ModelSource.why_not_certified`` says why per source): the certified columns stay empty.
    """
    from ..metrics import rho_adv
    from .checkpoints import check_models

    owner = "measure_checkpoints"
    if suite is not None and suite not in SUITE_VERSIONS:
        raise param_error(owner, "suite", f"None or one of {list(SUITE_VERSIONS)}", suite)
    suite_seed = check_int(suite_seed, "suite_seed", owner, low=0, type_exc=ValueError)
    suite_batch_size = check_int(suite_batch_size if suite_batch_size is not None else batch_size,
                                 "suite_batch_size", owner, low=1, type_exc=ValueError)
    norms = list(dict.fromkeys(norms))
    eps_by_norm = resolve_eps(norms, eps_l2, eps_linf)
    external, models, x, y, bounds, dataset, root, paths = _load_measured(
        checkpoints, model_source, dataset, data_root=data_root, n=n, device=device, owner=owner)
    if x.shape[0] == 0:
        raise ValueError(f"The test split of {dataset!r} is empty; nothing to measure.")
    logger.info("dataset %s: %d test inputs, bounds %s", dataset, len(y), bounds)
    check_models(models, x[:batch_size], y[:batch_size])

    attacks = {norm: min_norm_attack(attack, norm, steps=steps, bounds=bounds) for norm in norms}
    # rho_adv is defined with DeepFool in l2 (Moosavi-Dezfooli et al.; Matyasko & Chau)
    rho_attack = min_norm_attack("deepfool", "l2", steps=steps if attack == "deepfool" else None, bounds=bounds)
    chunks = math.ceil(len(y) / batch_size)
    certifying = certified and "l2" in norms
    if certifying and external is not None:
        logger.warning("%s: certification skipped (%s); the certified columns stay empty", ", ".join(models),
                       model_source.why_not_certified)
        certifying = False
    total = len(models) * (len(norms) * chunks + ("l2" in norms) + certifying)
    if suite is not None:
        total += len(models) * sum(len(eps_by_norm[norm]) for norm in norms) * math.ceil(len(y) / suite_batch_size)

    summary_rows: list[dict[str, Any]] = []
    margin_rows: list[dict[str, Any]] = []
    suite_summary: list[dict[str, Any]] = []
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
                    "dataset": dataset, "checkpoint": paths[name],
                    "steps": attacks[norm].steps,
                })
                columns = {**report, **radii} if on_l2 and radii is not None else report
                rows = _report_rows(columns, model=name, norm=norm, attack=attack)
                margin_rows += [{**{key: None for key in CERTIFIED_FIELDS}, **row} for row in rows]
                logger.debug("%s %s: median distance %.4g", name, norm, summary["median_distance"])
                for eps in eps_by_norm[norm] if suite is not None else ():
                    bar.set_postfix_str(f"{name} {norm} eps={eps:g} autoattack-{suite}")
                    entry = evaluate_suite(model, x, y, norm=norm, eps=eps, version=suite, seed=suite_seed,
                                           bounds=bounds, batch_size=suite_batch_size,
                                           on_batch=lambda: bar.update(1), label=name)
                    suite_summary.append({"model": name, **entry, "dataset": dataset, "checkpoint": paths[name]})

    config = _run_config(
        paths=paths if external is None else {}, dataset=dataset, root=root, n=len(y), bounds=bounds, norms=norms,
        eps_by_norm=eps_by_norm, attack=attack, steps=steps, attacks=attacks, rho_attack=rho_attack, batch_size=batch_size,
        certifying=certifying, lipschitz_iterations=lipschitz_iterations, lipschitz=lipschitz, device=device,
        model_source=model_source, suite=suite, suite_seed=suite_seed, suite_batch_size=suite_batch_size,
        suite_summary=suite_summary)
    stage_rows = [row for e in suite_summary
                  for row in suite_rows(e, model=e["model"], dataset=e["dataset"], checkpoint=e["checkpoint"])]
    return RobustnessRun(summary_rows=summary_rows, margin_rows=margin_rows, config=config, dataset=dataset, n=len(y),
                         suite_rows=stage_rows, suite_summary=suite_summary)


def _load_measured(checkpoints: Sequence[str], model_source: Any, dataset: str | None, *, data_root: str | None,
                   n: int | None, device: str, owner: str) -> tuple:
    """The models :func:`measure_checkpoints` measures and their test split: ``(external, models, x, y,
    bounds, dataset, data root, {name: checkpoint path or model source})``; every file read before any
    attack runs."""
    from .attack_eval import load_model_source
    from .checkpoints import load_checkpoints, load_test_split

    external = load_model_source(checkpoints, model_source, dataset, n=n, device=device, owner=owner)
    if external is not None:
        models, x, y, bounds, dataset = external
        paths = {name: str(model_source.model_file or model_source.model) for name in models}
        return external, models, x, y, bounds, dataset, None, paths
    models, metas = load_checkpoints(checkpoints, device)
    x, y, bounds, dataset, root = load_test_split(metas, command="robustness", data_root=data_root, n=n,
                                                  device=device, dataset=dataset)
    return None, models, x, y, bounds, dataset, root, dict(zip(models, [str(p) for p in checkpoints]))


def _run_config(*, paths: Mapping[str, str], dataset: str, root: str | None, n: int, bounds: Sequence[float],
                norms: Sequence[str], eps_by_norm: Mapping[str, list[float]], attack: str, steps: int | None,
                attacks: Mapping[str, Any], rho_attack: Any, batch_size: int, certifying: bool,
                lipschitz_iterations: int, lipschitz: Mapping[str, Any], device: str, model_source: Any,
                suite: str | None, suite_seed: int, suite_batch_size: int,
                suite_summary: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What ``config.json`` of ``deepmargin robustness`` records (the ``model_source`` and ``suite`` keys
    only when given, so a run of checkpoints without a suite writes it as before)."""
    config = {
        "command": "robustness",
        "checkpoints": dict(paths),
        "dataset": dataset,
        "data_root": root,
        "n": n,
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
    if model_source is not None:  # only then, as the suite: a run of checkpoints writes config.json as it was
        config["model_source"] = model_source.record()
    if suite is not None:  # only then: without a suite, config.json stays as it was
        config["suite"] = {
            "version": suite, "seed": suite_seed, "batch_size": suite_batch_size, "eps": eps_by_norm,
            "attacks": {norm: next((e["attacks"] for e in suite_summary if e["norm"] == norm and e["attacks"]), [])
                        for norm in norms},
        }
    return config
