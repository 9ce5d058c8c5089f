"""Tests for deepmargin.metrics.robustness against hand computations and closed forms."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

from deepmargin.attacks.deepfool import DeepFool
from deepmargin.attacks.minnorm import FMN
from deepmargin.metrics.robustness import (
    adversarial_distances,
    distance_summary,
    error_at_eps,
    linearized_input_margins,
    margin_report,
    median_adversarial_distance,
    rho_adv,
)

from _helpers import NORMS, WIDE, linear_model


def random_distances(seed: int, n: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    d = torch.rand(n, generator=gen, dtype=torch.float64)
    kind = torch.randint(0, 5, (n,), generator=gen)
    d[kind == 0] = 0.0  # misclassified
    d[kind == 1] = math.inf  # failed
    return d


# ------------------------------------------------------------------------------------------
# median and error at epsilon


@pytest.mark.parametrize("n", [1, 2, 7, 10, 31])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_median_matches_numpy(n, seed):
    d = random_distances(seed, n)
    expected = np.median(d.numpy())
    got = median_adversarial_distance(d)
    assert got.dim() == 0
    if math.isinf(expected):
        assert math.isinf(got.item())
    else:
        assert got.item() == pytest.approx(expected, rel=1e-12, abs=0)


def test_median_with_half_failed_is_inf():
    assert math.isinf(median_adversarial_distance(torch.tensor([0.1, math.inf])).item())
    assert median_adversarial_distance(torch.tensor([0.1, 0.3, math.inf])).item() == pytest.approx(0.3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_error_at_eps_counts_by_hand(seed):
    d = random_distances(seed, 25)
    grid = [0.0, 0.1, 0.5, 0.99, 2.0]
    got = error_at_eps(d, grid)
    assert got.shape == (len(grid),)
    for e, g in zip(grid, got.tolist()):
        count = sum(1 for v in d.tolist() if v <= e)
        assert g == pytest.approx(count / len(d))
    single = error_at_eps(d, 0.5)
    assert single.dim() == 0 and single.item() == pytest.approx(got[2].item())
    # at eps = 0 the error is the share of misclassified inputs (distance 0)
    assert got[0].item() == pytest.approx((d == 0).double().mean().item())


def test_distance_function_errors():
    with pytest.raises(TypeError, match=r"The 'distances' parameter of median_adversarial_distance must be a 1-D"):
        median_adversarial_distance(torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"The 'distances' parameter of median_adversarial_distance must be non-empty"):
        median_adversarial_distance(torch.zeros(0))
    with pytest.raises(ValueError, match=r"The 'distances' parameter of error_at_eps must hold values >= 0"):
        error_at_eps(torch.tensor([0.1, -1.0]), 0.1)
    with pytest.raises(ValueError, match=r"The 'eps' parameter of error_at_eps must be None, a finite float >= 0"):
        error_at_eps(torch.tensor([0.1]), -0.5)


# ------------------------------------------------------------------------------------------
# per-input distances


@pytest.mark.parametrize("norm", NORMS)
def test_adversarial_distances_linear_model(norm):
    model = linear_model(4, 6, seed=0)
    x = torch.rand(30, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pred = model(x).argmax(1).detach()
    y = pred.clone()
    y[:5] = (pred[:5] + 1) % 4  # five misclassified inputs
    attack = FMN(norm=norm, bounds=WIDE)
    d = adversarial_distances(model, x, y, norm=norm, attack=attack, batch_size=7)
    assert (d[:5] == 0).all()
    # the rest: the exact distance of a linear model, computed independently
    q = 2.0 if norm == 2 else 1.0
    z = model(x).detach()
    w = model.weight.detach()
    exact = torch.stack(
        [((z[i, y[i]] - z[i, j]) / (w[y[i]] - w[j]).norm(p=q)) for i in range(30) for j in range(4) if j != y[i]]
    ).reshape(30, 3).min(dim=1).values
    torch.testing.assert_close(d[5:], exact[5:], rtol=2e-3, atol=0)
    # chunking does not change the result
    torch.testing.assert_close(d, adversarial_distances(model, x, y, norm=norm, attack=attack, batch_size=64))


def test_adversarial_distances_failed_attack_is_inf():
    model = nn.Linear(3, 3)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([1.0, 0.0, -1.0]))
    x = torch.rand(4, 3)
    y = torch.tensor([0, 1, 0, 2])
    d = adversarial_distances(model, x, y, norm=2, attack=FMN(steps=5, init="zero"))
    assert math.isinf(d[0].item()) and math.isinf(d[2].item())
    assert d[1].item() == 0 and d[3].item() == 0
    assert error_at_eps(d, 100.0).item() == pytest.approx(0.5)


def test_distance_summary_consistent():
    model = linear_model(3, 5, seed=2)
    x = torch.rand(21, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = model(x).argmax(1).detach()
    y[0] = (y[0] + 1) % 3
    attack = FMN(norm=math.inf, bounds=WIDE)
    row = distance_summary(model, x, y, norm="linf", eps=[0.05, 0.2], attack=attack)
    d = adversarial_distances(model, x, y, norm=math.inf, attack=attack)
    assert row["norm"] == math.inf and row["eps"] == (0.05, 0.2)
    torch.testing.assert_close(row["distances"], d)
    assert row["median_distance"].item() == pytest.approx(np.median(d.numpy()))
    torch.testing.assert_close(row["error"], error_at_eps(d, [0.05, 0.2]))
    assert row["clean_error"].item() == pytest.approx(1 / 21)


def test_metric_argument_errors():
    model = linear_model(3, 5, seed=0)
    x = torch.rand(4, 5, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"The 'attack' parameter of adversarial_distances must measure the l2.0 norm"):
        adversarial_distances(model, x, y, norm=2, attack=FMN(norm=math.inf))
    with pytest.raises(TypeError, match=r"The 'attack' parameter of adversarial_distances must be a minimum-norm attack"):
        adversarial_distances(model, x, y, attack=lambda m, a, b: a)
    with pytest.raises(ValueError, match=r"The 'batch_size' parameter of adversarial_distances must be an int >= 1"):
        adversarial_distances(model, x, y, batch_size=0)
    with pytest.raises(ValueError, match=r"The 'norm' parameter of margin_report must be one of"):
        margin_report(model, x, y, norm=3)


# ------------------------------------------------------------------------------------------
# rho_adv


def binary_setup(seed: int):
    model = linear_model(2, 5, seed)
    x = torch.rand(25, 5, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    w = (model.weight[1] - model.weight[0]).detach()
    f = (model(x)[:, 1] - model(x)[:, 0]).detach()
    return model, x, w, f


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rho_adv_closed_form_on_linear_binary_model(seed):
    model, x, w, f = binary_setup(seed)
    overshoot, nudge = 0.02, 1e-4
    attack = DeepFool(norm=2, overshoot=overshoot, nudge=nudge, bounds=WIDE)
    out = rho_adv(model, x, attack=attack)  # DeepFool's definition: change the predicted label
    # one DeepFool step reaches the hyperplane: ||r|| = (1 + overshoot) (|f| / ||w|| + nudge)
    ratio = (1 + overshoot) * (f.abs() / w.norm() + nudge) / x.norm(dim=1)
    torch.testing.assert_close(out["ratio"], ratio, rtol=1e-9, atol=0)
    assert out["rho_adv"].item() == pytest.approx(ratio.mean().item(), rel=1e-9)
    assert out["success"].all()
    torch.testing.assert_close(out["labels"], (f > 0).long())


@pytest.mark.parametrize("seed", [0, 1])
def test_rho_adv_with_true_labels_counts_misclassified_as_zero(seed):
    model, x, w, f = binary_setup(seed)
    pred = (f > 0).long()
    y = pred.clone()
    y[:6] = 1 - y[:6]
    attack = DeepFool(norm=2, overshoot=0.0, nudge=1e-6, bounds=WIDE)
    out = rho_adv(model, x, y, attack=attack, reference="label", batch_size=4)
    ratio = (f.abs() / w.norm() + 1e-6) / x.norm(dim=1)
    ratio[:6] = 0
    torch.testing.assert_close(out["ratio"], ratio, rtol=1e-9, atol=0)
    assert out["rho_adv"].item() == pytest.approx(ratio.mean().item(), rel=1e-9)
    # the default reference ignores the labels: same as attacking the predictions
    same = rho_adv(model, x, y, attack=attack)
    torch.testing.assert_close(same["ratio"], rho_adv(model, x, attack=attack)["ratio"])


class _DeadOrAlive(nn.Module):
    """logits = [0.1, 4 relu(x_0 - 0.5)]: zero input gradient wherever x_0 < 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.full_like(x[:, 0], 0.1), 4 * torch.relu(x[:, 0] - 0.5)], dim=1)


def test_rho_adv_leaves_out_failures(caplog):
    x = torch.tensor([[0.2, 0.3], [0.9, 0.4]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    attack = DeepFool(norm=2, overshoot=0.02, nudge=0.0, bounds=WIDE)
    with caplog.at_level(logging.WARNING, logger="deepmargin.metrics.robustness"):
        out = rho_adv(_DeadOrAlive(), x, y, attack=attack, reference="label")
    assert out["success"].tolist() == [False, True]
    assert math.isinf(out["ratio"][0].item())
    # second input: f = 0.1 - 1.6, ||grad|| = 4, so ||r|| = 1.02 * 1.5 / 4
    expected = 1.02 * 1.5 / 4 / x[1].norm().item()
    assert out["ratio"][1].item() == pytest.approx(expected, rel=1e-9)
    assert out["rho_adv"].item() == pytest.approx(expected, rel=1e-9)
    assert "left out" in caplog.text


def test_rho_adv_errors():
    model = linear_model(3, 4, seed=0)
    x = torch.rand(3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"The 'reference' parameter of rho_adv must be one of \['prediction', 'label'\]"):
        rho_adv(model, x, reference="truth")
    with pytest.raises(ValueError, match=r"The 'y' parameter of rho_adv must be given when reference='label'"):
        rho_adv(model, x, reference="label")
    with pytest.raises(ValueError, match=r"The 'attack' parameter of rho_adv must measure the l2.0 norm"):
        rho_adv(model, x, attack=DeepFool(norm="linf"))


# ------------------------------------------------------------------------------------------
# linearised margins and the margin report


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("seed", [0, 1])
def test_linearized_margins_match_full_jacobian(norm, seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 4)).double()
    x = torch.rand(6, 5, dtype=torch.float64)
    y = torch.randint(0, 4, (6,), generator=torch.Generator().manual_seed(seed))
    d, nearest = linearized_input_margins(model, x, y, norm=norm)
    q = 2.0 if norm == 2 else 1.0
    for i in range(6):
        jac = torch.autograd.functional.jacobian(model, x[i : i + 1]).reshape(4, 5)  # (C, D)
        z = model(x[i : i + 1]).detach()[0]
        ds = {j: ((z[y[i]] - z[j]) / (jac[y[i]] - jac[j]).norm(p=q)).item() for j in range(4) if j != y[i]}
        best = min(ds, key=ds.get)
        assert d[i].item() == pytest.approx(ds[best], rel=1e-10)
        assert nearest[i].item() == best


@pytest.mark.parametrize("norm", NORMS)
def test_margin_report_linear_model(norm):
    model = linear_model(4, 6, seed=4)
    x = torch.rand(20, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y = model(x).argmax(1).detach()
    y[:3] = (y[:3] + 2) % 4
    rows = margin_report(model, x, y, norm=norm, attack=FMN(norm=norm, bounds=WIDE), batch_size=8)
    assert set(rows) == {"index", "label", "pred", "correct", "nearest_class", "linearized", "min_norm", "gap"}
    assert all(v.shape == (20,) for v in rows.values())
    assert rows["correct"].tolist() == [False] * 3 + [True] * 17
    assert (rows["linearized"][:3] < 0).all() and (rows["linearized"][3:] > 0).all()
    assert (rows["min_norm"][:3] == 0).all()
    # for a linear model without bounds the linearised distance is exact: the gap is FMN's tolerance
    torch.testing.assert_close(rows["min_norm"][3:], rows["linearized"][3:], rtol=2e-3, atol=0)
    torch.testing.assert_close(rows["gap"], rows["min_norm"] - rows["linearized"])
    assert (rows["gap"][3:] >= -1e-9).all()


def test_margin_report_restores_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.ReLU(), nn.Linear(8, 3))
    x = torch.rand(5, 4)
    y = torch.zeros(5, dtype=torch.int64)
    model.train()
    out1 = margin_report(model, x, y, norm=2, attack=FMN(steps=10))
    assert model.training and model[1].training
    out2 = margin_report(model, x, y, norm=2, attack=FMN(steps=10))
    # dropout is off inside: the report is deterministic
    torch.testing.assert_close(out1["linearized"], out2["linearized"])


@pytest.mark.parametrize("norm", NORMS)
def test_linearized_margins_agree_with_metrics_margins(norm):
    # independent implementation by the lead (through the loss's linearized_distances), if present
    margins = pytest.importorskip("deepmargin.metrics.margins")
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 4)).double()  # no zero gradients
    x = torch.rand(9, 5, dtype=torch.float64)
    y = torch.randint(0, 4, (9,), generator=torch.Generator().manual_seed(4))
    d, _ = linearized_input_margins(model, x, y, norm=norm)
    ref = margins.linearized_margins(model, x, y, ["input"], norm=norm)["input"]
    torch.testing.assert_close(d, ref, rtol=1e-8, atol=1e-10)


def test_linearized_margins_zero_gradient_is_infinite():
    model = nn.Linear(3, 3)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([1.0, 0.0, 1.0]))
    x = torch.rand(3, 3)
    d, _ = linearized_input_margins(model, x, torch.tensor([0, 1, 2]), norm=2)
    assert d[0].item() == 0.0  # tie with class 2: on the boundary
    assert d[1].item() == -math.inf  # class 1 is behind everywhere
    assert d[2].item() == 0.0
