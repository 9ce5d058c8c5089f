"""``deepmargin robustness``: how far the test inputs of trained models are from their decision boundary.

Example::

    deepmargin robustness runs/ce/best.pt runs/margin/best.pt --norms l2 linf \\
        --eps-l2 0.5 1 2 --eps-linf 0.05 0.1 0.3 --attack fmn --n 1000 --out runs/robustness

For every checkpoint and norm, one minimum-norm attack run (FMN or DeepFool) gives each input's
distance to the closest adversarial, and the linearised distance at the input layer is computed
beside it (:func:`deepmargin.metrics.margin_report`). Writes, in ``--out``:

* ``summary.csv`` / ``summary.jsonl``: one row per (model, norm, attack): clean accuracy, median
  adversarial distance and error at each epsilon (Finlay & Oberman's table), mean linearised and
  minimum-norm distances of the correctly classified inputs, and, on the l2 rows, rho_adv
  (DeepFool; Matyasko & Chau), the Lipschitz bounds used (``lipschitz_l2``, ``lipschitz_linf_l2``)
  and the median certified radii (``median_certified_kesidis``, ``median_certified_tsuzuku``;
  0 for misclassified inputs, as in ``median_distance``, so each is at most ``median_distance``);
  ``--no-certify`` leaves these columns empty;
* ``margins.csv``: the per-input margin report (model, norm, attack, index, label, pred, correct,
  nearest_class, linearized, min_norm, gap) and, on the l2 rows, the certified class-pure radii
  ``certified_kesidis`` (Kesidis et al., Theorem 2.1: ``mu(relu f) / (2 L_inf)``) and
  ``certified_tsuzuku`` (Tsuzuku et al., Prop. 4.1: ``mu(f) / (sqrt(2) L_2)``) around the model's
  decision, from upper bounds of the Lipschitz constants
  (:func:`deepmargin.metrics.lipschitz_upper_bound`). For a correctly classified input,
  certified radius <= true distance to the boundary <= ``min_norm``;
* ``margin_histogram.png``: histograms of the minimum-norm distances per model, drawn from
  ``margins.csv`` (:func:`deepmargin.reports.margins.plot_margin_histogram`);
* ``config.json``: the resolved options.

Every file is written to a temporary file and moved into place with ``os.replace``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._common import add_output_options, load_checkpoints, load_test_split, nonneg_float, norm_arg, positive_int

logger = logging.getLogger(__name__)

__all__ = [
    "add_parser",
    "run",
    "build_attack",
    "load_test_split",
    "measure",
    "MIN_NORM_ATTACKS",
    "DEFAULT_EPS",
    "SUMMARY_FIELDS",
    "CERTIFIED_FIELDS",
    "certify",
]

MIN_NORM_ATTACKS = ("fmn", "deepfool")
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

HELP = "distance of test inputs to the decision boundary: minimum-norm attacks, linearised margins, rho_adv"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``robustness`` subcommand on an ``argparse`` sub-parsers object; return its parser."""
    p = subparsers.add_parser(
        "robustness",
        help=HELP,
        description=(
            "Measure how far the test inputs of trained checkpoints are from the decision boundary: one "
            "minimum-norm attack per checkpoint and norm gives every input's adversarial distance; writes a "
            "summary (median distance, error at epsilon, rho_adv), the per-input margin report, a histogram "
            "and the resolved config."
        ),
    )
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="model checkpoint(s) to measure")
    p.add_argument("--norms", nargs="+", type=norm_arg, default=["l2", "linf"], metavar="NORM",
                   help="norms: l2, linf (or 2, inf) (default: l2 linf)")
    p.add_argument("--eps-l2", nargs="+", type=nonneg_float, default=None, metavar="EPS",
                   help=f"l2 budgets of the error-at-epsilon columns (default: {list(DEFAULT_EPS['l2'])})")
    p.add_argument("--eps-linf", nargs="+", type=nonneg_float, default=None, metavar="EPS",
                   help=f"l_inf budgets of the error-at-epsilon columns (default: {list(DEFAULT_EPS['linf'])})")
    p.add_argument("--attack", choices=MIN_NORM_ATTACKS, default="fmn",
                   help="minimum-norm attack giving the distances (default: fmn, started from DeepFool)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="steps of the minimum-norm attack (default: fmn 100, deepfool 50)")
    p.add_argument("--n", type=positive_int, default=None, help="measure the first N test inputs (default: all)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="inputs per attack call (default: 256)")
    p.add_argument("--no-certify", dest="certify", action="store_false",
                   help="skip the Lipschitz bounds and the certified l2 radii (Kesidis et al. Theorem 2.1, Tsuzuku "
                        "et al. Prop. 4.1) of the l2 rows")
    p.add_argument("--lipschitz-iterations", type=positive_int, default=100, metavar="K",
                   help="most power-iteration steps per convolution for the Lipschitz bounds (default: 100)")
    add_output_options(p, out="runs/robustness", plot="margin_histogram.png", progress="a progress bar")
    p.set_defaults(func=run)
    return p


def _resolve_eps(
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


def build_attack(name: str, norm: str, *, steps: int | None = None, bounds: Sequence[float] = (0.0, 1.0)) -> Any:
    """The minimum-norm attack ``name`` (``'fmn'`` or ``'deepfool'``) for ``norm`` (``'l2'``/``'linf'``).

    ``steps=None`` keeps the attack's default (FMN 100, DeepFool 50).

    Example:
        >>> build_attack("deepfool", "l2", steps=10)
        DeepFool(norm=2.0, steps=10, overshoot=0.02, candidates=10, nudge=0.0001, bounds=(0.0, 1.0), eps=None)
    """
    from ..attacks import FMN, DeepFool

    if name not in MIN_NORM_ATTACKS:
        raise ValueError(
            f"The 'name' parameter of build_attack must be one of {list(MIN_NORM_ATTACKS)}. Got {name!r} instead."
        )
    cls = FMN if name == "fmn" else DeepFool
    kwargs = {} if steps is None else {"steps": steps}
    return cls(norm=norm, bounds=tuple(bounds), **kwargs)


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
        attack: a minimum-norm attack measuring ``norm`` (see :func:`build_attack`).
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


def _check_models(models: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor) -> None:
    """AutoAttack-style reliability checks on one batch, each warning tagged with the model's name."""
    from ..attacks import check_model

    for name, model in models.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_model(model, x, y)
        for w in caught:
            warnings.warn_explicit(f"[{name}] {w.message}", w.category, w.filename, w.lineno)


def _errors_cell(eps: Sequence[float], errors: Sequence[float]) -> str:
    return " ".join(f"{e:g}:{v:.3f}" for e, v in zip(eps, errors))


def run(args: argparse.Namespace) -> int:
    """Run ``deepmargin robustness`` with parsed arguments; return the exit status (0 on success)."""
    from tqdm.auto import tqdm

    from ..metrics import rho_adv
    from ..reports.margins import MARGIN_FIELDS, atomic_write, plot_margin_histogram, write_rows_atomic
    from ..reports.tables import format_table
    from ..training.records import write_json

    start = time.perf_counter()
    norms = list(dict.fromkeys(args.norms))
    eps_by_norm = _resolve_eps(norms, args.eps_l2, args.eps_linf)
    progress = bool(args.progress or sys.stderr.isatty())

    models, metas = load_checkpoints(args.checkpoints, args.device)  # all read before any attack runs
    names = list(models)
    x, y, bounds, dataset, root = load_test_split(metas, command="robustness", data_root=args.data_root, n=args.n, device=args.device,
                                                    dataset=args.dataset)
    if x.shape[0] == 0:
        raise ValueError(f"The test split of {dataset!r} is empty; nothing to measure.")
    logger.info("dataset %s: %d test inputs, bounds %s", dataset, len(y), bounds)
    _check_models(models, x[: args.batch_size], y[: args.batch_size])

    attacks = {norm: build_attack(args.attack, norm, steps=args.steps, bounds=bounds) for norm in norms}
    # rho_adv is defined with DeepFool in l2 (Moosavi-Dezfooli et al.; Matyasko & Chau)
    rho_attack = build_attack("deepfool", "l2", steps=args.steps if args.attack == "deepfool" else None, bounds=bounds)
    chunks = math.ceil(len(y) / args.batch_size)
    certifying = args.certify and "l2" in norms
    total = len(models) * (len(norms) * chunks + ("l2" in norms) + certifying)

    summary_rows: list[dict[str, Any]] = []
    margin_rows: list[dict[str, Any]] = []
    lipschitz: dict[str, dict[str, float]] = {}
    with tqdm(total=total, desc="robustness", disable=not progress, leave=False, file=sys.stderr) as bar:
        for name, model in models.items():
            constants = radii = None
            if certifying:
                bar.set_postfix_str(f"{name} lipschitz")
                constants, radii = certify(model, x, iterations=args.lipschitz_iterations, batch_size=args.batch_size)
                lipschitz[name] = constants
                bar.update(1)
            for norm in norms:
                bar.set_postfix_str(f"{name} {norm} {args.attack}")
                summary, report = measure(model, x, y, norm=norm, attack=attacks[norm], eps=eps_by_norm[norm],
                                          batch_size=args.batch_size, on_batch=lambda: bar.update(1))
                rho = None
                if norm == "l2":
                    bar.set_postfix_str(f"{name} rho_adv")
                    rho = float(rho_adv(model, x, y, attack=rho_attack, batch_size=args.batch_size)["rho_adv"])
                    bar.update(1)
                on_l2 = norm == "l2"
                summary_rows.append({
                    "model": name, "norm": norm, "attack": args.attack, **summary, "rho_adv": rho,
                    **_certified_summary(constants if on_l2 else None, radii if on_l2 else None, report["correct"]),
                    "dataset": dataset, "checkpoint": str(args.checkpoints[names.index(name)]),
                    "steps": attacks[norm].steps,
                })
                columns = {**report, **radii} if on_l2 and radii is not None else report
                rows = _report_rows(columns, model=name, norm=norm, attack=args.attack)
                margin_rows += [{**{key: None for key in CERTIFIED_FIELDS}, **row} for row in rows]
                logger.debug("%s %s: median distance %.4g", name, norm, summary["median_distance"])

    out = Path(args.out)
    written = [
        write_rows_atomic(out / "summary.csv", summary_rows, fieldnames=SUMMARY_FIELDS),
        write_rows_atomic(out / "summary.jsonl", summary_rows),
        write_rows_atomic(out / "margins.csv", margin_rows, fieldnames=(*MARGIN_FIELDS, *CERTIFIED_FIELDS)),
    ]
    if args.plot:
        fig = plot_margin_histogram(out / "margins.csv", title=f"{dataset}: distance to the boundary (n={len(y)})")
        written.append(atomic_write(out / "margin_histogram.png", lambda h: fig.savefig(h, format="png", dpi=120),
                                    binary=True))
    config = {
        "command": "robustness",
        "checkpoints": dict(zip(names, [str(p) for p in args.checkpoints])),
        "dataset": dataset,
        "data_root": root,
        "n": len(y),
        "bounds": list(bounds),
        "norms": norms,
        "eps": eps_by_norm,
        "attack": args.attack,
        "steps": args.steps,
        "attack_objects": {norm: repr(a) for norm, a in attacks.items()},
        "rho_adv_attack": repr(rho_attack) if "l2" in norms else None,
        "batch_size": args.batch_size,
        "certify": certifying,
        "lipschitz_iterations": args.lipschitz_iterations if certifying else None,
        "lipschitz": lipschitz or None,
        "device": str(args.device),
        "torch_version": torch.__version__,
    }
    written.append(write_json(out / "config.json", config))

    table = [
        {"model": r["model"], "norm": r["norm"], "attack": r["attack"], "n": r["n"], "clean_acc": r["clean_accuracy"],
         "median_dist": r["median_distance"], "mean_lin": r["mean_linearized"], "mean_min_norm": r["mean_min_norm"],
         "failed": r["failed"], "err@eps": _errors_cell(r["eps"], r["error_at_eps"]), "rho_adv": r["rho_adv"],
         "cert_kesidis": r["median_certified_kesidis"], "cert_tsuzuku": r["median_certified_tsuzuku"]}
        for r in summary_rows
    ]
    print(format_table(table))
    print("wrote " + ", ".join(str(p) for p in written))
    logger.info("deepmargin robustness finished in %.1f s", time.perf_counter() - start)
    return 0
