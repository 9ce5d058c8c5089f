"""Tests for deepmargin.data: file readers, splits, subsets, label noise, loaders, load_dataset."""

from __future__ import annotations

import gzip
import json
import math
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from deepmargin.data import (
    CIFAR10_FILES,
    DATASETS,
    DIGITS_TEST_FRACTION,
    IDX_FILES,
    DataBundle,
    DatasetFileError,
    Split,
    corrupt_labels,
    load_dataset,
    make_loader,
    read_idx,
    stratified_split,
    subsample,
)

SEEDS = [0, 1, 2024]


# --- helpers: writing tiny dataset files ---------------------------------------------------


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _write(path: Path, payload: bytes, gz: bool) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def _write_mnist(directory: Path, *, gz: bool, n_train: int = 12, n_test: int = 7, seed: int = 0) -> dict[str, np.ndarray]:
    """Write the four IDX files with random content; return the arrays written."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        _write(directory / name, _idx_bytes(array, 2051 if "images" in name else 2049), gz)
    return arrays


def _cifar_batch(n: int, rng: np.random.Generator) -> dict:
    return {
        b"batch_label": b"test batch",
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"labels": [int(v) for v in rng.integers(0, 10, size=n)],
        b"filenames": [b"img%d.png" % i for i in range(n)],
    }


def _write_cifar(directory: Path, *, n: int = 3, seed: int = 0) -> dict[str, dict]:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    batches = {}
    for name in CIFAR10_FILES:
        batches[name] = _cifar_batch(n, rng)
        with open(directory / name, "wb") as f:
            pickle.dump(batches[name], f, protocol=2)
    return batches


def _rows(split: Split) -> Counter:
    """Multiset of (input bytes, label) pairs, to compare splits independently of order."""
    x = split.x.reshape(len(split), -1).numpy()
    return Counter((row.tobytes(), int(label)) for row, label in zip(x, split.y.tolist()))


def _labels_split(y: np.ndarray | list[int]) -> Split:
    y_t = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    return Split(torch.arange(len(y_t), dtype=torch.float32).unsqueeze(1), y_t)


def _indices(split: Split) -> np.ndarray:
    """The original indices of a split built by _labels_split."""
    return split.x[:, 0].numpy().astype(np.int64)


# --- IDX files ------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "name,subdir", [("mnist", ""), ("mnist", "MNIST/raw"), ("fashion-mnist", ""), ("fashion-mnist", "FashionMNIST/raw")]
)
def test_idx_dataset_round_trips_exactly(tmp_path: Path, gz: bool, name: str, subdir: str) -> None:
    arrays = _write_mnist(tmp_path / subdir, gz=gz)
    bundle = load_dataset(name, root=tmp_path, val_size=0)
    train_images = torch.from_numpy(arrays["train-images-idx3-ubyte"]).float().unsqueeze(1) / 255
    test_images = torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float().unsqueeze(1) / 255
    torch.testing.assert_close(bundle.train.x, train_images, rtol=0, atol=0)
    torch.testing.assert_close(bundle.test.x, test_images, rtol=0, atol=0)
    assert torch.equal((bundle.train.x * 255).round().to(torch.uint8).squeeze(1), torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert bundle.train.y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert bundle.test.y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert bundle.train.x.dtype == torch.float32 and bundle.train.y.dtype == torch.int64
    assert bundle.input_shape == (1, 28, 28) and bundle.bounds == (0.0, 1.0) and bundle.num_classes == 10
    assert len(bundle.val) == 0 and bundle.val.x.shape == (0, 1, 28, 28)
    assert bundle.info["root"] == str(tmp_path)
    assert len(bundle.info["files"]) == 4 and all(Path(f).parent == tmp_path / subdir for f in bundle.info["files"])
    json.dumps(bundle.info)  # JSON-able


def test_read_idx_any_shape(tmp_path: Path) -> None:
    array = np.random.default_rng(3).integers(0, 256, size=(2, 3, 4, 5), dtype=np.uint8)
    path = _write(tmp_path / "a.idx", _idx_bytes(array, 0x0804), gz=True)
    out = read_idx(path)
    assert out.shape == (2, 3, 4, 5) and out.dtype == np.uint8 and np.array_equal(out, array)


def test_idx_env_var_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = _write_mnist(tmp_path / "mnist", gz=True)
    fashion = _write_mnist(tmp_path / "fashion-mnist", gz=False, seed=1)
    monkeypatch.setenv("DEEPMARGIN_DATA", str(tmp_path))
    mnist_bundle = load_dataset("mnist", val_size=0)
    fashion_bundle = load_dataset("fashion_mnist", val_size=0)  # alias
    assert fashion_bundle.name == "fashion-mnist"
    assert mnist_bundle.test.y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert fashion_bundle.test.y.tolist() == fashion["t10k-labels-idx1-ubyte"].tolist()
    assert not torch.equal(mnist_bundle.train.x, fashion_bundle.train.x)


def test_no_root_and_no_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPMARGIN_DATA", raising=False)
    with pytest.raises(DatasetFileError, match="DEEPMARGIN_DATA"):
        load_dataset("mnist")
    with pytest.raises(DatasetFileError, match="data_batch_1"):
        load_dataset("cifar10")


def test_missing_idx_files_message_lists_expected_names(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetFileError) as info:
        load_dataset("mnist", root=tmp_path)
    message = str(info.value)
    assert "'mnist'" in message and str(tmp_path) in message and str(tmp_path / "MNIST" / "raw") in message
    for name in IDX_FILES:
        assert name in message
    assert "missing: t10k-labels-idx1-ubyte" in message
    assert "yann.lecun.com" in message


def test_missing_root_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetFileError, match="is not a directory"):
        load_dataset("fashion-mnist", root=tmp_path / "nope")


def _corrupt_truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1])


def _corrupt_trailing(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\x00")


def _corrupt_magic(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[2:4] = b"\x08\x01"  # 2049: a label file's magic in an image file
    path.write_bytes(bytes(raw))


def _corrupt_header(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:10])


@pytest.mark.parametrize(
    "corrupt,match",
    [
        (_corrupt_truncated, "truncated"),
        (_corrupt_trailing, "trailing data"),
        (_corrupt_magic, "expected magic number 2051"),
        (_corrupt_header, "shorter than its 16-byte header"),
    ],
)
def test_corrupt_raw_idx_raises(tmp_path: Path, corrupt, match: str) -> None:
    _write_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    corrupt(path)
    with pytest.raises(DatasetFileError, match=match) as info:
        load_dataset("mnist", root=tmp_path)
    assert str(path) in str(info.value)


def test_truncated_gzip_raises(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetFileError, match="truncated or corrupt") as info:
        load_dataset("mnist", root=tmp_path)
    assert str(path) in str(info.value)


def test_garbage_gzip_raises(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz=True)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(DatasetFileError, match="t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", root=tmp_path)


def test_idx_label_out_of_range_raises(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([0, 10] + [1] * 10, np.uint8), 2049))
    with pytest.raises(DatasetFileError, match=r"labels must lie in \[0, 9\], found 10"):
        load_dataset("mnist", root=tmp_path)


def test_idx_count_mismatch_raises(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz=False, n_train=12)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(11, np.uint8), 2049))
    with pytest.raises(DatasetFileError, match="has 12 images but .* has 11 labels"):
        load_dataset("mnist", root=tmp_path)


def test_idx_wrong_image_size_raises(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((7, 27, 28), np.uint8), 2051))
    with pytest.raises(DatasetFileError, match=r"expected images of size \(28, 28\), got \(27, 28\)"):
        load_dataset("mnist", root=tmp_path)


# --- CIFAR-10 pickles -------------------------------------------------------------------------


@pytest.mark.parametrize("subdir", ["cifar-10-batches-py", ""])
def test_cifar_round_trips_exactly(tmp_path: Path, subdir: str) -> None:
    batches = _write_cifar(tmp_path / subdir, n=3)
    bundle = load_dataset("cifar10", root=tmp_path, val_size=0)
    train_data = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    train_labels = sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert bundle.train.x.shape == (15, 3, 32, 32) and bundle.test.x.shape == (3, 3, 32, 32)
    assert bundle.input_shape == (3, 32, 32) and bundle.bounds == (0.0, 1.0)
    assert bundle.train.y.tolist() == train_labels
    assert bundle.test.y.tolist() == batches["test_batch"][b"labels"]
    # channel-major layout: the first 1024 values are the red plane, row-major
    red = torch.from_numpy(train_data[:, :1024].reshape(-1, 32, 32)).float() / 255
    blue_pixel_row2_col5 = torch.from_numpy(train_data[:, 2048 + 2 * 32 + 5].copy()).float() / 255
    torch.testing.assert_close(bundle.train.x[:, 0], red, rtol=0, atol=0)
    torch.testing.assert_close(bundle.train.x[:, 2, 2, 5], blue_pixel_row2_col5, rtol=0, atol=0)
    restored = (bundle.test.x * 255).round().to(torch.uint8).reshape(3, -1).numpy()
    assert np.array_equal(restored, batches["test_batch"][b"data"])


def test_cifar_numpy1_era_pickle_globals(tmp_path: Path) -> None:
    # the distributed batches were pickled under numpy 1.x, whose array global lives in numpy.core
    batches = _write_cifar(tmp_path, n=2)
    for name in CIFAR10_FILES:
        path = tmp_path / name
        raw = path.read_bytes()
        assert b"numpy._core.multiarray" in raw or b"numpy.core.multiarray" in raw
        path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    bundle = load_dataset("cifar10", root=tmp_path, val_size=0)
    restored = (bundle.test.x * 255).round().to(torch.uint8).reshape(2, -1).numpy()
    assert np.array_equal(restored, batches["test_batch"][b"data"])


def test_cifar_missing_batch_lists_names(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DatasetFileError) as info:
        load_dataset("cifar10", root=tmp_path)
    message = str(info.value)
    for name in CIFAR10_FILES:
        assert name in message
    assert "missing: data_batch_4" in message and "cifar-10-python.tar.gz" in message


def _rewrite_batch(path: Path, mutate) -> None:
    with open(path, "rb") as f:
        batch = pickle.load(f)
    mutate(batch)
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda b: b.pop(b"labels"), "expected a dict with keys b'data' and b'labels'"),
        (lambda b: b.__setitem__(b"data", b[b"data"][:, :3000]), r"shape \(N, 3072\)"),
        (lambda b: b.__setitem__(b"data", b[b"data"].astype(np.float32)), "must be a uint8 array"),
        (lambda b: b.__setitem__(b"labels", b[b"labels"][:-1]), "must hold 3 ints"),
        (lambda b: b.__setitem__(b"labels", [0, 1, 10]), r"labels must lie in \[0, 9\]"),
    ],
)
def test_cifar_bad_structure_raises(tmp_path: Path, mutate, match: str) -> None:
    _write_cifar(tmp_path)
    _rewrite_batch(tmp_path / "data_batch_2", mutate)
    with pytest.raises(DatasetFileError, match=match) as info:
        load_dataset("cifar10", root=tmp_path)
    assert "data_batch_2" in str(info.value)


def test_cifar_truncated_pickle_raises(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    path = tmp_path / "test_batch"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DatasetFileError, match="Corrupt CIFAR-10 batch .*test_batch"):
        load_dataset("cifar10", root=tmp_path)


class _Evil:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_cifar_pickle_with_foreign_global_is_refused(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    marker = tmp_path / "executed"
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Evil(marker), b"labels": []}, f, protocol=2)
    with pytest.raises(DatasetFileError, match="not allowed"):
        load_dataset("cifar10", root=tmp_path)
    assert not marker.exists()


# --- corrupt_labels ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.45, 0.8, 1.0])
def test_corrupt_labels_exact_count_and_changes(seed: int, fraction: float) -> None:
    y = torch.randint(0, 7, (503,), generator=torch.Generator().manual_seed(seed))
    y_before = y.clone()
    new, flipped = corrupt_labels(y, fraction, 7, seed=seed)
    assert torch.equal(y, y_before)  # input untouched
    assert new.dtype == y.dtype and flipped.dtype == torch.bool and new.shape == flipped.shape == (503,)
    assert int(flipped.sum()) == round(fraction * 503)
    assert bool((new[flipped] != y[flipped]).all())
    assert torch.equal(new[~flipped], y[~flipped])
    assert int(new.min()) >= 0 and int(new.max()) <= 6


@pytest.mark.parametrize("seed", SEEDS)
def test_corrupt_labels_deterministic_and_seed_dependent(seed: int) -> None:
    y = torch.arange(400) % 4
    a = corrupt_labels(y, 0.3, 4, seed=seed)
    b = corrupt_labels(y, 0.3, 4, seed=seed)
    c = corrupt_labels(y, 0.3, 4, seed=seed + 1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])  # 120 of 400 positions: equal masks have probability ~1e-100
    g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    assert torch.equal(corrupt_labels(y, 0.3, 4, seed=g1)[0], corrupt_labels(y, 0.3, 4, seed=g2)[0])
    # a generator advances: a second draw from the same generator differs
    assert not torch.equal(corrupt_labels(y, 0.3, 4, seed=g1)[1], corrupt_labels(y, 0.3, 4, seed=torch.Generator().manual_seed(seed))[1])


@pytest.mark.parametrize("seed", SEEDS)
def test_corrupt_labels_new_class_uniform_over_others(seed: int) -> None:
    num_classes, n = 5, 20_000
    y = torch.arange(n) % num_classes
    new, flipped = corrupt_labels(y, 0.5, num_classes, seed=seed)
    pairs = Counter(zip(y[flipped].tolist(), new[flipped].tolist()))
    # 10,000 flips, 2,000 per true class, 500 expected per (true, new) pair with new != true:
    # sd = sqrt(10_000 * p * (1 - p)) ~ 22 with p = 1/20; allow 8 sd.
    expected = 0.5 * n / (num_classes * (num_classes - 1))
    for true in range(num_classes):
        assert pairs[(true, true)] == 0
        for other in range(num_classes):
            if other != true:
                assert abs(pairs[(true, other)] - expected) < 8 * math.sqrt(expected), (true, other, pairs[(true, other)])
    # chosen samples are uniform over positions: each class is flipped about half of the time
    per_class = torch.bincount(y[flipped], minlength=num_classes).float()
    assert float((per_class - 2000).abs().max()) < 8 * math.sqrt(4000 * 0.25)


def test_corrupt_labels_two_classes_swaps() -> None:
    y = torch.tensor([0, 1] * 50)
    new, flipped = corrupt_labels(y, 1.0, 2, seed=0)
    assert bool(flipped.all()) and torch.equal(new, 1 - y)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"fraction": 1.5}, ValueError, r"The 'fraction' parameter of corrupt_labels must be a float in \[0, 1\]. Got 1.5 instead."),
        ({"fraction": -0.1}, ValueError, "'fraction'"),
        ({"num_classes": 1}, ValueError, r"'num_classes' parameter of corrupt_labels must be an int >= 2. Got 1"),
        ({"num_classes": 3}, ValueError, r"labels in \[0, num_classes - 1\] = \[0, 2\]. Got labels in \[0, 3\] instead."),
        ({"seed": -1}, ValueError, "'seed' parameter of corrupt_labels must be a non-negative int or a torch.Generator"),
        ({"seed": 1.5}, TypeError, "'seed'"),
        ({"y": torch.zeros(4)}, TypeError, "integer torch.Tensor"),
        ({"y": torch.zeros(2, 2, dtype=torch.int64)}, TypeError, r"shape \(N,\)"),
    ],
)
def test_corrupt_labels_errors(kwargs: dict, error: type, match: str) -> None:
    args = {"y": torch.tensor([0, 1, 2, 3]), "fraction": 0.5, "num_classes": 4, "seed": 0} | kwargs
    with pytest.raises(error, match=match):
        corrupt_labels(args.pop("y"), args.pop("fraction"), args.pop("num_classes"), **args)


# --- stratified_split and subsample -------------------------------------------------------------


IMBALANCED = [0] * 500 + [1] * 300 + [2] * 150 + [3] * 40 + [4] * 10


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("size", [0.1, 0.37, 250, 1])
def test_stratified_split_partition_and_proportions(seed: int, size: float | int) -> None:
    split = _labels_split(IMBALANCED)
    n = len(split)
    rest, held = stratified_split(split, size, seed=seed)
    expected_held = size if isinstance(size, int) else round(size * n)
    assert len(held) == expected_held and len(rest) == n - expected_held
    idx_rest, idx_held = _indices(rest), _indices(held)
    assert set(idx_rest).isdisjoint(idx_held) and sorted(np.concatenate([idx_rest, idx_held]).tolist()) == list(range(n))
    assert torch.equal(held.y, torch.as_tensor(IMBALANCED)[idx_held])  # labels travel with their inputs
    # Sainte-Lagues apportionment: each class within 1/2 + (K/2) * n_c / N of its exact share
    counts = np.bincount(held.y.numpy(), minlength=5)
    sizes = np.bincount(np.asarray(IMBALANCED), minlength=5)
    deviation = np.abs(counts - expected_held * sizes / n)
    assert np.all(deviation <= 0.5 + 2.5 * sizes / n + 1e-9), deviation
    again = stratified_split(split, size, seed=seed)
    assert np.array_equal(_indices(again[1]), idx_held)


def test_stratified_split_seed_changes_selection() -> None:
    split = _labels_split(IMBALANCED)
    a = _indices(stratified_split(split, 0.2, seed=0)[1])
    b = _indices(stratified_split(split, 0.2, seed=1)[1])
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("size", [1.0, -0.1, 1000, -1, "a", True])
def test_stratified_split_bad_size(size) -> None:
    with pytest.raises(ValueError, match=r"The 'size' parameter of stratified_split must be a float in \[0, 1\) or an int"):
        stratified_split(_labels_split(IMBALANCED), size, seed=0)


@pytest.mark.parametrize("seed", SEEDS)
def test_subsample_stratified_deterministic_nested(seed: int) -> None:
    split = _labels_split(IMBALANCED)
    n, sizes = len(split), np.bincount(np.asarray(IMBALANCED))
    fractions = [0.001, 0.01, 0.05, 0.2, 0.5, 0.9, 1.0]
    subsets = [subsample(split, f, seed=seed) for f in fractions]
    for f, sub in zip(fractions, subsets):
        m = len(sub)
        assert m == max(5, math.floor(f * n))
        counts = np.bincount(sub.y.numpy(), minlength=5)
        assert np.all(counts >= 1)  # every class kept
        assert np.all(np.abs(counts - m * sizes / n) <= 1 + 5 * sizes / n + 1e-9), (f, counts)
        assert np.array_equal(_indices(sub), _indices(subsample(split, f, seed=seed)))  # deterministic
    for small, big in zip(subsets, subsets[1:]):
        assert set(_indices(small)) <= set(_indices(big))  # nested
    assert not np.array_equal(_indices(subsets[3]), _indices(subsample(split, 0.2, seed=seed + 1)))


@pytest.mark.parametrize("seed", SEEDS)
def test_subsample_unstratified_nested(seed: int) -> None:
    split = _labels_split(IMBALANCED)
    small = subsample(split, 0.1, seed=seed, stratified=False)
    big = subsample(split, 0.3, seed=seed, stratified=False)
    assert len(small) == 100 and len(big) == 300 and set(_indices(small)) <= set(_indices(big))


def test_subsample_paper_count() -> None:
    # Elsayed et al. Sec. 4.2.2: 0.125% of the 55,000 MNIST training images is 68 samples
    split = _labels_split(np.arange(55_000) % 10)
    assert len(subsample(split, 0.00125, seed=0)) == 68


@pytest.mark.parametrize("fraction", [0.0, 1.1, float("nan"), "0.5"])
def test_subsample_bad_fraction(fraction) -> None:
    with pytest.raises(ValueError, match=r"The 'fraction' parameter of subsample must be a float in \(0, 1\]"):
        subsample(_labels_split([0, 1]), fraction, seed=0)


# --- load_dataset ------------------------------------------------------------------------------


def test_digits_shapes_range_and_partition() -> None:
    from sklearn.datasets import load_digits

    bundle = load_dataset("digits", seed=0)
    assert isinstance(bundle, DataBundle) and bundle.name == "digits"
    assert bundle.input_shape == (1, 8, 8) and bundle.num_classes == 10 and bundle.bounds == (0.0, 1.0)
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 8, 8)
        assert float(split.x.min()) >= 0.0 and float(split.x.max()) <= 1.0
    assert len(bundle.test) == round(DIGITS_TEST_FRACTION * 1797)
    assert len(bundle.val) == round(0.1 * (1797 - len(bundle.test)))
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 1797
    # the three splits partition the original data (as a multiset of (image, label) rows)
    digits = load_digits()
    full = Split(torch.from_numpy(digits.images / 16.0).float().unsqueeze(1), torch.from_numpy(digits.target).long())
    assert _rows(bundle.train) + _rows(bundle.val) + _rows(bundle.test) == _rows(full)
    assert bundle.info["sizes"] == {"train": len(bundle.train), "val": len(bundle.val), "test": len(bundle.test)}
    json.dumps(bundle.info)


def test_digits_test_set_independent_of_seed() -> None:
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=7, val_size=0.3, train_fraction=0.2, label_noise=0.5)
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.test.y, b.test.y)
    assert _rows(a.val) != _rows(load_dataset("digits", seed=1).val)  # the validation split does depend on the seed


def test_train_fraction_nested_and_independent_of_noise() -> None:
    subsets = [load_dataset("digits", seed=3, train_fraction=f) for f in (0.05, 0.2, 0.6)]
    for small, big in zip(subsets, subsets[1:]):
        assert not (_rows(small.train) - _rows(big.train))  # multiset inclusion
    assert len(subsets[0].train) == math.floor(0.05 * subsets[0].info["n_train_before_subsample"])
    noisy = load_dataset("digits", seed=3, train_fraction=0.2, label_noise=0.6)
    assert torch.equal(noisy.train.x, subsets[1].train.x)  # same subset whatever the noise level


@pytest.mark.parametrize("label_noise", [0.2, 0.8])
def test_label_noise_only_touches_train(label_noise: float) -> None:
    clean = load_dataset("digits", seed=5, train_fraction=0.5)
    noisy = load_dataset("digits", seed=5, train_fraction=0.5, label_noise=label_noise)
    for a, b in ((clean.val, noisy.val), (clean.test, noisy.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert torch.equal(clean.train.x, noisy.train.x)
    changed = noisy.train.y != clean.train.y
    assert int(changed.sum()) == round(label_noise * len(clean.train)) == noisy.info["n_flipped"]
    assert torch.equal(noisy.train_clean_y, clean.train.y) and torch.equal(noisy.flipped_mask, changed)
    assert clean.info["n_flipped"] == 0 and not bool(clean.flipped_mask.any())


@pytest.mark.parametrize("name", ["moons", "spirals"])
def test_toy_sets(name: str) -> None:
    bundle = load_dataset(name, seed=0, n_samples=400, val_size=0.25)
    assert bundle.input_shape == (2,) and bundle.bounds is None and bundle.num_classes == 2
    assert bundle.train.x.shape == (300, 2) and bundle.val.x.shape == (100, 2) and bundle.test.x.shape == (400, 2)
    assert bundle.train.x.dtype == torch.float32 and set(bundle.train.y.tolist()) == {0, 1}
    # standardised with a fixed reference draw: the test set is close to zero mean, unit std
    # (sd of the mean of 400 standardised points is 0.05; bounds are > 6 sd)
    assert float(bundle.test.x.mean(0).abs().max()) < 0.3
    assert 0.7 < float(bundle.test.x.std(0).min()) and float(bundle.test.x.std(0).max()) < 1.3
    other = load_dataset(name, seed=1, n_samples=400, val_size=0.25)
    assert torch.equal(bundle.test.x, other.test.x)  # fixed test set
    assert not torch.equal(bundle.train.x, other.train.x)  # the seed draws a new pool
    again = load_dataset(name, seed=0, n_samples=400, val_size=0.25)
    assert torch.equal(bundle.train.x, again.train.x) and torch.equal(bundle.val.y, again.val.y)
    jittered = load_dataset(name, seed=0, n_samples=400, val_size=0.25, noise=0.3)
    assert jittered.info["noise"] == 0.3 and not torch.equal(jittered.test.x, bundle.test.x)


def test_default_toy_size() -> None:
    bundle = load_dataset("moons")
    assert len(bundle.train) + len(bundle.val) == 300 == len(bundle.test)


def test_datasets_tuple() -> None:
    assert DATASETS == ("digits", "mnist", "fashion-mnist", "cifar10", "moons", "spirals", "mnist-5k")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"name": "imagenet"}, r"The 'name' parameter of load_dataset must be a str in \('digits'"),
        ({"train_fraction": 0.0}, r"The 'train_fraction' parameter of load_dataset must be a float in \(0, 1\]. Got 0.0 instead."),
        ({"train_fraction": 1.5}, "'train_fraction'"),
        ({"label_noise": 1.01}, r"The 'label_noise' parameter of load_dataset must be a float in \[0, 1\]"),
        ({"val_size": 1.0}, r"The 'val_size' parameter of load_dataset must be a float in \[0, 1\) or an int >= 0. Got 1.0"),
        ({"val_size": -3}, "'val_size'"),
        ({"val_size": 5000}, "must be smaller than the 1438 training samples"),
        ({"n_samples": 100}, "'n_samples' parameter of load_dataset must be None for dataset 'digits'"),
        ({"name": "moons", "n_samples": 1}, "'n_samples' parameter of load_dataset must be an int >= 2"),
        ({"name": "spirals", "noise": -0.1}, "'noise' parameter of load_dataset must be a float >= 0"),
        ({"seed": -1}, "'seed' parameter of load_dataset must be a non-negative int"),
    ],
)
def test_load_dataset_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"name": "digits"} | kwargs
    with pytest.raises(ValueError, match=match):
        load_dataset(args.pop("name"), **args)


# --- Split and make_loader ------------------------------------------------------------------------


def test_split_validation() -> None:
    with pytest.raises(ValueError, match="same length"):
        Split(torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(TypeError, match="int64"):
        Split(torch.zeros(3, 2), torch.zeros(3, dtype=torch.int32))
    with pytest.raises(TypeError, match="floating-point"):
        Split(torch.zeros(3, 2, dtype=torch.int64), torch.zeros(3, dtype=torch.int64))


def _batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


@pytest.mark.parametrize("seed", SEEDS)
def test_make_loader_deterministic(seed: int) -> None:
    split = Split(torch.randn(50, 3), torch.arange(50) % 3)
    first = make_loader(split, batch_size=8, shuffle=True, seed=seed)
    second = make_loader(split, batch_size=8, shuffle=True, seed=seed)
    epoch_a, epoch_b = _batches(first), _batches(second)
    assert [len(y) for _, y in epoch_a] == [8] * 6 + [2]
    for (xa, ya), (xb, yb) in zip(epoch_a, epoch_b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    order = torch.cat([x for x, _ in epoch_a])
    assert sorted(map(tuple, order.tolist())) == sorted(map(tuple, split.x.tolist()))  # each sample once
    assert not torch.equal(order, split.x)  # shuffled (50! orders: equality has probability 3e-65)
    assert not torch.equal(torch.cat([x for x, _ in _batches(first)]), order)  # new order next epoch
    other = torch.cat([x for x, _ in make_loader(split, batch_size=8, shuffle=True, seed=seed + 1)])
    assert not torch.equal(other, order)


def test_make_loader_sequential_and_drop_last() -> None:
    split = Split(torch.randn(10, 2), torch.arange(10) % 2)
    loader = make_loader(split, batch_size=4, shuffle=False, drop_last=True)
    batches = _batches(loader)
    assert len(batches) == 2 and torch.equal(torch.cat([x for x, _ in batches]), split.x[:8])
    with pytest.raises(ValueError, match=r"The 'batch_size' parameter of make_loader must be an int >= 1. Got 0 instead."):
        make_loader(split, batch_size=0, shuffle=False)


@pytest.mark.parametrize("name", ["moons", "spirals"])
@pytest.mark.parametrize("seed", [0, 1, 2018, 1797])
def test_toy_training_points_never_are_the_test_points(name, seed):
    bundle = load_dataset(name, seed=seed, val_size=0.0)
    assert not torch.equal(bundle.train.x, bundle.test.x)
    # no training point is a test point
    dist = torch.cdist(bundle.train.x.double(), bundle.test.x.double())
    assert dist.min() > 0
