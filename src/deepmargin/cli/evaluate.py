"""``deepmargin evaluate``: test accuracy and linearised margins of a checkpoint."""

from __future__ import annotations

from .main import COMMANDS

import argparse
import math
from pathlib import Path

from ..experiments.checkpoint_eval import evaluate_checkpoint
from ._common import positive_int

__all__ = ["add_parser", "run", "evaluate_checkpoint", "norm_label"]

HELP = COMMANDS["evaluate"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``evaluate`` subcommand."""
    from ._common import dataset_arg

    p = subparsers.add_parser("evaluate", help=HELP, description=HELP + " (Elsayed et al. 2018, eq. 7).")
    p.add_argument("checkpoint", type=Path, help="checkpoint file (a run's best.pt or last.pt)")
    p.add_argument("--data", "--dataset", dest="dataset", type=dataset_arg, metavar="NAME|FILE.npz",
                   help="dataset (default: the one the checkpoint was trained on)")
    p.add_argument("--data-root", help="folder with the dataset files (default: the checkpoint's)")
    p.add_argument("--split", choices=("test", "val", "train"), default="test",
                   help="which split to evaluate (default: test). 'train' is measured against the training labels "
                        "the model was trained on, i.e. with the run's label noise; add --clean-labels for the "
                        "original labels. Val and test labels are always clean")
    p.add_argument("--clean-labels", action="store_true",
                   help="with --split train: accuracy and margins against the training labels before label noise")
    p.add_argument("--layers", nargs="+", metavar="NAME",
                   help="layers for the margins (default: the checkpoint's margin layers, else input + hidden layers)")
    p.add_argument("--norm", type=_norm_option, default=2.0, help="p of the l_p distance: 1, 2, inf or a real >= 1 (default: 2)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="samples per forward pass (default: 256)")
    p.add_argument("--max-samples", type=positive_int, help="evaluate only the first N samples of the split")
    p.add_argument("--json", type=Path, dest="json_out", help="also write the results to this JSON file")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return p


def _norm_option(text: str) -> float:
    """argparse type of --norm: a float p >= 1 (``math.inf`` for 'inf')."""
    from ..training.config import parse_norm

    try:
        return parse_norm(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 1, 2, inf or a real number p >= 1. Got {text!r} instead.") from None


def norm_label(p: float) -> str:
    """``'l2'``, ``'linf'``, ``'l1.5'``: the short name of the l_p norm."""
    if math.isinf(p):
        return "linf"
    return f"l{int(p)}" if float(p).is_integer() else f"l{p:g}"


def run(args: argparse.Namespace) -> int:
    """Print the accuracy and a margin table; optionally write JSON."""
    from ..reports.tables import format_table
    from ..training.records import write_json

    result = evaluate_checkpoint(
        args.checkpoint, dataset=args.dataset, data_root=args.data_root, split=args.split, layers=args.layers,
        norm=args.norm, batch_size=args.batch_size, max_samples=args.max_samples, device=args.device,
        clean_labels=args.clean_labels,
    )
    print(f"checkpoint  {result['checkpoint']} ({result['model_name']}, loss {result['loss']}, epoch {result['epoch']})")
    note = ""
    if result["labels"] == "noisy":
        note = (f" (against the noisy training labels, {result['label_noise']:.0%} label noise; "
                "--clean-labels for the original ones)")
    elif result["split"] == "train" and args.clean_labels:
        note = " (against the clean training labels, before label noise)"
    elif result["split"] == "train":
        note = " (against the training labels; the run had no label noise)"
    print(f"{result['split']} accuracy  {result['accuracy']:.4f} on {result['n']} samples of {result['dataset']}{note}")
    norm = math.inf if result["norm"] == "inf" else float(result["norm"])
    print(f"linearised {norm_label(norm)} margins (negative = misclassified):")
    cols = ["layer", "mean", "median", "q05", "q25", "q75", "q95", "frac_negative"]
    rows = [{"layer": layer, **{c: s.get(c) for c in cols[1:]}} for layer, s in result["layers"].items()]
    print(format_table(rows, cols))
    if args.json_out is not None:
        write_json(args.json_out, result)
        print(f"wrote {args.json_out}")
    return 0
