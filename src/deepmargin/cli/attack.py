"""``deepmargin attack``: accuracy of trained models under attack, for a list of epsilons.

Example::

    deepmargin attack runs/ce/best.pt runs/margin/best.pt --attacks fgsm ifgsm pgd \\
        --norms linf --eps 0 0.05 0.1 0.2 0.3 --source runs/ce/best.pt --n 1000 --out runs/attack

writes ``rows.csv`` and ``rows.jsonl`` (one row per model, attack, norm, eps and seed; white-box
rows, plus transfer rows crafted on ``--source``; ``flags``: the reliability checks of AutoAttack that
fired), ``config.json`` (the resolved arguments) and ``accuracy_vs_eps.png`` (drawn from ``rows.csv``). Any other classifier is measured the same way::

    deepmargin attack --model-file net.pt2 --data test.npz --mean 0.5 --std 0.25 --output-index 0 \\
        --attacks autoattack --eps 0 0.03 --out runs/mine
"""

from __future__ import annotations

from .main import COMMANDS

import argparse
import logging
import sys
import time
from typing import Any

from ..attacks.factory import ATTACK_NAMES as ATTACKS
from ..attacks.factory import AUTOATTACK_VERSIONS
from ..experiments.attack_eval import DEFAULT_EPS, DEFAULT_SNR
from ._common import (
    add_model_source_options,
    add_output_options,
    model_source,
    nonneg_float,
    norm_arg,
    positive_float,
    positive_int,
    seed_int,
)

logger = logging.getLogger(__name__)

__all__ = ["add_parser", "run", "ATTACKS"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``attack`` sub-command on an ``argparse`` sub-parsers object; return its parser."""
    p = subparsers.add_parser(
        "attack",
        help=COMMANDS["attack"],
        description=(
            "Evaluate trained checkpoints, or any classifier (--model-file, --model), under attacks for a list of "
            "epsilons. Writes tidy rows (CSV and JSONL, one per model, attack, norm, eps and seed), the resolved "
            "config and a plot."
        ),
    )
    p.add_argument("checkpoints", nargs="*", metavar="CKPT",
                   help="model checkpoint(s) to evaluate (none with --model-file or --model)")
    p.add_argument("--source", metavar="CKPT", default=None,
                   help="craft adversarials on this checkpoint and evaluate every CKPT on them (black-box transfer)")
    p.add_argument("--attacks", nargs="+", choices=ATTACKS, default=["ifgsm"], metavar="ATTACK",
                   help=f"attacks among {', '.join(ATTACKS)} (default: ifgsm)")
    p.add_argument("--norms", nargs="+", type=norm_arg, default=["linf"], metavar="NORM",
                   help="norms for the gradient and minimum-norm attacks: linf, l2 (default: linf)")
    p.add_argument("--eps", nargs="+", type=nonneg_float, default=list(DEFAULT_EPS), metavar="EPS",
                   help="l_inf radii, in input units (default: %(default)s)")
    p.add_argument("--eps-l2", nargs="+", type=nonneg_float, default=None, metavar="EPS",
                   help="l_2 radii (default: the --eps list)")
    p.add_argument("--noise-mode", choices=("std", "snr"), default="std",
                   help="noise levels are standard deviations or SNRs in dB (default: std)")
    p.add_argument("--noise-levels", nargs="+", type=float, default=None, metavar="LEVEL",
                   help=f"noise levels (default: the --eps list for std, {list(DEFAULT_SNR)} for snr)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="steps of ifgsm/pgd/apgd-ce/apgd-dlr/apgd-t/fab (default: ifgsm Kurakin's rule, pgd 40, apgd-* "
                   "and fab 100); square and autoattack keep their own budgets")
    p.add_argument("--min-norm-steps", type=positive_int, default=None,
                   help="steps of deepfool/fmn (default: 50 and 100)")
    p.add_argument("--step-size", type=positive_float, default=None,
                   help="absolute step size of ifgsm/pgd (default: ifgsm Kurakin's, pgd 2.5*eps/steps); apgd-* and "
                   "autoattack choose their own")
    p.add_argument("--no-random-start", dest="random_start", action="store_false",
                   help="start pgd from the clean input (default: random start)")
    p.add_argument("--loss", choices=("ce", "margin"), default="ce",
                   help="loss ascended by fgsm/ifgsm/pgd (default: ce); apgd-*, fab, square and autoattack use their own")
    p.add_argument("--autoattack-version", choices=AUTOATTACK_VERSIONS, default="standard",
                   help="the ensemble of --attacks autoattack: standard (APGD-CE, APGD-T, FAB-T, Square), fast "
                   "(about a tenth of the cost) or rand (for randomised models) (default: standard)")
    p.add_argument("--overshoot", type=nonneg_float, default=0.02, help="deepfool overshoot (default: 0.02)")
    p.add_argument("--n", type=positive_int, default=None, help="evaluate the first N test inputs (default: all)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="inputs per attack call (default: 256)")
    p.add_argument("--seed", nargs="+", type=seed_int, default=[0], metavar="SEED",
                   help="seed(s); randomised attacks (pgd, noise, apgd-*, fab, square, autoattack) run once per seed "
                   "(default: 0)")
    add_output_options(p, out="runs/attack", plot="accuracy_vs_eps.png", progress="progress bars")
    add_model_source_options(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``deepmargin attack`` with parsed arguments; return the exit status (0 on success)."""
    from ..experiments.attack_eval import attack_checkpoints
    from ..reports.robustness import write_attack_run
    from ..training.optim import seed_everything

    start = time.perf_counter()
    seed_everything(args.seed[0])
    result = attack_checkpoints(
        args.checkpoints, source=args.source, attacks=args.attacks, norms=args.norms, eps=args.eps,
        eps_l2=args.eps_l2, noise_mode=args.noise_mode, noise_levels=args.noise_levels, steps=args.steps,
        min_norm_steps=args.min_norm_steps, step_size=args.step_size, random_start=args.random_start,
        loss=args.loss, overshoot=args.overshoot, n=args.n, batch_size=args.batch_size, seeds=args.seed,
        dataset=args.dataset, data_root=args.data_root, device=args.device,
        progress=bool(args.progress or sys.stderr.isatty()), model_source=model_source(args),
        autoattack_version=args.autoattack_version,
    )
    written = write_attack_run(result, args.out, plot=args.plot)

    table = [
        (r["model"], r["attack"], r["norm"], r["setting"] if r["setting"] != "transfer" else f"from {r['source']}",
         f"{r['eps']:g}", "" if r["seed"] is None else str(r["seed"]), f"{r['accuracy']:.4f}")
        for r in result.rows
    ]
    header = ("model", "attack", "norm", "setting", "eps", "seed", "accuracy")
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header)]
    for line in [header, *table]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
    print("wrote " + ", ".join(str(p) for p in written))
    logger.info("deepmargin attack finished in %.1f s", time.perf_counter() - start)
    return 0
