"""``deepmargin attack``: accuracy of trained models under attack, for a list of epsilons.

Example::

    deepmargin attack runs/ce/best.pt runs/margin/best.pt --attacks fgsm ifgsm pgd \\
        --norms linf --eps 0 0.05 0.1 0.2 0.3 --source runs/ce/best.pt --n 1000 --out runs/attack

writes ``rows.csv`` and ``rows.jsonl`` (one row per model, attack, norm, eps and seed; white-box
rows, plus transfer rows crafted on ``--source``), ``config.json`` (the resolved arguments) and
``accuracy_vs_eps.png`` (drawn from ``rows.csv``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write_text, save_figure
from ..training.optim import seed_everything
from ._common import (
    add_output_options,
    load_checkpoints,
    load_test_split,
    nonneg_float,
    norm_arg,
    positive_float,
    positive_int,
    seed_int,
)

logger = logging.getLogger(__name__)

__all__ = ["add_parser", "run", "ATTACKS"]

ATTACKS = ("fgsm", "ifgsm", "pgd", "deepfool", "fmn", "noise")
_RANDOMISED = ("pgd", "noise")
DEFAULT_EPS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
DEFAULT_SNR = (40.0, 33.0, 25.0, 20.0, 15.0, 10.0)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``attack`` sub-command on an ``argparse`` sub-parsers object; return its parser."""
    p = subparsers.add_parser(
        "attack",
        help="accuracy under adversarial attacks and noise vs epsilon (white-box and transfer)",
        description=(
            "Evaluate trained checkpoints under attacks for a list of epsilons. Writes tidy rows (CSV and "
            "JSONL, one per model, attack, norm, eps and seed), the resolved config and a plot."
        ),
    )
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="model checkpoint(s) to evaluate")
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
                   help="steps of ifgsm/pgd (default: ifgsm Kurakin's rule, pgd 40)")
    p.add_argument("--min-norm-steps", type=positive_int, default=None,
                   help="steps of deepfool/fmn (default: 50 and 100)")
    p.add_argument("--step-size", type=positive_float, default=None,
                   help="absolute step size of ifgsm/pgd (default: ifgsm Kurakin's, pgd 2.5*eps/steps)")
    p.add_argument("--no-random-start", dest="random_start", action="store_false",
                   help="start pgd from the clean input (default: random start)")
    p.add_argument("--loss", choices=("ce", "margin"), default="ce", help="loss ascended by fgsm/ifgsm/pgd")
    p.add_argument("--overshoot", type=nonneg_float, default=0.02, help="deepfool overshoot (default: 0.02)")
    p.add_argument("--n", type=positive_int, default=None, help="evaluate the first N test inputs (default: all)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="inputs per attack call (default: 256)")
    p.add_argument("--seed", nargs="+", type=seed_int, default=[0], metavar="SEED",
                   help="seed(s); randomised attacks (pgd, noise) run once per seed (default: 0)")
    add_output_options(p, out="runs/attack", plot="accuracy_vs_eps.png", progress="progress bars")
    p.set_defaults(func=run)
    return p


def _build_attack(name: str, norm: str, args: argparse.Namespace, bounds: tuple[float, float], seed: int):
    from .. import attacks

    p = math.inf if norm == "linf" else 2.0
    if name == "fgsm":
        return attacks.FGSM(eps=0.0, norm=p, bounds=bounds, loss=args.loss)
    if name == "ifgsm":
        steps = args.steps
        if steps is None and args.step_size is None and not math.isfinite(bounds[1] - bounds[0]):
            steps = 10
        return attacks.IFGSM(eps=0.0, norm=p, steps=steps, step_size=args.step_size, bounds=bounds, loss=args.loss)
    if name == "pgd":
        return attacks.PGD(
            eps=0.0, norm=p, steps=args.steps or 40, step_size=args.step_size,
            random_start=args.random_start, bounds=bounds, loss=args.loss, seed=seed,
        )
    if name == "deepfool":
        return attacks.DeepFool(norm=p, steps=args.min_norm_steps or 50, overshoot=args.overshoot, bounds=bounds)
    if name == "fmn":
        return attacks.FMN(norm=p, steps=args.min_norm_steps or 100, bounds=bounds)
    if args.noise_mode == "std":
        return attacks.GaussianNoise(std=0.0, bounds=bounds, seed=seed)
    return attacks.GaussianNoise(snr=math.inf, bounds=bounds, seed=seed)


def run(args: argparse.Namespace) -> int:
    """Run ``deepmargin attack`` with parsed arguments; return the exit status (0 on success)."""
    from ..attacks import (
        accuracy_vs_epsilon,
        check_model,
        warn_if_transfer_beats_whitebox,
    )
    from ..reports.robustness import plot_accuracy_vs_epsilon, write_rows

    start = time.perf_counter()
    progress = bool(args.progress or sys.stderr.isatty())
    seeds = list(dict.fromkeys(args.seed))
    seed_everything(seeds[0])

    # the source is named with the models (parent/stem where stems repeat, e.g. ce/best vs margin/best)
    loaded, all_metas = load_checkpoints([*args.checkpoints, *([args.source] if args.source else [])], args.device)
    names = list(loaded)[: len(args.checkpoints)]
    models = {name: loaded[name] for name in names}
    source_name = list(loaded)[-1] if args.source is not None else None
    source = loaded[source_name] if source_name is not None else None
    x, y, bounds, dataset, root = load_test_split(
        all_metas, command="attack", data_root=args.data_root, n=args.n, device=args.device, dataset=args.dataset
    )
    logger.info("dataset %s: %d test inputs, bounds %s", dataset, len(y), bounds)

    for name, model in [*models.items(), *([(source_name, source)] if source is not None else [])]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_model(model, x[: args.batch_size], y[: args.batch_size])
        for w in caught:
            warnings.warn_explicit(f"[{name}] {w.message}", w.category, w.filename, w.lineno)

    eps_by_norm = {"linf": list(args.eps), "l2": list(args.eps_l2 if args.eps_l2 is not None else args.eps)}
    if args.noise_levels is not None:
        noise_levels = list(args.noise_levels)
    else:
        noise_levels = list(args.eps) if args.noise_mode == "std" else list(DEFAULT_SNR)

    rows: list[dict[str, Any]] = []
    jobs = []
    for attack_name in dict.fromkeys(args.attacks):
        norms = [None] if attack_name == "noise" else list(dict.fromkeys(args.norms))
        run_seeds = seeds if attack_name in _RANDOMISED and (attack_name != "pgd" or args.random_start) else seeds[:1]
        for norm in norms:
            for seed in run_seeds:
                jobs.append((attack_name, norm, seed))
    for attack_name, norm, seed in jobs:
        attack = _build_attack(attack_name, norm or "linf", args, bounds, seed)
        epsilons = noise_levels if attack_name == "noise" else eps_by_norm[norm]
        seed_everything(seed)
        rows += accuracy_vs_epsilon(
            models, attack, x, y, epsilons, attack_name=attack_name,
            batch_size=args.batch_size, seed=seed, progress=progress,
        )
        if source is not None and attack_name != "noise":
            rows += accuracy_vs_epsilon(
                models, attack, x, y, epsilons, source=source, source_name=source_name,
                attack_name=attack_name, batch_size=args.batch_size, seed=seed, progress=progress,
            )
    warn_if_transfer_beats_whitebox(rows)

    out = Path(args.out)
    csv_path, jsonl_path = write_rows(rows, out)
    config = {
        "command": "attack",
        "checkpoints": dict(zip(names, [str(p) for p in args.checkpoints])),
        "source": args.source,
        "dataset": dataset,
        "data_root": root,
        "n": len(y),
        "bounds": list(bounds),
        "attacks": list(dict.fromkeys(args.attacks)),
        "norms": list(dict.fromkeys(args.norms)),
        "eps": eps_by_norm,
        "noise_mode": args.noise_mode,
        "noise_levels": noise_levels,
        "steps": args.steps,
        "min_norm_steps": args.min_norm_steps,
        "step_size": args.step_size,
        "random_start": args.random_start,
        "loss": args.loss,
        "overshoot": args.overshoot,
        "batch_size": args.batch_size,
        "seeds": seeds,
        "device": args.device,
        "attack_objects": sorted({repr(_build_attack(a, n or "linf", args, bounds, s)) for a, n, s in jobs}),
        "torch_version": torch.__version__,
    }
    atomic_write_text(out / "config.json", json.dumps(config, indent=2, default=str) + "\n")
    if args.plot:
        fig = plot_accuracy_vs_epsilon(csv_path, title=f"{dataset}: accuracy under attack (n={len(y)})")
        save_figure(fig, out / "accuracy_vs_eps.png", dpi=120)

    table = [
        (r["model"], r["attack"], r["norm"], r["setting"] if r["setting"] != "transfer" else f"from {r['source']}",
         f"{r['eps']:g}", "" if r["seed"] is None else str(r["seed"]), f"{r['accuracy']:.4f}")
        for r in rows
    ]
    header = ("model", "attack", "norm", "setting", "eps", "seed", "accuracy")
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header)]
    for line in [header, *table]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
    print(f"wrote {csv_path}, {jsonl_path}, {out / 'config.json'}" + (f", {out / 'accuracy_vs_eps.png'}" if args.plot else ""))
    logger.info("deepmargin attack finished in %.1f s", time.perf_counter() - start)
    return 0
