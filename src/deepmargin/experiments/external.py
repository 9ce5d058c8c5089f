"""Any classifier and its test data, for the commands that measure models (``--model-file`` / ``--model``).

A :class:`ModelSource` says where the classifier comes from and how to call it (the options of
:func:`deepmargin.models.external.load_classifier`, plus the input bounds); :func:`load_external`
reads it and its test inputs from a ``.npz`` file (:func:`read_test_npz`) and returns what
:func:`~deepmargin.experiments.checkpoints.load_checkpoints` and
:func:`~deepmargin.experiments.checkpoints.load_test_split` return for deepmargin's own
checkpoints: ``{name: model}``, ``x``, ``y``, the bounds and the dataset.

Example:
    >>> source = ModelSource(model_file="net.pt2", output_index=0, mean=(0.5,), std=(0.25,))
    >>> source.name
    'net'
    >>> models, x, y, bounds, dataset = load_external(source, "test.npz", n=100)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ..checks import param_error

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_BOUNDS", "ExternalModel", "ModelSource", "NpzTestSplit", "load_external", "read_test_npz"]

#: Input bounds of an external model's data when neither ``bounds`` nor the file gives them.
DEFAULT_BOUNDS = (0.0, 1.0)

#: The options of a source, with their command-line flags (for messages).
_FLAGS = {
    "model_file": "--model-file", "model": "--model", "weights": "--weights", "model_kwargs": "--model-kwargs",
    "input_shape": "--input-shape", "bounds": "--bounds", "mean": "--mean", "std": "--std",
    "output_index": "--output-index", "output_key": "--output-key",
}


@dataclass(frozen=True)
class ModelSource:
    """Where an external classifier comes from and how to call it: the ``--model-file`` / ``--model`` options.

    Args:
        model_file: a ``.pt2`` exported program or a TorchScript file.
        model: ``'package.module:callable'`` returning an ``nn.Module``.
        weights: a state dict for ``model`` (read with ``weights_only=True``).
        model_kwargs: keyword arguments of the callable.
        input_shape: one input's shape ``(C, H, W)`` or ``(D,)``; flat data is reshaped to it.
            Default: the data's per-sample shape.
        bounds: ``(low, high)`` of valid inputs. Default: the file's ``bounds``, else ``(0, 1)``.
        mean, std: per-channel normalisation put inside the model.
        output_index, output_key: where the logits are in a tuple/list or dict output.

    Give exactly one of ``model_file`` and ``model``. See
    :func:`~deepmargin.models.external.load_classifier`.
    """

    model_file: str | None = None
    model: str | None = None
    weights: str | None = None
    model_kwargs: Mapping[str, Any] | None = None
    input_shape: tuple[int, ...] | None = None
    bounds: tuple[float, float] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    output_index: int | None = None
    output_key: str | None = None

    def __post_init__(self) -> None:
        owner = "ModelSource"
        if (self.model_file is None) == (self.model is None):
            raise ValueError(
                f"Exactly one of the 'model_file' (--model-file) and 'model' (--model) parameters of {owner} must be "
                f"given. Got {'both' if self.model_file is not None else 'neither'} instead."
            )
        if self.model is not None and (not isinstance(self.model, str) or self.model.count(":") != 1):
            raise param_error(owner, "model", "'package.module:callable' (--model)", self.model)
        if self.model_kwargs is not None and not isinstance(self.model_kwargs, Mapping):
            raise param_error(owner, "model_kwargs", "None or a dict (--model-kwargs '{\"width\": 2}')",
                              self.model_kwargs, TypeError)
        if self.bounds is not None:
            bounds = tuple(self.bounds)
            if len(bounds) != 2 or any(isinstance(b, bool) or not isinstance(b, (int, float)) or math.isnan(b)
                                       for b in bounds) or not bounds[0] < bounds[1]:
                raise param_error(owner, "bounds", "two numbers (low, high) with low < high (--bounds LOW HIGH)",
                                  self.bounds)
            object.__setattr__(self, "bounds", (float(bounds[0]), float(bounds[1])))
        for name in ("input_shape", "mean", "std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))

    @classmethod
    def from_options(cls, **options: Any) -> ModelSource | None:
        """A source from keyword options (the parsed flags); ``None`` when none of them is set.

        Raises:
            ValueError: options that describe a model (``weights``, ``mean``...) without
                ``model_file`` or ``model``.
        """
        unknown = sorted(set(options) - set(_FLAGS))
        if unknown:
            raise TypeError(f"ModelSource.from_options got unknown options {unknown}; it knows {list(_FLAGS)}.")
        given = {k: v for k, v in options.items() if v is not None}
        if not given:
            return None
        if "model_file" not in given and "model" not in given:
            flags = " ".join(_FLAGS[k] for k in given)
            raise ValueError(
                f"The options {flags} describe an external model and need --model-file FILE or --model "
                f"MODULE:CALLABLE. Got neither instead."
            )
        return cls(**given)

    @property
    def name(self) -> str:
        """The model's name in rows: the file's stem, or the ``module:callable`` spec."""
        return Path(self.model_file).stem if self.model_file is not None else str(self.model)

    @property
    def why_not_certified(self) -> str:
        """Why ``deepmargin robustness`` skips the certified radii (the Lipschitz bound) for this source.

        Example:
            >>> ModelSource(model_file="net.pt").why_not_certified
            'the Lipschitz bound walks the layers of an nn.Module, and a TorchScript file (--model-file net.pt) holds a compiled graph'
        """
        walks = "the Lipschitz bound walks the layers of an nn.Module"
        if self.model is not None:
            return (f"{walks} in the order deepmargin's own models call them (chains and residual blocks of supported "
                    f"layers), and the forward of --model {self.model} may combine its layers in any other way, so a "
                    "bound for it would not be certain")
        if Path(self.model_file).suffix.lower() == ".pt2":
            return f"{walks}, and an exported program (--model-file {self.model_file}) is a flattened graph of operations"
        return f"{walks}, and a TorchScript file (--model-file {self.model_file}) holds a compiled graph"

    def record(self) -> dict[str, Any]:
        """Plain values for ``config.json`` (paths as given)."""
        out = asdict(self)
        for key in ("input_shape", "bounds", "mean", "std"):
            if out[key] is not None:
                out[key] = list(out[key])
        if out["model_kwargs"] is not None:
            out["model_kwargs"] = dict(out["model_kwargs"])
        return out

    def load(self, *, input_shape: Sequence[int] | None = None, device: str | torch.device = "cpu") -> nn.Module:
        """The classifier (:func:`~deepmargin.models.external.load_classifier`), checked on ``input_shape``."""
        from ..models.external import load_classifier

        shape = self.input_shape if self.input_shape is not None else input_shape
        return load_classifier(
            model_file=self.model_file, model=self.model, weights=self.weights, model_kwargs=self.model_kwargs,
            input_shape=shape, mean=self.mean, std=self.std, output_index=self.output_index,
            output_key=self.output_key, device=device,
        )


class NpzTestSplit(NamedTuple):
    """The test split of a ``.npz`` file (:func:`read_test_npz`)."""

    x: torch.Tensor
    y: torch.Tensor
    bounds: tuple[float, float]


class ExternalModel(NamedTuple):
    """What :func:`load_external` returns: ``{name: model}``, test inputs and labels, bounds, and the dataset (the file)."""

    models: dict[str, nn.Module]
    x: torch.Tensor
    y: torch.Tensor
    bounds: tuple[float, float]
    dataset: str


def read_test_npz(path: str | os.PathLike[str], *, bounds: Sequence[float] | None = None) -> NpzTestSplit:
    """``x_test`` and ``y_test`` of a ``.npz`` file, with the bounds of its inputs.

    A file with the training keys too (``x_train``, ``y_train``) is read and validated as a
    dataset (:func:`~deepmargin.data.read_npz_dataset`); a file with only ``x_test`` and
    ``y_test`` (and optionally ``bounds``) gets the same checks of those arrays. The bounds are
    ``bounds`` when given, else the file's ``bounds``, else :data:`DEFAULT_BOUNDS`; every test
    input must lie within them (an attack clips to them).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: (a :class:`~deepmargin.data.DatasetFileError`) the file is not a ``.npz``
            archive, lacks ``x_test``/``y_test``, holds malformed arrays, or inputs outside the bounds.
    """
    from ..data import DatasetFileError, NpzFileNotFoundError, is_npz_path
    from ..data.npz import read_npz_test_split

    if not is_npz_path(path):
        raise param_error("read_test_npz", "path", "a .npz file holding x_test and y_test (--data FILE.npz)", path)
    absolute = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    if not absolute.is_file():
        raise NpzFileNotFoundError(f"The .npz test data file '{absolute}' does not exist (or is not a regular file).")
    x, y, file_bounds = read_npz_test_split(absolute)
    if bounds is not None:
        chosen, origin = (float(bounds[0]), float(bounds[1])), "the bounds given (--bounds)"
    elif file_bounds is not None:
        chosen, origin = file_bounds, "the file's 'bounds'"
    else:
        chosen, origin = DEFAULT_BOUNDS, "the default bounds (pass --bounds LOW HIGH, or store 'bounds' in the file)"
    low, high = float(x.min()), float(x.max())
    if low < chosen[0] or high > chosen[1]:
        raise DatasetFileError(
            f"The .npz file '{absolute}' must hold test inputs within {origin} [{chosen[0]:g}, {chosen[1]:g}] "
            f"(an attack clips its inputs to them). Got 'x_test' values in [{low:g}, {high:g}] instead."
        )
    return NpzTestSplit(x, y, chosen)


def _fit_shape(x: torch.Tensor, input_shape: Sequence[int] | None, path: str) -> torch.Tensor:
    """``x`` reshaped to ``(N, *input_shape)`` when the sizes agree (flat data for a CNN); unchanged without a shape."""
    if input_shape is None or tuple(x.shape[1:]) == tuple(input_shape):
        return x
    size = math.prod(input_shape)
    if math.prod(x.shape[1:]) != size:
        raise param_error("load_external", "input_shape", f"a shape of {math.prod(x.shape[1:])} values per input "
                          f"like the inputs of '{path}' (shape {tuple(x.shape[1:])}) (--input-shape)",
                          tuple(input_shape))
    logger.info("reshaping the inputs of %s from %s to %s", path, tuple(x.shape[1:]), tuple(input_shape))
    return x.reshape(x.shape[0], *input_shape)


def _warn_if_wrong_output(source: ModelSource, data: Any, logits: torch.Tensor, y: torch.Tensor,
                          labels: torch.Tensor) -> None:
    """Warn when the chosen output does not look like the logits of the data's classes.

    Two signs: more outputs than the labels of the whole file have classes (features picked by
    --output-index/--output-key, or a model for another label set), and a clean accuracy at chance
    for the labels' classes (a wrong output, input shape, normalisation or bounds).
    """
    pick = ("--output-index" if source.output_index is not None else "--output-key" if source.output_key is not None
            else "--output-index/--output-key")
    outputs = int(logits.shape[1])
    file_classes = int(labels.max()) + 1 if len(labels) else 0
    if outputs > file_classes:
        logger.warning(
            "%s returns %d outputs per input, but the labels of %s have %d classes (0 to %d): if these outputs are "
            "not the logits of those classes (features, say), pick the logits with %s; the accuracy is measured "
            "over all %d outputs", source.name, outputs, data, file_classes, file_classes - 1, pick, outputs)
    if not len(y):
        return
    accuracy = float((logits.argmax(1) == y).double().mean())
    classes = max(2, len(torch.unique(labels)))
    if accuracy <= 1.5 / classes:
        logger.warning(
            "%s: clean accuracy %.4f on the first %d inputs of %s is near chance for its %d classes (1/%d = %.3f); "
            "check the output picked (%s), the input shape (--input-shape), the normalisation (--mean/--std) and "
            "the bounds (--bounds)", source.name, accuracy, len(y), data, classes, classes, 1 / classes, pick)


def load_external(
    source: ModelSource,
    data: str | os.PathLike[str] | None,
    *,
    n: int | None = None,
    device: str | torch.device = "cpu",
) -> ExternalModel:
    """An external classifier and its test data: ``(models, x, y, bounds, dataset)``.

    The test split is read from ``data`` (:func:`read_test_npz`, the bounds from ``source``,
    the file or ``(0, 1)``), reshaped to ``source.input_shape`` when it is flat; the model is
    loaded (:meth:`ModelSource.load`), checked on dummy batches of that shape, and must give a
    logit for every label of the file.

    Args:
        source: the model (see :class:`ModelSource`).
        data: a ``.npz`` file holding ``x_test`` and ``y_test`` (``--data FILE.npz``).
        n: keep the first ``n`` test inputs (default: all).
        device: where the model, ``x`` and ``y`` go.

    Returns:
        An :class:`ExternalModel`: ``models`` is ``{source.name: model}``; ``dataset`` is ``data`` as given.

    Raises:
        ValueError: no ``data`` or not a ``.npz`` file, malformed data, inputs outside the bounds,
            an ``input_shape`` of another size than the inputs, fewer logits than classes, and
            the errors of :func:`~deepmargin.models.external.load_classifier`.

    A warning (logged) says when the model returns more outputs than the file's labels have
    classes, or when its clean accuracy is at chance for those classes: signs of a wrong output
    picked (``--output-index``/``--output-key``), input shape, normalisation or bounds.
    """
    from ..data import is_npz_path

    if not isinstance(source, ModelSource):
        raise param_error("load_external", "source", "a ModelSource", type(source).__name__, TypeError)
    if data is None or not is_npz_path(data):
        raise param_error("load_external", "data", "a .npz file holding x_test and y_test (--data FILE.npz) for a "
                          "model given by --model-file or --model", None if data is None else str(data))
    test = read_test_npz(data, bounds=source.bounds)
    x, y = _fit_shape(test.x, source.input_shape, str(data)), test.y
    if n is not None:
        x, y = x[:n], y[:n]
    model = source.load(input_shape=tuple(x.shape[1:]), device=device)
    x, y = x.to(device), y.to(device)
    with torch.no_grad():
        logits = model(x[:256])
    classes = int(y.max()) + 1 if len(y) else 0
    if logits.shape[1] < classes:
        raise ValueError(
            f"The model {source.name!r} must return a logit for every class of '{data}' (labels up to {classes - 1}). "
            f"Got {logits.shape[1]} logits instead."
        )
    _warn_if_wrong_output(source, data, logits, y[:256], test.y)
    accuracy = float((logits.argmax(1) == y[:256]).double().mean()) if len(y) else math.nan
    logger.info("%s on %s: %d test inputs of shape %s, bounds %s, clean accuracy %.4f (first %d)",
                source.name, data, len(y), tuple(x.shape[1:]), test.bounds, accuracy, min(256, len(y)))
    return ExternalModel({source.name: model}, x, y, test.bounds, str(data))
