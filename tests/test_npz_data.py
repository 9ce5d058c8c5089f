"""The user's own dataset as a ``.npz`` file: reader, validation, the seeded pipeline and the CLI end to end."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from deepmargin.cli.main import main
from deepmargin.data import (
    DATASETS,
    DatasetFileError,
    NpzFileNotFoundError,
    is_npz_path,
    load_dataset,
    read_npz_dataset,
)
from deepmargin.training import TrainConfig, load_checkpoint, read_jsonl, train


# --- helpers -------------------------------------------------------------------------------


def _digits_arrays(dtype=np.float32) -> dict[str, np.ndarray]:
    """The digits pool and test split of ``load_dataset('digits')`` as npz arrays."""
    bundle = load_dataset("digits", val_size=0, seed=0)
    return {
        "x_train": bundle.train.x.numpy().astype(dtype),
        "y_train": bundle.train.y.numpy(),
        "x_test": bundle.test.x.numpy().astype(dtype),
        "y_test": bundle.test.y.numpy(),
    }


def _vectors(n_train: int = 60, n_test: int = 20, dim: int = 4, classes: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs in [0, 1) (every row distinct) with balanced labels."""
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.random((n_train, dim)),
        "y_train": np.arange(n_train) % classes,
        "x_test": rng.random((n_test, dim)),
        "y_test": np.arange(n_test) % classes,
    }


def _write(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with open(path, "wb") as f:  # through a file object: numpy.savez would append .npz to "x.NPZ"
        np.savez(f, **arrays)
    return path


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x}


# --- round trip ----------------------------------------------------------------------------


def test_round_trip_of_image_inputs(tmp_path):
    arrays = _digits_arrays(np.float64)
    path = _write(tmp_path / "My Digits.npz", arrays)
    bundle = load_dataset(str(path), val_size=0, seed=0)
    assert bundle.name == "My Digits"
    assert bundle.input_shape == (1, 8, 8) and bundle.num_classes == 10
    assert bundle.bounds == (0.0, 1.0) and bundle.classes == tuple(str(i) for i in range(10))
    for split, key in ((bundle.train, "train"), (bundle.test, "test")):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert torch.equal(split.x, torch.from_numpy(arrays[f"x_{key}"].astype(np.float32)))
        assert torch.equal(split.y, torch.from_numpy(arrays[f"y_{key}"]))
    assert len(bundle.val) == 0
    assert bundle.info["dataset"] == str(path) and bundle.info["file"] == str(path)
    assert bundle.info["val_from_file"] is False and bundle.info["bounds_from_file"] is False
    assert bundle.info["root"] is None
    assert DATASETS == ("digits", "mnist", "fashion-mnist", "cifar10", "moons", "spirals", "mnist-5k")


@pytest.mark.parametrize("x_dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("y_dtype", [np.uint8, np.int32, np.int64])
def test_float_and_integer_dtypes_are_converted(tmp_path, x_dtype, y_dtype):
    arrays = _vectors()
    arrays = {k: v.astype(x_dtype if k.startswith("x") else y_dtype) for k, v in arrays.items()}
    data = read_npz_dataset(_write(tmp_path / "d.npz", arrays))
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    np.testing.assert_array_equal(data.test.x.numpy(), arrays["x_test"].astype(np.float32))
    np.testing.assert_array_equal(data.test.y.numpy(), arrays["y_test"].astype(np.int64))
    assert data.num_classes == 3 and data.input_shape == (4,) and data.val is None


def test_bounds_are_inferred_or_read_from_the_file(tmp_path):
    arrays = _vectors()
    assert load_dataset(_write(tmp_path / "unit.npz", arrays), val_size=0).bounds == (0.0, 1.0)
    shifted = dict(arrays, x_test=arrays["x_test"] - 0.5)  # one split outside [0, 1] is enough
    unbounded = load_dataset(_write(tmp_path / "free.npz", shifted), val_size=0)
    assert unbounded.bounds is None and unbounded.info["bounds_from_file"] is False
    explicit = load_dataset(_write(tmp_path / "b.npz", dict(shifted, bounds=np.array([-1, 2]))), val_size=0)
    assert explicit.bounds == (-1.0, 2.0) and isinstance(explicit.bounds[0], float)
    assert explicit.info["bounds_from_file"] is True
    wide = load_dataset(_write(tmp_path / "w.npz", dict(arrays, bounds=np.array([-5.0, 5.0]))), val_size=0)
    assert wide.bounds == (-5.0, 5.0)  # the file's bounds win over the inferred [0, 1]


def test_class_names_come_from_the_file(tmp_path):
    names = np.array(["cat", "dog", "émeu"])
    bundle = load_dataset(_write(tmp_path / "c.npz", dict(_vectors(), classes=names)), val_size=0)
    assert bundle.classes == ("cat", "dog", "émeu") and bundle.num_classes == 3
    # more names than labels seen: the names fix the number of classes
    four = np.array(["a", "b", "c", "d"])
    assert read_npz_dataset(_write(tmp_path / "c4.npz", dict(_vectors(), classes=four))).num_classes == 4


def test_a_test_label_the_training_split_never_has_is_an_error_unless_classes_are_declared(tmp_path):
    """Issue 17, item 4: a label 4 only in y_test used to make a 5-class model silently (0% on it)."""
    arrays = _vectors(classes=2)
    arrays["y_test"] = arrays["y_test"].copy()
    arrays["y_test"][0] = 4
    with pytest.raises(DatasetFileError, match=r"labels in 'y_test' that 'y_train' has too.*\[0, 1\]\).*Got the label 4"):
        read_npz_dataset(_write(tmp_path / "d.npz", arrays))
    arrays["classes"] = np.array(["a", "b", "c", "d", "e"])  # the file declares its classes: accepted
    data = read_npz_dataset(_write(tmp_path / "declared.npz", arrays))
    assert data.num_classes == 5 and data.classes == ("a", "b", "c", "d", "e")


def test_number_of_classes_is_the_largest_training_label_plus_one(tmp_path):
    arrays = _vectors(classes=3)
    arrays["y_test"] = np.zeros_like(arrays["y_test"])  # the test split may miss classes
    data = read_npz_dataset(_write(tmp_path / "d.npz", arrays))
    assert data.num_classes == 3 and data.classes == ("0", "1", "2")


def test_the_file_validation_split_is_used(tmp_path):
    arrays = _vectors()
    rng = np.random.default_rng(1)
    arrays.update(x_val=rng.random((9, 4)), y_val=np.arange(9) % 3)
    path = _write(tmp_path / "v.npz", arrays)
    bundle = load_dataset(path, val_size=0.5, label_noise=0.2, seed=3)  # val_size is ignored
    assert bundle.info["val_from_file"] is True
    assert len(bundle.train) == 60 and bundle.info["sizes"] == {"train": 60, "val": 9, "test": 20}
    assert torch.equal(bundle.val.x, torch.from_numpy(arrays["x_val"].astype(np.float32)))
    assert torch.equal(bundle.val.y, torch.from_numpy(arrays["y_val"]))  # clean
    assert torch.equal(bundle.train.x, torch.from_numpy(arrays["x_train"].astype(np.float32)))
    assert bundle.info["n_flipped"] == 12 == int(bundle.flipped_mask.sum())
    # without x_val/y_val the validation split is held out of x_train
    held = load_dataset(_write(tmp_path / "nov.npz", _vectors()), val_size=0.25, seed=3)
    assert held.info["val_from_file"] is False and len(held.val) == 15 and len(held.train) == 45
    assert _rows(held.val.x).isdisjoint(_rows(held.train.x))
    assert _rows(held.val.x) | _rows(held.train.x) == _rows(torch.from_numpy(_vectors()["x_train"].astype(np.float32)))


# --- the seeded pipeline -------------------------------------------------------------------


@pytest.mark.parametrize(("val_size", "train_fraction", "label_noise", "seed"), [(0.1, 1.0, 0.0, 0), (0.2, 0.3, 0.25, 5)])
def test_pipeline_matches_the_builtin_dataset(tmp_path, val_size, train_fraction, label_noise, seed):
    """An npz holding the digits pool and test set gives exactly the bundle of load_dataset('digits')."""
    path = _write(tmp_path / "digits_copy.npz", _digits_arrays())
    kwargs = {"val_size": val_size, "train_fraction": train_fraction, "label_noise": label_noise, "seed": seed}
    mine, builtin = load_dataset(path, **kwargs), load_dataset("digits", **kwargs)
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(mine, part).x, getattr(builtin, part).x), part
        assert torch.equal(getattr(mine, part).y, getattr(builtin, part).y), part
    assert torch.equal(mine.train_clean_y, builtin.train_clean_y)
    for key in ("n_flipped", "n_train_before_subsample", "sizes", "val_size", "train_fraction", "label_noise", "seed"):
        assert mine.info[key] == builtin.info[key], key


def test_train_fraction_subsets_are_nested_and_label_noise_applies(tmp_path):
    path = _write(tmp_path / "v.npz", _vectors(n_train=200, classes=4))
    small, large, full = (load_dataset(path, train_fraction=f, seed=7) for f in (0.1, 0.4, 1.0))
    assert len(small.train) == math.floor(0.1 * 180) and len(large.train) == math.floor(0.4 * 180)
    assert _rows(small.train.x) < _rows(large.train.x) < _rows(full.train.x)
    assert torch.equal(small.val.x, full.val.x)  # the validation split does not depend on the fraction
    assert set(small.train.y.tolist()) == {0, 1, 2, 3}  # stratified
    other = load_dataset(path, train_fraction=0.4, seed=8)
    assert _rows(other.train.x) != _rows(large.train.x)

    noisy = load_dataset(path, label_noise=0.3, seed=7)
    assert torch.equal(noisy.train.x, full.train.x) and torch.equal(noisy.train_clean_y, full.train.y)
    assert int(noisy.flipped_mask.sum()) == round(0.3 * 180) == noisy.info["n_flipped"]
    assert torch.equal(noisy.val.y, full.val.y) and torch.equal(noisy.test.y, full.test.y)
    again = load_dataset(path, label_noise=0.3, seed=7)
    assert torch.equal(again.train.y, noisy.train.y)


def test_path_forms_and_is_npz_path(tmp_path, monkeypatch):
    path = _write(tmp_path / "Upper.NPZ", _vectors())
    monkeypatch.chdir(tmp_path)
    relative = load_dataset("Upper.NPZ", val_size=0)
    assert relative.name == "Upper" and relative.info["dataset"] == "Upper.NPZ"
    assert relative.info["file"] == str(path)
    assert torch.equal(load_dataset(Path("Upper.NPZ"), val_size=0).test.x, relative.test.x)
    assert is_npz_path("a/b.npz") and is_npz_path(Path("x.NpZ")) and is_npz_path("c:\\d\\e.npz")
    assert not is_npz_path("digits") and not is_npz_path("x.npz.gz") and not is_npz_path(3) and not is_npz_path(None)
    with pytest.raises(ValueError, match=r"must be a str in \('digits'.*or a path to a \.npz file\. Got 'x\.npy' instead"):
        load_dataset("x.npy")
    with pytest.raises(ValueError, match="'n_samples' parameter of load_dataset must be None"):
        load_dataset("Upper.NPZ", n_samples=10)


def test_file_is_read_once_per_mtime_and_closed(tmp_path, monkeypatch):
    path = _write(tmp_path / "cached.npz", _vectors())
    calls = []
    real_load = np.load

    def counting_load(*args, **kwargs):
        calls.append(args[0])
        assert kwargs.get("allow_pickle") is False
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", counting_load)
    first = load_dataset(path, val_size=0)
    first.train.x.add_(100.0)  # the caller's tensors are copies: the cache is not changed
    second = load_dataset(path, val_size=0.2, seed=1)
    assert len(calls) == 1
    assert float(second.train.x.max()) < 1.0 and float(read_npz_dataset(path).train.x.max()) < 1.0
    assert len(calls) == 1
    if os.path.isdir("/proc/self/fd"):
        open_files = {os.path.realpath(os.path.join("/proc/self/fd", fd)) for fd in os.listdir("/proc/self/fd")}
        assert os.path.realpath(path) not in open_files
    # a rewritten file (new mtime) is read again
    _write(path, _vectors(seed=1))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    third = load_dataset(path, val_size=0)
    assert len(calls) == 2
    np.testing.assert_array_equal(third.test.x.numpy(), _vectors(seed=1)["x_test"].astype(np.float32))


# --- malformed files -----------------------------------------------------------------------


def _without(arrays, *keys):
    return {k: v for k, v in arrays.items() if k not in keys}


def _with(arrays, **changes):
    return {**arrays, **changes}


_BASE = _vectors()
_NAN = _BASE["x_train"].copy()
_NAN[[1, 5, 7], 0] = np.nan
_INF = _BASE["x_test"].copy()
_INF[0, 0] = np.inf

MALFORMED = {
    "missing key": (_without(_BASE, "y_train"), "y_train",
                    r"must hold the key 'y_train'.*Got keys \['x_test', 'x_train', 'y_test'\]"),
    "x_val without y_val": (_with(_BASE, x_val=_BASE["x_test"]), "y_val", "'y_val' together with 'x_val'"),
    "y_val without x_val": (_with(_BASE, y_val=_BASE["y_test"]), "x_val", "'x_val' together with 'y_val'"),
    "mismatched lengths": (_with(_BASE, y_test=_BASE["y_test"][:-3]), "y_test", "Got 20 inputs and 17 labels"),
    "float labels": (_with(_BASE, y_train=_BASE["y_train"].astype(np.float64)), "y_train", "integer class labels.*float64"),
    "negative labels": (_with(_BASE, y_test=_BASE["y_test"] - 1), "y_test", r"labels in 0\.\.C-1.*7 negative labels"),
    "NaN inputs": (_with(_BASE, x_train=_NAN), "x_train", "finite inputs.*3 NaN and 0 inf"),
    "inf inputs": (_with(_BASE, x_test=_INF), "x_test", "0 NaN and 1 inf"),
    "int inputs": (_with(_BASE, x_test=(_BASE["x_test"] * 255).astype(np.uint8)), "x_test", "floating-point inputs.*uint8"),
    "shape mismatch": (_with(_BASE, x_test=np.zeros((20, 5))), "x_test", r"shape \(4,\) like 'x_train'\. Got \(5,\)"),
    "shape mismatch of val": (_with(_BASE, x_val=np.zeros((3, 2, 2)), y_val=np.zeros(3, np.int64)), "x_val", r"Got \(2, 2\)"),
    "empty train": (_with(_BASE, x_train=np.zeros((0, 4)), y_train=np.zeros(0, np.int64)), "x_train", "at least one sample"),
    "labels not 1-d": (_with(_BASE, y_train=_BASE["y_train"][:, None]), "y_train", r"shape \(N,\)"),
    "one class": (_with(_BASE, y_train=np.zeros(60, np.int64), y_test=np.zeros(20, np.int64)), "y_train", "at least 2 classes"),
    "object array": (_with(_BASE, classes=np.array(["a", 1, None], dtype=object)), "classes", "object array.*never unpickled"),
    "bad bounds": (_with(_BASE, bounds=np.array([1.0, 0.0])), "bounds", r"low < high in 'bounds'\. Got \[1\.0, 0\.0\]"),
    "inputs outside bounds": (_with(_BASE, bounds=np.array([0.0, 0.5])), "x_train", "within its 'bounds'"),
    "labels beyond classes": (_with(_BASE, classes=np.array(["a", "b"])), "y_train", r"labels in \[0, 1\]"),
}


def _match(path: Path, key: str, detail: str) -> str:
    """A regex that needs the file name, the quoted key and the detail, in any order."""
    return f"(?s)(?=.*{re.escape(str(path))})(?=.*'{re.escape(key)}')(?=.*{detail})"


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_file_is_refused_naming_file_and_key(tmp_path, case):
    arrays, key, detail = MALFORMED[case]
    if case == "object array":
        path = tmp_path / "bad.npz"
        np.savez(path, **arrays)  # savez pickles object arrays; the reader must refuse, not unpickle
    else:
        path = _write(tmp_path / "bad.npz", arrays)
    with pytest.raises(DatasetFileError, match=_match(path, key, detail)) as info:
        load_dataset(path)
    assert isinstance(info.value, ValueError)
    with pytest.raises(DatasetFileError, match=_match(path, key, detail)):
        read_npz_dataset(path)


def test_object_array_is_never_unpickled(tmp_path, monkeypatch):
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("unpickled")

    path = tmp_path / "obj.npz"
    np.savez(path, **_with(_BASE, x_train=np.array([object()] * 60, dtype=object)))
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    with pytest.raises(DatasetFileError, match=_match(path, "x_train", "object array")):
        read_npz_dataset(path)


def test_not_an_npz_file_and_missing_file(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("x_train, y_train\n1, 2\n")
    with pytest.raises(DatasetFileError, match=f"{re.escape(str(text))}' is not a readable \\.npz archive"):
        load_dataset(text)
    truncated = tmp_path / "cut.npz"
    truncated.write_bytes(_write(tmp_path / "whole.npz", _vectors()).read_bytes()[:300])
    with pytest.raises(DatasetFileError, match=re.escape(str(truncated))):
        load_dataset(truncated)
    single = tmp_path / "single.npz"
    with open(single, "wb") as f:
        np.save(f, np.zeros((3, 2)))
    single_match = f"(?s){re.escape(str(single))}.*'x_train'.*single \\.npy array of shape \\(3, 2\\)"
    with pytest.raises(DatasetFileError, match=single_match):
        load_dataset(single)
    missing = tmp_path / "nowhere" / "gone.npz"
    with pytest.raises(NpzFileNotFoundError, match=f"{re.escape(str(missing))}' does not exist") as info:
        load_dataset(missing)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    assert isinstance(info.value, DatasetFileError)
    with pytest.raises(NpzFileNotFoundError, match="is not a regular file"):
        read_npz_dataset(tmp_path)  # a directory


def test_unknown_keys_are_logged_not_fatal(tmp_path, caplog):
    path = _write(tmp_path / "extra.npz", _with(_BASE, x_valid=_BASE["x_test"]))
    with caplog.at_level("WARNING", logger="deepmargin.data.npz"):
        assert len(load_dataset(path, val_size=0).train) == 60
    assert "x_valid" in caplog.text


# --- training and the command line ---------------------------------------------------------


def test_cli_rejects_unknown_names_and_malformed_files(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--data", "imagenet"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "must be one of ['digits', 'mnist', 'fashion-mnist', 'cifar10', 'moons', 'spirals', 'mnist-5k'] or a path to a .npz file. " \
           "Got 'imagenet' instead." in err

    bad = _write(tmp_path / "broken.npz", _with(_BASE, y_train=_BASE["y_train"].astype(np.float32)))
    assert main(["-q", "train", "--data", str(bad), "--model", "mlp", "--epochs", "1", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("deepmargin train: error: The .npz file") and err.count("\n") == 1
    assert str(bad) in err and "'y_train'" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "last.pt").exists()
    assert main(["-q", "train", "--data", str(tmp_path / "absent.npz"), "--out", str(tmp_path / "r")]) == 2
    assert "absent.npz' does not exist" in capsys.readouterr().err


def test_cli_train_then_attack_and_robustness_on_an_npz(tmp_path, monkeypatch, capsys):
    """Images in an npz, given as a relative path: train a CNN, then attack and measure its checkpoint."""
    (tmp_path / "data").mkdir()
    arrays = _digits_arrays()
    rng = np.random.default_rng(0)
    val = rng.permutation(len(arrays["y_train"]))[:150]
    arrays.update(x_val=arrays["x_train"][val], y_val=arrays["y_train"][val],
                  classes=np.array([f"digit {i}" for i in range(10)]))
    _write(tmp_path / "data" / "digits8.npz", arrays)
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "train", "--data", "data/digits8.npz", "--model", "digits_cnn", "--epochs", "1",
                 "--batch-size", "64", "--seed", "1", "--out", "run"]) == 0
    config = json.loads(Path("run/config.json").read_text())
    assert config["dataset"] == "data/digits8.npz"  # stored exactly as given
    rows = read_jsonl(Path("run/metrics.jsonl"))
    assert len(rows) == 1 and rows[0]["dataset"] == "digits8" and rows[0]["val_acc"] is not None
    assert load_checkpoint(Path("run/best.pt"))["model_kwargs"]["input_shape"] == [1, 8, 8]
    results = json.loads(Path("run/results.json").read_text())
    assert results["test_acc"] > 0.3  # one epoch of a CNN on the digits is far above chance

    assert main(["-q", "attack", "run/best.pt", "--attacks", "fgsm", "--eps", "0", "0.1", "--n", "60",
                 "--out", "att", "--no-plot"]) == 0
    att = json.loads(Path("att/config.json").read_text())
    assert att["dataset"] == "data/digits8.npz" and att["bounds"] == [0.0, 1.0]
    assert main(["-q", "robustness", "run/best.pt", "--attack", "deepfool", "--steps", "5", "--norms", "l2",
                 "--n", "16", "--out", "rob", "--no-plot"]) == 0
    rob = json.loads(Path("rob/config.json").read_text())
    assert rob["dataset"] == "data/digits8.npz" and rob["bounds"] == [0.0, 1.0]

    # --data replaces the checkpoint's dataset: the test split of another file of the same shape
    other = _digits_arrays()
    other.update(x_test=other["x_test"][:40], y_test=other["y_test"][:40])
    _write(tmp_path / "data" / "other.npz", other)
    assert main(["-q", "attack", "run/best.pt", "--data", "data/other.npz", "--attacks", "fgsm", "--eps", "0",
                 "--out", "att2", "--no-plot"]) == 0
    assert json.loads(Path("att2/config.json").read_text())["dataset"] == "data/other.npz"
    assert {r["n"] for r in read_jsonl(Path("att2/rows.jsonl"))} == {40}
    assert main(["-q", "robustness", "run/best.pt", "--data", "data/other.npz", "--attack", "deepfool", "--steps", "3",
                 "--norms", "l2", "--out", "rob2", "--no-plot"]) == 0
    assert json.loads(Path("rob2/config.json").read_text())["dataset"] == "data/other.npz"
    assert "Traceback" not in capsys.readouterr().err


def test_train_on_unbounded_vectors_with_an_mlp(tmp_path, capsys):
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, (3, 5))

    def blobs(n):
        y = np.arange(n) % 3
        return (centers[y] + rng.normal(0, 1, (n, 5))).astype(np.float32), y.astype(np.int32)

    (x_tr, y_tr), (x_te, y_te) = blobs(240), blobs(60)
    path = _write(tmp_path / "blobs.npz", {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te})
    config = TrainConfig(dataset=str(path), model="mlp", model_kwargs={"hidden_sizes": [16]}, epochs=3,
                         batch_size=32, lr=1e-2, label_noise=0.1, train_fraction=0.5)
    result = train(config, tmp_path / "run", progress=False, verbose=False)
    assert result.test_acc > 0.6 and result.data_info["file"] == str(path)
    assert result.data_info["n_flipped"] == round(0.1 * math.floor(0.5 * 216))
    assert main(["-q", "robustness", str(tmp_path / "run" / "last.pt"), "--attack", "deepfool", "--steps", "5",
                 "--norms", "l2", "--n", "10", "--out", str(tmp_path / "rob"), "--no-plot"]) == 0
    bounds = json.loads((tmp_path / "rob" / "config.json").read_text())["bounds"]
    assert [float(b) for b in bounds] == [-math.inf, math.inf]  # unbounded: no clipping
