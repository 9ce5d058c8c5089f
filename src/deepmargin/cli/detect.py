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

from .main import COMMANDS

import argparse
import logging
import sys
import time
from typing import Any

from ..experiments.checkpoints import load_training_bundle
from ..experiments.detection import DETECT_ATTACKS as ATTACKS
from ..experiments.detection import DETECT_FIELDS
from ._common import (
    _number_type,
    add_output_options,
    nonneg_float,
    norm_arg,
    positive_float,
    positive_int,
    seed_int,
)

logger = logging.getLogger(__name__)

__all__ = ["add_parser", "run", "load_training_bundle", "ATTACKS", "DETECT_FIELDS"]

open_unit_float = _number_type(float, lambda v: 0.0 < v < 1.0, "a float in (0, 1)", "open_unit_float",
                               "a float in (0, 1)")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``detect`` subcommand on an ``argparse`` sub-parsers object; return its parser."""
    p = subparsers.add_parser(
        "detect",
        help=COMMANDS["detect"],
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


def run(args: argparse.Namespace) -> int:
    """Run ``deepmargin detect`` with parsed arguments; return the exit status (0 on success)."""
    from ..experiments.detection import detect_checkpoint
    from ..reports.detection import write_detection
    from ..reports.tables import format_table
    from ..training.optim import seed_everything

    start = time.perf_counter()
    seed_everything(args.seed)
    detected = detect_checkpoint(
        args.checkpoint, source=args.source, attacks=args.attacks, eps=args.eps, norm=args.norm, steps=args.steps,
        step_size=args.step_size, fpr=args.fpr, per_class=args.per_class, max_components=args.max_components,
        reg_covar=args.reg_covar, n=args.n, batch_size=args.batch_size, seed=args.seed, dataset=args.dataset,
        data_root=args.data_root, device=args.device, progress=bool(args.progress or sys.stderr.isatty()),
    )
    written = write_detection(detected, args.out, plot=args.plot)

    result = detected.result
    table = [
        {"box": r["box"] if r["box"] == "white" else f"from {r['source']}", "attack": r["attack"], "eps": r["eps"],
         "acc": r["accuracy"], "AUC": r["auc"], f"TPR@{args.fpr:g}": r["tpr"], "FPR test": r["fpr_test"],
         "AUC fooled": r["auc_fooled"]}
        for r in result.rows
    ]
    print(f"{detected.name}: clean accuracy {result.clean_accuracy:.4f}; threshold p < {result.threshold:.4g} "
          f"(FPR {result.fpr_calibration:.4f} on {result.n_calibration} {result.calibration} inputs)")
    print(format_table(table))
    print("wrote " + ", ".join(str(p) for p in written))
    logger.info("deepmargin detect finished in %.1f s", time.perf_counter() - start)
    return 0
