"""The plain run configuration of :func:`deepmargin.training.train`."""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..checks import parse_norm as _parse_norm

#: The losses whose options are flat TrainConfig fields (configurations written before the loss
#: registry); every loss, these included, is an entry of :data:`deepmargin.losses.LOSS_REGISTRY`.
LOSSES = ("ce", "hinge", "margin")
OPTIMIZERS = ("sgd", "rmsprop", "adam")
LR_SCHEDULES = ("none", "step", "exponential", "cosine")
AGGREGATIONS = ("max", "sum")
SCORES = ("logits", "softmax")
#: Values of ``TrainConfig.adv_train``: the one-step attacks of
#: :mod:`deepmargin.training.adversarial` (adding a method there and here is all it takes).
ADV_TRAIN = ("none", "fgsm", "l2")
#: Values of ``TrainConfig.augment`` (see :mod:`deepmargin.training.augment`).
AUGMENTATIONS = ("none", "crop", "flip", "crop-flip")

#: Keys of :meth:`TrainConfig.to_dict` that may change when a run is resumed (``val_loss`` only
#: changes what is logged) (``epochs`` is
#: handled on its own by :func:`deepmargin.training.train`: a run can be continued to more epochs).
RESUME_FREE_KEYS = frozenset({"device", "eval_batch_size", "data_root", "val_loss"})

#: The momentum an optimiser uses when ``TrainConfig.momentum`` is ``None`` (Adam takes none).
DEFAULT_MOMENTUM: dict[str, float] = {"sgd": 0.9, "rmsprop": 0.0}

_OWNER = "TrainConfig"


def _err(name: str, expected: str, got: object, exc: type[Exception] = ValueError) -> Exception:
    return exc(f"The '{name}' parameter of {_OWNER} must be {expected}. Got {got!r} instead.")


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and not math.isnan(float(v))


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars/arrays and tuples turned into plain Python numbers and lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays, 0-d or not
    if tolist is not None and type(value).__module__ == "numpy":
        return _plain(tolist())
    return value


def _as_int(value: Any) -> Any:
    return int(value) if _is_int(value) else value


def _as_float(value: Any) -> Any:
    return float(value) if _is_real(value) else value


def resolve_device(
    device: object, *, owner: str = _OWNER, name: str = "device", check_available: bool = True
) -> torch.device:
    """Parse ``device`` (e.g. ``"cpu"``, ``"cuda:0"``) and, by default, check that it can be used.

    Args:
        device: a device string or :class:`torch.device`.
        owner, name: the function (or command) and parameter (or option) named in error messages.
        check_available: also raise when the device is not available here (CUDA/MPS missing, a
            CUDA index beyond the visible GPUs, a device type this torch build does not support).

    Returns:
        The :class:`torch.device`.

    Raises:
        TypeError: ``device`` is not a str or torch.device.
        ValueError: ``device`` is not a device string, or (``check_available``) not available.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    label = f"The {name!r} parameter of {owner}" if not name.startswith("-") else f"The {name} option of {owner}"
    if isinstance(device, torch.device):
        parsed = device
    elif not isinstance(device, str) or not device:
        raise TypeError(f"{label} must be a non-empty str such as 'cpu' or 'cuda:0'. Got {device!r} instead.")
    else:
        try:
            parsed = torch.device(device)
        except (RuntimeError, ValueError, TypeError):
            raise ValueError(
                f"{label} must be a torch device such as 'cpu', 'cuda' or 'cuda:0'. Got {device!r} instead."
            ) from None
    if not check_available:
        return parsed
    problem = None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            problem = "torch.cuda.is_available() is False (no CUDA support in this torch build or no GPU visible)"
        elif parsed.index is not None and parsed.index >= torch.cuda.device_count():
            problem = f"only {torch.cuda.device_count()} CUDA device(s) are visible"
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            problem = "torch.backends.mps.is_available() is False"
    elif parsed.type != "cpu":
        try:
            torch.empty(0, device=parsed)
        except Exception as exc:  # noqa: BLE001 - any failure means the device cannot be used
            problem = f"a tensor cannot be created on it ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    if problem is not None:
        raise ValueError(f"{label} must be a device available on this machine. Got {str(device)!r} instead: {problem}. "
                         "Use 'cpu' (or a device that exists here).")
    return parsed


def parse_norm(norm: object) -> float:
    """Parse a norm ``p`` given as a number, a numeric string or ``'inf'`` into a float >= 1 (``math.inf`` allowed)."""
    value = norm
    if isinstance(norm, str):
        text = norm.strip().lower()
        value = "inf" if text == "infinity" else text
        try:
            value = float(text)
        except ValueError:
            pass
    try:
        return _parse_norm(value, "norm", _OWNER, expected="a real number p >= 1 or 'inf'", type_exc=ValueError)[0]
    except ValueError:
        raise _err("norm", "a real number p >= 1 or 'inf'", norm) from None  # the value as given


@dataclass
class TrainConfig:
    """Everything that determines a training run (a plain, JSON-able record).

    Data:
        dataset: a name of :data:`deepmargin.data.DATASETS` (default ``"digits"``).
        data_root: folder with the dataset files (MNIST, Fashion-MNIST, CIFAR-10); ``None`` for
            the bundled/synthetic sets.
        val_size: fraction of the training set held out for validation.
        train_fraction: fraction of the (remaining) training set used (same subset for every loss).
        label_noise: fraction of training labels flipped to another class (Elsayed et al. 2018, 4.2.1).
        unlabelled: semi-supervised training (default False): the training samples that
            ``train_fraction`` leaves out join the epochs with their labels hidden (``-1``); only
            for a loss that uses unlabelled samples (``vat``) and ``train_fraction < 1``.
        n_samples, data_noise: size and noise of the 2-D toy sets (``None``: the data defaults).

    Model:
        model: a name of :data:`deepmargin.models.MODELS` (default ``"digits_cnn"``).
        model_kwargs: extra keyword arguments of the model, e.g. ``{"dropout": 0.5}``,
            ``{"hidden_sizes": [64, 64]}``, ``{"batch_norm": True}``.

    Loss:
        loss: ``"ce"`` (cross-entropy), ``"hinge"`` (multiclass hinge plus ``hinge_ce_weight`` times
            cross-entropy, the paper's second baseline) or ``"margin"`` (the large-margin loss plus
            ``ce_weight`` times cross-entropy).
        hinge_margin, hinge_ce_weight: options of the hinge baseline (1.0 and 0.1).
        layers: margin layers (names of ``model.named_modules()`` or ``"input"``); ``None``
            (default) resolves to :func:`deepmargin.training.default_margin_layers`: the model's
            ``margin_layers`` if it has them (``wrn``), else ``["input", *model.hidden_layers]``.
        gamma: margin per layer (one float or one per layer). alpha: clipping (``None``: none).
        top_k, norm (``p``: 1, 2, ``inf`` or a real >= 1), aggregation (``"max"``/``"sum"``),
        layer_weights, epsilon, approximate, scores (``"logits"``/``"softmax"``),
        exact_per_sample (per-sample gradients, for batch norm in training mode): options of
            :func:`deepmargin.losses.large_margin_loss`.
        margin_weight, ce_weight: weights of the margin and cross-entropy terms (1.0 and 1.0).
        denominator_refresh: ``0`` (default): the margin loss computes its denominators (the
            gradient norms) in every step. ``R > 0``: they are cached for every training sample,
            every rival class and every margin layer, computed in eval mode at the start of epochs
            1, 1 + R, 1 + 2R, ... and read from the cache in between, so a step costs about a
            cross-entropy step (see :mod:`deepmargin.training.denominators`). Only for
            ``loss="margin"`` with ``approximate=True``, without ``exact_per_sample``, ``augment`` or
            ``adv_train`` (their inputs are not the cached ones).
        loss_options: options of a loss of :data:`deepmargin.losses.LOSS_REGISTRY` (``"matyasko"``,
            ``"input_gradient"``, ``"vat"``, ...; ``deepmargin losses`` lists them); stored with every
            option resolved to its default. Must be empty for ``ce``, ``hinge`` and ``margin``,
            which keep their own fields above.

    Optimisation:
        optimizer: ``"sgd"`` (with momentum), ``"rmsprop"`` or ``"adam"``; lr; momentum (``None``,
            the default, stays ``None`` in the config and means the optimiser's default of
            :data:`DEFAULT_MOMENTUM`: 0.9 for SGD, 0 for RMSProp; Adam takes none, so it must be
            ``None`` with Adam); weight_decay.
        lr_schedule: ``"none"``, ``"step"`` (times ``lr_decay`` every ``lr_step`` epochs),
            ``"exponential"`` (times ``lr_decay`` every epoch) or ``"cosine"`` (to 0 over ``epochs``).
        grad_clip: maximum global gradient norm (``None``: no clipping).
        epochs, batch_size, eval_batch_size, seed, device (``"cpu"`` by default; never guessed;
            parsed here, checked for availability when training starts).
        val_loss: compute the training objective on the validation split every epoch (default
            True). ``False`` records the validation accuracy only (``val_loss`` is ``None``): much
            cheaper for the margin loss, whose value needs input gradients; the studies use it,
            since model selection reads the accuracy alone.

    Adversarial training (Kurakin et al. 2016, "Adversarial Machine Learning at Scale"; used with
    every ``loss``, see :mod:`deepmargin.training.adversarial`):
        adv_train: ``"none"`` (default) or ``"fgsm"``: in every batch of ``m`` samples,
            ``k = round(adv_ratio * m)`` random ones are replaced by FGSM examples crafted on the
            current model with its predicted labels.
        adv_eps: the largest epsilon, in input units (0.3); each example's epsilon is drawn from
            ``|N(0, (adv_eps / 2)^2)|`` truncated to ``[0, adv_eps]``.
        adv_ratio: share of each batch replaced, in (0, 1] (0.5).
        adv_weight: weight ``lambda`` of the adversarial examples in the loss, > 0 (0.3):
            ``(sum_clean L + lambda * sum_adv L) / ((m - k) + lambda * k)``.

    Data augmentation (training inputs only, images ``(N, C, H, W)`` only; see
    :mod:`deepmargin.training.augment`):
        augment: ``"none"`` (default), ``"crop"`` (random shifts of up to ``crop_padding`` pixels
            in both axes with zero fill, i.e. zero padding plus a random crop), ``"flip"`` (random
            horizontal flips with probability 1/2) or ``"crop-flip"`` (both, the usual CIFAR-10
            augmentation). crop_padding: int >= 0 (4).

    Numbers may be given as numpy scalars (and lists as numpy arrays or tuples); they are stored as
    plain ``int``/``float``/``list`` so the configuration stays JSON-able.

    Example:
        >>> cfg = TrainConfig(loss="margin", gamma=[2.0, 1.0], layers=["input", "relu3"], epochs=3)
        >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    # data
    dataset: str = "digits"
    data_root: str | None = None
    val_size: float = 0.1
    train_fraction: float = 1.0
    label_noise: float = 0.0
    n_samples: int | None = None
    data_noise: float | None = None
    unlabelled: bool = False
    # model
    model: str = "digits_cnn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # loss
    loss: str = "ce"
    hinge_margin: float = 1.0
    hinge_ce_weight: float = 0.1
    layers: list[str] | None = None
    gamma: float | list[float] = 1.0
    alpha: float | None = None
    top_k: int = 1
    norm: float = 2.0
    aggregation: str = "max"
    layer_weights: list[float] | None = None
    epsilon: float = 1e-6
    approximate: bool = True
    scores: str = "logits"
    exact_per_sample: bool = False
    margin_weight: float = 1.0
    ce_weight: float = 1.0
    denominator_refresh: int = 0
    loss_options: dict[str, Any] = field(default_factory=dict)
    # optimisation
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float | None = None
    weight_decay: float = 0.0
    lr_schedule: str = "none"
    lr_decay: float = 0.1
    lr_step: int = 10
    grad_clip: float | None = None
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 512
    seed: int = 0
    device: str = "cpu"
    val_loss: bool = True
    # adversarial training
    adv_train: str = "none"
    adv_eps: float = 0.3
    adv_ratio: float = 0.5
    adv_weight: float = 0.3
    # data augmentation
    augment: str = "none"
    crop_padding: int = 4

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:  # noqa: C901 - a flat list of checks reads best
        for name in ("dataset", "model"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise _err(name, "a non-empty str", value, TypeError)
            setattr(self, name, str(value))  # numpy.str_ -> str
        if isinstance(self.device, torch.device):
            self.device = str(self.device)
        resolve_device(self.device, check_available=False)  # availability is checked when training starts
        self.device = str(self.device)
        if self.data_root is not None and not isinstance(self.data_root, str):
            self.data_root = str(self.data_root)
        for name, value in (("val_size", self.val_size), ("label_noise", self.label_noise)):
            if not _is_real(value) or not (0.0 <= value < 1.0):
                raise _err(name, "a float in [0, 1)", value)
            setattr(self, name, float(value))
        if not _is_real(self.train_fraction) or not (0.0 < self.train_fraction <= 1.0):
            raise _err("train_fraction", "a float in (0, 1]", self.train_fraction)
        self.train_fraction = float(self.train_fraction)
        if self.n_samples is not None and (not _is_int(self.n_samples) or self.n_samples < 1):
            raise _err("n_samples", "a positive int or None", self.n_samples)
        self.n_samples = None if self.n_samples is None else int(self.n_samples)
        if self.data_noise is not None and (not _is_real(self.data_noise) or self.data_noise < 0):
            raise _err("data_noise", "a float >= 0 or None", self.data_noise)
        self.data_noise = None if self.data_noise is None else float(self.data_noise)
        if not isinstance(self.model_kwargs, Mapping):
            raise _err("model_kwargs", "a dict", self.model_kwargs, TypeError)
        self.model_kwargs = {str(k): _plain(v) for k, v in self.model_kwargs.items()}
        from ..losses.registry import LOSS_REGISTRY, resolve_loss_options

        _choice("loss", self.loss, tuple(LOSS_REGISTRY))
        if not isinstance(self.loss_options, Mapping):
            raise _err("loss_options", "a dict of the loss's options", self.loss_options, TypeError)
        if not LOSS_REGISTRY[self.loss].config_fields:
            self.loss_options = resolve_loss_options(str(self.loss), _plain(dict(self.loss_options)))
        elif self.loss_options:
            raise _err("loss_options", f"empty for loss {self.loss!r} (its options are TrainConfig fields)", self.loss_options)
        else:
            self.loss_options = {}
        _choice("aggregation", self.aggregation, AGGREGATIONS)
        _choice("scores", self.scores, SCORES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        for name in ("loss", "aggregation", "scores", "optimizer", "lr_schedule"):
            setattr(self, name, str(getattr(self, name)))
        if self.layers is not None:
            if isinstance(self.layers, str) or not isinstance(self.layers, Sequence) or not self.layers or not all(
                isinstance(n, str) for n in self.layers
            ):
                raise _err("layers", "a non-empty list of layer names or None", self.layers, TypeError)
            self.layers = [str(n) for n in self.layers]
        gamma = _plain(self.gamma)  # a numpy array of margins becomes a list
        if isinstance(gamma, Sequence) and not isinstance(gamma, str):
            gammas = list(gamma)
            if not gammas or not all(_is_real(g) and g > 0 for g in gammas):
                raise _err("gamma", "a float > 0 or a list of floats > 0 (one per layer)", self.gamma)
            if self.layers is not None and len(gammas) not in (1, len(self.layers)):
                raise _err("gamma", f"a float or a list of {len(self.layers)} floats (one per layer)", self.gamma)
            self.gamma = [float(g) for g in gammas] if len(gammas) > 1 else float(gammas[0])
        elif not _is_real(gamma) or gamma <= 0:
            raise _err("gamma", "a float > 0 or a list of floats > 0 (one per layer)", self.gamma)
        else:
            self.gamma = float(gamma)
        if self.layer_weights is not None:
            weights = _plain(self.layer_weights)
            if isinstance(weights, str) or not isinstance(weights, Sequence) or not all(
                _is_real(w) and w > 0 for w in weights
            ):
                raise _err("layer_weights", "a list of floats > 0 (one per layer) or None", self.layer_weights)
            self.layer_weights = [float(w) for w in weights]
        if self.alpha is not None and (not _is_real(self.alpha) or self.alpha <= 0):
            raise _err("alpha", "a float > 0 or None", self.alpha)
        self.alpha = _as_float(self.alpha)
        if not _is_int(self.top_k) or self.top_k < 1:
            raise _err("top_k", "an int >= 1", self.top_k)
        self.top_k = int(self.top_k)
        self.norm = parse_norm(self.norm)
        for name in ("hinge_margin", "epsilon", "lr"):
            value = getattr(self, name)
            if not _is_real(value) or value <= 0:
                raise _err(name, "a float > 0", value)
            setattr(self, name, float(value))
        for name in ("hinge_ce_weight", "margin_weight", "ce_weight", "weight_decay"):
            value = getattr(self, name)
            if not _is_real(value) or value < 0:
                raise _err(name, "a float >= 0", value)
            setattr(self, name, float(value))
        for name in ("approximate", "exact_per_sample", "val_loss"):
            value = getattr(self, name)
            if type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"):
                value = bool(value)
            if not isinstance(value, bool):
                raise _err(name, "a bool", getattr(self, name), TypeError)
            setattr(self, name, value)
        if self.momentum is not None:
            if self.optimizer not in DEFAULT_MOMENTUM:
                raise _err(
                    "momentum", f"None with optimizer {self.optimizer!r} (it takes no momentum; use 'sgd' or 'rmsprop')",
                    self.momentum,
                )
            if not _is_real(self.momentum) or not 0 <= self.momentum < 1:
                raise _err("momentum", "a float in [0, 1) or None", self.momentum)
            self.momentum = float(self.momentum)
        if not _is_real(self.lr_decay) or not 0 < self.lr_decay <= 1:
            raise _err("lr_decay", "a float in (0, 1]", self.lr_decay)
        self.lr_decay = float(self.lr_decay)
        if self.grad_clip is not None and (not _is_real(self.grad_clip) or self.grad_clip <= 0):
            raise _err("grad_clip", "a float > 0 or None", self.grad_clip)
        self.grad_clip = _as_float(self.grad_clip)
        for name in ("lr_step", "epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise _err(name, "an int >= 1", value)
            setattr(self, name, int(value))
        if not _is_int(self.denominator_refresh) or self.denominator_refresh < 0:
            raise _err("denominator_refresh", "an int >= 0 (0: no cache; R: refresh every R epochs)", self.denominator_refresh)
        self.denominator_refresh = int(self.denominator_refresh)
        if not _is_int(self.seed) or self.seed < 0:
            raise _err("seed", "an int >= 0", self.seed)
        self.seed = int(self.seed)
        _choice("adv_train", self.adv_train, ADV_TRAIN)
        _choice("augment", self.augment, AUGMENTATIONS)
        self.adv_train, self.augment = str(self.adv_train), str(self.augment)
        for name in ("adv_eps", "adv_weight"):
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value) or value <= 0:
                raise _err(name, "a float > 0", value)
            setattr(self, name, float(value))
        if not _is_real(self.adv_ratio) or not 0 < self.adv_ratio <= 1:
            raise _err("adv_ratio", "a float in (0, 1]", self.adv_ratio)
        self.adv_ratio = float(self.adv_ratio)
        if not _is_int(self.crop_padding) or self.crop_padding < 0:
            raise _err("crop_padding", "an int >= 0", self.crop_padding)
        self.crop_padding = int(self.crop_padding)
        self._validate_combinations()

    def _validate_combinations(self) -> None:
        """Options that are valid alone but not together."""
        from ..losses.registry import LOSS_REGISTRY

        spec = LOSS_REGISTRY[self.loss]
        if not isinstance(self.unlabelled, bool):
            raise _err("unlabelled", "a bool", self.unlabelled, TypeError)
        if self.unlabelled:
            if not spec.accepts_unlabelled:
                users = sorted(n for n, s in LOSS_REGISTRY.items() if s.accepts_unlabelled)
                raise _err("unlabelled", f"False for loss {self.loss!r} (losses that use unlabelled samples: {users})", True)
            if self.train_fraction >= 1.0:
                raise _err("unlabelled", "False when train_fraction is 1 (no training sample is left out to be unlabelled)", True)
            if self.adv_train != "none":
                raise _err("unlabelled", f"False with adv_train={self.adv_train!r} (adversarial examples need labels)", True)
        if self.denominator_refresh:
            conflict = None
            if not spec.caches_denominators:
                users = " or ".join(f"loss={n!r}" for n, s in LOSS_REGISTRY.items() if s.caches_denominators)
                conflict = f"loss {self.loss!r} (the cache holds the denominators of the large-margin loss: {users})"
            elif not self.approximate:
                conflict = ("approximate=False (the second-order loss differentiates through the denominators, "
                            "so they cannot be cached)")
            elif self.exact_per_sample:
                conflict = ("exact_per_sample=True (the cache is computed in eval mode, where the gradients are "
                            "per sample already)")
            elif self.augment != "none":
                conflict = f"augment={self.augment!r} (augmented inputs are not the cached ones)"
            elif self.adv_train != "none":
                conflict = f"adv_train={self.adv_train!r} (adversarial inputs are not the cached ones)"
            if conflict is not None:
                raise _err("denominator_refresh", f"0 with {conflict}", self.denominator_refresh)
        self._warn_foreign_loss_fields()
        reweighting = spec.reweighting(self.loss_options) if spec.reweighting else None
        if reweighting is not None and self.adv_train != "none":
            raise _err("adv_train", f"'none' with the reweighting loop of loss {self.loss!r} (weights belong to the "
                       "training samples, not to adversarial copies)", self.adv_train)

    def _warn_foreign_loss_fields(self) -> None:
        """Warn about a field of another loss's options set away from its default: this loss ignores it."""
        from ..losses.registry import foreign_options

        for name, option in foreign_options(self.loss):
            value = getattr(self, option.name, option.default)
            default = parse_norm(option.default) if option.name == "norm" else option.default
            if value != default and not (option.name == "gamma" and value == [default]):
                warnings.warn(
                    f"The '{option.name}' parameter of {_OWNER} is an option of loss {name!r}; loss {self.loss!r} "
                    f"ignores it. Got {value!r} instead of its default {option.default!r}.",
                    UserWarning, stacklevel=4,
                )

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain JSON-able values (``inf`` norm written as ``"inf"``)."""
        out = dataclasses.asdict(self)
        if math.isinf(out["norm"]):
            out["norm"] = "inf"
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Rebuild a configuration from :meth:`to_dict` output; unknown keys raise a ValueError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"The keys of a {_OWNER} dict must be among its fields. Got unknown keys {unknown} instead."
            )
        return cls(**dict(data))


def _choice(name: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        raise _err(name, f"one of {list(choices)}", value)


def _field_defaults() -> dict[str, Any]:
    """``{field: default}`` of every :class:`TrainConfig` field (a fresh value for factory defaults)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


def _comparable(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with every missing field set to its default (configurations written before a field
    existed, e.g. without ``adv_train``, describe a run with its default) and a momentum equal to
    its optimiser's default written as ``None`` (the same run)."""
    out = {k: v for k, v in _field_defaults().items() if k not in config}
    out.update(config)
    default = DEFAULT_MOMENTUM.get(out.get("optimizer"))  # type: ignore[arg-type]
    if out.get("momentum") is not None and default is not None and out["momentum"] == default:
        out["momentum"] = None
    return out


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any], *, ignore: frozenset[str] = RESUME_FREE_KEYS) -> dict[str, tuple[Any, Any]]:
    """``{key: (old, new)}`` for every key whose value differs, except those in ``ignore``.

    A key missing from either side counts as the field's default (configurations written by older
    versions, before e.g. ``adv_train`` or ``augment`` existed, still match), and a momentum equal to
    the optimiser's default (:data:`DEFAULT_MOMENTUM`) counts as equal to ``None``: configurations
    written before the momentum was kept unresolved still match. The values reported are the given
    ones (the default for a missing key).

    Example:
        >>> old = {k: v for k, v in TrainConfig().to_dict().items() if k != "adv_train"}
        >>> config_differences(old, TrainConfig().to_dict())
        {}
        >>> config_differences(old, TrainConfig(adv_train="fgsm").to_dict())
        {'adv_train': ('none', 'fgsm')}
    """
    a, b = _comparable(old), _comparable(new)
    keys = (set(a) | set(b)) - set(ignore)
    return {k: (old.get(k, a.get(k)), new.get(k, b.get(k))) for k in sorted(keys) if a.get(k) != b.get(k)}
