"""dataset_from_config: the one place that rebuilds a run's dataset from its saved configuration."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from deepmargin.data import CONFIG_DEFAULTS, dataset_from_config, load_dataset


def _same(a, b) -> None:
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split).x, getattr(b, split).x)
        assert torch.equal(getattr(a, split).y, getattr(b, split).y)


def test_defaults_are_trainconfig_defaults():
    from deepmargin.training import TrainConfig

    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for key, value in CONFIG_DEFAULTS.items():
        assert fields[key] == value, key


def test_missing_and_none_keys_take_the_defaults():
    expected = load_dataset("digits", val_size=0.1, train_fraction=1.0, label_noise=0.0, seed=0)
    _same(dataset_from_config({"dataset": "digits"}), expected)
    _same(dataset_from_config({"dataset": "digits", "val_size": None, "seed": None, "label_noise": None}), expected)


def test_every_setting_is_read():
    config = {"dataset": "digits", "val_size": 0.2, "train_fraction": 0.5, "label_noise": 0.3, "seed": 3,
              "unlabelled": True}
    bundle = dataset_from_config(config)
    expected = load_dataset("digits", val_size=0.2, train_fraction=0.5, label_noise=0.3, seed=3, keep_unlabelled=True)
    _same(bundle, expected)
    assert bundle.unlabelled is not None and len(bundle.unlabelled) == len(expected.unlabelled)
    assert bundle.info["n_flipped"] == expected.info["n_flipped"] > 0


def test_toy_settings_n_samples_and_noise():
    bundle = dataset_from_config({"dataset": "moons", "n_samples": 40, "data_noise": 0.2, "seed": 2})
    expected = load_dataset("moons", n_samples=40, noise=0.2, seed=2)
    assert len(bundle.train) + len(bundle.val) == 40
    _same(bundle, expected)


def test_overrides_replace_the_config():
    config = {"dataset": "moons", "n_samples": 40, "seed": 2, "val_size": 0.25}
    _same(dataset_from_config(config, val_size=0.0, seed=5), load_dataset("moons", n_samples=40, val_size=0.0, seed=5))
    # another dataset keeps the other settings, and drops the toy-only ones when it is not a toy set
    _same(dataset_from_config(config, dataset="digits"), load_dataset("digits", val_size=0.25, seed=2))
    _same(dataset_from_config(config, dataset="spirals"), load_dataset("spirals", n_samples=40, val_size=0.25, seed=2))


def test_root_defaults_to_the_config_data_root(tmp_path):
    from deepmargin.data import DatasetFileError

    with pytest.raises(DatasetFileError):
        dataset_from_config({"dataset": "mnist", "data_root": str(tmp_path)})
    with pytest.raises(DatasetFileError):
        dataset_from_config({"dataset": "mnist", "data_root": None}, root=tmp_path)


def test_errors():
    with pytest.raises(ValueError, match=r"The 'config' parameter of dataset_from_config must record the dataset"):
        dataset_from_config({"seed": 0})
    with pytest.raises(TypeError, match=r"The 'config' parameter of dataset_from_config must be a mapping"):
        dataset_from_config(["digits"])
    with pytest.raises(TypeError, match=r"keyword arguments of dataset_from_config must be among .* Got \['data_noise'\]"):
        dataset_from_config({"dataset": "moons"}, data_noise=0.1)
    with pytest.raises(ValueError, match="'label_noise' parameter of load_dataset"):
        dataset_from_config({"dataset": "digits", "label_noise": 2.0})
