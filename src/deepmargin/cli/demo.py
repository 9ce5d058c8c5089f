"""``deepmargin demo``: cross-entropy vs large margin on digits (clean / 40% noise) and a 2-D picture."""

from __future__ import annotations

from .main import COMMANDS

import argparse
from pathlib import Path

from ._common import positive_int, seed_int

HELP = COMMANDS["demo"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``demo`` subcommand."""
    from ..experiments.demo import QUICK_SETTINGS, DemoSettings

    full, quick = DemoSettings(), QUICK_SETTINGS

    def seeds(settings: DemoSettings) -> str:
        return " ".join(str(s) for s in settings.seeds)

    p = subparsers.add_parser("demo", help=HELP, description=HELP + ". About a minute on 2 CPU cores.")
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder (default: demo-output)")
    p.add_argument("--quick", action="store_true", help="a tiny setting that runs in seconds (a smoke test)")
    p.add_argument("--seeds", type=seed_int, nargs="+", metavar="SEED",
                   help=f"seeds (default: {seeds(full)}; with --quick: {seeds(quick)})")
    p.add_argument("--epochs", type=positive_int,
                   help=f"epochs per digits run (default: {full.epochs}; with --quick: {quick.epochs})")
    p.add_argument("--overwrite", action="store_true", help="retrain every run instead of reusing finished ones in --out")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default: 1)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False,
                   help="per-epoch progress bars (default: off)")
    return p


def run(args: argparse.Namespace) -> int:
    """Run the demo and print the accuracy table and the files written."""
    import dataclasses

    from ..experiments.demo import QUICK_SETTINGS, DemoSettings, run_demo

    settings = QUICK_SETTINGS if args.quick else DemoSettings()
    changes = {}
    if args.seeds:
        changes["seeds"] = tuple(args.seeds)
    if args.epochs:
        changes["epochs"] = args.epochs
    if changes:
        settings = dataclasses.replace(settings, **changes)
    result = run_demo(args.out, settings=settings, overwrite=args.overwrite, progress=args.progress,
                      num_threads=args.threads)
    print(result.table)
    print()
    for key in ("results", "results_csv", "config", "boundary"):
        print(f"wrote {result.files[key]}")
    print(f"finished in {result.seconds:.0f} s")
    return 0
