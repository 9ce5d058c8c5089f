"""Readers for dataset files on disk: IDX (MNIST, Fashion-MNIST) and CIFAR-10 python pickles.

Both readers validate the whole file before returning and raise
:class:`~deepmargin.data.errors.DatasetFileError` naming the file and the problem; they never
return a half-read array. Only numpy and the standard library are used (no torchvision).
"""

from __future__ import annotations

import gzip
import importlib
import logging
import os
import pickle
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DatasetFileError

__all__ = [
    "CIFAR10_FILES",
    "IDX_FILES",
    "find_dataset_dir",
    "read_cifar10_batch",
    "read_idx",
    "read_idx_images",
    "read_idx_labels",
]

logger = logging.getLogger(__name__)

#: The four IDX files of MNIST and Fashion-MNIST (each may also carry a ``.gz`` suffix).
IDX_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
#: The six CIFAR-10 python batches.
CIFAR10_FILES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)

_IDX_UBYTE = 0x08
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dims
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dim


def _read_bytes(path: Path) -> bytes:
    """The whole (decompressed, for ``.gz``) content of ``path``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        kind = "gzip file is truncated or corrupt" if path.suffix == ".gz" else "file could not be read"
        raise DatasetFileError(f"Could not read {path}: {kind} ({type(err).__name__}: {err}).") from err


def read_idx(path: str | os.PathLike[str], *, magic: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes (raw or gzip-compressed) into a uint8 array.

    Format (big-endian): ``0x00 0x00 <type> <ndim>``, then ``ndim`` uint32 sizes, then the
    data. Only the unsigned-byte type ``0x08`` is accepted. The data length must match the
    header exactly: a truncated file or trailing bytes are errors.

    Args:
        path: file path; a ``.gz`` suffix means gzip-compressed.
        magic: expected magic number (2051 for image files, 2049 for label files), or ``None``
            to accept any unsigned-byte IDX file.

    Returns:
        uint8 array with the shape given by the header.

    Raises:
        DatasetFileError: unreadable file, bad magic number or data length mismatch.

    Example:
        >>> images = read_idx("train-images-idx3-ubyte.gz", magic=2051)  # doctest: +SKIP
        >>> images.shape  # doctest: +SKIP
        (60000, 28, 28)
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DatasetFileError(f"Corrupt IDX file {path}: {len(raw)} bytes, shorter than the 4-byte magic number.")
    found_magic = int.from_bytes(raw[:4], "big")
    if magic is not None and found_magic != magic:
        raise DatasetFileError(
            f"Corrupt IDX file {path}: expected magic number {magic} (0x{magic:08x}), got {found_magic} (0x{found_magic:08x})."
        )
    if raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE or raw[3] == 0:
        raise DatasetFileError(
            f"Corrupt IDX file {path}: magic number 0x{found_magic:08x} is not an unsigned-byte IDX header (0x000008NN)."
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFileError(f"Corrupt IDX file {path}: {len(raw)} bytes, shorter than its {header}-byte header.")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise DatasetFileError(
            f"Corrupt IDX file {path}: header says shape {dims} ({expected} bytes in all) but the file has "
            f"{len(raw)} bytes ({'truncated' if len(raw) < expected else 'trailing data'})."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_idx_images(path: str | os.PathLike[str], *, image_shape: tuple[int, int] | None = (28, 28)) -> np.ndarray:
    """Read an IDX image file (magic 2051) as uint8 ``(N, H, W)``, checking ``(H, W)`` if given."""
    images = read_idx(path, magic=IDX_IMAGES_MAGIC)
    if images.ndim != 3:  # magic already fixes ndim = 3; kept for clarity
        raise DatasetFileError(f"Corrupt IDX file {path}: expected 3 dims, got shape {images.shape}.")
    if image_shape is not None and images.shape[1:] != tuple(image_shape):
        raise DatasetFileError(f"Unexpected IDX image file {path}: expected images of size {tuple(image_shape)}, got {images.shape[1:]}.")
    return images


def read_idx_labels(path: str | os.PathLike[str], *, num_classes: int = 10) -> np.ndarray:
    """Read an IDX label file (magic 2049) as uint8 ``(N,)``, checking labels lie in ``[0, num_classes - 1]``."""
    labels = read_idx(path, magic=IDX_LABELS_MAGIC)
    if labels.size and int(labels.max()) >= num_classes:
        raise DatasetFileError(
            f"Corrupt IDX label file {path}: labels must lie in [0, {num_classes - 1}], found {int(labels.max())}."
        )
    return labels


# --- CIFAR-10 ------------------------------------------------------------------------------


def _numpy_attr(module: str, name: str) -> Any:
    """``numpy[._]core.<module>.<name>`` under numpy 1 or 2, without deprecation warnings."""
    for prefix in ("numpy._core.", "numpy.core."):
        try:
            return getattr(importlib.import_module(prefix + module), name)
        except (ImportError, AttributeError):
            continue
    raise AttributeError(f"numpy has no {module}.{name}")


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that only builds plain containers and numpy arrays.

    CIFAR-10 batches are dicts of bytes keys, lists, ints and one uint8 ndarray. Any other
    global (a function or class that could run code) is refused instead of imported.
    """

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR-10 batch")
        if module == "numpy":
            return getattr(np, name)
        if module == "_codecs":
            import codecs

            return codecs.encode
        return _numpy_attr(module.rsplit(".", 1)[1], name)


def read_cifar10_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch into ``(images, labels)``.

    The batch is a pickled dict with ``b'data'`` (uint8 ``(N, 3072)``: 1024 red, then green,
    then blue values, each a row-major 32x32 image) and ``b'labels'`` (``N`` ints in
    ``[0, 9]``). It is unpickled with ``encoding='bytes'`` by a restricted unpickler that
    only builds containers and numpy arrays (other globals are refused).

    Args:
        path: path of ``data_batch_<i>`` or ``test_batch``.

    Returns:
        ``(images, labels)``: uint8 ``(N, 3, 32, 32)`` and int64 ``(N,)``.

    Raises:
        DatasetFileError: unreadable, truncated or unexpected content.

    Example:
        >>> x, y = read_cifar10_batch("cifar-10-batches-py/test_batch")  # doctest: +SKIP
        >>> x.shape, y.shape  # doctest: +SKIP
        ((10000, 3, 32, 32), (10000,))
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except OSError as err:
        raise DatasetFileError(f"Could not read CIFAR-10 batch {path}: {type(err).__name__}: {err}.") from err
    except Exception as err:  # any unpickling failure (truncation, garbage, refused global) is a bad file
        raise DatasetFileError(
            f"Corrupt CIFAR-10 batch {path}: not a readable python pickle of a batch dict ({type(err).__name__}: {err})."
        ) from err
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DatasetFileError(f"Corrupt CIFAR-10 batch {path}: expected a dict with keys b'data' and b'labels', got {keys}.")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetFileError(f"Corrupt CIFAR-10 batch {path}: b'data' must be a uint8 array of shape (N, 3072), got {desc}.")
    try:
        labels_arr = np.asarray(labels)
    except Exception as err:  # ragged or odd objects
        raise DatasetFileError(f"Corrupt CIFAR-10 batch {path}: b'labels' is not a list of ints ({err}).") from err
    if labels_arr.ndim != 1 or labels_arr.shape[0] != data.shape[0] or (labels_arr.size and labels_arr.dtype.kind not in "iu"):
        raise DatasetFileError(
            f"Corrupt CIFAR-10 batch {path}: b'labels' must hold {data.shape[0]} ints (one per image), "
            f"got {labels_arr.dtype} array of shape {labels_arr.shape}."
        )
    labels_arr = labels_arr.astype(np.int64)
    if labels_arr.size and (labels_arr.min() < 0 or labels_arr.max() > 9):
        raise DatasetFileError(
            f"Corrupt CIFAR-10 batch {path}: labels must lie in [0, 9], found [{labels_arr.min()}, {labels_arr.max()}]."
        )
    return data.reshape(-1, 3, 32, 32), labels_arr


# --- locating files ------------------------------------------------------------------------


def _resolve(directory: Path, name: str, allow_gz: bool) -> Path | None:
    for candidate in (name, name + ".gz") if allow_gz else (name,):
        path = directory / candidate
        if path.is_file():
            return path
    return None


def find_dataset_dir(
    dataset: str,
    root: Path,
    subdirs: Sequence[str],
    names: Sequence[str],
    *,
    allow_gz: bool,
    how_to_get: str,
) -> dict[str, Path]:
    """Find the first of ``root/<subdir>`` (in order; ``""`` is ``root`` itself) holding all ``names``.

    Returns:
        Mapping from each expected name to its path (raw preferred over ``.gz``).

    Raises:
        DatasetFileError: ``root`` is not a directory, or no candidate directory has every
            file. The message names the dataset, the directories searched, the expected file
            names, the files that were missing in the closest match, and ``how_to_get``.
    """
    if not root.is_dir():
        raise DatasetFileError(
            f"Dataset {dataset!r}: data root {str(root)!r} is not a directory. Expected the files "
            f"{', '.join(names)}{' (each raw or .gz)' if allow_gz else ''} in it or in one of its subfolders "
            f"{', '.join(s for s in subdirs if s)}. {how_to_get}"
        )
    searched: list[Path] = []
    best: tuple[int, Path, list[str]] | None = None
    for sub in subdirs:
        directory = root / sub if sub else root
        searched.append(directory)
        if not directory.is_dir():
            continue
        found = {name: _resolve(directory, name, allow_gz) for name in names}
        missing = [name for name, path in found.items() if path is None]
        if not missing:
            logger.debug("dataset %r: using files in %s", dataset, directory)
            return {name: path for name, path in found.items() if path is not None}
        if best is None or len(names) - len(missing) > best[0]:
            best = (len(names) - len(missing), directory, missing)
    partial = ""
    if best is not None and best[0] > 0:
        partial = f" {best[1]} has only some of them; missing: {', '.join(best[2])}."
    raise DatasetFileError(
        f"Dataset {dataset!r} not found. Searched {', '.join(str(d) for d in searched)} for the files "
        f"{', '.join(names)}{' (each raw or with a .gz suffix)' if allow_gz else ''}.{partial} {how_to_get}"
    )
