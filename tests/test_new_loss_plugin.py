"""Adding a method is one file: a loss registered from this test module alone trains through
`deepmargin train --loss NAME` and `deepmargin experiment --preset-file`, and is listed by
`deepmargin losses`, without any other file knowing its name."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepmargin.cli.main import main
from deepmargin.losses import LOSS_REGISTRY, LossOption, LossSpec, register_loss, unregister_loss
from deepmargin.losses.registry import positive_float
from deepmargin.training import TrainConfig

NAME = "toy_squared_hinge"


class ToySquaredHinge(nn.Module):
    """Squared hinge on the logit margin: mean_n max(0, m - (f_y - max_{i != y} f_i))^2."""

    def __init__(self, model: nn.Module, margin: float) -> None:
        super().__init__()
        self.model, self.margin = model, margin

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ToySquaredHinge.calls_total += 1
        logits = self.model(x)
        true = logits.gather(1, y[:, None]).squeeze(1)
        rival = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
        return F.relu(self.margin - (true - rival)).pow(2).mean(), logits

    calls_total = 0


@pytest.fixture
def toy_loss():
    spec = register_loss(LossSpec(
        name=NAME,
        summary="squared hinge on the logit margin (a test plug-in)",
        reference="this test",
        options=(LossOption("margin", 1.0, positive_float, "the logit margin"),),
        build=lambda model, o: ToySquaredHinge(model, o["margin"]),
        needs_input_grad=False,
    ))
    ToySquaredHinge.calls_total = 0
    yield spec
    unregister_loss(NAME)


def test_a_loss_registered_here_trains_through_the_cli(toy_loss, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["-q", "train", "--loss", NAME, "--loss-option", "margin=2.5", "--epochs", "2",
            "--train-fraction", "0.2", "--out", str(out)]
    assert main(argv) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["loss"] == NAME and saved["loss_options"] == {"margin": 2.5}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["loss"] == NAME for r in rows)
    assert ToySquaredHinge.calls_total > 0  # the training loop called our criterion
    # the squared hinge decreases on the training set
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    capsys.readouterr()
    assert main(["losses"]) == 0
    listing = capsys.readouterr().out
    assert f"{NAME}: squared hinge" in listing and "--loss-option margin=VALUE" in listing
    # bad option values get the registry's message, naming the loss
    assert main(["train", "--loss", NAME, "--loss-option", "margin=-1", "--out", str(tmp_path / "bad")]) == 2
    assert f"'margin' option of loss '{NAME}'" in capsys.readouterr().err


def test_a_loss_registered_here_runs_in_a_study_from_a_preset_file(toy_loss, tmp_path):
    preset = tmp_path / "toy.json"
    preset.write_text(json.dumps({"loss": NAME, "loss_options": {"margin": 1.5}, "optimizer": "adam"}))
    out = tmp_path / "study"
    argv = ["-q", "experiment", "noisy-labels", "--out", str(out), "--preset-file", str(preset), "--losses", "ce", "toy",
            "--seeds", "0", "--noise", "0", "--epochs", "1", "--grid", "none", "--jobs", "1", "--no-report",
            "--no-progress"]
    assert main(argv) == 0
    with open(out / "rows.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["loss"] for r in rows} == {"ce", "toy"}
    toy = [r for r in rows if r["loss"] == "toy"]
    assert len(toy) == 1 and 0.0 <= float(toy[0]["test_acc"]) <= 1.0
    results = sorted(out.rglob("results.json"))
    configs = [json.loads(p.read_text())["config"] for p in results]
    assert any(c["loss"] == NAME and c["loss_options"] == {"margin": 1.5} for c in configs)


def test_the_registry_is_the_only_list_of_losses(toy_loss):
    """TrainConfig, the train parser and the objective builder take the new name without being told."""
    assert NAME in LOSS_REGISTRY
    assert TrainConfig(loss=NAME).loss_options == {"margin": 1.0}
    from deepmargin.cli.main import build_parser

    parser, _ = build_parser()
    args = parser.parse_args(["train", "--loss", NAME])
    assert args.loss == NAME
    unregister_loss(NAME)
    with pytest.raises(ValueError, match="'loss' parameter of TrainConfig must be one of"):
        TrainConfig(loss=NAME)
