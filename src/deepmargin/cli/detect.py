"""``deepmargin detect``: detect adversarial inputs by their margin p-value (Kesidis, Miller & Xiang, Sec. V).

Example::

    deepmargin detect runs/margin/best.pt --source runs/ce/best.pt --attacks fgsm ifgsm pgd \\
        --eps 0.05 0.1 --fpr 0.05 --out runs/detect

Steps:

1. **Fit.** The training split the checkpoint was trained on is rebuilt from its stored config
   (dataset, ``val_size``, ``train_fraction``, ``label_noise``, ``seed``, toy ``n_samples`` /
   ``data_noise``; keys an older checkpoint lacks take :class:`~deepmargin.training.TrainConfig`'s
   defaults), with the labels it was trained with. :class:`~deepmargin.metrics.MarginPValues` is
   fitted to the true-class margins of the correctly classified training samples, per class
   (``--per-class``, default) or pooled (``--pooled``).
2. **Threshold.** The p-value threshold is set on clean held-out data, never on the inputs the
   detection is measured on: the checkpoint's validation split when it has one (``val_size > 0``),
   else the first half of the test split (the second half is then the evaluation set). Inputs are
   scored as unlabelled ones are at test time: own-decision margin and class. An input is flagged
   when ``p < threshold`` (:func:`~deepmargin.metrics.threshold_at_fpr`).
3. **Attack.** Every evaluation test input (the first ``--n``), misclassified ones included as in
   the seed, is attacked with its true label: white-box on CKPT, and crafted on ``--source`` and
   transferred when it is given. The ROC AUC compares the clean evaluation inputs (negatives)
   with their attacked versions (positives); TPR is at the threshold of step 2. The ``*_fooled``
   columns restrict the positives to the attacked inputs CKPT misclassifies.

Writes, in ``--out`` (each file atomically): ``rows.csv`` / ``rows.jsonl`` (one row per attack,
eps and box: see :data:`DETECT_FIELDS`), ``mixture.json`` (the fitted components, weights,
means, sigmas and BIC curves, and the threshold), ``margins.csv`` (the margins of the four
histogram panels) with ``margin_histograms.png`` (Kesidis et al.'s Figures 1-2: panel (d) is
FGSM at the first nonzero ``--eps``, transferred from ``--source`` when given, else white-box),
and ``config.json``.

Margins use the rectified outputs ``relu(f)`` when the checkpoint was trained with the
``kesidis`` loss and ``rectify=True`` (their assumption (1)); the target margin ``mu`` of a
``kesidis`` (``mu``) or ``hinge`` (``hinge_margin``) checkpoint is drawn on the histograms.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._common import (
    _number_type,
    add_output_options,
    load_checkpoints,
    nonneg_float,
    norm_arg,
    positive_float,
    positive_int,
    seed_int,
)

from .robustness import _check_models  # the same reliability checks, tagged per model

logger = logging.getLogger(__name__)

__all__ = ["add_parser", "run", "load_training_bundle", "ATTACKS", "DETECT_FIELDS"]

ATTACKS = ("fgsm", "ifgsm", "pgd")
#: Column order of ``rows.csv``.
DETECT_FIELDS = (
    "model", "box", "source", "attack", "norm", "eps", "seed", "n", "clean_accuracy", "accuracy",
    "auc", "tpr", "fpr_target", "threshold", "fpr_test", "fpr_calibration", "calibration", "n_calibration",
    "n_fooled", "auc_fooled", "tpr_fooled", "per_class", "dataset", "checkpoint",
)

open_unit_float = _number_type(float, lambda v: 0.0 < v < 1.0, "a float in (0, 1)", "open_unit_float",
                               "a float in (0, 1)")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``detect`` subcommand on an ``argparse`` sub-parsers object; return its parser."""
    p = subparsers.add_parser(
        "detect",
        help="detect adversarial inputs by their margin p-value (Kesidis et al.): AUC, TPR at a false-positive rate",
        description=(
            "Fit Gaussian mixtures (BIC order) to the log-margins of a checkpoint's correctly classified training "
            "samples, set a p-value threshold at --fpr on clean held-out data, and measure how well the p-value "
            "detects white-box and transferred attacks on the test set. Writes rows (CSV, JSONL), the fitted "
            "mixture, the four-panel margin histograms and the resolved config."
        ),
    )
    p.add_argument("checkpoint", metavar="CKPT", help="the checkpoint whose margins are scored")
    p.add_argument("--source", metavar="CE_CKPT", default=None,
                   help="also craft the attacks on this checkpoint (e.g. cross-entropy) and transfer them to CKPT")
    p.add_argument("--attacks", nargs="+", choices=ATTACKS, default=list(ATTACKS), metavar="ATTACK",
                   help=f"attacks among {', '.join(ATTACKS)} (default: all)")
    p.add_argument("--eps", nargs="+", type=nonneg_float, default=[0.1], metavar="EPS",
                   help="attack radii, in input units (default: 0.1, the seed's FGSM strength)")
    p.add_argument("--norm", type=norm_arg, default="linf", help="attack norm: linf or l2 (default: linf)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="steps of ifgsm/pgd (default: ifgsm Kurakin's rule, pgd 40)")
    p.add_argument("--step-size", type=positive_float, default=None,
                   help="absolute step size of ifgsm/pgd (default: ifgsm Kurakin's, pgd 2.5*eps/steps)")
    p.add_argument("--fpr", type=open_unit_float, default=0.05,
                   help="false-positive rate the threshold is set at on clean held-out data (default: 0.05)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--per-class", dest="per_class", action="store_true", default=True,
                       help="one mixture per class, scored at the input's own decision (default)")
    group.add_argument("--pooled", dest="per_class", action="store_false", help="one mixture pooled over the classes")
    p.add_argument("--max-components", type=positive_int, default=10,
                   help="largest number of mixture components BIC chooses among (default: 10)")
    p.add_argument("--reg-covar", type=nonneg_float, default=1e-6,
                   help="variance added to each mixture component, in squared log-margin units (default: 1e-6)")
    p.add_argument("--n", type=positive_int, default=None, help="evaluate the first N evaluation test inputs (default: all)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="inputs per forward / attack call (default: 256)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the mixture fits and the PGD random start (default: 0)")
    add_output_options(p, out="runs/detect", plot="margin_histograms.png", progress="a progress bar")
    p.set_defaults(func=run)
    return p


# --------------------------------------------------------------------------- data


def _config_value(config: Mapping[str, Any], key: str) -> Any:
    """``config[key]``, or the :class:`TrainConfig` default when the checkpoint does not record it."""
    from ..training.config import TrainConfig

    if config.get(key) is not None:
        return config[key]
    field = TrainConfig.__dataclass_fields__[key]
    return None if field.default is dataclasses.MISSING else field.default


def load_training_bundle(
    meta: Mapping[str, Any], *, dataset: str | None = None, data_root: str | None = None, command: str = "detect"
) -> Any:
    """The :class:`~deepmargin.data.DataBundle` a checkpoint was trained on, rebuilt from its config.

    ``bundle.train`` is the training split with the labels the model was trained with (after
    ``train_fraction`` and ``label_noise``), ``bundle.val`` its validation split and ``bundle.test``
    the test split. ``dataset`` (``--data``) replaces the recorded dataset, keeping the other settings.
    """
    from ..data import TOY_DEFAULTS, load_dataset

    config = meta.get("config") or {}
    name = dataset if dataset is not None else config.get("dataset")
    if not name:
        raise ValueError(
            f"The checkpoint of deepmargin {command} must record its dataset in config['dataset'] (or pass --data). "
            f"Got {config.get('dataset')!r} instead."
        )
    kwargs: dict[str, Any] = {}
    if str(name).lower() in TOY_DEFAULTS:
        kwargs = {"n_samples": config.get("n_samples"), "noise": config.get("data_noise")}
    return load_dataset(
        name,
        root=data_root if data_root is not None else config.get("data_root"),
        val_size=_config_value(config, "val_size"),
        train_fraction=_config_value(config, "train_fraction"),
        label_noise=_config_value(config, "label_noise"),
        seed=int(_config_value(config, "seed")),
        **kwargs,
    )


def _check_fits(name: str, meta: Mapping[str, Any], bundle: Any) -> None:
    kw = meta.get("model_kwargs") or {}
    shape, classes = list(kw.get("input_shape") or []), kw.get("num_classes")
    if shape != list(bundle.input_shape) or classes != bundle.num_classes:
        raise ValueError(
            f"The model of checkpoint {name!r} (input shape {shape}, {classes} classes) does not fit the dataset "
            f"{bundle.name!r} (input shape {list(bundle.input_shape)}, {bundle.num_classes} classes)."
        )


def _margin_settings(meta: Mapping[str, Any]) -> tuple[bool, float | None]:
    """``(rectify, mu)`` of a checkpoint: rectified outputs and target margin of its training loss."""
    from ..losses import LOSS_REGISTRY, loss_options_of

    config = dict(meta.get("config") or {})
    spec = LOSS_REGISTRY.get(config.setdefault("loss", "ce"))
    if spec is None or spec.output_margin is None:
        return False, None
    options = {o.name: o.default for o in spec.options}
    options.update(loss_options_of(config))
    return spec.output_margin(options)


# --------------------------------------------------------------------------- model outputs


def _logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    from ..attacks._base import eval_mode

    out = []
    with torch.no_grad(), eval_mode(model):
        for start in range(0, x.shape[0], batch_size):
            out.append(model(x[start:start + batch_size]).float())
    return torch.cat(out) if out else torch.empty(0)


def _margins(logits: torch.Tensor, y: torch.Tensor | None, rectify: bool) -> np.ndarray:
    from ..metrics import logit_margins

    return logit_margins(logits, y, rectify=rectify).double().cpu().numpy()


def _decisions(logits: torch.Tensor, rectify: bool) -> np.ndarray:
    scores = torch.relu(logits) if rectify else logits
    return scores.argmax(dim=1).cpu().numpy()


def _own_pvalues(estimator: Any, logits: torch.Tensor, rectify: bool) -> np.ndarray:
    """P-values as for unlabelled inputs: the own-decision margin, scored with the own decision's mixture."""
    return estimator.pvalues(_margins(logits, None, rectify), _decisions(logits, rectify))


def _build_attack(name: str, args: argparse.Namespace, bounds: tuple[float, float]) -> Any:
    from .. import attacks

    p = math.inf if args.norm == "linf" else 2.0
    if name == "fgsm":
        return attacks.FGSM(eps=0.0, norm=p, bounds=bounds)
    if name == "ifgsm":
        steps = args.steps
        if steps is None and args.step_size is None and not math.isfinite(bounds[1] - bounds[0]):
            steps = 10  # Kurakin's rule needs bounded inputs
        return attacks.IFGSM(eps=0.0, norm=p, steps=steps, step_size=args.step_size, bounds=bounds)
    return attacks.PGD(eps=0.0, norm=p, steps=args.steps or 40, step_size=args.step_size, random_start=True,
                       bounds=bounds, seed=args.seed)


def _craft(attack: Any, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float], batch_size: int,
           seed: int) -> list[torch.Tensor]:
    """``attack`` crafted on ``model`` for every radius, in chunks (each chunk's random start seeded with ``seed``)."""
    from ..attacks.evaluate import run_sweep

    parts: list[list[torch.Tensor]] = []
    for start in range(0, x.shape[0], batch_size):
        generator = torch.Generator(device=x.device).manual_seed(seed) if getattr(attack, "random_start", False) else None
        parts.append(run_sweep(attack, model, x[start:start + batch_size], y[start:start + batch_size], eps,
                               generator=generator))
    return [torch.cat([part[i] for part in parts]) for i in range(len(eps))]


def run(args: argparse.Namespace) -> int:  # noqa: C901 - one linear pipeline reads best
    """Run ``deepmargin detect`` with parsed arguments; return the exit status (0 on success)."""
    from tqdm.auto import tqdm

    from ..metrics import MarginPValues, detection_scores, threshold_at_fpr
    from ..reports.histograms import DEFAULT_TITLES, save_margin_histograms, write_panel_margins
    from ..reports.margins import write_rows_atomic
    from ..reports.tables import format_table
    from ..training.optim import seed_everything
    from ..training.records import write_json

    start = time.perf_counter()
    progress = bool(args.progress or sys.stderr.isatty())
    seed_everything(args.seed)
    eps = list(dict.fromkeys(args.eps))
    attack_names = list(dict.fromkeys(args.attacks))

    paths = [args.checkpoint, *([args.source] if args.source is not None else [])]
    loaded, metas = load_checkpoints(paths, args.device)
    name = list(loaded)[0]
    model, meta = loaded[name], metas[name]
    source_name = list(loaded)[1] if args.source is not None else None
    source = loaded[source_name] if source_name is not None else None
    if source is not None and args.dataset is None:
        datasets = {n: (m.get("config") or {}).get("dataset") for n, m in metas.items()}
        if len(set(datasets.values())) != 1:
            raise ValueError(
                f"The checkpoints of deepmargin detect (CKPT and --source) must record the same dataset in "
                f"config['dataset']. Got {datasets} instead."
            )
    bundle = load_training_bundle(meta, dataset=args.dataset, data_root=args.data_root)
    for n_, m_ in metas.items():
        _check_fits(n_, m_, bundle)
    bounds = tuple(float(b) for b in bundle.bounds) if bundle.bounds is not None else (-math.inf, math.inf)
    rectify, mu = _margin_settings(meta)
    device = torch.device(args.device)

    # 1. fit on the correctly classified training samples (true-class margins, labels as trained)
    x_train, y_train = bundle.train.x.to(device), bundle.train.y.to(device)
    if x_train.shape[0] == 0:
        raise ValueError(f"The training split of {bundle.name!r} is empty; nothing to fit.")
    train_logits = _logits(model, x_train, args.batch_size)
    train_margins = _margins(train_logits, y_train, rectify)
    y_train_np = y_train.cpu().numpy()
    correct = (_decisions(train_logits, rectify) == y_train_np) & (train_margins > 0)
    if args.per_class:
        counts = np.bincount(y_train_np[correct], minlength=bundle.num_classes)
        few = [k for k in range(bundle.num_classes) if counts[k] < 2]
        if few:
            raise ValueError(
                f"The per-class fit of deepmargin detect needs at least 2 correctly classified training samples of "
                f"every class. Got {', '.join(f'{counts[k]} for class {k}' for k in few)} instead; "
                "train the model further or use --pooled."
            )
    estimator = MarginPValues(per_class=args.per_class, max_components=args.max_components, random_state=args.seed,
                              reg_covar=args.reg_covar)
    estimator.fit(train_margins[correct], y_train_np[correct] if args.per_class else None)

    # 2. threshold on clean held-out data; evaluation set disjoint from it
    x_test, y_test = bundle.test.x.to(device), bundle.test.y.to(device)
    if len(bundle.val) > 0:
        calibration = "val"
        x_cal = bundle.val.x.to(device)
    else:
        if x_test.shape[0] < 2:
            raise ValueError(f"The test split of {bundle.name!r} is too small to hold out a calibration half.")
        calibration = "test-first-half"
        half = x_test.shape[0] // 2
        x_cal, x_test, y_test = x_test[:half], x_test[half:], y_test[half:]
    if args.n is not None:
        x_test, y_test = x_test[: args.n], y_test[: args.n]
    if x_test.shape[0] == 0:
        raise ValueError(f"The test split of {bundle.name!r} is empty; nothing to evaluate.")
    p_cal = _own_pvalues(estimator, _logits(model, x_cal, args.batch_size), rectify)
    threshold = threshold_at_fpr(p_cal, args.fpr)
    fpr_cal = float((p_cal < threshold).mean())
    logger.info("threshold %.4g set on %d %s inputs (FPR %.4f)", threshold, len(p_cal), calibration, fpr_cal)

    test_logits = _logits(model, x_test, args.batch_size)
    p_clean = _own_pvalues(estimator, test_logits, rectify)
    y_test_np = y_test.cpu().numpy()
    clean_accuracy = float((_decisions(test_logits, rectify) == y_test_np).mean())
    _check_models({n_: m_ for n_, m_ in loaded.items()}, x_test[: args.batch_size], y_test[: args.batch_size])

    # 3. attacks: white-box on CKPT, transferred from --source
    boxes = [("white", model, None), *([("transfer", source, source_name)] if source is not None else [])]
    nonzero = [e for e in eps if e > 0]
    hist_eps = nonzero[0] if nonzero else eps[0]
    hist_box = "transfer" if source is not None else "white"
    common = {"fpr_target": args.fpr, "threshold": threshold, "fpr_calibration": fpr_cal, "calibration": calibration,
              "n_calibration": int(len(p_cal)), "per_class": bool(args.per_class), "dataset": bundle.name,
              "checkpoint": str(args.checkpoint)}
    rows: list[dict[str, Any]] = []
    attacked_margins = None
    jobs = [(a, box) for a in attack_names for box in boxes]
    if "fgsm" not in attack_names:
        jobs.append(("fgsm-histogram", next(b for b in boxes if b[0] == hist_box)))
    for attack_name, (box, crafter, src_name) in tqdm(jobs, desc="detect", disable=not progress, leave=False,
                                                      file=sys.stderr):
        histogram_only = attack_name == "fgsm-histogram"
        attack = _build_attack("fgsm" if histogram_only else attack_name, args, bounds)
        radii = [hist_eps] if histogram_only else eps
        advs = _craft(attack, crafter, x_test, y_test, radii, args.batch_size, args.seed)
        for e, x_adv in zip(radii, advs):
            adv_logits = _logits(model, x_adv, args.batch_size)
            p_adv = _own_pvalues(estimator, adv_logits, rectify)
            if (attack_name in ("fgsm", "fgsm-histogram")) and box == hist_box and e == hist_eps:
                attacked_margins = _margins(adv_logits, None, rectify)
            if histogram_only:
                continue
            fooled = _decisions(adv_logits, rectify) != y_test_np
            scores = detection_scores(p_clean, p_adv, threshold)
            fooled_scores = detection_scores(p_clean, p_adv[fooled], threshold) if fooled.any() else None
            rows.append({
                "model": name, "box": box, "source": src_name, "attack": attack_name, "norm": args.norm, "eps": e,
                "seed": args.seed, "n": int(len(y_test_np)), "clean_accuracy": clean_accuracy,
                "accuracy": float((~fooled).mean()), "auc": scores["auc"], "tpr": scores["tpr"],
                "fpr_test": scores["fpr"], "n_fooled": int(fooled.sum()),
                "auc_fooled": fooled_scores["auc"] if fooled_scores else None,
                "tpr_fooled": fooled_scores["tpr"] if fooled_scores else None,
                **common,
            })

    # 4. write
    out = Path(args.out)
    written = [
        write_rows_atomic(out / "rows.csv", rows, fieldnames=DETECT_FIELDS),
        write_rows_atomic(out / "rows.jsonl", [{k: r.get(k) for k in DETECT_FIELDS} for r in rows]),
    ]
    mixture = {
        "checkpoint": str(args.checkpoint), "dataset": bundle.name, "rectify": rectify, "mu": mu,
        "n_train": int(len(y_train_np)), "n_train_fitted": int(correct.sum()),
        "threshold": threshold, "fpr": args.fpr, "calibration": calibration, "n_calibration": int(len(p_cal)),
        "fpr_calibration": fpr_cal, "fit": estimator.to_dict(),
    }
    written.append(write_json(out / "mixture.json", mixture))
    panels = {
        "train": train_margins,
        "heldout": _margins(test_logits, y_test, rectify),
        "test": _margins(test_logits, None, rectify),
        "attacked": attacked_margins,
    }
    written.append(write_panel_margins(out / "margins.csv", **panels))
    if args.plot:
        where = f"transferred from {source_name}" if hist_box == "transfer" else "white-box"
        titles = {"attacked": f"(d) FGSM eps={hist_eps:g}, {where}"}
        written.append(save_margin_histograms(
            out / "margin_histograms.png", **panels, titles={**DEFAULT_TITLES, **titles}, mu=mu,
            title=f"{name} on {bundle.name}: output margins",
        ))
    config = {
        "command": "detect",
        "checkpoint": str(args.checkpoint),
        "source": args.source,
        "dataset": bundle.name,
        "data_root": args.data_root if args.data_root is not None else (meta.get("config") or {}).get("data_root"),
        "n": int(len(y_test_np)),
        "bounds": list(bounds),
        "attacks": attack_names,
        "eps": eps,
        "norm": args.norm,
        "steps": args.steps,
        "step_size": args.step_size,
        "fpr": args.fpr,
        "per_class": bool(args.per_class),
        "max_components": args.max_components,
        "reg_covar": args.reg_covar,
        "calibration": calibration,
        "histogram": {"attack": "fgsm", "eps": hist_eps, "box": hist_box},
        "rectify": rectify,
        "mu": mu,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "device": str(args.device),
        "attack_objects": {a: repr(_build_attack(a, args, bounds)) for a in attack_names},
        "torch_version": torch.__version__,
    }
    written.append(write_json(out / "config.json", config))

    table = [
        {"box": r["box"] if r["box"] == "white" else f"from {r['source']}", "attack": r["attack"], "eps": r["eps"],
         "acc": r["accuracy"], "AUC": r["auc"], f"TPR@{args.fpr:g}": r["tpr"], "FPR test": r["fpr_test"],
         "AUC fooled": r["auc_fooled"]}
        for r in rows
    ]
    print(f"{name}: clean accuracy {clean_accuracy:.4f}; threshold p < {threshold:.4g} "
          f"(FPR {fpr_cal:.4f} on {len(p_cal)} {calibration} inputs)")
    print(format_table(table))
    print("wrote " + ", ".join(str(p) for p in written))
    logger.info("deepmargin detect finished in %.1f s", time.perf_counter() - start)
    return 0
