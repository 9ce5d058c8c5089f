"""Tests for deepmargin.attacks.minnorm (FMN, MinNormResult and the shared helpers)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deepmargin.attacks.deepfool import DeepFool
from deepmargin.attacks.minnorm import FMN, MinNormResult, flat_norm, project_to_ball

from _helpers import NORMS, WIDE, accuracy, exact_linear_distance, linear_model, lp

RTOL = 2e-3  # FMN's precision on a linear model (final relative epsilon step is 1e-3)


def points(model: nn.Linear, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, model.in_features, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x, model(x).argmax(1).detach()


# ------------------------------------------------------------------------------------------
# linear models: exact distances


@pytest.mark.parametrize("init", ["zero", "deepfool"])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_linear_equals_exact_distance(init, norm, seed):
    model = linear_model(2, 6, seed)
    x, y = points(model, 24, seed + 10)
    res = FMN(norm=norm, init=init, bounds=WIDE).run(model, x, y)
    assert res.success.all()
    exact = exact_linear_distance(model, x, y, norm)
    torch.testing.assert_close(res.delta_norm, exact, rtol=RTOL, atol=0)
    assert (res.delta_norm >= exact * (1 - 1e-9)).all()  # a real adversarial is never closer
    assert (model(res.x_adv).argmax(1) != y).all()


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiclass_linear_equals_exact_distance_and_never_exceeds_deepfool(norm, seed):
    model = linear_model(5, 8, seed)
    x, y = points(model, 40, seed + 20)
    exact = exact_linear_distance(model, x, y, norm)
    fmn = FMN(norm=norm, bounds=WIDE).run(model, x, y)  # default init: DeepFool warm start
    assert fmn.success.all()
    torch.testing.assert_close(fmn.delta_norm, exact, rtol=RTOL, atol=0)
    assert (fmn.delta_norm >= exact * (1 - 1e-9)).all()

    for candidates in (2, None):
        df = DeepFool(norm=norm, candidates=candidates, bounds=WIDE).run(model, x, y)
        ok = df.success
        assert (fmn.delta_norm[ok] <= df.delta_norm[ok] * (1 + RTOL)).all()


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("seed", [0, 1])
def test_multiclass_linear_cold_start_is_an_upper_bound(norm, seed):
    # from x, FMN follows the largest other logit, which need not be the closest facet
    model = linear_model(5, 8, seed)
    x, y = points(model, 40, seed + 30)
    res = FMN(norm=norm, init="zero", bounds=WIDE).run(model, x, y)
    assert res.success.all()
    assert (res.delta_norm >= exact_linear_distance(model, x, y, norm) * (1 - 1e-9)).all()
    torch.testing.assert_close(res.delta_norm, lp(res.x_adv - x, norm), rtol=1e-12, atol=0)


def test_starting_points_are_refined_to_the_boundary():
    model = linear_model(2, 4, seed=5)
    x, y = points(model, 10, seed=6)
    exact = exact_linear_distance(model, x, y, 2)
    # a far adversarial start: the DeepFool direction scaled 3x
    start = DeepFool(norm=2, bounds=WIDE).run(model, x, y).x_adv
    start = x + 3 * (start - x)
    res = FMN(norm=2, init="zero", steps=30, bounds=WIDE).run(model, x, y, starting_points=start)
    assert res.success.all()
    torch.testing.assert_close(res.delta_norm, exact, rtol=RTOL, atol=0)
    with pytest.raises(ValueError, match=r"The 'starting_points' parameter of FMN.run must be a tensor of shape \(10, 4\)"):
        FMN().run(model, x, y, starting_points=start[:3])


# ------------------------------------------------------------------------------------------
# a small trained model


@pytest.mark.parametrize("norm", NORMS)
def test_trained_model_results_consistent(digits_mlp, norm):
    model, x, y = digits_mlp
    res = FMN(norm=norm).run(model, x, y)
    assert isinstance(res, MinNormResult)
    assert res.x_adv.shape == x.shape and res.delta_norm.shape == (x.shape[0],)
    assert (res.x_adv >= 0).all() and (res.x_adv <= 1).all()
    assert res.success.all()
    assert (model(res.x_adv).argmax(1) != y).all()
    torch.testing.assert_close(res.delta_norm, lp(res.x_adv - x, norm))
    wrong = model(x).argmax(1) != y
    assert (res.delta_norm[wrong] == 0).all()
    # never worse than DeepFool on the same model (beyond FMN's tolerance)
    df = DeepFool(norm=norm).run(model, x, y)
    ok = df.success
    assert (res.delta_norm[ok] <= df.delta_norm[ok] * (1 + RTOL)).all()


@pytest.mark.parametrize("norm", NORMS)
def test_trained_model_accuracy_under_attack_below_clean(digits_mlp, norm):
    model, x, y = digits_mlp
    eps = [0.5, 1.0] if norm == 2 else [0.05, 0.1]
    batches = FMN(norm=norm, init="zero", steps=50, eps=eps)(model, x, y)
    assert isinstance(batches, list) and len(batches) == len(eps)
    clean = accuracy(model, x, y)
    for e, xe in zip(eps, batches):
        assert (lp(xe - x, norm) <= e * (1 + 1e-5)).all()
        assert (xe >= 0).all() and (xe <= 1).all()
        assert accuracy(model, xe, y) < clean


def test_failed_inputs_come_back_unchanged_with_infinite_distance():
    model = nn.Linear(3, 3)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([1.0, 0.0, -1.0]))
    x = torch.rand(4, 3)
    y = torch.tensor([0, 0, 1, 2])  # the first two are correct and can never be moved
    res = FMN(norm=2, steps=10).run(model, x, y)
    assert res.success.tolist() == [False, False, True, True]
    assert torch.isinf(res.delta_norm[:2]).all() and (res.delta_norm[2:] == 0).all()
    torch.testing.assert_close(res.x_adv, x)


class _ModeRecorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(self.training)
        return self.bn(self.lin(x))


@pytest.mark.parametrize("init", ["zero", "deepfool"])
def test_eval_mode_during_attack_and_mode_restored(init):
    torch.manual_seed(0)
    model = _ModeRecorder()
    x = torch.rand(8, 4)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    model.train()
    running = model.bn.running_mean.clone()
    model.seen.clear()
    FMN(norm=2, steps=5, init=init)(model, x, y)
    assert model.seen and not any(model.seen)
    assert model.training and model.bn.training
    torch.testing.assert_close(model.bn.running_mean, running)  # eval mode: statistics untouched


# ------------------------------------------------------------------------------------------
# helpers and argument checks


@pytest.mark.parametrize("seed", [0, 1])
def test_project_to_ball(seed):
    gen = torch.Generator().manual_seed(seed)
    delta = torch.randn(6, 2, 3, generator=gen, dtype=torch.float64)
    radius = torch.rand(6, generator=gen, dtype=torch.float64) * 4
    radius[0] = math.inf
    p2 = project_to_ball(delta, radius, 2.0)
    norms = flat_norm(delta, 2.0)
    expected = delta * torch.clamp(radius / norms, max=1.0)[:, None, None]
    torch.testing.assert_close(p2, expected)
    pinf = project_to_ball(delta, radius, math.inf)
    torch.testing.assert_close(pinf, torch.maximum(torch.minimum(delta, radius[:, None, None]), -radius[:, None, None]))
    assert (flat_norm(pinf, math.inf) <= radius).all()
    torch.testing.assert_close(flat_norm(delta, math.inf), delta.abs().flatten(1).max(1).values)
    torch.testing.assert_close(flat_norm(delta, 1.0), delta.abs().flatten(1).sum(1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"norm": "l1"}, r"The 'norm' parameter of FMN must be one of"),
        ({"steps": 0}, r"The 'steps' parameter of FMN must be an int >= 1. Got 0 instead."),
        ({"alpha_init": 0.0}, r"The 'alpha_init' parameter of FMN must be a finite float > 0.0"),
        ({"gamma_init": 1.5}, r"The 'gamma_init' parameter of FMN must be a float in \(0, 1\). Got 1.5 instead."),
        ({"gamma_final": 0}, r"The 'gamma_final' parameter of FMN must be a float in \(0, 1\)"),
        ({"init": "random"}, r"The 'init' parameter of FMN must be one of \['deepfool', 'zero'\]. Got 'random' instead."),
        ({"binary_search_steps": -1}, r"The 'binary_search_steps' parameter of FMN must be an int >= 0"),
        ({"bounds": (0, 0)}, r"The 'bounds' parameter of FMN must satisfy low < high"),
        ({"eps": [0.1, -0.2]}, r"The 'eps' parameter of FMN must be None, a finite float >= 0"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FMN(**kwargs)


def test_call_errors():
    model = nn.Linear(4, 3)
    x = torch.rand(5, 4)
    with pytest.raises(TypeError, match=r"The 'y' parameter of FMN must be an integer tensor"):
        FMN()(model, x, torch.zeros(5))
    with pytest.raises(ValueError, match=r"The 'y' parameter of FMN must hold class indices in \[0, 2\]"):
        FMN()(model, x, torch.full((5,), -1, dtype=torch.int64))
