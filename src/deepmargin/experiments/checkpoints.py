"""Trained checkpoints and the data they are evaluated on.

The commands that measure trained models (``deepmargin attack``, ``detect``, ``robustness``,
``evaluate``) read their checkpoints here: every file is loaded before any work starts
(:func:`load_checkpoints`), the dataset is rebuilt from the checkpoint's saved config
(:func:`~deepmargin.data.dataset_from_config`), and each model must fit it (:func:`check_fits`).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import DataBundle, dataset_from_config

logger = logging.getLogger(__name__)

__all__ = [
    "check_fits",
    "check_models",
    "input_bounds",
    "load_checkpoints",
    "load_test_split",
    "load_training_bundle",
    "model_names",
]


def model_names(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Row names of checkpoints: file stems, or parent/stem where stems repeat, then #2, #3...

    Example:
        >>> model_names(["runs/ce/best.pt", "runs/margin/best.pt", "runs/x/last.pt"])
        ['ce/best', 'margin/best', 'last']
    """
    stems = [Path(p).stem for p in paths]
    names = [f"{Path(p).parent.name}/{Path(p).stem}" if stems.count(Path(p).stem) > 1 else Path(p).stem for p in paths]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def load_checkpoints(
    paths: Sequence[str | os.PathLike[str]], device: str | torch.device
) -> tuple[dict[str, nn.Module], dict[str, dict]]:
    """Every checkpoint, read before any work starts: ``({name: model in eval mode}, {name: metadata})``.

    Names come from :func:`model_names`; each model is loaded on the CPU, then moved to ``device``.
    """
    from ..training.checkpoint import load_model

    models: dict[str, nn.Module] = {}
    metas: dict[str, dict] = {}
    for name, path in zip(model_names(paths), paths):
        model, metas[name] = load_model(path, map_location="cpu")
        models[name] = model.to(device).eval()
    return models, metas


def input_bounds(bundle: DataBundle) -> tuple[float, float]:
    """The input range of a dataset as floats; ``(-inf, inf)`` for unbounded (toy) inputs."""
    return tuple(float(b) for b in bundle.bounds) if bundle.bounds is not None else (-math.inf, math.inf)


def check_fits(name: str, meta: Mapping[str, Any], bundle: DataBundle, *, dataset: str | None = None) -> None:
    """Raise ``ValueError`` unless checkpoint ``name``'s model takes the dataset's input shape and classes.

    ``dataset`` names the dataset in the message (default: ``bundle.name``).
    """
    kw = meta.get("model_kwargs") or {}
    shape, classes = list(kw.get("input_shape") or []), kw.get("num_classes")
    if shape != list(bundle.input_shape) or classes != bundle.num_classes:
        raise ValueError(
            f"The model of checkpoint {name!r} (input shape {shape}, {classes} classes) does not fit the dataset "
            f"{dataset if dataset is not None else bundle.name!r} (input shape {list(bundle.input_shape)}, {bundle.num_classes} classes)."
        )


def check_models(models: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor) -> None:
    """AutoAttack-style reliability checks (:func:`~deepmargin.attacks.check_model`) on one batch.

    Each warning is re-issued tagged with the model's name, e.g. ``[ce/best] ...``.
    """
    from ..attacks import check_model

    for name, model in models.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_model(model, x, y)
        for w in caught:
            warnings.warn_explicit(f"[{name}] {w.message}", w.category, w.filename, w.lineno)


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
    the first checkpoint (:func:`~deepmargin.data.dataset_from_config`). Each checkpoint's model
    must take the dataset's input shape and number of classes. A dataset that is a ``.npz`` file
    is read from the path the checkpoint records, exactly as it was given to ``train`` (a
    relative path is relative to the current directory), with the file's bounds (or ``(0, 1)`` /
    unbounded as inferred from its inputs).

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
    bundle = dataset_from_config(config0, dataset=dataset, root=root)
    for name, meta in metas.items():
        check_fits(name, meta, bundle, dataset=dataset)
    x, y = bundle.test.x, bundle.test.y
    if n is not None:
        x, y = x[:n], y[:n]
    return x.to(device), y.to(device), input_bounds(bundle), dataset, root


def load_training_bundle(
    meta: Mapping[str, Any], *, dataset: str | None = None, data_root: str | None = None, command: str = "detect"
) -> DataBundle:
    """The :class:`~deepmargin.data.DataBundle` a checkpoint was trained on, rebuilt from its config.

    ``bundle.train`` is the training split with the labels the model was trained with (after
    ``train_fraction`` and ``label_noise``), ``bundle.val`` its validation split and ``bundle.test``
    the test split. ``dataset`` (``--data``) replaces the recorded dataset, keeping the other settings.
    """
    config = meta.get("config") or {}
    name = dataset if dataset is not None else config.get("dataset")
    if not name:
        raise ValueError(
            f"The checkpoint of deepmargin {command} must record its dataset in config['dataset'] (or pass --data). "
            f"Got {config.get('dataset')!r} instead."
        )
    return dataset_from_config(config, dataset=name, root=data_root)
