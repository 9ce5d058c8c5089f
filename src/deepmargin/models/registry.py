"""Build a model of the zoo by name (used by training, checkpoints and the CLI)."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from .cnn import DigitsCNN, MnistCNN
from .lenet import MLP3x1000, LeNet5
from .mlp import MLP
from .wrn import WideResNet

_REGISTRY: dict[str, type[nn.Module]] = {
    "mnist_cnn": MnistCNN,
    "mlp": MLP,
    "digits_cnn": DigitsCNN,
    "wrn": WideResNet,
    "lenet5": LeNet5,
    "mlp3x1000": MLP3x1000,
}

#: Names accepted by :func:`build_model`.
MODELS: tuple[str, ...] = tuple(_REGISTRY)


def model_options(name: str) -> tuple[str, ...]:
    """Names of the extra keyword arguments that model ``name`` accepts (besides num_classes, input_shape)."""
    cls = _lookup(name)
    params = inspect.signature(cls.__init__).parameters
    return tuple(p for p in params if p not in ("self", "num_classes", "input_shape"))


def default_input_shape(name: str) -> tuple[int, ...]:
    """The ``input_shape`` model ``name`` of the zoo is built with when none is given.

    Example:
        >>> default_input_shape("digits_cnn")
        (1, 8, 8)
    """
    return tuple(inspect.signature(_lookup(name)).parameters["input_shape"].default)


def _lookup(name: str) -> type[nn.Module]:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"The 'name' parameter of build_model must be one of {list(MODELS)}. Got {name!r} instead.")
    return _REGISTRY[name]


def build_model(name: str, *, num_classes: int, input_shape: tuple[int, ...], **kwargs: Any) -> nn.Module:
    """Construct model ``name`` of the zoo with freshly initialised weights.

    Args:
        name: one of :data:`MODELS`: ``"mnist_cnn"`` (the paper's MNIST CNN, Elsayed et al. 2018,
            Section 4.2), ``"mlp"``, ``"digits_cnn"``, ``"wrn"`` (a wide residual network, Sec. 4.3),
            ``"lenet5"`` (LeNet-5, H, W >= 16) or ``"mlp3x1000"`` (the MLP 784-1000-1000-1000-10);
            the last two are the MNIST networks of Matyasko & Chau (2017).
        num_classes: number of output logits (>= 2).
        input_shape: one sample's shape without the batch axis, e.g. ``(1, 28, 28)``.
        **kwargs: model options, e.g. ``dropout=0.5``, ``batch_norm=True``,
            ``hidden_sizes=(64, 64)`` (mlp); see :func:`model_options`.

    Returns:
        The model (in training mode). Every model has an attribute ``hidden_layers`` with the
        names of its post-activation hidden layers; see :mod:`deepmargin.models.cnn` for the scheme.

    Example:
        >>> model = build_model("mlp", num_classes=2, input_shape=(2,), hidden_sizes=[8])
        >>> [name for name, _ in model.named_modules()][1:]
        ['flatten', 'fc1', 'relu1', 'fc2']
    """
    cls = _lookup(name)
    allowed = model_options(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(
            f"The keyword arguments of build_model for model {name!r} must be among {list(allowed)}. "
            f"Got {unknown} instead."
        )
    if isinstance(input_shape, list):
        input_shape = tuple(input_shape)
    if "hidden_sizes" in kwargs and isinstance(kwargs["hidden_sizes"], list):
        kwargs = {**kwargs, "hidden_sizes": tuple(kwargs["hidden_sizes"])}
    return cls(num_classes=num_classes, input_shape=input_shape, **kwargs)
