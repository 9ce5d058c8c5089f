"""The parts of the training loop: CheckpointSaver, step objects, epoch hooks, device-side metrics, one FGSM."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepmargin
from deepmargin.attacks import FGSM
from deepmargin.attacks.gradient import fgsm
from deepmargin.data import DataBundle, Split
from deepmargin.models import build_model
from deepmargin.training import TrainConfig, build_objective, load_checkpoint, train
from deepmargin.training import trainer as trainer_module
from deepmargin.training.adversarial import craft
from deepmargin.training.checkpoint import CheckpointSaver
from deepmargin.training.hooks import DenominatorRefresh, EpochEnd, EpochHook, ReweightingRounds, build_hooks
from deepmargin.training.meters import EpochMeter
from deepmargin.training.reweight import Reweighting
from deepmargin.training.steps import (
    AdversarialStep,
    AugmentedStep,
    CachedDenominatorStep,
    ObjectiveStep,
    StepOutput,
    TrainStep,
    WeightedStep,
    build_step,
)


def _blobs(seed: int = 0, n: int = 64) -> DataBundle:
    g = torch.Generator().manual_seed(seed)

    def split(m: int) -> Split:
        y = torch.arange(m) % 3
        angle = 2 * math.pi * y.double() / 3
        x = torch.stack([angle.cos(), angle.sin()], dim=1) * 2 + 0.35 * torch.randn(m, 2, generator=g, dtype=torch.float64)
        return Split(x.float(), y)

    return DataBundle(name="blobs", train=split(n), val=split(n // 4), test=split(n // 2), num_classes=3,
                      input_shape=(2,), bounds=None, info={"seed": seed})


def _config(**kw) -> TrainConfig:
    base = dict(dataset="moons", model="mlp", model_kwargs={"hidden_sizes": [8]}, epochs=2, batch_size=16, lr=0.01, seed=0)
    return TrainConfig(**{**base, **kw})


def _mlp() -> tuple[nn.Module, dict]:
    kw = {"num_classes": 3, "input_shape": [2], "hidden_sizes": [4]}
    return build_model("mlp", **kw), kw


# ------------------------------------------------------------------------------------ CheckpointSaver

def _saver(out, model, kw, **extra):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return CheckpointSaver(out, model=model, model_name="mlp", model_kwargs=kw, config={"a": 1}, optimizer=opt, **extra)


def _row(epoch, val_acc, train_acc=0.5):
    return {"epoch": epoch, "val_acc": val_acc, "train_acc": train_acc}


def test_saver_writes_best_only_on_a_strict_improvement_and_last_always(tmp_path):
    model, kw = _mlp()
    writes = []

    def save(path, **k):
        writes.append((Path(path).name, k["epoch"]))

    saver = _saver(tmp_path, model, kw, save=save)
    improved = [saver.update(e, _row(e, acc), history=[]) for e, acc in enumerate([0.5, 0.7, 0.7, 0.6, 0.8], start=1)]
    assert improved == [True, True, False, False, True]
    assert writes == [("best.pt", 1), ("last.pt", 1), ("best.pt", 2), ("last.pt", 2), ("last.pt", 3), ("last.pt", 4),
                      ("best.pt", 5), ("last.pt", 5)]
    assert (saver.best_epoch, saver.best_score, saver.best_val_acc) == (5, 0.8, 0.8)


def test_saver_keeps_a_copy_of_the_best_weights_and_selects_by_train_acc_without_validation():
    model, kw = _mlp()
    saver = _saver(None, model, kw, selected_by="train_acc")
    assert saver.update(1, _row(1, None, train_acc=0.4), history=[])
    best = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert not saver.update(2, _row(2, None, train_acc=0.3), history=[])
    assert all(torch.equal(saver.best_state[k], best[k]) for k in best)
    assert saver.best_val_acc is None and not saver.write
    with pytest.raises(ValueError, match="'selected_by' parameter of CheckpointSaver must be 'val_acc' or 'train_acc'"):
        _saver(None, model, kw, selected_by="loss")


def test_saver_restores_what_it_wrote(tmp_path):
    model, kw = _mlp()
    saver = _saver(tmp_path, model, kw)
    saver.update(1, _row(1, 0.9), history=[_row(1, 0.9)], extra={"w": torch.arange(3.0)})
    saver.update(2, _row(2, 0.1), history=[_row(1, 0.9), _row(2, 0.1)], stopped="done", extra={"w": torch.ones(3)})
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["metrics"]["stopped"] == "done" and last["metrics"]["best_epoch"] == 1
    assert torch.equal(last["extra"]["w"], torch.ones(3)) and load_checkpoint(tmp_path / "best.pt")["epoch"] == 1
    fresh, _ = _mlp()
    other = _saver(tmp_path, fresh, kw)
    assert other.has_last() and other.restore(other.read_last()) == 2
    assert (other.best_epoch, other.best_score, other.best_val_acc) == (1, 0.9, 0.9)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    assert all(torch.equal(other.best_state[k], saver.best_state[k]) for k in saver.best_state)


def test_only_the_writing_rank_writes(tmp_path):
    model, kw = _mlp()
    _saver(tmp_path, model, kw, write=False).update(1, _row(1, 0.5), history=[])
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ steps

@pytest.mark.parametrize("fields, expected", [
    ({}, ObjectiveStep),
    ({"adv_train": "fgsm"}, AdversarialStep),
    ({"loss": "margin", "gamma": 1.0, "denominator_refresh": 2}, CachedDenominatorStep),
    ({"loss": "kesidis", "loss_options": {"reweight": "multiply"}}, WeightedStep),
])
def test_the_step_is_chosen_once_from_the_config(fields, expected):
    cfg = _config(**fields)
    model, _ = _mlp()
    objective = build_objective(cfg, model)
    x, y = torch.randn(10, 2), torch.arange(10) % 3
    hooks = build_hooks(cfg, objective, model, model, x, y)
    step = build_step(cfg, objective, model, hooks=hooks)
    assert type(step) is expected
    assert [type(h) for h in hooks] == ({CachedDenominatorStep: [DenominatorRefresh], WeightedStep: [ReweightingRounds]}
                                        .get(expected, []))
    if expected is CachedDenominatorStep:
        hooks[0].on_epoch_start(1)
    out = step(x, y, torch.arange(10))
    assert out.loss.dim() == 0 and out.logits.shape == (10, 3)
    assert (out.adv_mask is not None) is (expected is AdversarialStep)


def test_augmentation_wraps_the_step_and_transforms_the_batch():
    cfg = TrainConfig(dataset="digits", model="mlp", augment="flip", epochs=1)
    seen = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def objective(x, y):
        seen.append(x)
        return F.cross_entropy(model(x), y), model(x)

    step = build_step(cfg, objective, model)
    assert isinstance(step, AugmentedStep) and isinstance(step.inner, ObjectiveStep)
    x = torch.rand(32, 1, 8, 8)
    step(x, torch.zeros(32, dtype=torch.int64), torch.arange(32))
    flipped = torch.tensor([torch.equal(a, b.flip(-1)) and not torch.equal(a, b) for a, b in zip(seen[0], x)])
    assert flipped.any() and torch.equal(seen[0][~flipped], x[~flipped])
    assert step.describe() == ["augmentation flip (crop padding 4)"]


def test_a_new_step_needs_no_change_to_the_loop(monkeypatch):
    class HalfLoss(TrainStep):  # a variant the library does not have: the plain loss, halved
        def __init__(self, objective):
            self.objective = objective

        def __call__(self, x, y, idx):
            loss, logits = self.objective(x, y)
            return StepOutput(loss / 2, logits)

    monkeypatch.setattr(trainer_module, "build_step", lambda cfg, objective, model, **kw: HalfLoss(objective))
    half = train(_config(epochs=1, optimizer="sgd", momentum=0.0), data=_blobs(), verbose=False)
    monkeypatch.undo()
    plain = train(_config(epochs=1, optimizer="sgd", momentum=0.0), data=_blobs(), verbose=False)
    assert half.history[0]["train_loss"] == pytest.approx(plain.history[0]["train_loss"] / 2, rel=0.05)


# ------------------------------------------------------------------------------------ hooks

def test_reweighting_rounds_update_report_and_resume():
    model, _ = _mlp()
    x, y = torch.randn(12, 2), torch.arange(12) % 3
    rounds = ReweightingRounds(Reweighting(rule="add", delta=1.0, mu=100.0), model, x, y, batch_size=5)
    end = rounds.on_epoch_end(1)
    assert end == EpochEnd({"violated": 12}, None) and torch.equal(rounds.weights, torch.full((12,), 2.0))
    other = ReweightingRounds(rounds.reweighting, model, x, y, batch_size=5)
    other.load_state(rounds.state())
    assert torch.equal(other.weights, rounds.weights)
    other.load_state({})  # an old checkpoint without weights: nothing changes
    assert torch.equal(other.weights, rounds.weights)
    with pytest.raises(ValueError, match="sample weights in the checkpoint are for 12 training samples, not 5"):
        ReweightingRounds(rounds.reweighting, model, x[:5], y[:5], batch_size=5).load_state(rounds.state())
    last = ReweightingRounds(Reweighting(rule="add", delta=1.0, mu=100.0, max_rounds=1), model, x, y, batch_size=5)
    assert last.on_epoch_end(1).stop == "max_rounds=1 rounds done after epoch 1 (12 margins below mu)"


def test_a_hook_may_stop_training_and_adds_its_fields(monkeypatch):
    class StopAfterTwo(EpochHook):
        def __init__(self):
            self.started = []

        def on_epoch_start(self, epoch):
            self.started.append(epoch)

        def on_epoch_end(self, epoch):
            return EpochEnd({"violated": 10 * epoch}, "enough" if epoch == 2 else None)

    hook = StopAfterTwo()
    monkeypatch.setattr(trainer_module, "build_hooks", lambda *a, **k: [hook])
    result = train(_config(epochs=5), data=_blobs(), verbose=False)
    assert hook.started == [1, 2] and result.stopped == "enough"
    assert [r["violated"] for r in result.history] == [10, 20]
    assert result.history[-1]["test_acc"] is not None and result.history[0]["test_acc"] is None


# ------------------------------------------------------------------------------------ device-side metrics

def test_the_meter_sums_like_the_host_loop_and_counts_labelled_samples_only():
    g = torch.Generator().manual_seed(0)
    meter = EpochMeter(torch.device("cpu"))
    total, correct, labelled, adv_correct, adv_seen, seen = 0.0, 0, 0, 0, 0, 0
    for n in (7, 5, 9):
        logits = torch.randn(n, 4, generator=g)
        y = torch.randint(-1, 4, (n,), generator=g)
        loss = torch.rand((), generator=g) * 3
        mask = torch.rand(n, generator=g) < 0.5
        meter.update(StepOutput(loss, logits, mask), y)
        hit = logits.argmax(1) == y
        total += loss.item() * n
        correct += int((hit & (y >= 0)).sum())
        labelled += int((y >= 0).sum())
        adv_correct += int((hit & mask).sum())
        adv_seen += int(mask.sum())
        seen += n
    totals = meter.compute()
    assert totals.loss_sum == total  # bit for bit: float64 sums in the same order
    assert (totals.correct, totals.labelled, totals.adv_correct, totals.adv_seen, totals.seen) == (
        correct, labelled, adv_correct, adv_seen, seen)
    assert totals.train_acc == correct / labelled and totals.train_adv_acc == adv_correct / adv_seen
    totals.check_finite(1)


def test_the_meter_reports_the_first_non_finite_loss():
    meter = EpochMeter(torch.device("cpu"))
    logits, y = torch.zeros(2, 3), torch.zeros(2, dtype=torch.int64)
    for value in (1.0, float("inf"), float("nan"), 2.0):
        meter.update(StepOutput(torch.tensor(value), logits), y)
    totals = meter.compute()
    assert totals.non_finite == 2
    with pytest.raises(FloatingPointError, match="The training loss became inf in epoch 3. Lower the learning rate"):
        totals.check_finite(3)


def test_a_loss_that_diverges_mid_epoch_stops_the_run_before_anything_is_saved(tmp_path, monkeypatch):
    class Diverging(TrainStep):
        def __init__(self, objective):
            self.objective, self.calls = objective, 0

        def __call__(self, x, y, idx):
            self.calls += 1
            loss, logits = self.objective(x, y)
            return StepOutput(loss * float("nan") if self.calls == 2 else loss, logits)

    monkeypatch.setattr(trainer_module, "build_step", lambda cfg, objective, model, **kw: Diverging(objective))
    with pytest.raises(FloatingPointError, match="training loss became nan in epoch 1"):
        train(_config(epochs=2), tmp_path, data=_blobs(), verbose=False)
    assert not (tmp_path / "last.pt").exists() and not (tmp_path / "metrics.jsonl").exists()


# ------------------------------------------------------------------------------------ one FGSM

@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_is_the_step_of_the_attack_and_of_adversarial_training(norm):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3)).double()
    x = torch.rand(10, 5, dtype=torch.float64)
    y = torch.arange(10) % 3
    model.eval()
    pred = model(x).argmax(1)
    x_adv, labels = fgsm(model, x, y, eps=0.1, norm=norm, bounds=(0.0, 1.0))
    assert torch.equal(labels, y)
    torch.testing.assert_close(x_adv, FGSM(eps=0.1, norm=norm)(model, x, y), rtol=0, atol=1e-15)
    model.train()
    eps = torch.linspace(0.0, 0.3, 10, dtype=torch.float64)
    crafted, crafted_pred = craft(model, x, eps, method="fgsm" if norm == "linf" else "l2", bounds=(0.0, 1.0))
    again, again_pred = fgsm(model, x, None, eps=eps, norm=norm, bounds=(0.0, 1.0))
    assert torch.equal(crafted, again) and torch.equal(crafted_pred, pred) and torch.equal(again_pred, pred)
    assert model.training and model[1].training  # modes restored


def test_attacks_never_import_training():
    attacks = Path(deepmargin.__file__).parent / "attacks"
    for path in attacks.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = ("." * node.level) + (node.module or "")
                assert "training" not in module, f"{path.name} imports {module}"
            elif isinstance(node, ast.Import):
                assert all("training" not in a.name for a in node.names), path.name
