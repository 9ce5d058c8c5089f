"""Helpers shared by the subcommands: argument types, shared options, printing.

Checkpoint and test-data loading live in :mod:`deepmargin.experiments.checkpoints`; their names
stay importable from here.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..experiments.checkpoints import load_checkpoints, load_test_split, model_names

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "add_output_options",
    "dataset_arg",
    "load_checkpoints",
    "load_test_split",
    "model_names",
    "nonneg_float",
    "norm_arg",
    "positive_float",
    "positive_int",
    "print_layer_table",
    "seed_int",
    "unit_float",
]


def _number_type(parse: Callable[[str], Any], ok: Callable[[Any], bool], expected: str, name: str, doc: str):
    """An argparse type: ``parse(text)``, accepted when ``ok(value)``; else 'must be <expected>. Got ...'."""

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {expected}. Got {text!r} instead.")
        return value

    convert.__name__ = convert.__qualname__ = name
    convert.__doc__ = f"argparse type: {doc}."
    return convert


positive_int = _number_type(int, lambda v: v >= 1, "an int >= 1", "positive_int", "an int >= 1")
seed_int = _number_type(int, lambda v: v >= 0, "an int >= 0", "seed_int", "an int >= 0")
positive_float = _number_type(float, lambda v: v > 0 and math.isfinite(v), "a float > 0", "positive_float",
                              "a finite float > 0")
unit_float = _number_type(float, lambda v: 0.0 <= v < 1.0, "a float in [0, 1)", "unit_float", "a float in [0, 1)")
nonneg_float = _number_type(float, lambda v: math.isfinite(v) and v >= 0, "a finite float >= 0", "nonneg_float",
                            "a finite float >= 0")


def dataset_arg(text: str) -> str:
    """argparse type: a built-in dataset name (any case; returned in lower case) or a path ending in ``.npz``.

    A path is returned exactly as given (relative paths stay relative to the current directory);
    whether the file exists and is well formed is checked when the dataset is loaded.

    Example:
        >>> dataset_arg("Digits"), dataset_arg("data/mine.npz")
        ('digits', 'data/mine.npz')
    """
    from ..data import DATASETS, is_npz_path

    if is_npz_path(text):
        return text
    key = text.strip().lower()
    if key not in DATASETS:
        raise argparse.ArgumentTypeError(
            f"invalid choice: {text!r}; must be one of {list(DATASETS)} or a path to a .npz file. "
            f"Got {text!r} instead."
        )
    return key


_NORMS = {"inf": "linf", "linf": "linf", "l_inf": "linf", "2": "l2", "l2": "l2"}


def norm_arg(text: str) -> str:
    """argparse type: an attack norm, returned as ``'linf'`` or ``'l2'``."""
    key = text.strip().lower()
    if key not in _NORMS:
        raise argparse.ArgumentTypeError(f"must be one of linf, l2 (or inf, 2). Got {text!r} instead.")
    return _NORMS[key]


def add_output_options(parser: argparse.ArgumentParser, *, out: str, plot: str, progress: str) -> None:
    """Options shared by the commands that evaluate checkpoints: data folder, device, output, progress, plot."""
    parser.add_argument("--data", "--dataset", dest="dataset", type=dataset_arg, default=None, metavar="NAME|FILE.npz",
                        help="dataset whose test split is used (default: the one the checkpoints were trained on)")
    parser.add_argument("--data-root", default=None, help="dataset folder (default: the checkpoint's data_root)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--out", default=out, help=f"output folder (default: {out})")
    parser.add_argument("--progress", action="store_true", help=f"show {progress} even when not interactive")
    parser.add_argument("--no-plot", dest="plot", action="store_false", help=f"do not draw {plot}")


def print_layer_table(model: nn.Module, input_shape: Sequence[int]) -> None:
    """Print the names usable as margin layers, with module type and output shape."""
    import torch

    from ..capture import eval_mode, layer_table
    from ..reports.tables import format_table

    with eval_mode(model):
        rows = layer_table(model, torch.zeros(2, *input_shape))
    hidden = set(getattr(model, "hidden_layers", ()))
    table = [
        {"name": r["name"], "type": r["type"], "output shape": "x".join(map(str, r["shape"])) if isinstance(r["shape"], tuple) else r["shape"],
         "hidden": "yes" if r["name"] in hidden else ""}
        for r in rows
    ]
    print(format_table(table, ["name", "type", "output shape", "hidden"]))
