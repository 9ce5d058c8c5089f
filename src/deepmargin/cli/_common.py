"""Helpers shared by the subcommands: argument types, shared options, printing.

Checkpoint and test-data loading live in :mod:`deepmargin.experiments.checkpoints`; their names
stay importable from here. The options that give any other classifier (``--model-file``,
``--model``...) are :func:`add_model_source_options`, read back by :func:`model_source`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..experiments.checkpoints import load_checkpoints, load_test_split, model_names
from ..experiments.external import ModelSource

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "add_model_source_options",
    "add_output_options",
    "dataset_arg",
    "json_object",
    "load_checkpoints",
    "load_test_split",
    "model_names",
    "model_source",
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


def json_object(text: str) -> dict:
    """argparse type: a JSON object, e.g. ``'{"width": 2}'``, returned as a dict."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"must be a JSON object such as '{{\"width\": 2}}' ({err}). Got {text!r} instead.")
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object such as '{{\"width\": 2}}'. Got {text!r} instead.")
    return value


def add_model_source_options(parser: argparse.ArgumentParser) -> None:
    """Options that measure any classifier instead of checkpoints (read back with :func:`model_source`).

    ``--model-file`` (TorchScript or ``.pt2``) or ``--model MODULE:CALLABLE`` with ``--weights`` and
    ``--model-kwargs``; ``--input-shape``, ``--bounds``, ``--mean``/``--std`` and
    ``--output-index``/``--output-key``. The test data then comes from ``--data FILE.npz``.
    """
    g = parser.add_argument_group(
        "any classifier", "measure a model that is not a deepmargin checkpoint, on the x_test/y_test of --data FILE.npz")
    g.add_argument("--model-file", default=None, metavar="FILE",
                   help="a TorchScript file (torch.jit.save) or an exported program ending in .pt2 (torch.export.save)")
    g.add_argument("--model", default=None, metavar="MODULE:CALLABLE",
                   help="a callable returning the nn.Module, imported from sys.path or the current directory")
    g.add_argument("--weights", default=None, metavar="FILE",
                   help="state dict of --model (torch.save(model.state_dict(), FILE); read with weights_only=True)")
    g.add_argument("--model-kwargs", type=json_object, default=None, metavar="JSON",
                   help="keyword arguments of --model as a JSON object, e.g. '{\"width\": 2}'")
    g.add_argument("--input-shape", nargs="+", type=positive_int, default=None, metavar="N",
                   help="one input's shape, e.g. 3 32 32 (default: the data's; flat data is reshaped to it)")
    g.add_argument("--bounds", nargs=2, type=float, default=None, metavar=("LOW", "HIGH"),
                   help="range of valid inputs (default: the file's 'bounds', else 0 1)")
    g.add_argument("--mean", nargs="+", type=float, default=None, metavar="M",
                   help="per-channel mean the model subtracts (normalisation inside the model; attacks in raw inputs)")
    g.add_argument("--std", nargs="+", type=positive_float, default=None, metavar="S",
                   help="per-channel standard deviation the model divides by")
    g.add_argument("--output-index", type=int, default=None, metavar="I",
                   help="position of the logits in a tuple or list output")
    g.add_argument("--output-key", default=None, metavar="KEY", help="key of the logits in a dict output")


def model_source(args: argparse.Namespace) -> ModelSource | None:
    """The :class:`~deepmargin.experiments.external.ModelSource` of :func:`add_model_source_options`' flags; ``None`` without them.

    ``--data-root`` (which locates built-in datasets) is ignored with such a source: a warning says so.
    """
    names = ("model_file", "model", "weights", "model_kwargs", "input_shape", "bounds", "mean", "std",
             "output_index", "output_key")
    source = ModelSource.from_options(**{name: getattr(args, name) for name in names})
    if source is not None and getattr(args, "data_root", None) is not None:
        logging.getLogger("deepmargin").warning(
            "--data-root %s is ignored with %s: the test data comes from --data FILE.npz", args.data_root,
            "--model-file" if source.model_file is not None else "--model")
    return source


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


def download_option(group: Any) -> None:
    """``--download``: fetch a downloadable dataset's files before the command runs."""
    group.add_argument("--download", action="store_true",
                       help="fetch the MNIST/Fashion-MNIST/CIFAR-10 files into --data-root (default: $DEEPMARGIN_DATA or "
                       "~/.cache/deepmargin) from the known mirrors, each checked against its published checksum; nothing "
                       "is downloaded without it")


def fetch_dataset(dataset: str, data_root: str | None) -> None:
    """``--download``: fetch ``dataset``'s files into ``data_root`` (verified, atomic); a warning for a
    dataset that has nothing to download."""
    from ..data.download import DOWNLOAD_SOURCES, download_dataset

    if dataset in DOWNLOAD_SOURCES:
        download_dataset(dataset, data_root)
    else:
        logging.getLogger("deepmargin").warning(
            "--download: nothing to download for dataset %r (only %s are fetched)", dataset, ", ".join(DOWNLOAD_SOURCES))
