"""The dataset a run was trained on, rebuilt from its saved configuration.

A checkpoint (or a run folder's ``config.json``) records its data settings as plain keys of the
training configuration. :func:`dataset_from_config` turns them back into the
:class:`~deepmargin.data.DataBundle` of that run: the same validation split, training subset and
label noise (every stage is seeded from ``seed``). It reads a plain mapping, so the data layer
needs nothing from the training package; keys an older configuration lacks (or records as
``None``) take the defaults of :class:`~deepmargin.training.TrainConfig`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .datasets import TOY_DEFAULTS, load_dataset
from .types import DataBundle

__all__ = ["CONFIG_DEFAULTS", "dataset_from_config"]

#: The configuration keys read, with the value used when a key is missing or ``None``
#: (``TrainConfig``'s field defaults; ``data_root=None`` means ``$DEEPMARGIN_DATA``).
CONFIG_DEFAULTS: dict[str, Any] = {
    "data_root": None,
    "val_size": 0.1,
    "train_fraction": 1.0,
    "label_noise": 0.0,
    "seed": 0,
    "n_samples": None,
    "data_noise": None,
    "unlabelled": False,
}

#: Configuration key -> keyword of :func:`load_dataset`.
_KEYWORDS = {
    "val_size": "val_size",
    "train_fraction": "train_fraction",
    "label_noise": "label_noise",
    "seed": "seed",
    "unlabelled": "keep_unlabelled",
}
#: Settings of the toy sets only: passed on only when the dataset is one of them.
_TOY_KEYWORDS = {"n_samples": "n_samples", "data_noise": "noise"}
_OVERRIDES = ("dataset", "val_size", "train_fraction", "label_noise", "seed", "n_samples", "noise", "keep_unlabelled")


def _value(config: Mapping[str, Any], key: str) -> Any:
    value = config.get(key)
    return CONFIG_DEFAULTS[key] if value is None else value


def dataset_from_config(
    config: Mapping[str, Any] | None, *, root: str | os.PathLike[str] | None = None, **overrides: Any
) -> DataBundle:
    """The :class:`~deepmargin.data.DataBundle` a configuration describes (:func:`load_dataset` of its keys).

    Keys read: ``dataset``, ``data_root``, ``val_size``, ``train_fraction``, ``label_noise``,
    ``seed``, ``n_samples`` and ``data_noise`` (toy sets only), and ``unlabelled`` (as
    ``keep_unlabelled``). A missing or ``None`` key takes :data:`CONFIG_DEFAULTS`. The training
    split carries the labels the run was trained with (after ``train_fraction`` and
    ``label_noise``); ``bundle.train_clean_y`` the labels before the noise.

    Args:
        config: the run's configuration as a plain mapping (``TrainConfig.to_dict()``, a
            checkpoint's ``meta['config']``, a run's ``config.json``). ``None`` reads as ``{}``.
        root: dataset folder; ``None`` takes ``config['data_root']``.
        **overrides: keywords of :func:`load_dataset` (``val_size``, ``train_fraction``,
            ``label_noise``, ``seed``, ``n_samples``, ``noise``, ``keep_unlabelled``) or
            ``dataset``, replacing the configuration's value. Another ``dataset`` keeps the other
            settings; the toy-set settings of the configuration are then passed on only when
            the new dataset is a toy set too.

    Returns:
        The bundle :func:`load_dataset` returns.

    Raises:
        TypeError: ``config`` is not a mapping, or an unknown override.
        ValueError: no dataset recorded or given, or a setting :func:`load_dataset` refuses.

    Example:
        >>> bundle = dataset_from_config({"dataset": "moons", "n_samples": 50, "seed": 1})
        >>> len(bundle.train) + len(bundle.val), len(bundle.test)
        (50, 50)
    """
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise TypeError(
            f"The 'config' parameter of dataset_from_config must be a mapping (a run's configuration as a dict). "
            f"Got {type(config).__name__} instead."
        )
    unknown = sorted(set(overrides) - set(_OVERRIDES))
    if unknown:
        raise TypeError(
            f"The keyword arguments of dataset_from_config must be among {list(_OVERRIDES)}. Got {unknown} instead."
        )
    name = overrides.pop("dataset", None)
    if name is None:
        name = config.get("dataset")
    if name is None or name == "":
        raise ValueError(
            "The 'config' parameter of dataset_from_config must record the dataset in config['dataset'] "
            f"(or pass dataset=...). Got {config.get('dataset')!r} instead."
        )
    kwargs: dict[str, Any] = {keyword: _value(config, key) for key, keyword in _KEYWORDS.items()}
    if str(name).lower() in TOY_DEFAULTS:
        kwargs.update({keyword: config.get(key) for key, keyword in _TOY_KEYWORDS.items()})
    kwargs.update(overrides)
    return load_dataset(name, root=root if root is not None else config.get("data_root"), **kwargs)
