"""Every preset of the studies trains end to end on digits, through the CLI and through TrainConfig alike."""

from __future__ import annotations

import json
import math

import pytest

from deepmargin.cli.main import main
from deepmargin.experiments import PRESETS
from deepmargin.training import TrainConfig, train

SMALL = dict(dataset="digits", train_fraction=0.1, epochs=2, batch_size=32, seed=2, val_loss=False)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_trains_through_the_cli_and_the_api_to_the_same_numbers(name, tmp_path):
    out = tmp_path / "cli"
    argv = ["train", "--preset", name, "--train-fraction", "0.1", "--epochs", "2", "--batch-size", "32", "--seed", "2",
            "--no-val-loss", "--out", str(out)]
    assert main(argv) == 0
    fields = json.loads(json.dumps(dict(PRESETS[name].fields)))
    api = train(TrainConfig(**{**fields, **SMALL}), tmp_path / "api", verbose=False)
    cli_results = json.loads((out / "results.json").read_text())
    assert cli_results["config"] == api.config
    assert cli_results["test_acc"] == api.test_acc
    assert all(math.isfinite(r["train_loss"]) for r in api.history)
    assert api.config["loss"] == fields["loss"]
