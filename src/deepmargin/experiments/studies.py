"""The paper's studies as a grid of independent cells, and the tidy rows made from finished cells.

Elsayed et al. (2018), Sec. 4.2-4.3 and the supplementary:

- ``noisy-labels``: test accuracy against the fraction of flipped training labels;
- ``limited-data``: test accuracy against the fraction of the training set kept (nested subsets,
  the same for every loss);
- ``adversarial``: accuracy against epsilon under FGSM and IFGSM, white-box and black-box
  (crafted on the cross-entropy model of the same seed), for the paper's 8 models and the
  adversarially trained pair, and under Gaussian noise at several standard deviations and SNRs.

A **training cell** is one run of :func:`deepmargin.training.train` (one preset, one
hyperparameter combination, one data setting, one seed); an **evaluation cell** attacks the
chosen model of one preset and seed. For every (study, preset, setting, seed) the combination
with the best validation accuracy (of its best-validation checkpoint; ties go to the earlier
combination of the grid) is chosen, and its best-validation checkpoint's *test* accuracy is
reported: the test split is read only to report. Training cells are shared between studies (the
clean, full-data runs serve all three).

Cells are grouped by data setting and seed (label noise, training fraction, seed): every
dependency of a cell is in its group, so shards (which split the groups) never wait for each other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..attacks.autoattack import VERSIONS as _AUTOATTACK_VERSIONS
from ..training import TrainConfig
from .compare import COMPARE, COMPARE_METHODS, compare_defaults, compare_grid
from .presets import ADVERSARIAL_LOSSES, BASELINE_PRESET, PAPER_LOSSES, PRESETS, Preset, load_preset_file, preset_family
from .protocol import Protocol, _norm_key, expand_grid, hp_tag, protocol_for, resolve_grid

__all__ = [
    "DEFAULT_LOSSES",
    "ROW_COLUMNS",
    "STUDIES",
    "Cell",
    "Plan",
    "StudyOptions",
    "build_plan",
    "select_runs",
    "unused_options",
    "study_rows",
]

logger = logging.getLogger(__name__)

#: The studies, in the order ``all`` runs them.
STUDIES: tuple[str, ...] = ("noisy-labels", "limited-data", "adversarial")
#: Every study a directory can hold: the paper's and ``compare-methods`` (:mod:`.compare`).
ALL_STUDIES: tuple[str, ...] = (*STUDIES, COMPARE)

_ALL_LAYER = ("ce", "hinge", "margin-l1", "margin-l2", "margin-linf")
#: The presets each study trains when ``--losses`` is not given: cross-entropy, hinge and the
#: all-layer margin models for the noisy-label and limited-data studies (the models of the
#: paper's Fig. 2; it found the input-only ones worse throughout), all 8 models and the
#: adversarially trained pair for the adversarial study (Fig. 3).
DEFAULT_LOSSES: dict[str, tuple[str, ...]] = {
    "noisy-labels": _ALL_LAYER,
    "limited-data": _ALL_LAYER,
    "adversarial": PAPER_LOSSES + ADVERSARIAL_LOSSES,
    COMPARE: COMPARE_METHODS,
}

#: Columns of ``rows.csv`` (``rows.jsonl`` has the same keys).
ROW_COLUMNS: tuple[str, ...] = (
    "study", "dataset", "loss", "label_noise", "train_fraction", "attack", "eps", "box", "seed", "test_acc",
    "val_acc", "test_acc_last", "n_test", "n_train", "source", "hp", "run", "metric", "value", "collapsed", "flags",
)

#: The values of ``StudyOptions.autoattack`` (``--autoattack``): an AutoAttack version, or ``"none"``.
AUTOATTACK_CHOICES: tuple[str, ...] = (*_AUTOATTACK_VERSIONS, "none")

#: The kinds of cell, besides training, each study measures with.
_STUDY_CELL_KINDS: dict[str, tuple[str, ...]] = {"adversarial": ("eval",), COMPARE: ("compare", "cost")}

_SOURCE = BASELINE_PRESET  # the black-box attacker: the cross-entropy model of the same seed


@dataclass(frozen=True)
class StudyOptions:
    """What a study run is asked to do (``deepmargin experiment`` options). ``None``: the protocol's value.

    Args:
        studies: names of :data:`STUDIES` to run.
        dataset: a built-in dataset name or a path to a .npz file.
        data_root: folder of the dataset files.
        losses: presets to train (each study's :data:`DEFAULT_LOSSES` when ``None``); the
            adversarial study always trains ``ce`` too (the black-box source).
        seeds: seeds; each gives its own validation split, label noise, subset and initialisation.
        grid: ``"reduced"``, ``"paper"``, ``"none"`` or a JSON grid file (:mod:`.protocol`).
        epochs: epochs of every full-data cell.
        noise_levels, fractions: settings of the noisy-labels / limited-data studies.
        eps: l_inf radii of FGSM / IFGSM; noise_std, snr_db: Gaussian-noise levels.
        adv_eps: the largest FGSM epsilon of adversarial training.
        model, model_kwargs: architecture of every model (default: the protocol's).
        attack_n: attack only the first ``attack_n`` test inputs (default: the protocol's, else all).
        autoattack: the AutoAttack version run beside IFGSM (``"standard"``, ``"fast"``, ``"rand"``,
            ``"none"``); autoattack_eps: its l_inf radius (default: the protocol's).
        device: torch device of every cell.
        preset_files: JSON files of user presets (TrainConfig fields), usable in ``losses``.
        compare_noise, eps_l2, eps_linf, fpr: ``compare-methods`` settings (label noise of the noisy
            runs; attack budgets; false-positive rate of the detection threshold);
            ``None``: :func:`~deepmargin.experiments.compare.compare_defaults`.
    """

    studies: tuple[str, ...] = STUDIES
    dataset: str = "digits"
    data_root: str | None = None
    losses: tuple[str, ...] | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    grid: str = "reduced"
    epochs: int | None = None
    noise_levels: tuple[float, ...] | None = None
    fractions: tuple[float, ...] | None = None
    eps: tuple[float, ...] | None = None
    noise_std: tuple[float, ...] | None = None
    snr_db: tuple[float, ...] | None = None
    adv_eps: float | None = None
    model: str | None = None
    model_kwargs: Mapping[str, Any] | None = None
    attack_n: int | None = None
    autoattack: str | None = None
    autoattack_eps: float | None = None
    device: str = "cpu"
    preset_files: tuple[str, ...] = ()
    compare_noise: float | None = None
    eps_l2: float | None = None
    eps_linf: float | None = None
    fpr: float | None = None

    def __post_init__(self) -> None:
        owner = "StudyOptions"
        if isinstance(self.studies, str) or not self.studies or any(s not in ALL_STUDIES for s in self.studies):
            raise ValueError(f"The 'studies' parameter of {owner} must be a non-empty list of {list(ALL_STUDIES)}. Got {self.studies!r} instead.")
        for name, ok, expected in (("compare_noise", lambda v: 0 < v < 1, "a float in (0, 1)"),
                                   ("eps_l2", lambda v: 0 < v < math.inf, "a finite float > 0"),
                                   ("eps_linf", lambda v: 0 < v < math.inf, "a finite float > 0"),
                                   ("fpr", lambda v: 0 < v < 1, "a float in (0, 1)"),
                                   ("autoattack_eps", lambda v: 0 < v < math.inf, "a finite float > 0")):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool) and ok(value)):
                raise ValueError(f"The '{name}' parameter of {owner} must be {expected} or None. Got {value!r} instead.")
        if self.autoattack is not None and self.autoattack not in AUTOATTACK_CHOICES:
            raise ValueError(f"The 'autoattack' parameter of {owner} must be one of {list(AUTOATTACK_CHOICES)} or None. "
                             f"Got {self.autoattack!r} instead.")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"The 'seeds' parameter of {owner} must be a non-empty list of ints >= 0. Got {self.seeds!r} instead.")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"The 'seeds' parameter of {owner} must not repeat a seed. Got {list(self.seeds)} instead.")
        for name in ("noise_levels", "fractions", "eps", "noise_std", "snr_db", "losses"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, str) or len(value) == 0):
                raise ValueError(f"The '{name}' parameter of {owner} must be a non-empty list or None. Got {value!r} instead.")
            if value is not None and len(set(value)) != len(value):
                raise ValueError(f"The '{name}' parameter of {owner} must not repeat a value. Got {list(value)} instead.")
        checks = {
            "noise_levels": (lambda v: 0.0 <= v < 1.0, "floats in [0, 1)"),
            "fractions": (lambda v: 0.0 < v <= 1.0, "floats in (0, 1]"),
            "eps": (lambda v: 0.0 <= v < math.inf, "finite floats >= 0"),
            "noise_std": (lambda v: 0.0 <= v < math.inf, "finite floats >= 0"),
            "snr_db": (lambda v: 0.0 <= v < math.inf, "finite floats >= 0 (dB)"),
        }
        for name, (ok, expected) in checks.items():
            value = getattr(self, name)
            if value is not None and not all(isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v) and ok(v) for v in value):
                raise ValueError(f"The '{name}' parameter of {owner} must be a list of {expected}. Got {list(value)} instead.")
        if self.epochs is not None and (isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1):
            raise ValueError(f"The 'epochs' parameter of {owner} must be an int >= 1 or None. Got {self.epochs!r} instead.")
        if self.attack_n is not None and (isinstance(self.attack_n, bool) or not isinstance(self.attack_n, int) or self.attack_n < 1):
            raise ValueError(f"The 'attack_n' parameter of {owner} must be an int >= 1 or None. Got {self.attack_n!r} instead.")
        if self.adv_eps is not None and not (isinstance(self.adv_eps, (int, float)) and self.adv_eps > 0):
            raise ValueError(f"The 'adv_eps' parameter of {owner} must be a float > 0 or None. Got {self.adv_eps!r} instead.")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        out = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v) for k, v in out.items()}


@dataclass
class Cell:
    """One unit of work of a study.

    Attributes:
        id: its folder under the study directory, e.g. ``train/margin-l2/noise0.4-frac1/gamma0.6-dropout0-seed1``.
        kind: how it is computed, a registered cell kind (:mod:`deepmargin.experiments.cells`):
            ``"train"``, ``"eval"`` (the adversarial study's attacks), ``"compare"`` or ``"cost"``
            (``compare-methods``).
        group: ``(label_noise, train_fraction, seed)``: the shard unit.
        config: a training cell's resolved TrainConfig fields; an evaluation cell's settings.
        deps: ids of the cells this one needs (evaluation cells only).
        cost: a rough relative cost, to balance shards and workers.
    """

    id: str
    kind: str
    group: tuple[float, float, int]
    config: dict[str, Any]
    deps: tuple[str, ...] = ()
    cost: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return {"id": self.id, "kind": self.kind, "group": list(self.group), "config": self.config, "deps": list(self.deps), "cost": self.cost}


@dataclass
class Plan:
    """Every cell of a study run, and how rows are made from them.

    Attributes:
        options: the options it was built from.
        protocol: the dataset's protocol, with the options' overrides.
        grid: the resolved hyperparameter grid.
        presets: the presets used, by name.
        dataset_label: the dataset's name in the rows (a .npz file's stem).
        cells: by id, training cells first.
        candidates: ``{(study, preset, label_noise, train_fraction, seed): [training cell ids in grid order]}``.
        study_losses: the presets of each study, in row order.
        data_info: sizes, classes and bounds of the dataset.
    """

    options: StudyOptions
    protocol: Protocol
    grid: dict[str, Any]
    presets: dict[str, Preset]
    dataset_label: str
    cells: dict[str, Cell]
    candidates: dict[tuple[str, str, float, float, int], list[str]]
    study_losses: dict[str, tuple[str, ...]]
    data_info: dict[str, Any] = field(default_factory=dict)
    compare_grid: dict[str, Any] | None = None
    compare: dict[str, float] | None = None

    def cells_for(self, studies: Sequence[str]) -> list[Cell]:
        """The cells ``studies`` need, in plan order: the training cells of their candidates, the
        adversarial study's evaluation cells, compare-methods' measurement and cost cells."""
        ids: dict[str, None] = {}
        for (study, *_rest), cands in self.candidates.items():
            if study in studies:
                ids.update(dict.fromkeys(cands))
        kinds = {k for study in studies for k in _STUDY_CELL_KINDS.get(study, ())}
        ids.update({c.id: None for c in self.cells.values() if c.kind in kinds})
        return [self.cells[i] for i in self.cells if i in ids]

    def describe(self) -> dict[str, Any]:
        """What ``study.json`` records: everything that determines the rows."""
        return {
            "options": self.options.to_dict(),
            "protocol": self.protocol.to_dict(),
            "grid": self.grid,
            "presets": {name: p.to_dict() for name, p in self.presets.items()},
            "study_losses": {k: list(v) for k, v in self.study_losses.items()},
            "dataset": self.dataset_label,
            "data": self.data_info,
            **({"compare_grid": self.compare_grid, "compare": self.compare} if self.compare_grid is not None else {}),
        }


def _fmt(value: float) -> str:
    return f"{value:g}"


def _setting_tag(noise: float, fraction: float) -> str:
    return f"noise{_fmt(noise)}-frac{_fmt(fraction)}"


def _config_hash(config: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]


def _load_presets(files: Sequence[str]) -> dict[str, Preset]:
    presets = dict(PRESETS)
    for path in files:
        preset = load_preset_file(path)
        if preset.name in PRESETS:
            raise ValueError(
                f"The preset file {path!r} defines the name {preset.name!r}, which is a built-in preset. "
                "Give it another file name (or a 'name' key)."
            )
        presets[preset.name] = preset
    return presets


#: The options that only some studies read: ``StudyOptions`` field -> (flag, the studies that use it).
_STUDY_SPECIFIC: dict[str, tuple[str, tuple[str, ...]]] = {
    "noise_levels": ("--noise", ("noisy-labels",)),
    "fractions": ("--fractions", ("limited-data",)),
    "eps": ("--eps", ("adversarial",)),
    "noise_std": ("--noise-std", ("adversarial",)),
    "snr_db": ("--snr", ("adversarial",)),
    "autoattack_eps": ("--autoattack-eps", ("adversarial",)),
    "adv_eps": ("--adv-eps", ("adversarial", COMPARE)),
    "attack_n": ("--attack-n", ("adversarial", COMPARE)),
    "autoattack": ("--autoattack", ("adversarial", COMPARE)),
    "compare_noise": ("--compare-noise", (COMPARE,)),
    "eps_l2": ("--eps-l2", (COMPARE,)),
    "eps_linf": ("--eps-linf", (COMPARE,)),
    "fpr": ("--fpr", (COMPARE,)),
}


def unused_options(options: StudyOptions) -> list[str]:
    """One sentence per option given that none of ``options.studies`` reads (e.g. ``--fractions`` for a
    noisy-labels study), for the caller to warn with: such an option changes nothing.

    Example:
        >>> unused_options(StudyOptions(studies=("noisy-labels",), fractions=(0.5,)))
        ['--fractions is read only by the limited-data study; this run (noisy-labels) ignores it']
    """
    out = []
    for name, (flag, users) in _STUDY_SPECIFIC.items():
        if getattr(options, name) is not None and not set(users) & set(options.studies):
            out.append(f"{flag} is read only by the {' and '.join(users)} stud{'ies' if len(users) > 1 else 'y'}; "
                       f"this run ({', '.join(options.studies)}) ignores it")
    return out


def _protocol(options: StudyOptions, input_shape: Sequence[int]) -> Protocol:
    protocol = protocol_for(options.dataset, input_shape=input_shape)
    changes: dict[str, Any] = {}
    for name in ("epochs", "noise_levels", "fractions", "eps", "noise_std", "snr_db", "adv_eps", "model", "attack_n",
                 "autoattack", "autoattack_eps"):
        value = getattr(options, name)
        if value is not None:
            changes[name] = tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else value
    if options.model is not None:
        changes["model_kwargs"] = dict(options.model_kwargs or {})
    elif options.model_kwargs is not None:
        changes["model_kwargs"] = {**protocol.model_kwargs, **options.model_kwargs}
    return dataclasses.replace(protocol, **changes)


def _train_config(
    protocol: Protocol, options: StudyOptions, preset: Preset, hp: Mapping[str, Any], noise: float, fraction: float,
    seed: int, num_classes: int, model_opts: Sequence[str],
) -> dict[str, Any]:
    fields = dict(preset.fields)
    family = preset_family(fields)
    config: dict[str, Any] = dict(
        dataset=options.dataset, data_root=options.data_root, val_size=float(protocol.val_size), model=protocol.model,
        model_kwargs=dict(protocol.model_kwargs), batch_size=protocol.batch_size, lr_schedule=protocol.lr_schedule,
        lr_decay=protocol.lr_decay, optimizer=protocol.optimizer.get(family, protocol.optimizer["default"]),
        device=options.device, val_loss=False,
    )
    if protocol.augment != "none":
        config["augment"] = protocol.augment
    model_kwargs = {**config["model_kwargs"], **dict(fields.pop("model_kwargs", {}) or {})}
    config.update(fields)
    hp = dict(hp)
    dropout = hp.pop("dropout", None)
    if dropout is not None and "dropout" in model_opts:
        model_kwargs["dropout"] = float(dropout)
    from ..losses import loss_options_of, loss_spec

    spec = loss_spec(config.get("loss", "ce"))
    if not spec.config_fields:  # grid dimensions that are options of the loss go into loss_options
        names = set(spec.option_names)
        options = {**dict(config.get("loss_options") or {}), **{k: v for k, v in hp.items() if k in names}}
        hp = {k: v for k, v in hp.items() if k not in names}
        config["loss_options"] = options
    config.update(hp)
    config["model_kwargs"] = model_kwargs
    if "lr" not in fields and "lr" not in hp:
        config["lr"] = protocol.lr[config["optimizer"]]
    if config.get("adv_train", "none") != "none" and "adv_eps" not in fields and "adv_eps" not in hp:
        config["adv_eps"] = float(protocol.adv_eps)
    if spec.adapt is not None:  # options fitted to the data (e.g. top_k < classes)
        changed = spec.adapt(loss_options_of(config), num_classes)
        (config if spec.config_fields else config["loss_options"]).update(changed)
    if spec.config_fields and "gamma" in spec.option_names and "gamma" not in fields and "gamma" not in hp:
        # a grid without gamma: the protocol's base value for the loss's norm
        config["gamma"] = float(protocol.gamma_base[_norm_key(config.get("norm", 2))])
    _apply_overrides(config, protocol.train_overrides.get(family, {}))
    scale = min(1.0 / fraction, protocol.max_epoch_scale) if fraction < 1 else 1.0
    config["epochs"] = max(1, int(round(protocol.epochs * scale)))
    if protocol.scale_lr_decay and scale > 1 and config.get("lr_schedule") == "exponential":
        config["lr_decay"] = float(config["lr_decay"]) ** (1.0 / scale)  # the run's decay spans it as on full data
    config.update(label_noise=float(noise), train_fraction=float(fraction), seed=int(seed))
    return TrainConfig.from_dict(config).to_dict()


def _apply_overrides(config: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    """Add the protocol's ``train_overrides`` of the preset's family to ``config`` where its preset
    accepts them (a preset that sets a field itself keeps its value; e.g. the denominator cache is
    left out of adversarially trained presets, which cannot use it)."""
    if not overrides:
        return
    trial = {**config, **{k: v for k, v in overrides.items() if k not in config}}
    try:
        TrainConfig.from_dict({**trial, "epochs": 1, "label_noise": 0.0, "train_fraction": 1.0, "seed": 0})
    except ValueError:
        return
    config.update(trial)


def _cost(config: Mapping[str, Any]) -> float:
    from ..losses import loss_options_of, loss_spec

    steps = config["epochs"] * config["train_fraction"]
    spec = loss_spec(config["loss"])
    factor = spec.cost(loss_options_of(config)) if spec.cost is not None else 1.0
    if config.get("adv_train", "none") != "none":
        factor *= 1.6
    return steps * factor


def build_plan(options: StudyOptions, *, saved: Mapping[str, Any] | None = None) -> Plan:
    """All cells of ``options``, with the configuration of each.

    Loads the dataset once (seed 0) to learn its classes and input shape. With ``saved`` (a
    ``study.json``), the grid, the presets and the dataset facts recorded there are used instead of
    re-reading the grid and preset files and the data (what ``deepmargin report`` does).

    Raises:
        ValueError: an unknown preset in ``options.losses`` (the message lists the known ones),
            bad grid, or a resolved configuration TrainConfig refuses.
    """
    from ..data import load_dataset
    from ..models import model_options

    if not isinstance(options, StudyOptions):
        raise TypeError(f"The 'options' parameter of build_plan must be a StudyOptions. Got {type(options).__name__} instead.")
    if saved is not None:
        presets = {**PRESETS, **{n: Preset(p["name"], p["fields"], p["description"], p.get("source", "built-in"))
                                 for n, p in saved["presets"].items()}}
    else:
        presets = _load_presets(options.preset_files)
    if options.losses is not None:
        unknown = [name for name in options.losses if name not in presets]
        if unknown:
            raise ValueError(
                f"The --losses option (losses) must name presets among {sorted(presets)} (or a --preset-file). "
                f"Got unknown {unknown} instead."
            )
    if saved is not None:
        data_info = dict(saved["data"])
    else:
        data_logger = logging.getLogger("deepmargin.data")
        level = data_logger.level
        data_logger.setLevel(max(level, logging.WARNING))  # its "val=0" line would mislead: cells hold out validation
        try:
            bundle = load_dataset(options.dataset, root=options.data_root, val_size=0.0, seed=0)
        finally:
            data_logger.setLevel(level)
        logger.info("study data %s: a pool of %d training and %d test samples, %d classes; each cell holds out "
                    "its protocol's validation share of the pool", bundle.name, len(bundle.train), len(bundle.test),
                    bundle.num_classes)
        data_info = {
            "name": bundle.name, "num_classes": int(bundle.num_classes), "input_shape": list(bundle.input_shape),
            "bounds": list(bundle.bounds) if bundle.bounds is not None else None, "n_pool": len(bundle.train),
            "n_test": len(bundle.test), "file_sha1": _file_sha1(options.dataset),
        }
    num_classes = int(data_info["num_classes"])
    if saved is not None and "protocol" in saved:  # the protocol the study ran with, not today's defaults
        protocol = Protocol.from_dict(saved["protocol"])
        if "attack_n" not in saved["protocol"]:  # written before the protocol held it: the options did
            protocol = dataclasses.replace(protocol, attack_n=options.attack_n)
    else:
        protocol = _protocol(options, data_info["input_shape"])
    grid = resolve_grid(saved["grid"] if saved is not None else options.grid, protocol)
    c_grid, c_settings = None, None
    if COMPARE in options.studies:
        if saved is not None and "compare_grid" in saved:
            c_grid, c_settings = resolve_grid(saved["compare_grid"], protocol), dict(saved["compare"])
        else:
            c_grid = compare_grid(options.grid if options.grid in ("reduced", "paper", "none") else grid, protocol)
            c_settings = compare_defaults(str(data_info["name"]), data_info["input_shape"])
            for key, option in (("noise", "compare_noise"), ("eps_l2", "eps_l2"), ("eps_linf", "eps_linf"), ("fpr", "fpr")):
                if getattr(options, option) is not None:
                    c_settings[key] = float(getattr(options, option))
    model_opts = model_options(protocol.model)
    study_losses: dict[str, tuple[str, ...]] = {}
    for study in options.studies:
        losses = tuple(options.losses) if options.losses is not None else DEFAULT_LOSSES[study]
        if saved is not None and study in saved.get("study_losses", {}):
            losses = tuple(saved["study_losses"][study])
        study_losses[study] = losses
    cells: dict[str, Cell] = {}
    candidates: dict[tuple[str, str, float, float, int], list[str]] = {}

    def add_training(study: str, name: str, noise: float, fraction: float, seed: int) -> list[str]:
        preset = presets[name]
        family = preset_family(preset.fields)
        ids = []
        for hp in expand_grid(c_grid if study == COMPARE else grid, name, family, preset.fields.get("norm", 2)):
            if "dropout" in hp and "dropout" not in model_opts:
                hp = {k: v for k, v in hp.items() if k != "dropout"}
            config = _train_config(protocol, options, preset, hp, noise, fraction, seed, num_classes, model_opts)
            cell_id = f"train/{name}/{_setting_tag(noise, fraction)}/{hp_tag(hp)}-seed{seed}"
            if cell_id in cells and cells[cell_id].config != config:  # the same cell reached twice
                cell_id = f"{cell_id}-{_config_hash(config)}"
            if cell_id not in cells:
                cells[cell_id] = Cell(cell_id, "train", (float(noise), float(fraction), int(seed)), config, cost=_cost(config))
            if cell_id not in ids:
                ids.append(cell_id)
        candidates[(study, name, float(noise), float(fraction), int(seed))] = ids
        return ids

    for study in options.studies:
        if study == "noisy-labels":
            settings = [(n, 1.0) for n in protocol.noise_levels]
        elif study == "limited-data":
            settings = [(0.0, f) for f in protocol.fractions]
        elif study == COMPARE:
            settings = [(0.0, 1.0), (float(c_settings["noise"]), 1.0)]
        else:
            settings = [(0.0, 1.0)]
        names = list(study_losses[study])
        if study in ("adversarial", COMPARE) and _SOURCE not in names:
            names.insert(0, _SOURCE)
        for noise, fraction in settings:
            for seed in options.seeds:
                for name in names:
                    add_training(study, name, noise, fraction, seed)
    if "adversarial" in options.studies:
        for seed in options.seeds:
            source_ids = candidates[("adversarial", _SOURCE, 0.0, 1.0, int(seed))]
            for name in study_losses["adversarial"]:
                own = candidates[("adversarial", name, 0.0, 1.0, int(seed))]
                spec = {
                    "loss": name, "seed": int(seed), "eps": list(protocol.eps), "noise_std": list(protocol.noise_std),
                    "snr_db": list(protocol.snr_db), "attack_n": protocol.attack_n, "device": options.device,
                    "autoattack": protocol.autoattack, "autoattack_eps": float(protocol.autoattack_eps), "candidates": own, "source": _SOURCE, "source_candidates": source_ids, "data_root": options.data_root,
                }
                cell_id = f"eval/{name}/seed{seed}"
                cost = 0.2 * sum(cells[c].cost for c in own) / max(len(own), 1)
                cells[cell_id] = Cell(cell_id, "eval", (0.0, 1.0, int(seed)), spec, tuple(dict.fromkeys(own + source_ids)), cost)
    if COMPARE in options.studies:
        _add_compare_cells(cells, candidates, study_losses[COMPARE], options, c_settings, protocol)
    label = data_info["name"]
    ordered = dict(sorted(cells.items(), key=lambda kv: kv[1].kind != "train"))
    return Plan(options, protocol, grid, {n: presets[n] for n in _used(study_losses, options)}, label, ordered,
                candidates, study_losses, data_info, c_grid, c_settings)


def _add_compare_cells(cells: dict[str, Cell], candidates: Mapping[tuple, list[str]], losses: Sequence[str],
                       options: StudyOptions, settings: Mapping[str, float], protocol: Protocol) -> None:
    """The measurement cell of every (method, seed) and the one cost cell of ``compare-methods``."""
    for seed in options.seeds:
        source_ids = candidates[(COMPARE, _SOURCE, 0.0, 1.0, int(seed))]
        for name in losses:
            own = candidates[(COMPARE, name, 0.0, 1.0, int(seed))]
            spec = {"loss": name, "seed": int(seed), **settings, "attack_n": protocol.attack_n, "device": options.device,
                    "autoattack": protocol.autoattack, "candidates": own, "source": _SOURCE, "source_candidates": source_ids, "data_root": options.data_root}
            cost = 0.3 * sum(cells[c].cost for c in own) / max(len(own), 1)
            cell_id = f"compare/{name}/seed{seed}"
            cells[cell_id] = Cell(cell_id, "compare", (0.0, 1.0, int(seed)), spec, tuple(dict.fromkeys(own + source_ids)), cost)
    seed = int(options.seeds[0])
    first = {name: candidates[(COMPARE, name, 0.0, 1.0, seed)][0] for name in dict.fromkeys([_SOURCE, *losses])}
    spec = {"dataset": options.dataset, "data_root": options.data_root, "device": options.device, "seed": seed,
            "batch": int(protocol.batch_size), "rounds": 5, "steps": 3, "runs": first}
    cells["cost/compare"] = Cell("cost/compare", "cost", (0.0, 1.0, seed), spec, (), 2.0)


def _file_sha1(dataset: str) -> str | None:
    """SHA-1 of a user's .npz (so a file replaced under the same name is noticed); None for built-in sets."""
    from ..data import is_npz_path

    if not is_npz_path(dataset):
        return None
    digest = hashlib.sha1()
    with open(dataset, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _used(study_losses: Mapping[str, Sequence[str]], options: StudyOptions) -> list[str]:
    names = list(dict.fromkeys(n for losses in study_losses.values() for n in losses))
    if ("adversarial" in options.studies or COMPARE in options.studies) and _SOURCE not in names:
        names.insert(0, _SOURCE)
    return names


def select_runs(results: Mapping[str, Mapping[str, Any]], candidates: Sequence[str]) -> str | None:
    """The candidate run with the best validation accuracy (ties: the earliest); ``None`` until all are done.

    ``results`` maps finished cell ids to their ``results.json``; the choice reads
    ``best_val_acc`` (of the best-validation checkpoint) only, never a test accuracy. A run marked
    ``collapsed`` (training accuracy at chance; :func:`deepmargin.training.health.detect_collapse`)
    is chosen only when every candidate collapsed (its row then says so).

    Example:
        >>> select_runs({"a": {"best_val_acc": 0.9}, "b": {"best_val_acc": 0.95}}, ["a", "b"])
        'b'
    """
    if any(c not in results for c in candidates):
        return None
    healthy = [c for c in candidates if not results[c].get("collapsed")]
    best, best_score = None, -math.inf
    for cell_id in healthy or candidates:
        score = results[cell_id].get("best_val_acc")
        score = -math.inf if score is None else float(score)
        if best is None or score > best_score:
            best, best_score = cell_id, score
    return best


def _collapse_reason(results: Mapping[str, Any]) -> str | None:
    """The ``collapsed`` verdict of a run's ``results.json`` as one line (``None``: it did not collapse)."""
    collapsed = results.get("collapsed")
    if not collapsed:
        return None
    if isinstance(collapsed, Mapping):
        causes = collapsed.get("likely_causes") or []
        return str(collapsed.get("reason", "collapsed")) + (f" (likely: {'; '.join(map(str, causes))})" if causes else "")
    return str(collapsed)


def hp_label(cell_id: str) -> str:
    """The grid point of a training cell, from its id: ``train/P/S/gamma0.6-dropout0-seed1`` -> ``gamma0.6-dropout0``."""
    return cell_id.split("/")[-1].rsplit("-seed", 1)[0]


def study_rows(
    plan: Plan, results: Mapping[str, Mapping[str, Any]], eval_rows: Mapping[str, Sequence[Mapping[str, Any]]],
    *, groups: set[tuple[float, float, int]] | None = None,
) -> list[dict[str, Any]]:
    """The tidy rows of every finished (study, preset, setting, seed), in a fixed order.

    Args:
        plan: the study plan.
        results: ``results.json`` of the finished training cells, by id.
        eval_rows: rows of the finished evaluation cells, by id.
        groups: keep only the rows of these groups (a shard's own).

    Returns:
        Rows with the keys of :data:`ROW_COLUMNS`.
    """
    rows: list[dict[str, Any]] = []
    label = plan.dataset_label
    for (study, name, noise, fraction, seed), ids in plan.candidates.items():
        if study == "adversarial" or (groups is not None and (noise, fraction, seed) not in groups):
            continue
        if name not in plan.study_losses[study]:
            continue
        chosen = select_runs(results, ids)
        if chosen is None:
            continue
        res = results[chosen]
        if res.get("test_acc_best") is None:  # every candidate diverged: no model to report
            continue
        rows.append({
            "study": study, "dataset": label, "loss": name, "label_noise": noise, "train_fraction": fraction,
            "attack": "none", "eps": None, "box": "none", "seed": seed, "test_acc": res["test_acc_best"],
            "val_acc": res.get("best_val_acc"), "test_acc_last": res.get("test_acc"),
            "n_test": (res.get("data") or {}).get("sizes", {}).get("test"),
            "n_train": (res.get("data") or {}).get("sizes", {}).get("train"), "source": None,
            "hp": hp_label(chosen), "run": chosen, "collapsed": _collapse_reason(res),
        })
    for cell in plan.cells.values():  # the adversarial study's attacks, compare-methods' measurements and cost
        if cell.kind == "train" or cell.id not in eval_rows or (groups is not None and cell.group not in groups):
            continue
        rows.extend(dict(r) for r in eval_rows[cell.id])
    return [{k: r.get(k) for k in ROW_COLUMNS} for r in rows]
