"""``deepmargin robustness``: how far the test inputs of trained models are from their decision boundary.

Example::

    deepmargin robustness runs/ce/best.pt runs/margin/best.pt --norms l2 linf \\
        --eps-l2 0.5 1 2 --eps-linf 0.05 0.1 0.3 --attack fmn --n 1000 --out runs/robustness
    deepmargin robustness runs/ce/best.pt --norms linf --eps-linf 0.1 0.3 --suite standard
    deepmargin robustness --model-file net.pt2 --data test.npz --input-shape 1 8 8 --suite standard

Any classifier is measured the same way (``--model-file`` TorchScript or ``.pt2``, or ``--model
MODULE:CALLABLE`` with ``--weights``; inputs from ``--data FILE.npz``; see ``deepmargin attack``),
without the certified radii (the Lipschitz bound cannot walk a TorchScript or exported graph).

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
* with ``--suite standard|fast|rand``: ``autoattack.csv`` / ``autoattack.jsonl``, the robust
  accuracy under that version of AutoAttack (Croce & Hein, 2020) at every budget of
  ``--eps-l2`` / ``--eps-linf``: one row per (model, norm, eps, stage), the stages being ``clean``,
  each attack of the ensemble in the order run (each only on the inputs still correct) and
  ``autoattack``, the worst case per input; ``flags`` names the reliability checks that fired
  (:func:`deepmargin.experiments.robustness_eval.evaluate_suite`). ``autoattack_summary.json``
  holds one result per (model, norm, eps): clean and robust accuracy, the accuracy after each
  attack in order, the flags. At eps 0 no attack runs (robust accuracy = clean accuracy). A
  second table is printed with the same numbers;
* ``config.json``: the resolved options (with ``--suite``, its settings under ``suite``).

Every file is written to a temporary file and moved into place with ``os.replace``.
"""

from __future__ import annotations

from .main import COMMANDS

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from ..experiments.checkpoints import load_test_split
from ..experiments.robustness_eval import (
    CERTIFIED_FIELDS,
    DEFAULT_EPS,
    MIN_NORM_ATTACKS,
    SUITE_VERSIONS,
    SUMMARY_FIELDS,
    certify,
    measure,
)
from ..experiments.robustness_eval import min_norm_attack as build_attack
from ._common import (
    add_model_source_options,
    add_output_options,
    model_source,
    nonneg_float,
    norm_arg,
    positive_int,
    seed_int,
)

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

HELP = COMMANDS["robustness"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``robustness`` subcommand on an ``argparse`` sub-parsers object; return its parser."""
    p = subparsers.add_parser(
        "robustness",
        help=HELP,
        description=(
            "Measure how far the test inputs of trained checkpoints, or of any classifier (--model-file, --model), "
            "are from the decision boundary: one minimum-norm attack per model and norm gives every input's "
            "adversarial distance; writes a "
            "summary (median distance, error at epsilon, rho_adv), the per-input margin report, a histogram "
            "and the resolved config; with --suite, also the robust accuracy under AutoAttack at every eps."
        ),
    )
    p.add_argument("checkpoints", nargs="*", metavar="CKPT",
                   help="model checkpoint(s) to measure (none with --model-file or --model)")
    p.add_argument("--norms", nargs="+", type=norm_arg, default=["l2", "linf"], metavar="NORM",
                   help="norms: l2, linf (or 2, inf) (default: l2 linf)")
    p.add_argument("--eps-l2", nargs="+", type=nonneg_float, default=None, metavar="EPS",
                   help=f"l2 budgets of the error-at-epsilon columns and of --suite (default: {list(DEFAULT_EPS['l2'])})")
    p.add_argument("--eps-linf", nargs="+", type=nonneg_float, default=None, metavar="EPS",
                   help=f"l_inf budgets of the error-at-epsilon columns and of --suite (default: {list(DEFAULT_EPS['linf'])})")
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
    p.add_argument("--suite", choices=SUITE_VERSIONS, default=None,
                   help="also measure the robust accuracy at every eps under this version of AutoAttack, the worst "
                        "case per input (standard: APGD-CE, APGD-T, FAB-T, Square; fast: a cheaper subset that "
                        "keeps Square; rand: for randomised models; default: none)")
    p.add_argument("--suite-seed", type=seed_int, default=0, metavar="SEED",
                   help="seed of the AutoAttack ensemble (default: 0)")
    add_output_options(p, out="runs/robustness", plot="margin_histogram.png", progress="a progress bar")
    add_model_source_options(p)
    p.set_defaults(func=run)
    return p


def _errors_cell(eps: Sequence[float], errors: Sequence[float]) -> str:
    return " ".join(f"{e:g}:{v:.3f}" for e, v in zip(eps, errors))


def run(args: argparse.Namespace) -> int:
    """Run ``deepmargin robustness`` with parsed arguments; return the exit status (0 on success)."""
    from ..experiments.robustness_eval import measure_checkpoints
    from ..reports.robustness import suite_table, write_robustness_run
    from ..reports.tables import format_table

    start = time.perf_counter()
    result = measure_checkpoints(
        args.checkpoints, norms=args.norms, eps_l2=args.eps_l2, eps_linf=args.eps_linf, attack=args.attack,
        steps=args.steps, n=args.n, batch_size=args.batch_size, certified=args.certify,
        lipschitz_iterations=args.lipschitz_iterations, dataset=args.dataset, data_root=args.data_root,
        device=args.device, progress=bool(args.progress or sys.stderr.isatty()), suite=args.suite,
        suite_seed=args.suite_seed, model_source=model_source(args),
    )
    written = write_robustness_run(result, args.out, plot=args.plot)

    table = [
        {"model": r["model"], "norm": r["norm"], "attack": r["attack"], "n": r["n"], "clean_acc": r["clean_accuracy"],
         "median_dist": r["median_distance"], "mean_lin": r["mean_linearized"], "mean_min_norm": r["mean_min_norm"],
         "failed": r["failed"], "err@eps": _errors_cell(r["eps"], r["error_at_eps"]), "rho_adv": r["rho_adv"],
         "cert_kesidis": r["median_certified_kesidis"], "cert_tsuzuku": r["median_certified_tsuzuku"]}
        for r in result.summary_rows
    ]
    print(format_table(table))
    if result.suite_summary:
        print("\n" + format_table(suite_table(result.suite_summary)))
    print("wrote " + ", ".join(str(p) for p in written))
    logger.info("deepmargin robustness finished in %.1f s", time.perf_counter() - start)
    return 0
