"""Tests for deepmargin.attacks.deepfool.DeepFool (closed forms on linear models, foolbox cross-check)."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn

from deepmargin.attacks.deepfool import DeepFool, logit_difference_gradients

from _helpers import NORMS, WIDE, accuracy, exact_linear_distance, linear_model, lp


# ------------------------------------------------------------------------------------------
# closed forms on linear models


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_linear_one_step_lands_on_boundary_with_minimal_perturbation(norm, seed):
    model = linear_model(2, 6, seed)
    x = torch.rand(16, 6, generator=torch.Generator().manual_seed(seed + 100), dtype=torch.float64)
    y = model(x).argmax(1).detach()
    attack = DeepFool(norm=norm, steps=1, overshoot=0.0, nudge=0.0, bounds=WIDE)
    x_adv = attack(model, x, y)
    delta = x_adv - x

    # closed form: r = |f| / ||w||_2^2 * w (l2) or |f| / ||w||_1 * sign(w) (linf), w = W_other - W_y
    other = 1 - y
    w = (model.weight[other] - model.weight[y]).detach()
    f = (model(x).gather(1, other[:, None]) - model(x).gather(1, y[:, None])).squeeze(1).detach()
    if norm == 2:
        expected = (f.abs() / w.norm(dim=1) ** 2)[:, None] * w
    else:
        expected = (f.abs() / w.abs().sum(dim=1))[:, None] * w.sign()
    torch.testing.assert_close(delta, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(lp(delta, norm), exact_linear_distance(model, x, y, norm), rtol=1e-9, atol=1e-12)
    # on the boundary: the two logits are equal
    z = model(x_adv).detach()
    torch.testing.assert_close(z[:, 0], z[:, 1], rtol=0, atol=1e-9)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("overshoot", [0.02, 0.1])
def test_binary_linear_with_overshoot_succeeds_in_one_step(norm, overshoot):
    model = linear_model(2, 5, seed=3)
    x = torch.rand(20, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    y = model(x).argmax(1).detach()
    nudge = 1e-4
    res = DeepFool(norm=norm, overshoot=overshoot, nudge=nudge, bounds=WIDE).run(model, x, y)
    assert res.success.all()
    expected = (1 + overshoot) * (exact_linear_distance(model, x, y, norm) + nudge)
    torch.testing.assert_close(res.delta_norm, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(res.delta_norm, lp(res.x_adv - x, norm), rtol=1e-12, atol=0)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiclass_linear_distance_bounds(norm, seed):
    model = linear_model(5, 8, seed)
    x = torch.rand(40, 8, generator=torch.Generator().manual_seed(seed + 7), dtype=torch.float64)
    y = model(x).argmax(1).detach()
    exact = exact_linear_distance(model, x, y, norm)

    # with every class as a candidate the first step goes to the nearest facet: exact after overshoot
    full = DeepFool(norm=norm, candidates=None, overshoot=0.02, nudge=0.0, bounds=WIDE).run(model, x, y)
    assert full.success.all()
    torch.testing.assert_close(full.delta_norm, 1.02 * exact, rtol=1e-9, atol=1e-12)

    # with only the runner-up class it may take a farther facet, never a closer one
    few = DeepFool(norm=norm, candidates=2, overshoot=0.0, bounds=WIDE).run(model, x, y)
    assert few.success.all()
    assert (few.delta_norm >= exact * (1 - 1e-9)).all()
    assert (model(few.x_adv).argmax(1) != y).all()


def test_logit_difference_gradients_match_weight_differences():
    model = linear_model(4, 3, seed=5)
    x = torch.rand(6, 3, dtype=torch.float64)
    ref = torch.tensor([0, 1, 2, 3, 0, 1])
    others = torch.tensor([[1, 2], [0, 3], [3, 1], [2, 0], [3, 2], [2, 3]])
    logits, f, grads = logit_difference_gradients(model, x, ref, others)
    assert grads.shape == (6, 2, 3)
    w = model.weight.detach()
    torch.testing.assert_close(grads, w[others] - w[ref][:, None, :])
    z = model(x).detach()
    torch.testing.assert_close(f, z.gather(1, others) - z.gather(1, ref[:, None]))
    torch.testing.assert_close(logits, z)


# ------------------------------------------------------------------------------------------
# a small trained model


@pytest.mark.parametrize("norm", NORMS)
def test_trained_model_adversarials_in_bounds_and_misclassified(digits_mlp, norm):
    model, x, y = digits_mlp
    res = DeepFool(norm=norm).run(model, x, y)
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert (res.x_adv >= 0).all() and (res.x_adv <= 1).all()
    assert res.success.float().mean() > 0.95
    pred = model(res.x_adv).argmax(1)
    assert (pred[res.success] != y[res.success]).all()
    assert (pred[~res.success] == y[~res.success]).all()
    torch.testing.assert_close(res.delta_norm[res.success], lp(res.x_adv - x, norm)[res.success])
    assert torch.isinf(res.delta_norm[~res.success]).all()
    # inputs misclassified to begin with are returned unchanged at distance 0
    wrong = model(x).argmax(1) != y
    assert (res.delta_norm[wrong] == 0).all()
    torch.testing.assert_close(res.x_adv[wrong], x[wrong])


@pytest.mark.parametrize("norm", NORMS)
def test_trained_model_accuracy_under_attack_below_clean(digits_mlp, norm):
    model, x, y = digits_mlp
    eps = [0.5, 1.0] if norm == 2 else [0.05, 0.1]
    batches = DeepFool(norm=norm, eps=eps)(model, x, y)
    assert isinstance(batches, list) and len(batches) == 2
    clean = accuracy(model, x, y)
    for e, xe in zip(eps, batches):
        assert (lp(xe - x, norm) <= e * (1 + 1e-5)).all()
        assert (xe >= 0).all() and (xe <= 1).all()
        assert accuracy(model, xe, y) < clean
    single = DeepFool(norm=norm, eps=eps[1])(model, x, y)
    torch.testing.assert_close(single, batches[1])


def test_float64_and_device_follow_inputs(digits_mlp):
    model, x, y = digits_mlp
    model64 = copy.deepcopy(model).double()
    res = DeepFool(norm=2).run(model64, x.double(), y)
    assert res.x_adv.dtype == torch.float64 and res.delta_norm.dtype == torch.float64
    assert res.x_adv.device == x.device and res.success.dtype == torch.bool


class _ModeRecorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.drop = nn.Dropout(0.5)
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(self.training)
        return self.drop(self.lin(x))


def test_eval_mode_during_attack_and_mode_restored():
    torch.manual_seed(0)
    model = _ModeRecorder().train()
    x = torch.rand(8, 4)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    model.train()
    model.seen.clear()
    DeepFool(norm=2, steps=5)(model, x, y)
    assert model.seen and not any(model.seen)
    assert model.training and model.drop.training and model.lin.training


def test_zero_gradient_model_fails_and_warns(caplog):
    model = nn.Linear(3, 3)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([1.0, 0.0, -1.0]))
    x = torch.rand(5, 3)
    y = torch.zeros(5, dtype=torch.int64)
    with caplog.at_level(logging.WARNING, logger="deepmargin.attacks.deepfool"):
        res = DeepFool(norm=2, steps=3).run(model, x, y)
    assert not res.success.any()
    assert torch.isinf(res.delta_norm).all()
    torch.testing.assert_close(res.x_adv, x)
    assert "zero input gradients" in caplog.text


# ------------------------------------------------------------------------------------------
# argument checks


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"norm": 1}, r"The 'norm' parameter of DeepFool must be one of"),
        ({"steps": 0}, r"The 'steps' parameter of DeepFool must be an int >= 1. Got 0 instead."),
        ({"steps": 2.5}, r"The 'steps' parameter of DeepFool must be an int >= 1"),
        ({"candidates": 1}, r"The 'candidates' parameter of DeepFool must be an int >= 2. Got 1 instead."),
        ({"overshoot": -0.1}, r"The 'overshoot' parameter of DeepFool must be a finite float >= 0"),
        ({"nudge": float("nan")}, r"The 'nudge' parameter of DeepFool must be a finite float >= 0"),
        ({"bounds": (1, 0)}, r"The 'bounds' parameter of DeepFool must satisfy low < high"),
        ({"eps": -1.0}, r"The 'eps' parameter of DeepFool must be None, a finite float >= 0"),
        ({"eps": []}, r"The 'eps' parameter of DeepFool must be None"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DeepFool(**kwargs)


def test_constructor_is_keyword_only():
    with pytest.raises(TypeError):
        DeepFool(2)  # type: ignore[misc]


def test_call_errors():
    model = nn.Linear(4, 3)
    x = torch.rand(5, 4)
    with pytest.raises(ValueError, match=r"The 'y' parameter of DeepFool must have shape \(5,\)"):
        DeepFool()(model, x, torch.zeros(4, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"The 'x' parameter of DeepFool must be a floating-point tensor"):
        DeepFool()(model, x.long(), torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"The 'y' parameter of DeepFool must hold class indices in \[0, 2\]"):
        DeepFool()(model, x, torch.full((5,), 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"The 'model' parameter of DeepFool must return logits of shape \(N, C\)"):
        DeepFool()(nn.Linear(4, 1), x, torch.zeros(5, dtype=torch.int64))


# ------------------------------------------------------------------------------------------
# independent cross-check against foolbox 3


@pytest.mark.parametrize("norm", NORMS)
def test_robust_accuracy_matches_foolbox(digits_mlp, norm):
    fb = pytest.importorskip("foolbox")
    model, x, y = digits_mlp
    ours = DeepFool(norm=norm, steps=50, candidates=10, overshoot=0.02)
    # an epsilon in the middle of the distance distribution, where the comparison is most sensitive
    dist = ours.run(model, x, y).delta_norm
    eps = [dist.median().item(), dist.quantile(0.25).item(), dist[dist.isfinite()].quantile(0.75).item()]
    ours_acc = [accuracy(model, xe, y) for xe in DeepFool(norm=norm, eps=eps)(model, x, y)]

    cls = fb.attacks.L2DeepFoolAttack if norm == 2 else fb.attacks.LinfDeepFoolAttack
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    _, _, success = cls(steps=50, candidates=10, overshoot=0.02)(fmodel, x, y, epsilons=eps)
    fb_acc = (1 - success.double().mean(dim=1)).tolist()
    for a, b in zip(ours_acc, fb_acc):
        assert abs(a - b) <= 0.01
