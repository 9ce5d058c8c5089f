"""The user's own dataset as one NumPy ``.npz`` archive: reader and validation.

The archive holds the arrays

* ``x_train``, ``y_train``, ``x_test``, ``y_test`` (required),
* ``x_val``, ``y_val`` (optional, both or neither),
* ``bounds``: two numbers ``(low, high)`` of valid inputs (optional),
* ``classes``: ``C`` class names (optional).

Inputs are floating-point arrays ``(N, ...)`` (float16/32/64, stored as float32) with the
same per-sample shape in every split; labels are integer arrays ``(N,)`` with values
``0..C-1``. The file is opened with ``allow_pickle=False`` (nothing is ever unpickled), read
completely and closed again; a validated file is kept in memory per ``(path, mtime, size)``,
so loading it again in the same process does not read it again.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> np.savez("mine.npz", x_train=rng.random((40, 3)), y_train=np.arange(40) % 2,
    ...          x_test=rng.random((10, 3)), y_test=np.arange(10) % 2)  # doctest: +SKIP
    >>> data = read_npz_dataset("mine.npz")  # doctest: +SKIP
    >>> data.input_shape, data.num_classes, data.bounds  # doctest: +SKIP
    ((3,), 2, (0.0, 1.0))
"""

from __future__ import annotations

import functools
import logging
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DatasetFileError
from .types import Split

__all__ = [
    "read_npz_test_split",
    "NPZ_OPTIONAL_KEYS",
    "NPZ_REQUIRED_KEYS",
    "NpzDataset",
    "NpzFileNotFoundError",
    "is_npz_path",
    "read_npz_dataset",
]

logger = logging.getLogger(__name__)

#: Arrays every dataset archive must hold.
NPZ_REQUIRED_KEYS: tuple[str, ...] = ("x_train", "y_train", "x_test", "y_test")
#: Arrays an archive may hold in addition (``x_val`` and ``y_val`` come together).
NPZ_OPTIONAL_KEYS: tuple[str, ...] = ("x_val", "y_val", "bounds", "classes")

_SPLITS = ("train", "val", "test")
_CACHE_SIZE = 2  # validated archives kept in memory (each read once per (path, mtime, size))


class NpzFileNotFoundError(DatasetFileError, FileNotFoundError):
    """The ``.npz`` dataset file does not exist (or is not a regular file).

    Both a :class:`~deepmargin.data.errors.DatasetFileError` (so a ``ValueError``) and a
    ``FileNotFoundError`` (so an ``OSError``): callers of either style catch it.
    """


@dataclass(frozen=True, eq=False)
class NpzDataset:
    """A validated ``.npz`` dataset, before the seeded split / subset / noise pipeline.

    Args:
        path: the absolute path of the file.
        train: ``x_train`` (float32) and ``y_train`` (int64).
        val: ``x_val`` and ``y_val``, or ``None`` when the file has no validation split.
        test: ``x_test`` and ``y_test``.
        num_classes: ``C``: ``len(classes)`` when the file names its classes, else the largest
            label over all splits plus one.
        input_shape: the per-sample shape shared by every ``x_*``.
        bounds: ``(low, high)`` of valid inputs: the file's ``bounds``, else ``(0.0, 1.0)``
            when every input lies in ``[0, 1]``, else ``None`` (unbounded).
        bounds_from_file: whether ``bounds`` came from the file's ``bounds`` key.
        classes: class names: the file's ``classes``, else ``("0", ..., "C-1")``.

    Example:
        >>> data = read_npz_dataset("mine.npz")  # doctest: +SKIP
        >>> data.train  # doctest: +SKIP
        Split(n=40, x=(40, 3) torch.float32, y=torch.int64)
    """

    path: Path
    train: Split
    val: Split | None
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    bounds: tuple[float, float] | None
    bounds_from_file: bool
    classes: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class _Arrays:
    """What the cache keeps: validated, read-only numpy arrays and the metadata."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    num_classes: int
    input_shape: tuple[int, ...]
    bounds: tuple[float, float] | None
    bounds_from_file: bool
    classes: tuple[str, ...]


def is_npz_path(name: object) -> bool:
    """Whether ``name`` (a str or path) names a ``.npz`` file: it ends with ``.npz``, in any case.

    Example:
        >>> is_npz_path("data/Mine.NPZ"), is_npz_path("digits")
        (True, False)
    """
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    return isinstance(name, str) and name.lower().endswith(".npz")


def read_npz_dataset(path: str | os.PathLike[str]) -> NpzDataset:
    """Read and validate a dataset stored as one ``.npz`` archive (see the module docstring).

    A relative ``path`` is taken relative to the current directory. The file is opened with
    ``allow_pickle=False``, read completely and closed. The validated arrays are cached per
    ``(absolute path, modification time, size)``: reading the same unchanged file again in the
    same process does not touch the disk, and a rewritten file is read again. Every call returns
    fresh tensors (changing them in place does not change what a later call returns).

    Args:
        path: the ``.npz`` file.

    Returns:
        An :class:`NpzDataset` (inputs float32, labels int64).

    Raises:
        NpzFileNotFoundError: the file does not exist (a ``DatasetFileError`` and a
            ``FileNotFoundError``).
        DatasetFileError: (a ``ValueError``) the file is not a readable ``.npz`` archive, a
            required key is missing, ``x_val`` comes without ``y_val`` (or the reverse), or an
            array is malformed: object arrays, non-float inputs, NaN or inf inputs, inputs whose
            per-sample shapes differ between splits, non-integer or negative labels, labels not
            ``(N,)`` or not as many as the inputs, an empty train or test split, fewer than two
            classes, bad ``bounds`` or ``classes``, inputs outside the file's ``bounds``. Each
            message names the file and the key.

    Example:
        >>> data = read_npz_dataset("mine.npz")  # doctest: +SKIP
        >>> data.input_shape, data.num_classes  # doctest: +SKIP
        ((3,), 2)
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"The 'path' parameter of read_npz_dataset must be a str or os.PathLike. Got {path!r} instead.")
    absolute = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    try:
        stat = absolute.stat()
    except FileNotFoundError:
        raise NpzFileNotFoundError(f"The .npz dataset file '{absolute}' does not exist.") from None
    except OSError as err:
        raise DatasetFileError(f"Could not read the .npz dataset file '{absolute}' ({type(err).__name__}: {err}).") from err
    if not absolute.is_file():
        raise NpzFileNotFoundError(f"The .npz dataset file '{absolute}' is not a regular file.")
    arrays = _read_cached(str(absolute), stat.st_mtime_ns, stat.st_size)
    splits = {split: _to_split(arrays, split) for split in _SPLITS if split in arrays.x}
    return NpzDataset(
        path=absolute,
        train=splits["train"],
        val=splits.get("val"),
        test=splits["test"],
        num_classes=arrays.num_classes,
        input_shape=arrays.input_shape,
        bounds=arrays.bounds,
        bounds_from_file=arrays.bounds_from_file,
        classes=arrays.classes,
    )


def read_npz_test_split(path: str | os.PathLike[str]) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float] | None]:
    """``(x_test, y_test, bounds or None)`` of a ``.npz`` file that may hold only the test split.

    A file with the training keys too is read and validated as a dataset (:func:`read_npz_dataset`;
    its bounds only when the file states them); a file with only ``x_test`` and ``y_test`` (and
    optionally ``bounds``) gets the same checks of those arrays.

    Raises:
        DatasetFileError: the file lacks ``x_test``/``y_test`` or holds malformed arrays.
    """
    absolute = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    raw = _read_arrays(absolute)
    if all(key in raw for key in NPZ_REQUIRED_KEYS):
        data = read_npz_dataset(absolute)
        return data.test.x, data.test.y, (data.bounds if data.bounds_from_file else None)
    missing = [key for key in ("x_test", "y_test") if key not in raw]
    if missing:
        raise DatasetFileError(
            f"The .npz file '{absolute}' must hold the keys 'x_test' and 'y_test' (test inputs and labels; "
            f"'x_train', 'y_train' and 'bounds' are optional). Got keys {sorted(raw)} instead."
        )
    x = torch.from_numpy(_check_inputs(str(absolute), "x_test", raw["x_test"]).copy())
    y = torch.from_numpy(_check_labels(str(absolute), "y_test", raw["y_test"]).copy())
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise DatasetFileError(
            f"The .npz file '{absolute}' must hold as many labels in 'y_test' as inputs in 'x_test', at least one. "
            f"Got {x.shape[0]} inputs and {y.shape[0]} labels instead."
        )
    return x, y, (_check_bounds(str(absolute), raw["bounds"]) if "bounds" in raw else None)


def _to_split(arrays: _Arrays, split: str) -> Split:
    """Fresh tensors (copies) of one cached split."""
    return Split(torch.from_numpy(arrays.x[split].copy()), torch.from_numpy(arrays.y[split].copy()))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _read_cached(path: str, mtime_ns: int, size: int) -> _Arrays:
    """Read and validate ``path``; the key includes ``mtime_ns`` and ``size`` so a changed file is read again."""
    raw = _read_arrays(Path(path))
    arrays = _validate(path, raw)
    logger.info(
        "read %s: %s; %d classes, input shape %s, bounds %s",
        path, ", ".join(f"{s}={len(arrays.y[s])}" for s in _SPLITS if s in arrays.y),
        arrays.num_classes, arrays.input_shape, arrays.bounds,
    )
    return arrays


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the archive, read with ``allow_pickle=False``; the file is closed on return."""
    try:
        archive = np.load(path, allow_pickle=False)
    except OSError as err:
        raise DatasetFileError(f"Could not read the .npz dataset file '{path}' ({type(err).__name__}: {err}).") from err
    except Exception as err:  # pickled data (refused), garbage, a truncated zip: not an .npz archive
        raise DatasetFileError(
            f"The file '{path}' is not a readable .npz archive (as written by numpy.savez); "
            f"numpy.load failed with {type(err).__name__}: {err}."
        ) from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        kind = f"a single .npy array of shape {archive.shape}" if isinstance(archive, np.ndarray) else type(archive).__name__
        raise DatasetFileError(
            f"The file '{path}' must be an .npz archive of named arrays (numpy.savez) holding the keys "
            f"{list(NPZ_REQUIRED_KEYS)}. Got {kind} instead."
        )
    out: dict[str, np.ndarray] = {}
    with archive:
        for key in archive.files:
            try:
                out[key] = archive[key]
            except ValueError as err:
                if "allow_pickle" in str(err) or "object arrays" in str(err).lower():
                    raise DatasetFileError(
                        f"The .npz file '{path}' must hold numeric arrays, but the key '{key}' holds an object array "
                        "(pickled Python objects), which is never unpickled. Save it as a numeric (or, for 'classes', "
                        "string) array instead."
                    ) from err
                raise DatasetFileError(f"The .npz file '{path}' has an unreadable key '{key}' ({err}).") from err
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
                raise DatasetFileError(
                    f"The .npz file '{path}' is truncated or corrupt: the key '{key}' could not be read "
                    f"({type(err).__name__}: {err})."
                ) from err
    return out


def _describe(array: np.ndarray) -> str:
    return f"{array.dtype} array of shape {array.shape}"


def _validate(path: str, raw: dict[str, np.ndarray]) -> _Arrays:  # noqa: C901 - one check after the other
    """The checks of :func:`read_npz_dataset`, in the order a user would fix them."""
    present = sorted(raw)
    missing = [key for key in NPZ_REQUIRED_KEYS if key not in raw]
    if missing:
        raise DatasetFileError(
            f"The .npz file '{path}' must hold the key{'s' if len(missing) > 1 else ''} {', '.join(repr(k) for k in missing)} "
            f"(required: {list(NPZ_REQUIRED_KEYS)}; optional: {list(NPZ_OPTIONAL_KEYS)}). Got keys {present} instead."
        )
    if ("x_val" in raw) != ("y_val" in raw):
        has, lacks = ("x_val", "y_val") if "x_val" in raw else ("y_val", "x_val")
        raise DatasetFileError(
            f"The .npz file '{path}' must hold the key '{lacks}' together with '{has}' (a validation split needs "
            f"both, or neither). Got keys {present} instead."
        )
    unknown = [key for key in present if key not in NPZ_REQUIRED_KEYS + NPZ_OPTIONAL_KEYS]
    if unknown:
        logger.warning("%s: ignoring the keys %s (known keys: %s)", path, unknown, list(NPZ_REQUIRED_KEYS + NPZ_OPTIONAL_KEYS))
    splits = [s for s in _SPLITS if f"x_{s}" in raw]

    xs: dict[str, np.ndarray] = {}
    ys: dict[str, np.ndarray] = {}
    for split in splits:
        xs[split] = _check_inputs(path, f"x_{split}", raw[f"x_{split}"])
        ys[split] = _check_labels(path, f"y_{split}", raw[f"y_{split}"])
        if xs[split].shape[0] != ys[split].shape[0]:
            raise DatasetFileError(
                f"The .npz file '{path}' must hold as many labels in 'y_{split}' as inputs in 'x_{split}'. "
                f"Got {xs[split].shape[0]} inputs and {ys[split].shape[0]} labels instead."
            )
    for split in ("train", "test"):
        if xs[split].shape[0] == 0:
            raise DatasetFileError(
                f"The .npz file '{path}' must hold at least one sample in 'x_{split}' and 'y_{split}'. Got 0 instead."
            )
    input_shape = tuple(int(d) for d in xs["train"].shape[1:])
    for split in splits:
        shape = tuple(int(d) for d in xs[split].shape[1:])
        if shape != input_shape:
            raise DatasetFileError(
                f"The .npz file '{path}' must hold inputs of one per-sample shape: 'x_{split}' must have samples of "
                f"shape {input_shape} like 'x_train'. Got {shape} (array shape {xs[split].shape}) instead."
            )

    classes = _check_classes(path, raw["classes"]) if "classes" in raw else None
    top = max(int(ys[s].max()) for s in splits if ys[s].size)
    if classes is not None:
        num_classes = len(classes)
        for split in splits:
            if ys[split].size and int(ys[split].max()) >= num_classes:
                raise DatasetFileError(
                    f"The .npz file '{path}' must hold labels in [0, {num_classes - 1}] in 'y_{split}' (its 'classes' "
                    f"names {num_classes} classes). Got the label {int(ys[split].max())} instead."
                )
    else:
        seen = np.unique(ys["train"])
        for split in splits:
            unseen = np.setdiff1d(np.unique(ys[split]), seen) if split != "train" else np.empty(0)
            if unseen.size:
                shown = seen.tolist() if seen.size <= 20 else f"{seen.size} classes from {seen.min()} to {seen.max()}"
                raise DatasetFileError(
                    f"The .npz file '{path}' must hold labels in 'y_{split}' that 'y_train' has too (without a 'classes' "
                    f"array, the classes are those of the training labels: {shown}). Got the label {int(unseen[0])} "
                    f"instead{f' (and {unseen.size - 1} more unseen)' if unseen.size > 1 else ''}; fix the labels, or "
                    "declare every class in a 'classes' array of names."
                )
        num_classes = top + 1
        if num_classes < 2:
            raise DatasetFileError(
                f"The .npz file '{path}' must hold labels of at least 2 classes in 'y_train', 'y_test'"
                f"{', y_val' if 'val' in splits else ''} (the number of classes is the largest label + 1). "
                f"Got only the label {top} instead."
            )

    if "bounds" in raw:
        bounds = _check_bounds(path, raw["bounds"])
        for split in splits:
            x = xs[split]
            outside = int(np.count_nonzero((x < bounds[0]) | (x > bounds[1])))
            if outside:
                raise DatasetFileError(
                    f"The .npz file '{path}' must hold inputs within its 'bounds' [{bounds[0]}, {bounds[1]}] in "
                    f"'x_{split}'. Got {outside} values outside (min {float(x.min())}, max {float(x.max())}) instead."
                )
        bounds_from_file = True
    else:
        in_unit = all(x.size == 0 or (float(x.min()) >= 0.0 and float(x.max()) <= 1.0) for x in xs.values())
        bounds = (0.0, 1.0) if in_unit else None
        bounds_from_file = False
    for array in (*xs.values(), *ys.values()):
        array.flags.writeable = False
    return _Arrays(
        x=xs,
        y=ys,
        num_classes=num_classes,
        input_shape=input_shape,
        bounds=bounds,
        bounds_from_file=bounds_from_file,
        classes=classes if classes is not None else tuple(str(i) for i in range(num_classes)),
    )


def _check_inputs(path: str, key: str, x: np.ndarray) -> np.ndarray:
    if x.dtype.kind != "f":
        hint = " (e.g. uint8 images as x.astype('float32') / 255)" if x.dtype.kind in "iub" else ""
        raise DatasetFileError(
            f"The .npz file '{path}' must hold floating-point inputs (float16, float32 or float64) in '{key}'{hint}. "
            f"Got {_describe(x)} instead."
        )
    if x.ndim < 2:
        raise DatasetFileError(
            f"The .npz file '{path}' must hold inputs of shape (N, ...) with at least one feature dimension in '{key}' "
            f"(one feature per sample: shape (N, 1)). Got {_describe(x)} instead."
        )
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(x32)
    if not finite.all():
        n_nan = int(np.count_nonzero(np.isnan(x32)))
        n_inf = int(x32.size - np.count_nonzero(finite) - n_nan)
        overflow = " after conversion to float32" if np.isfinite(x).all() else ""
        raise DatasetFileError(
            f"The .npz file '{path}' must hold finite inputs in '{key}'. Got {n_nan} NaN and {n_inf} inf values"
            f"{overflow} (of {x32.size}) instead."
        )
    return x32


def _check_labels(path: str, key: str, y: np.ndarray) -> np.ndarray:
    if y.dtype.kind not in "iu":
        hint = " (convert integer-valued floats with y.astype('int64'))" if y.dtype.kind == "f" else ""
        raise DatasetFileError(
            f"The .npz file '{path}' must hold integer class labels in '{key}'{hint}. Got {_describe(y)} instead."
        )
    if y.ndim != 1:
        raise DatasetFileError(
            f"The .npz file '{path}' must hold labels of shape (N,) (one class index per sample) in '{key}'. "
            f"Got {_describe(y)} instead."
        )
    if y.size and int(y.min()) < 0:
        n_neg = int(np.count_nonzero(y < 0))
        raise DatasetFileError(
            f"The .npz file '{path}' must hold labels in 0..C-1 in '{key}'. Got {n_neg} negative labels "
            f"(min {int(y.min())}) instead."
        )
    if y.dtype.kind == "u" and y.size and int(y.max()) > np.iinfo(np.int64).max:
        raise DatasetFileError(f"The .npz file '{path}' must hold labels in 0..C-1 in '{key}'. Got {int(y.max())} instead.")
    return np.ascontiguousarray(y, dtype=np.int64)


def _check_bounds(path: str, value: np.ndarray) -> tuple[float, float]:
    message = f"The .npz file '{path}' must hold 2 numbers (low, high) with low < high in 'bounds'. Got {{}} instead."
    if value.dtype.kind not in "iuf" or value.shape != (2,):
        raise DatasetFileError(message.format(_describe(value)))
    low, high = (float(v) for v in value)
    if np.isnan(low) or np.isnan(high) or not low < high:
        raise DatasetFileError(message.format([low, high]))
    return low, high


def _check_classes(path: str, value: np.ndarray) -> tuple[str, ...]:
    if value.dtype.kind not in "US" or value.ndim != 1:
        raise DatasetFileError(
            f"The .npz file '{path}' must hold the class names as a 1-d string array in 'classes'. "
            f"Got {_describe(value)} instead."
        )
    names = tuple(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in value.tolist())
    if len(names) < 2:
        raise DatasetFileError(
            f"The .npz file '{path}' must name at least 2 classes in 'classes'. Got {list(names)} instead."
        )
    return names
