"""Kesidis et al.'s logit-margin objectives, the dual reweighting loop, and semi-supervised training."""

from __future__ import annotations

import json
import math

import pytest
import torch

from deepmargin.cli.main import main
from deepmargin.data import DataBundle, Split, load_dataset
from deepmargin.experiments import PRESETS
from deepmargin.losses import LogitMarginLoss, logit_margin_loss
from deepmargin.losses.logit_margin import OBJECTIVES
from deepmargin.metrics import logit_margins
from deepmargin.training import TrainConfig, train
from deepmargin.training.checkpoint import load_checkpoint
from deepmargin.training.reweight import Reweighting, training_margins

LOGITS = torch.tensor([[3.0, 1.0, 0.0], [0.5, 1.0, 0.0]])
TARGET = torch.tensor([0, 0])


def test_logit_margins_by_label_by_decision_and_rectified():
    logits = torch.tensor([[3.0, 1.0, -2.0], [1.0, 1.0, 0.0], [-1.0, -3.0, -0.5]])
    assert logit_margins(logits).tolist() == [2.0, 0.0, 0.5]  # own decision: >= 0, a tie is 0
    assert logit_margins(logits, torch.tensor([1, 0, 1])).tolist() == [-2.0, 0.0, -2.5]
    assert logit_margins(logits, torch.tensor([1, 0, 1]), rectify=True).tolist() == [-2.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="'logits' parameter of logit_margins"):
        logit_margins(torch.zeros(3))


@pytest.mark.parametrize("objective, expected", [
    ("violation", [1 + 1 - 3.0, 1 + 1 - 0.5]),
    ("hinged-violation", [0.0, 1.5]),
    ("shifted-ce", [-3 + math.log(math.e ** 3 + math.e ** 2 + math.e), -0.5 + math.log(math.e ** 0.5 + math.e ** 2 + math.e)]),
    ("ratio", [math.log((2 * 1 + 1 + 0) / 3), math.log((2 * 1 + 1 + 0) / 0.5)]),
    ("normalized-violation", [-1 / (2 + 4), 1.5 / (2 + 1.5)]),
])
def test_each_objective_equals_its_hand_computed_value(objective, expected):
    loss = logit_margin_loss(LOGITS, TARGET, mu=1.0, objective=objective, reduction="none")
    assert loss.tolist() == pytest.approx(expected, rel=1e-6)
    weighted = logit_margin_loss(LOGITS, TARGET, mu=1.0, objective=objective, weights=torch.tensor([2.0, 0.5]))
    assert float(weighted) == pytest.approx((2 * expected[0] + 0.5 * expected[1]) / 2, rel=1e-6)


def test_the_violation_gradient_is_the_rival_minus_the_target_indicator():
    logits = LOGITS.clone().requires_grad_(True)
    logit_margin_loss(logits, TARGET, mu=1.0, objective="violation", weights=torch.tensor([1.0, 3.0]), reduction="sum").backward()
    assert logits.grad.tolist() == [[-1.0, 1.0, 0.0], [-3.0, 3.0, 0.0]]
    logits.grad = None
    logit_margin_loss(logits, TARGET, mu=1.0, objective="hinged-violation", reduction="sum").backward()
    assert logits.grad.tolist() == [[0.0, 0.0, 0.0], [-1.0, 1.0, 0.0]]  # the first margin is met: no gradient


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_gradcheck_float64(objective):
    torch.manual_seed(0)
    logits = (torch.rand(5, 4, dtype=torch.float64) * 3 + 0.5).requires_grad_(True)  # > 0, no ties
    target = torch.tensor([0, 1, 2, 3, 1])
    weights = torch.rand(5, dtype=torch.float64) + 0.5
    assert torch.autograd.gradcheck(
        lambda z: logit_margin_loss(z, target, mu=0.7, objective=objective, weights=weights, reduction="none"), (logits,)
    )


def test_bad_inputs_name_the_parameter():
    with pytest.raises(ValueError, match="'objective' parameter of logit_margin_loss must be one of"):
        logit_margin_loss(LOGITS, TARGET, mu=1.0, objective="nope")
    with pytest.raises(ValueError, match="'mu'.*> 0"):
        logit_margin_loss(LOGITS, TARGET, mu=0.0)
    with pytest.raises(ValueError, match="nonnegative outputs for objective='ratio'.*rectify=True"):
        logit_margin_loss(LOGITS - 1, TARGET, mu=1.0, objective="ratio")
    assert torch.isfinite(logit_margin_loss(LOGITS - 1, TARGET, mu=1.0, objective="ratio", rectify=True))
    with pytest.raises(ValueError, match="'weights'.*shape \\(2,\\)"):
        logit_margin_loss(LOGITS, TARGET, mu=1.0, weights=torch.ones(3))
    with pytest.raises(ValueError, match="'weights'.*>= 0"):
        logit_margin_loss(LOGITS, TARGET, mu=1.0, weights=torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="'target'.*class indices in \\[0, 2\\]"):
        logit_margin_loss(LOGITS, torch.tensor([0, 3]), mu=1.0)
    with pytest.raises(ValueError, match="'delta' option of loss 'kesidis' must be > 1 with reweight='multiply'"):
        TrainConfig(loss="kesidis", loss_options={"reweight": "multiply", "delta": 0.5})
    with pytest.raises(ValueError, match="'adv_train'.*'none' with the reweighting loop"):
        TrainConfig(loss="kesidis", loss_options={"reweight": "add"}, adv_train="fgsm")


def test_the_module_form_runs_the_model_and_takes_weights():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.rand(6, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    criterion = LogitMarginLoss(net, mu=2.0, objective="shifted-ce")
    loss, logits = criterion(x, y, weights=torch.arange(6.0))
    assert torch.allclose(loss, logit_margin_loss(net(x), y, mu=2.0, objective="shifted-ce", weights=torch.arange(6.0)))
    assert torch.allclose(logits, net(x))


@pytest.mark.parametrize("rule, expected", [
    ("multiply", [2.0, 6.0, 1.0, 4.0]),
    ("add", [3.0, 5.0, 1.0, 4.0]),
    ("violation", [1.0 + 2 * 1.5, 3.0 + 2 * 0.25, 1.0, 4.0]),
])
def test_an_update_changes_exactly_the_violated_weights(rule, expected):
    rw = Reweighting(rule=rule, delta=2.0, mu=1.0)
    weights, margins = torch.tensor([1.0, 3.0, 1.0, 4.0]), torch.tensor([-0.5, 0.75, 1.0, 2.0])
    assert rw.violated(margins).tolist() == [True, True, False, False]
    assert rw.update(weights, margins).tolist() == pytest.approx(expected)
    down = Reweighting(rule=rule, delta=2.0, mu=1.0, decrease=True).update(weights, margins)
    assert down[2:].tolist() == [1.0, 2.0 if rule == "multiply" else 2.0]  # undone one step, floored at 1


def _blobs(n: int = 60, seed: int = 0) -> DataBundle:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 2, generator=g) * 0.3 + (y[:, None] * 2 - 1) * torch.tensor([2.0, 0.0])
    split = Split(x, y)
    return DataBundle(name="blobs", train=split, val=split.take(torch.arange(10)), test=split, num_classes=2,
                      input_shape=(2,), bounds=None)


def test_the_loop_reweights_the_samples_whose_margin_the_trained_model_misses(tmp_path):
    data = load_dataset("digits", train_fraction=0.2, seed=0)
    cfg = TrainConfig(dataset="digits", model="mlp", train_fraction=0.2, epochs=1, loss="kesidis",
                      loss_options={"mu": 0.02, "objective": "hinged-violation", "reweight": "multiply", "delta": 3.0})
    result = train(cfg, tmp_path / "run", data=data, verbose=False)
    margins = training_margins(result.model, data.train.x, data.train.y)
    expected = torch.where(margins < 0.02, 3.0, 1.0)
    assert 0 < int((margins < 0.02).sum()) < len(margins)
    assert torch.equal(result.sample_weights, expected)
    assert result.history[0]["violated"] == int((margins < 0.02).sum())
    saved = load_checkpoint(tmp_path / "run" / "last.pt")["extra"]["sample_weights"]
    assert torch.equal(saved, expected)


def test_the_loop_stops_when_every_margin_is_met():
    cfg = TrainConfig(dataset="blobs", model="mlp", epochs=200, loss="kesidis", batch_size=20, lr=0.01,
                      loss_options={"mu": 0.5, "objective": "hinged-violation", "reweight": "multiply"})
    result = train(cfg, data=_blobs(), verbose=False)
    assert result.stopped is not None and "every training margin reached" in result.stopped
    assert len(result.history) < 200 and result.history[-1]["violated"] == 0
    assert result.history[-1]["test_acc"] is not None
    assert bool((training_margins(result.model, _blobs().train.x, _blobs().train.y) >= 0.5).all())


def test_max_rounds_ends_training():
    cfg = TrainConfig(dataset="blobs", model="mlp", epochs=20, loss="kesidis",
                      loss_options={"mu": 100.0, "reweight": "add", "round_epochs": 2, "max_rounds": 3})
    result = train(cfg, data=_blobs(), verbose=False)
    assert len(result.history) == 6 and "max_rounds=3" in result.stopped


def test_a_resumed_loop_gives_the_same_weights_as_an_uninterrupted_one(tmp_path):
    data = load_dataset("digits", train_fraction=0.2, seed=0)
    options = {"mu": 3.0, "objective": "hinged-violation", "reweight": "violation", "delta": 1.0}
    base = dict(dataset="digits", model="mlp", train_fraction=0.2, loss="kesidis", loss_options=options)
    full = train(TrainConfig(epochs=4, **base), tmp_path / "full", data=data, verbose=False)
    train(TrainConfig(epochs=2, **base), tmp_path / "part", data=data, verbose=False)
    resumed = train(TrainConfig(epochs=4, **base), tmp_path / "part", data=data, resume=True, verbose=False)
    assert resumed.resumed_from == 2
    assert torch.equal(full.sample_weights, resumed.sample_weights)
    assert [r["violated"] for r in full.history] == [r["violated"] for r in resumed.history]
    assert full.test_acc == resumed.test_acc


def test_a_stopped_run_is_not_trained_further_when_run_again(tmp_path):
    cfg = TrainConfig(dataset="blobs", model="mlp", epochs=200, loss="kesidis", batch_size=20, lr=0.01,
                      loss_options={"mu": 0.5, "objective": "hinged-violation", "reweight": "multiply"})
    first = train(cfg, tmp_path / "r", data=_blobs(), verbose=False)
    again = train(cfg, tmp_path / "r", data=_blobs(), verbose=False)
    assert len(again.history) == len(first.history) and again.stopped == first.stopped
    assert json.loads((tmp_path / "r" / "results.json").read_text())["stopped"] == first.stopped


def test_unlabelled_pool_is_the_left_out_part_of_the_training_set():
    full = load_dataset("digits", seed=3)
    part = load_dataset("digits", seed=3, train_fraction=0.1, keep_unlabelled=True)
    assert len(part.train) + len(part.unlabelled) == len(full.train)
    rows = {tuple(r.tolist()) for r in full.train.x.flatten(1)}
    kept = {tuple(r.tolist()) for r in part.train.x.flatten(1)}
    left = {tuple(r.tolist()) for r in part.unlabelled.x.flatten(1)}
    assert kept | left == rows and not kept & left
    assert load_dataset("digits", seed=3, train_fraction=0.1).unlabelled is None


def test_semi_supervised_vat_uses_the_unlabelled_samples(tmp_path):
    base = dict(dataset="digits", model="mlp", loss="vat", train_fraction=0.1, epochs=1, seed=0)
    with_pool = train(TrainConfig(unlabelled=True, **base), tmp_path / "semi", verbose=False)
    without = train(TrainConfig(**base), verbose=False)
    n_labelled = with_pool.data_info["sizes"]["train"]
    assert with_pool.data_info["n_unlabelled"] > 5 * n_labelled
    differs = any(not torch.equal(a, b) for a, b in zip(with_pool.model.state_dict().values(), without.model.state_dict().values()))
    assert differs
    assert json.loads((tmp_path / "semi" / "config.json").read_text())["unlabelled"] is True
    with pytest.raises(ValueError, match="'unlabelled'.*train_fraction is 1"):
        TrainConfig(loss="vat", unlabelled=True)
    with pytest.raises(ValueError, match="'unlabelled'.*losses that use unlabelled samples: \\['vat'\\]"):
        TrainConfig(loss="kesidis", train_fraction=0.5, unlabelled=True)


def test_an_old_config_without_the_new_keys_still_resumes(tmp_path):
    out = tmp_path / "old"
    train(TrainConfig(dataset="digits", model="mlp", train_fraction=0.2, epochs=1), out, verbose=False)
    config = json.loads((out / "config.json").read_text())
    for key in ("unlabelled", "loss_options"):
        config.pop(key)
    (out / "config.json").write_text(json.dumps(config))
    ckpt = torch.load(out / "last.pt", weights_only=True)
    for key in ("unlabelled", "loss_options"):
        ckpt["config"].pop(key)
    ckpt.pop("extra")
    torch.save(ckpt, out / "last.pt")
    resumed = train(TrainConfig(dataset="digits", model="mlp", train_fraction=0.2, epochs=2), out, resume=True, verbose=False)
    assert resumed.resumed_from == 1 and len(resumed.history) == 2


def test_cli_reweight_and_presets(tmp_path, capsys):
    assert main(["train", "--preset", "kesidis-9", "--model", "mlp", "--train-fraction", "0.2", "--epochs", "2",
                 "--out", str(tmp_path / "k9")]) == 0
    assert "margins below mu" in capsys.readouterr().out
    config = json.loads((tmp_path / "k9" / "config.json").read_text())
    assert config["loss"] == "kesidis" and config["loss_options"]["reweight"] == "multiply"
    assert main(["train", "--loss", "kesidis", "--reweight", "add", "--loss-option", "mu=2", "--model", "mlp",
                 "--train-fraction", "0.2", "--epochs", "1", "--out", str(tmp_path / "add")]) == 0
    assert json.loads((tmp_path / "add" / "config.json").read_text())["loss_options"]["reweight"] == "add"
    assert main(["train", "--loss", "ce", "--reweight", "add", "--out", str(tmp_path / "bad")]) == 2
    assert "needs a loss with a reweighting loop" in capsys.readouterr().err
    assert main(["train", "--preset", "nope", "--out", str(tmp_path / "bad")]) == 2
    assert {"kesidis-7", "kesidis-9"} <= set(PRESETS)


def test_shifted_ce_raises_the_training_margins_over_plain_ce():
    data = load_dataset("digits", train_fraction=0.3, seed=0)
    base = dict(dataset="digits", model="mlp", train_fraction=0.3, epochs=15, seed=0)
    ce = train(TrainConfig(loss="ce", **base), data=data, verbose=False).model
    k7 = train(TrainConfig(loss="kesidis", loss_options={"mu": 5.0, "objective": "shifted-ce"}, **base), data=data,
               verbose=False).model
    m_ce = training_margins(ce, data.train.x, data.train.y).median()
    m_k7 = training_margins(k7, data.train.x, data.train.y).median()
    assert m_k7 > m_ce
