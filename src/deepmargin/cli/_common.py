"""Helpers shared by the subcommands: argument types, checkpoint and test-data loading, printing."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn


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


def model_names(paths: Sequence[str]) -> list[str]:
    """Row names of checkpoints: file stems, or parent/stem where stems repeat, then #2, #3..."""
    stems = [Path(p).stem for p in paths]
    names = [f"{Path(p).parent.name}/{Path(p).stem}" if stems.count(Path(p).stem) > 1 else Path(p).stem for p in paths]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def load_checkpoints(paths: Sequence[str], device: str | torch.device) -> tuple[dict[str, nn.Module], dict[str, dict]]:
    """Every checkpoint, read before any work starts: ``({name: model in eval mode}, {name: metadata})``."""
    from ..training.checkpoint import load_model

    models: dict[str, nn.Module] = {}
    metas: dict[str, dict] = {}
    for name, path in zip(model_names(paths), paths):
        model, metas[name] = load_model(path, map_location="cpu")
        models[name] = model.to(device).eval()
    return models, metas


def load_test_split(
    metas: Mapping[str, Mapping[str, Any]],
    *,
    command: str,
    data_root: str | None = None,
    n: int | None = None,
    device: str | torch.device = "cpu",
    dataset: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float], str, str | None]:
    """The test split shared by the checkpoints.

    The dataset is the one every checkpoint records in ``config['dataset']`` (they must agree);
    its other settings (``data_root``, ``seed``, toy ``n_samples`` and ``data_noise``) come from
    the first checkpoint. Each checkpoint's model must take the dataset's input shape and
    number of classes. A dataset that is a ``.npz`` file is read from the path the checkpoint
    records, exactly as it was given to ``train`` (a relative path is relative to the current
    directory), with the file's bounds (or ``(0, 1)`` / unbounded as inferred from its inputs).

    Args:
        metas: ``{model name: checkpoint metadata}`` from ``load_model``.
        command: the subcommand, for error messages.
        data_root: dataset folder (default: the first checkpoint's ``data_root``).
        dataset: a dataset name or .npz path to use instead of the checkpoints' own (``--data``).
        n: keep the first ``n`` test inputs (default: all).
        device: where ``x`` and ``y`` go.

    Returns:
        ``(x, y, bounds, dataset, root)``; ``bounds`` is ``(-inf, inf)`` for unbounded (toy) inputs.
    """
    from ..data import load_dataset

    datasets = {name: (meta.get("config") or {}).get("dataset") for name, meta in metas.items()}
    if dataset is not None:  # --data: the checkpoints' recorded dataset is replaced
        datasets = {name: dataset for name in metas}
    if any(d is None for d in datasets.values()) or len(set(datasets.values())) != 1:
        raise ValueError(
            f"The checkpoints of deepmargin {command} must all record the same dataset in config['dataset']. "
            f"Got {datasets} instead."
        )
    dataset = next(iter(datasets.values()))
    config0 = next(iter(metas.values())).get("config") or {}
    root = data_root if data_root is not None else config0.get("data_root")
    kwargs = {}
    if config0.get("n_samples") is not None:
        kwargs["n_samples"] = config0["n_samples"]
    if config0.get("data_noise") is not None:
        kwargs["noise"] = config0["data_noise"]
    bundle = load_dataset(dataset, root=root, seed=int(config0.get("seed", 0) or 0), **kwargs)
    for name, meta in metas.items():
        kw = meta.get("model_kwargs") or {}
        shape, classes = list(kw.get("input_shape") or []), kw.get("num_classes")
        if shape != list(bundle.input_shape) or classes != bundle.num_classes:
            raise ValueError(
                f"The model of checkpoint {name!r} (input shape {shape}, {classes} classes) does not fit the dataset "
                f"{dataset!r} (input shape {list(bundle.input_shape)}, {bundle.num_classes} classes)."
            )
    x, y = bundle.test.x, bundle.test.y
    if n is not None:
        x, y = x[:n], y[:n]
    bounds = tuple(float(b) for b in bundle.bounds) if bundle.bounds is not None else (-math.inf, math.inf)
    return x.to(device), y.to(device), bounds, dataset, root


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
    from ..capture import layer_table
    from ..reports.tables import format_table

    was_training = model.training
    model.eval()
    try:
        rows = layer_table(model, torch.zeros(2, *input_shape))
    finally:
        model.train(was_training)
    hidden = set(getattr(model, "hidden_layers", ()))
    table = [
        {"name": r["name"], "type": r["type"], "output shape": "x".join(map(str, r["shape"])) if isinstance(r["shape"], tuple) else r["shape"],
         "hidden": "yes" if r["name"] in hidden else ""}
        for r in rows
    ]
    print(format_table(table, ["name", "type", "output shape", "hidden"]))
