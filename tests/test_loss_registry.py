"""The loss registry: options resolved and checked, training and resuming with registered losses, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from deepmargin.cli.main import main
from deepmargin.experiments import PRESETS, StudyOptions, build_plan
from deepmargin.losses import LOSS_REGISTRY, LossSpec, register_loss, resolve_loss_options
from deepmargin.training import TrainConfig, train
from deepmargin.training.adversarial import craft
from deepmargin.training.config import config_differences

COMMON = dict(dataset="digits", epochs=1, train_fraction=0.15, batch_size=32, seed=1)


def test_the_seed_methods_are_registered_with_their_options():
    assert {"matyasko", "input_gradient", "vat"} <= set(LOSS_REGISTRY)
    assert resolve_loss_options("matyasko", {}) == {"C": 0.1, "norm": 2, "margin": 1.0}
    assert resolve_loss_options("input_gradient", {"norm": math.inf, "eps": 1}) == {"eps": 1.0, "norm": "inf", "lipschitz": 0.0}
    with pytest.raises(ValueError, match="unknown \\['gamma'\\]"):
        resolve_loss_options("vat", {"gamma": 1.0})
    with pytest.raises(ValueError, match="'norm' option of loss 'matyasko'.*1, 2 or 'inf'.*Got 3"):
        resolve_loss_options("matyasko", {"norm": 3})
    with pytest.raises(ValueError, match="'C' option.*>= 0.*Got -1"):
        TrainConfig(loss="matyasko", loss_options={"C": -1})
    with pytest.raises(ValueError, match="'loss_options'.*empty for loss 'margin'"):
        TrainConfig(loss="margin", loss_options={"C": 1})
    with pytest.raises(ValueError, match="already taken"):
        register_loss(LossSpec("margin", "", "", (), lambda model, o: None))


@pytest.mark.parametrize("loss", ["matyasko", "input_gradient", "vat"])
def test_each_registered_loss_trains_and_records_its_resolved_options(loss, tmp_path):
    result = train(TrainConfig(loss=loss, **COMMON), tmp_path / loss, verbose=False)
    saved = json.loads((tmp_path / loss / "config.json").read_text())
    assert saved["loss"] == loss and saved["loss_options"] == resolve_loss_options(loss, {})
    assert math.isfinite(result.history[0]["train_loss"]) and result.history[0]["val_loss"] is not None


def test_a_registered_loss_resumes_to_the_same_numbers(tmp_path):
    kw = dict(COMMON, loss="input_gradient", loss_options={"eps": 0.2, "lipschitz": 0.1})
    full = train(TrainConfig(**{**kw, "epochs": 2}), tmp_path / "full", verbose=False)
    train(TrainConfig(**kw), tmp_path / "cut", verbose=False)
    resumed = train(TrainConfig(**{**kw, "epochs": 2}), tmp_path / "cut", resume=True, verbose=False)
    assert resumed.resumed_from == 1
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_configurations_written_before_the_registry_still_match():
    old = TrainConfig(loss="margin", gamma=1.0).to_dict()
    old.pop("loss_options")
    assert TrainConfig.from_dict(old) == TrainConfig(loss="margin", gamma=1.0)
    assert config_differences(old, TrainConfig(loss="margin", gamma=1.0).to_dict()) == {}


def test_the_cli_takes_registered_losses_and_lists_them(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["-q", "train", "--loss", "matyasko", "--loss-option", "norm=inf", "--loss-option", "C=0.05",
                 "--epochs", "1", "--train-fraction", "0.15", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["loss_options"] == {"C": 0.05, "norm": "inf", "margin": 1.0}
    # --config with another --loss drops the file's options
    assert main(["-q", "train", "--config", str(out / "config.json"), "--loss", "vat", "--epochs", "1",
                 "--out", str(tmp_path / "vat")]) == 0
    assert json.loads((tmp_path / "vat" / "config.json").read_text())["loss_options"]["eps"] == 1.0
    capsys.readouterr()
    assert main(["train", "--loss", "vat", "--loss-option", "foo=1", "--out", str(tmp_path / "x")]) == 2
    assert "unknown ['foo']" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["train", "--loss", "vat", "--loss-option", "nokey", "--out", str(tmp_path / "x")])
    assert stop.value.code == 2 and "must be KEY=VALUE" in capsys.readouterr().err
    assert main(["losses"]) == 0
    listing = capsys.readouterr().out
    for name in ("ce", "hinge", "margin", *LOSS_REGISTRY):
        assert f"\n{name}:" in "\n" + listing
    assert "power_iterations" in listing and "lipschitz" in listing


def test_l2_adversarial_training_steps_along_the_normalised_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3)).double()
    x = torch.randn(6, 5, dtype=torch.float64)
    eps = torch.rand(6, dtype=torch.float64)
    x_adv, y_pred = craft(model, x, eps, method="l2", bounds=None)
    torch.testing.assert_close((x_adv - x).norm(dim=1), eps)
    xg = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(nn.functional.cross_entropy(model(xg), y_pred, reduction="sum"), xg)
    torch.testing.assert_close(x_adv - x, eps[:, None] * grad / grad.norm(dim=1, keepdim=True))
    assert TrainConfig(adv_train="l2").adv_train == "l2"


def test_the_new_presets_resolve_in_a_study_plan(tmp_path):
    names = ("matyasko-l1", "matyasko-l2", "j1", "j2", "tulip", "vat")
    assert set(names) <= set(PRESETS)
    plan = build_plan(StudyOptions(studies=("noisy-labels",), losses=names, seeds=(0,), noise_levels=(0.0,), grid="none"))
    losses = {c.config["loss"] for c in plan.cells.values()}
    assert losses == {"matyasko", "input_gradient", "vat"}
    tulip = next(c for c in plan.cells.values() if c.id.startswith("train/tulip/"))
    assert tulip.config["loss_options"] == {"eps": 0.1, "norm": 2, "lipschitz": 0.1}


def test_the_reduced_grid_searches_the_weights_of_the_registered_losses():
    plan = build_plan(StudyOptions(studies=("noisy-labels",), losses=("ce", "matyasko-l2", "tulip", "vat"), seeds=(0,),
                                   noise_levels=(0.0,)))
    options = {}
    for cell in plan.cells.values():
        options.setdefault(cell.id.split("/")[1], []).append((cell.config["loss_options"], cell.config["model_kwargs"].get("dropout")))
    assert sorted({o["C"] for o, _ in options["matyasko-l2"]}) == [0.03, 0.1]
    assert all(o["norm"] == 2 for o, _ in options["matyasko-l2"])
    assert sorted({o["eps"] for o, _ in options["tulip"]}) == [0.03, 0.1] and all(o["lipschitz"] == 0.1 for o, _ in options["tulip"])
    assert sorted({o["eps"] for o, _ in options["vat"]}) == [0.5, 2.0]
    assert {d for _, d in options["vat"]} == {0.0, 0.5} and len(options["ce"]) == 2


def test_every_listed_option_is_set_by_the_flag_or_key_it_is_listed_with(tmp_path):
    """`deepmargin losses` shows each option with its setter; that setter really sets it."""
    from deepmargin.cli.main import build_parser

    parser, _ = build_parser()
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    flags = {s: a for a in train_parser._actions for s in a.option_strings}
    defaults = TrainConfig().to_dict()
    for name, spec in LOSS_REGISTRY.items():
        for option in spec.options:
            if option.flag is None:  # a --loss-option key: the registry resolves it by name
                assert not spec.config_fields
                assert option.name in resolve_loss_options(name, {})
                continue
            assert spec.config_fields, (name, option.name)
            assert option.flag in flags, f"{name}: {option.flag} is not a flag of deepmargin train"
            assert flags[option.flag].dest == option.name, (name, option.flag)
            # the listed default is the TrainConfig field's default
            assert option.default == defaults[option.name] or (option.name == "norm" and float(option.default) == 2.0)
    args = parser.parse_args(["train", "--loss", "margin", "--exact", "--top-k", "3", "--hinge-margin", "2"])
    assert args.approximate is False and args.top_k == 3 and args.hinge_margin == 2.0
