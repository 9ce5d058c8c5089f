"""The studies' protocol per dataset (architecture, optimisation, study settings) and the hyperparameter grids.

Elsayed et al. (2018), Sec. 4.2: every model gets a hyperparameter search "with and without
dropout, with and without weight decay and different values of gamma for the margin model (same
value for all layers where margin is applied)", over "stochastic gradient descent with momentum,
and RMSProp", chosen on a held-out validation split (5,000 of MNIST's 60,000 images; 10% on
CIFAR-10). The test split is only ever used to report the chosen models.

A grid maps a *family* -- ``"margin"`` (presets of the large-margin loss), a registered loss's
name (``"matyasko"``, ``"input_gradient"``, ``"vat"``, ``"kesidis"``: their options, e.g. ``C`` or ``eps``, are
dimensions too; without its own entry such a family uses ``"default"``), ``"default"`` (all
others) or a preset name (which then takes precedence) -- to dimensions, each a list of values
tried in a cartesian product::

    {"margin":  {"gamma": {"1": [1.5, 4.5], "2": [0.6, 1.8], "inf": [0.1, 0.3]}, "dropout": [0.0, 0.5]},
     "default": {"dropout": [0.0, 0.5]}}

Dimensions are TrainConfig fields, plus ``dropout`` (the model's dropout option, skipped for a
model that has none) and ``gamma`` given per norm (keys ``"1"``, ``"2"``, ``"inf"``) or as one
list. An ``optimizer`` dimension takes the protocol's learning rate of that optimiser unless
``lr`` is a dimension too. Grid values override the preset's own fields.

Built-in grids (:func:`resolve_grid`):

- ``"none"``: each preset with the protocol's defaults (gamma = the dataset's base value for the
  norm, no dropout, no weight decay, SGD with momentum for cross-entropy/hinge and RMSProp for
  the margin models, the optimisers the paper ended up with on MNIST);
- ``"reduced"`` (the default): gamma in {1, 3} x the base value and dropout {0, 0.5} for the
  margin models, dropout {0, 0.5} for the others, optimisers as in ``"none"``; Matyasko's C and
  the input-gradient eps in {0.03, 0.1}, VAT's eps in {0.5, 2};
- ``"paper"``: gamma in {0.5, 1, 2, 4} x the base value, dropout {0, 0.5}, weight decay {0, wd},
  SGD with momentum vs RMSProp, for every model.

The base gammas are about the median linearised input distance (in that norm) of a cross-entropy
model on the dataset, measured once (digits: l_1 1.46, l_2 0.59, l_inf 0.10 for the digits CNN),
so the grid brackets the margins the data has.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import read_json_object

__all__ = [
    "DEFAULT_FAMILY",
    "GRIDS",
    "Protocol",
    "PROTOCOLS",
    "expand_grid",
    "hp_tag",
    "protocol_for",
    "resolve_grid",
]

#: Names of the built-in grids.
GRIDS: tuple[str, ...] = ("reduced", "paper", "none")
#: The grid entry of the presets whose loss has no family of its own (cross-entropy, hinge), and the
#: fallback of the registered losses' families.
DEFAULT_FAMILY = "default"

_NORM_KEYS = ("1", "2", "inf")


@dataclass(frozen=True)
class Protocol:
    """Training and study settings of one dataset.

    Args:
        dataset: the dataset name (or ``"generic"`` for a user's .npz and the toy sets).
        model, model_kwargs: architecture of every model.
        epochs: epochs of a full-data run (``--epochs`` overrides).
        batch_size, val_size: as in TrainConfig (``val_size`` a fraction of the training set; MNIST's
            5,000 of 60,000 is ``5000 / 60000``, which the stratified split rounds back to 5,000).
        lr: learning rate per optimiser.
        optimizer: optimiser per family (``"default"``, ``"margin"``) when the grid does not search it.
        lr_schedule, lr_decay: learning-rate schedule of every run.
        weight_decay: the "with weight decay" value of the grid.
        dropout: the "with dropout" value of the grid.
        augment: data augmentation of every run (TrainConfig ``augment``).
        gamma_base: margin per norm (keys ``"1"``, ``"2"``, ``"inf"``); the grids are multiples of it.
        adv_eps: largest FGSM epsilon of adversarial training.
        noise_levels: label-noise fractions of the noisy-labels study.
        fractions: training-set fractions of the limited-data study.
        max_epoch_scale: limited-data runs train ``epochs * min(1 / fraction, max_epoch_scale)``
            epochs, so a small training set gets (about) as many optimisation steps as the full one.
        eps: l_inf radii of the FGSM/IFGSM curves (0 gives the clean accuracy).
        noise_std, snr_db: Gaussian-noise levels (standard deviations; SNRs in dB).
        autoattack: the AutoAttack version (:class:`~deepmargin.attacks.AutoAttack`: ``"standard"``,
            ``"fast"``, ``"rand"``) the adversarial study and compare-methods run beside IFGSM, or
            ``"none"``. The studies use ``"fast"`` (APGD-CE, APGD-T on 3 targets, Square with 1,000
            queries): on a LeNet-5 trained on mnist-5k at eps 0.1 it gave the same robust accuracy as
            ``"standard"`` (34.2% on 500 test inputs) in a tenth of the time (33 s against 324 s);
            ``deepmargin robustness --suite standard`` runs the full ensemble on any checkpoint.
        autoattack_eps: the l_inf radius of those AutoAttack rows.
        attack_n: attack only the first ``attack_n`` test inputs in the adversarial study (``None``:
            all; ``--attack-n`` overrides).
        scale_lr_decay: a limited-data run trained ``scale`` times more epochs takes the per-epoch
            exponential decay ``lr_decay ** (1 / scale)``, so its learning rate falls over the run as
            a full-data run's does (without it, 100 epochs of one step each end at 0.95^100 = 0.6% of
            the initial rate, and a cross-entropy LeNet-5 did not fit its 68 images).
        train_overrides: TrainConfig fields per loss family (``"margin"``, ...) applied to every
            preset of that family whose configuration accepts them (e.g. the denominator cache,
            which adversarially trained presets cannot use); the report names them.
    """

    dataset: str
    model: str
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 15
    batch_size: int = 64
    val_size: float | int = 0.2
    lr: Mapping[str, float] = field(default_factory=lambda: {"sgd": 0.05, "rmsprop": 1e-3, "adam": 1e-3})
    optimizer: Mapping[str, str] = field(default_factory=lambda: {"default": "sgd", "margin": "rmsprop"})
    lr_schedule: str = "none"
    lr_decay: float = 0.1
    weight_decay: float = 5e-4
    dropout: float = 0.5
    augment: str = "none"
    gamma_base: Mapping[str, float] = field(default_factory=lambda: {"1": 1.5, "2": 0.6, "inf": 0.1})
    adv_eps: float = 0.1
    noise_levels: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8)
    fractions: tuple[float, ...] = (1.0, 0.5, 0.2, 0.1, 0.05)
    max_epoch_scale: float = 20.0
    eps: tuple[float, ...] = (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2)
    noise_std: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5)
    snr_db: tuple[float, ...] = (40.0, 33.0, 25.0, 20.0, 15.0, 10.0)
    autoattack: str = "fast"
    autoattack_eps: float = 0.1
    attack_n: int | None = None
    train_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    scale_lr_decay: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        out = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Protocol":
        """The protocol :meth:`to_dict` wrote (lists back to tuples); a field a study written by an
        older version lacks takes its default ("none" for ``autoattack``: that version ran none)."""
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        values.setdefault("autoattack", "none")
        return cls(**values)


#: Protocols of the built-in datasets. digits: 1,437 training images, 20% of them held out for
#: validation (288; 10% would leave a coarse 144-image validation set), fractions down to 5%
#: (57 images, the scale of the paper's 68 MNIST images). MNIST / Fashion-MNIST: the paper's
#: network and 5,000 validation images. CIFAR-10: a wide residual network with crop+flip
#: augmentation and 10% validation, as in Sec. 4.3 (WRN-16-2 here, 0.7M parameters, so that it
#: runs on a CPU; ``--model-kwargs '{"depth": 28, "width": 10}'`` for the paper's scale).
PROTOCOLS: dict[str, Protocol] = {
    "digits": Protocol("digits", "digits_cnn"),
    "mnist": Protocol(
        "mnist", "mnist_cnn", epochs=20, batch_size=128, val_size=5000 / 60000,
        lr={"sgd": 0.01, "rmsprop": 1e-3, "adam": 1e-3}, lr_schedule="exponential", lr_decay=0.95,
        gamma_base={"1": 15.0, "2": 2.0, "inf": 0.1}, adv_eps=0.3,
        fractions=(1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.0025, 0.00125), max_epoch_scale=50.0,
        eps=(0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3),
    ),
    "fashion-mnist": Protocol(
        "fashion-mnist", "mnist_cnn", epochs=20, batch_size=128, val_size=5000 / 60000,
        lr={"sgd": 0.01, "rmsprop": 1e-3, "adam": 1e-3}, lr_schedule="exponential", lr_decay=0.95,
        gamma_base={"1": 10.0, "2": 1.0, "inf": 0.05}, adv_eps=0.1,
        fractions=(1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005), max_epoch_scale=50.0,
        eps=(0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2),
    ),
    # mnist-5k (4,000 training / 1,000 test real MNIST images): the paper's MNIST setup on LeNet-5 (the
    # cheaper of the two 28x28 networks) with 20% of the pool held out for validation, so the smallest
    # fraction, 0.02125 x 3,200, is the paper's smallest MNIST set of 68 images. Chosen on the validation
    # split (never the test split) so that `deepmargin experiment all --data mnist-5k` fits in an hour on
    # two CPU cores:
    # - 10 epochs, SGD at lr 0.05: a cross-entropy LeNet-5 reached 95.0-97.4% validation accuracy over
    #   3 seeds, against 80.6-88.9% at the MNIST protocol's lr 0.01 (20 epochs at 0.01: 94.6%);
    # - base gammas = the median linearised distance of the validation inputs to the boundary of that
    #   cross-entropy model (l_1 6.5, l_2 1.20, l_inf 0.070; measured as the digits ones), so the
    #   reduced grid's {1, 3} x base brackets the margins the data has (the full-MNIST values,
    #   15 / 2 / 0.1, sat at 2-3x these medians);
    # - the margin presets train with cached denominators refreshed every 5 epochs: 4x cheaper per run,
    #   and within the seed spread on validation (margin-l2, 3 seeds: 94.4-96.6% cached vs
    #   95.0-97.1% uncached without noise; 15-39% vs 10-32% at 80% noise);
    # - label noise 0, 40%, 80% and fractions 1, 0.2, 0.05, 0.02125 (the paper's end points and a middle);
    #   --noise / --fractions give the paper's full lists;
    # - the attacks on the first 300 test inputs, l_inf radii 0 to 0.3 in steps of 0.1 (the paper's range);
    # - limited-data runs decay the learning rate per epoch by 0.95^(1/scale): with 0.95 per epoch, the
    #   cross-entropy models of 68 images ended at 12-38% training accuracy (the rate had fallen to 0.6% of
    #   its start); scaled, they reach 37-77% in the same 100 epochs and 68-72% validation accuracy.
    "mnist-5k": Protocol(
        "mnist-5k", "lenet5", epochs=10, batch_size=128, val_size=0.2,
        lr={"sgd": 0.05, "rmsprop": 1e-3, "adam": 1e-3}, lr_schedule="exponential", lr_decay=0.95,
        gamma_base={"1": 6.5, "2": 1.2, "inf": 0.07}, adv_eps=0.3,
        noise_levels=(0.0, 0.4, 0.8), fractions=(1.0, 0.2, 0.05, 0.02125), max_epoch_scale=10.0,
        eps=(0.0, 0.1, 0.2, 0.3), attack_n=300, train_overrides={"margin": {"denominator_refresh": 5}},
        scale_lr_decay=True,
    ),
    "cifar10": Protocol(
        "cifar10", "wrn", {"depth": 16, "width": 2}, epochs=60, batch_size=128, val_size=0.1,
        lr={"sgd": 0.1, "rmsprop": 1e-3, "adam": 1e-3}, lr_schedule="cosine", augment="crop-flip",
        dropout=0.3, gamma_base={"1": 20.0, "2": 1.0, "inf": 0.02}, adv_eps=8 / 255,
        fractions=(1.0, 0.5, 0.2, 0.1, 0.05, 0.01), max_epoch_scale=20.0,
        eps=(0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1), noise_std=(0.0, 0.02, 0.05, 0.1, 0.2),
        snr_db=(40.0, 33.0, 25.0, 20.0, 15.0), autoattack_eps=8 / 255,
    ),
}


def protocol_for(dataset: str, *, input_shape: Sequence[int] | None = None) -> Protocol:
    """The protocol of a built-in dataset, or a generic one for a .npz file or a toy set.

    The generic protocol takes the digits settings with an architecture chosen from the input
    shape: ``mlp`` for vectors, ``digits_cnn`` for images smaller than 16 pixels a side,
    ``mnist_cnn`` otherwise; the base gammas scale with the input dimension ``d`` as the digits
    ones do (l_2 with sqrt(d / 64), l_1 with d / 64).
    """
    if dataset in PROTOCOLS:
        return PROTOCOLS[dataset]
    shape = tuple(input_shape or ())
    if len(shape) <= 1:
        model = "mlp"
    elif min(shape[-2:]) < 16:
        model = "digits_cnn"
    else:
        model = "mnist_cnn"
    d = math.prod(shape) if shape else 64
    gamma = {"1": round(1.5 * d / 64, 4), "2": round(0.6 * math.sqrt(d / 64), 4), "inf": 0.1}
    return dataclasses.replace(PROTOCOLS["digits"], dataset="generic", model=model, gamma_base=gamma)


def _builtin_grid(name: str, protocol: Protocol) -> dict[str, dict[str, Any]]:
    def gammas(multipliers: Sequence[float]) -> dict[str, list[float]]:
        return {k: [round(m * protocol.gamma_base[k], 6) for m in multipliers] for k in _NORM_KEYS}

    if name == "none":
        return {"margin": {"gamma": gammas([1.0])}, "default": {}}
    dropout = {"dropout": [0.0, protocol.dropout]}
    if name == "reduced":
        return {
            "margin": {"gamma": gammas([1.0, 3.0]), **dropout},
            "default": dict(dropout),
            "matyasko": {"C": [0.03, 0.1], **dropout},
            "input_gradient": {"eps": [0.03, 0.1], **dropout},
            "vat": {"eps": [0.5, 2.0], **dropout},
            "kesidis": {"mu": [2.0, 5.0], **dropout},
        }
    common = {**dropout, "weight_decay": [0.0, protocol.weight_decay], "optimizer": ["sgd", "rmsprop"]}
    return {
        "margin": {"gamma": gammas([0.5, 1.0, 2.0, 4.0]), **common}, "default": dict(common),
        "matyasko": {"C": [0.01, 0.03, 0.1, 0.3], **common},
        "input_gradient": {"eps": [0.01, 0.03, 0.1, 0.3], **common},
        "vat": {"eps": [0.25, 0.5, 1.0, 2.0], **common},
        "kesidis": {"mu": [1.0, 2.0, 5.0, 10.0], **common},
    }


def resolve_grid(grid: str | os.PathLike[str] | Mapping[str, Any], protocol: Protocol) -> dict[str, dict[str, Any]]:
    """The grid as plain data: a built-in name (:data:`GRIDS`), a JSON file, or a mapping.

    Raises:
        ValueError: an unknown name, a file that is not a JSON object of families, a dimension
            that is not a non-empty list (or, for ``gamma``, a mapping of norms to lists).
    """
    source = "the grid"
    if isinstance(grid, str) and grid in GRIDS:
        return _builtin_grid(grid, protocol)
    if isinstance(grid, (str, os.PathLike)):
        path = Path(grid)
        source = f"the grid file {str(path)!r}"
        if path.suffix.lower() != ".json" and not path.exists():
            raise ValueError(f"The 'grid' parameter must be one of {list(GRIDS)} or a JSON file. Got {str(grid)!r} instead.")
        grid = read_json_object(path, "grid file")
    if not isinstance(grid, Mapping):
        raise ValueError(f"{source.capitalize()} must be a JSON object of families -> dimensions. Got {type(grid).__name__} instead.")
    out: dict[str, dict[str, Any]] = {}
    for family, dims in grid.items():
        if not isinstance(dims, Mapping):
            raise ValueError(f"Family {family!r} of {source} must map dimension names to lists of values. Got {dims!r} instead.")
        clean: dict[str, Any] = {}
        for dim, values in dims.items():
            if dim == "gamma" and isinstance(values, Mapping):
                per_norm = {}
                for norm, vals in values.items():
                    key = _norm_key(norm)
                    if key is None or not _nonempty_list(vals):
                        raise ValueError(
                            f"The 'gamma' dimension of family {family!r} in {source} must map norms ('1', '2', 'inf') to "
                            f"non-empty lists. Got {norm!r}: {vals!r} instead."
                        )
                    per_norm[key] = list(vals)
                clean[dim] = per_norm
            elif _nonempty_list(values):
                clean[dim] = list(values)
            else:
                raise ValueError(
                    f"The dimension {dim!r} of family {family!r} in {source} must be a non-empty list of values. Got {values!r} instead."
                )
        out[str(family)] = clean
    out.setdefault("default", {})
    return out


def _nonempty_list(values: Any) -> bool:
    return isinstance(values, list) and len(values) > 0


def _norm_key(norm: Any) -> str | None:
    text = str(norm).strip().lower()
    if text in ("inf", "linf", "infinity"):
        return "inf"
    try:
        value = float(text)
    except ValueError:
        return None
    return "inf" if math.isinf(value) else f"{value:g}"


def expand_grid(
    grid: Mapping[str, Mapping[str, Any]], preset: str, family: str, norm: Any
) -> list[dict[str, Any]]:
    """The hyperparameter combinations of one preset, in grid order (the first is the default on ties).

    ``gamma`` given per norm takes the list of the preset's ``norm``; a preset's own entry of the
    grid replaces its family's.

    Example:
        >>> expand_grid({"margin": {"gamma": {"2": [1, 2]}, "dropout": [0, 0.5]}}, "margin-l2", "margin", 2.0)
        [{'gamma': 1, 'dropout': 0}, {'gamma': 1, 'dropout': 0.5}, {'gamma': 2, 'dropout': 0}, {'gamma': 2, 'dropout': 0.5}]
    """
    if family == DEFAULT_FAMILY or _falls_back(family):  # e.g. matyasko, vat: "default" without an entry of their own
        fallback = grid.get(DEFAULT_FAMILY, {})
    else:  # the large-margin loss's presets: only their own entry
        fallback = {}
    dims = grid.get(preset, grid.get(family, fallback))
    takes_gamma = _per_norm_gamma(family)
    names, lists = [], []
    for dim, values in dims.items():
        if dim == "gamma":
            if not takes_gamma:
                continue
            if isinstance(values, Mapping):
                key = _norm_key(norm)
                if key not in values:
                    raise ValueError(
                        f"The grid's 'gamma' dimension must give values for norm {key!r} (preset {preset!r}). "
                        f"Got norms {sorted(values)} instead."
                    )
                values = values[key]
        names.append(dim)
        lists.append(list(values))
    return [dict(zip(names, combo)) for combo in itertools.product(*lists)] or [{}]


def _family_losses(family: str) -> list[Any]:
    from ..losses import LOSS_REGISTRY

    return [spec for spec in LOSS_REGISTRY.values() if spec.family == family]


def _falls_back(family: str) -> bool:
    """Whether presets of ``family`` use the grid's ``"default"`` entry when the grid has none of
    theirs: every family except those of the losses configured by flat TrainConfig fields (the
    large-margin loss's ``"margin"``), whose grids are given in full."""
    specs = _family_losses(family)
    return not specs or not all(spec.config_fields for spec in specs)


def _per_norm_gamma(family: str) -> bool:
    """Whether the grid's ``gamma`` dimension (per norm) applies to ``family``: its losses take a
    ``gamma`` and a ``norm`` option as TrainConfig fields (the large-margin loss)."""
    return any(spec.config_fields and {"gamma", "norm"} <= set(spec.option_names) for spec in _family_losses(family))


def hp_tag(hp: Mapping[str, Any]) -> str:
    """A short, file-name-safe label of a hyperparameter combination (``"default"`` when empty).

    Example:
        >>> hp_tag({"gamma": 0.6, "dropout": 0.5, "optimizer": "rmsprop"})
        'gamma0.6-dropout0.5-rmsprop'
    """
    if not hp:
        return "default"
    parts = []
    for key, value in hp.items():
        if key == "optimizer":
            parts.append(str(value))
        elif isinstance(value, float):
            parts.append(f"{_short(key)}{value:g}")
        else:
            parts.append(f"{_short(key)}{json.dumps(value, separators=(',', ':')).strip(chr(34))}")
    return "-".join(parts).replace("/", "_").replace(" ", "")


def _short(key: str) -> str:
    return {"weight_decay": "wd", "learning_rate": "lr"}.get(key, key)
