"""APGD, the DLR losses, Square, FAB and AutoAttack: closed-form cases, schedules by hand, the worst
case over the ensemble, and the reliability flags on gradient-masked and randomised models."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from _helpers import WIDE, exact_linear_distance, linear_model, lp
from deepmargin.attacks import (
    APGD,
    FAB,
    IFGSM,
    PGD,
    AutoAttack,
    BlackBoxWarning,
    LargeEpsilonWarning,
    RandomizedModelWarning,
    ReliabilityWarning,
    Square,
    VanishingGradientWarning,
    apgd_checkpoints,
    dlr_loss,
    project_on_hyperplane_box,
    square_fraction,
    targeted_dlr_loss,
)

NORMS = ["linf", "l2"]
P = {"linf": math.inf, "l2": 2.0}


def _linear_problem(num_classes: int, norm: str, seed: int, n: int = 60):
    """A float64 linear model, inputs labelled with its predictions, exact distances, and a radius
    halfway between the two distances around the median (so no input sits on the ball's surface)."""
    model = linear_model(num_classes, 10, seed).eval()
    x = torch.randn(n, 10, generator=torch.Generator().manual_seed(seed + 100), dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    dist = exact_linear_distance(model, x, y, P[norm])
    ordered = dist.sort().values
    eps = float(ordered[n // 2 - 1] + ordered[n // 2]) / 2
    return model, x, y, dist, eps


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


def _inside(x_adv, x, eps, norm, bounds):
    return bool((lp(x_adv - x, P[norm]) <= eps * (1 + 1e-6) + 1e-12).all()) and \
        bool((x_adv >= bounds[0]).all() and (x_adv <= bounds[1]).all())


# --------------------------------------------------------------------------- DLR and the APGD schedule


def test_dlr_losses_by_hand():
    z = torch.tensor([[4.0, 2.0, 0.0], [1.0, 3.0, 2.0]])
    # row 0: -(4 - 2) / (4 - 0); row 1 (misclassified): -(1 - 3) / (3 - 1)
    torch.testing.assert_close(dlr_loss(z, torch.tensor([0, 0]), reduction="none"), torch.tensor([-0.5, 1.0]))
    z4 = torch.tensor([[4.0, 3.0, 2.0, 0.0], [0.0, 3.0, 1.0, 4.0]])
    # row 0, t = 2: -(4 - 2) / (4 - (2 + 0) / 2); row 1, y = 1, t = 3: -(3 - 4) / (4 - (1 + 0) / 2)
    expected = torch.tensor([-2 / 3, 1 / 3.5])
    got = targeted_dlr_loss(z4, torch.tensor([0, 1]), torch.tensor([2, 3]), reduction="none")
    torch.testing.assert_close(got, expected)
    # invariant to shifting and rescaling the logits
    torch.testing.assert_close(dlr_loss(3 * z + 7, torch.tensor([0, 0]), reduction="none"), torch.tensor([-0.5, 1.0]))
    assert dlr_loss(z, torch.tensor([0, 0])).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="The 'logits' parameter of dlr_loss must be a tensor of shape"):
        dlr_loss(torch.zeros(2, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="The 'logits' parameter of targeted_dlr_loss"):
        targeted_dlr_loss(torch.zeros(2, 3), torch.tensor([0, 1]), torch.tensor([1, 2]))


def test_apgd_checkpoints():
    assert apgd_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    for steps in (1, 7, 10, 250, 1000):
        w = apgd_checkpoints(steps)
        assert w[0] == 0 and w == sorted(set(w)) and w[-1] <= steps


class _Scripted(nn.Module):
    """Logits ``[0, a_k]`` for the k-th forward call (any input, zero input gradient): CE with y = 0
    is softplus(a_k), so the loss sequence is scripted."""

    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.values, self.calls = values, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        zero = x.flatten(1).sum(dim=1) * 0.0
        return torch.stack([zero, zero + a], dim=1)


def test_apgd_step_size_halving_follows_a_hand_computed_trace():
    # call 0: the clean check; call 1: x^(0); call 1 + j: x^(j), j = 1..100. Checkpoints 22, 41, 57, 70, 80, 87, 93, 99.
    a = {0: -5.0, 1: -5.0}
    for j in range(1, 23):  # 0..22: the loss rises at every step and the best improves -> no halving at 22
        a[1 + j] = -5.0 + 0.1 * j
    best = a[23]  # -2.8
    a[1 + 23] = -4.0  # 22..41: 18 of 19 steps rise (>= 75%) but stay below the best, not halved at 22 -> halve at 41
    for j in range(24, 42):
        a[1 + j] = -4.0 + 0.01 * (j - 23)
    for j in range(42, 58):  # 41..57 (restarted at the best): no rise at all -> halve at 57
        a[1 + j] = -3.0
    for j in range(58, 71):  # 57..70: every step rises above the best, halved at 57 -> no halving at 70
        a[1 + j] = best + 0.01 * (j - 57)
    for j in range(71, 101):  # then flat: halve at 80, 87, 93 and 99
        a[1 + j] = a[1 + 70]
    model = _Scripted([a[i] for i in range(102)]).double()
    eps = 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReliabilityWarning)  # the scripted model has zero gradients
        res = APGD(eps=eps, steps=100, bounds=WIDE).run(model, torch.zeros(1, 3, dtype=torch.float64),
                                                         torch.tensor([0]), trace=True)
    expected = [2 * eps] * 41 + [eps] * 16 + [eps / 2] * 23 + [eps / 4] * 7 + [eps / 8] * 6 + [eps / 16] * 6 \
        + [eps / 32]
    assert model.calls == 102
    torch.testing.assert_close(res.step_sizes[:, 0], torch.tensor(expected, dtype=torch.float64))


# --------------------------------------------------------------------------- linear models: closed form


@pytest.mark.parametrize("norm", NORMS)
def test_apgd_ce_is_exact_on_a_binary_linear_model(norm):
    model, x, y, dist, eps = _linear_problem(2, norm, seed=1)
    res = APGD(norm=norm, eps=eps, steps=20, bounds=WIDE).run(model, x, y)
    assert torch.equal(res.success, dist < eps)
    assert torch.equal(_predict(model, res.x_adv) != y, res.success)
    assert _inside(res.x_adv, x, eps, norm, WIDE)


@pytest.mark.parametrize("norm", NORMS)
def test_apgd_on_a_multiclass_linear_model_matches_the_closed_form(norm):
    model, x, y, dist, eps = _linear_problem(5, norm, seed=2)
    within = dist < eps
    found = torch.zeros_like(within)
    for attack in (APGD(norm=norm, eps=eps, loss="ce", steps=50, bounds=WIDE),
                   APGD(norm=norm, eps=eps, loss="dlr", steps=50, bounds=WIDE),
                   APGD(norm=norm, eps=eps, loss="dlr", targeted=True, steps=50, bounds=WIDE)):
        res = attack.run(model, x, y)
        assert _inside(res.x_adv, x, eps, norm, WIDE)
        assert torch.equal(_predict(model, res.x_adv) != y, res.success)
        assert not (res.success & ~within).any()  # never beyond what exists
        # untargeted CE/DLR can stop at a non-adversarial local maximum of a multi-class linear model
        assert int((within & ~res.success).sum()) <= 0.2 * int(within.sum())
        found |= res.success
    assert torch.equal(res.success, within)  # APGD-T (all rivals) is exact
    assert torch.equal(found, within)


@pytest.mark.parametrize("targeted", [True, False])
@pytest.mark.parametrize("norm", NORMS)
def test_fab_distance_is_within_one_percent_of_the_closed_form(norm, targeted):
    model, x, y, dist, _ = _linear_problem(5, norm, seed=3, n=30)
    res = FAB(norm=norm, targeted=targeted, steps=60, bounds=WIDE).run(model, x, y)
    assert res.success.all()
    ratio = res.delta_norm / dist
    assert bool((ratio >= 1 - 1e-9).all() and (ratio <= 1.01).all()), ratio
    torch.testing.assert_close(lp(res.x_adv - x, P[norm]), res.delta_norm)
    assert (_predict(model, res.x_adv) != y).all()


@pytest.mark.parametrize("norm", NORMS)
def test_fab_with_eps_stops_inside_the_ball(norm):
    model, x, y, dist, eps = _linear_problem(5, norm, seed=4, n=30)
    fab = FAB(norm=norm, eps=eps, steps=60, bounds=WIDE)
    res = fab.run(model, x, y)
    assert torch.equal(res.success & (res.delta_norm <= eps), dist < eps)
    x_adv = fab(model, x, y)
    assert _inside(x_adv, x, eps, norm, WIDE)
    assert torch.equal(_predict(model, x_adv) != y, dist < eps)


@pytest.mark.parametrize("norm", NORMS)
def test_hyperplane_projection_without_an_active_box_is_the_closed_form(norm):
    gen = torch.Generator().manual_seed(0)
    p, w = torch.randn(4, 6, generator=gen, dtype=torch.float64), torch.randn(4, 6, generator=gen, dtype=torch.float64)
    r = torch.randn(4, generator=gen, dtype=torch.float64)
    delta = project_on_hyperplane_box(p, w, r, WIDE, norm)
    if norm == "l2":
        expected = r[:, None] * w / (w * w).sum(dim=1, keepdim=True)
    else:
        expected = r[:, None] * w.sign() / w.abs().sum(dim=1, keepdim=True)
    torch.testing.assert_close(delta, expected)


# --------------------------------------------------------------------------- Square


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # noqa: D102
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        raise RuntimeError("this model has no backward pass")


class _Counting(nn.Module):
    """Counts the rows it is run on; its backward pass raises."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.rows = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.inner(_NoBackward.apply(x))


def _image_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 6 * 6, 5)).eval()


def test_square_schedule():
    assert [square_fraction(0.8, i, 10000) for i in (0, 10, 11, 50, 51, 200, 201, 8000, 8001)] == \
        [0.8, 0.8, 0.4, 0.4, 0.2, 0.2, 0.1, 0.8 / 256, 0.8 / 512]
    assert square_fraction(0.8, 5, 100) == 0.1  # rescaled to 500 of 10000: halved after 10, 50 and 200
    assert square_fraction(0.8, 6, 100) == 0.05  # 600: and after 500


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_square_needs_no_backward_and_respects_budget_bounds_and_queries(norm, eps):
    model = _Counting(_image_model()).eval()
    x = torch.rand(24, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    y = _predict(model, x)
    y[:3] = (y[:3] + 1) % 5  # three inputs misclassified to begin with
    model.rows = 0
    res = Square(norm=norm, eps=eps, queries=150).run(model, x, y)
    assert _inside(res.x_adv, x, eps, norm, (0.0, 1.0))
    assert res.x_adv.dtype == x.dtype
    assert model.rows == x.shape[0] + int(res.queries.sum())  # one clean pass, then the counted queries
    assert torch.equal(res.queries[:3], torch.zeros(3, dtype=torch.int64))
    assert torch.equal(res.x_adv[:3], x[:3])
    assert int(res.queries.max()) <= 150
    assert (res.queries[~res.success] == 150).all()
    assert torch.equal(_predict(model, res.x_adv) != y, res.success)
    assert res.success[3:].sum() > 0  # accuracy under attack below the clean accuracy


def test_square_spends_exactly_the_configured_queries_on_an_unbreakable_model():
    class Constant(nn.Module):
        def forward(self, x):
            return torch.tensor([3.0, 0.0, -1.0]).expand(x.shape[0], 3) + 0 * x.flatten(1)[:, :1]

    model = _Counting(Constant()).eval()
    x = torch.rand(5, 16)
    res = Square(eps=0.3, queries=40).run(model, x, torch.zeros(5, dtype=torch.int64))
    assert torch.equal(res.queries, torch.full((5,), 40))
    assert model.rows == 5 + 5 * 40


# --------------------------------------------------------------------------- AutoAttack: worst case


class _Spy:
    """Wraps an attack and records the inputs it is given."""

    def __init__(self, attack) -> None:
        self.attack, self.seen, self.name = attack, [], "spy-" + attack.name
        self.gradient_free = getattr(attack, "gradient_free", False)

    def __call__(self, model, x, y):
        self.seen.append(x.clone())
        return self.attack(model, x, y)


def test_adding_an_attack_never_raises_robust_accuracy_and_broken_inputs_are_not_attacked_again():
    model = _image_model(seed=2)
    x = torch.rand(30, 2, 6, 6, generator=torch.Generator().manual_seed(2))
    y = _predict(model, x)
    y[:5] = (y[:5] + 1) % 5  # misclassified to begin with
    eps = 0.03
    first, second = _Spy(APGD(eps=eps, steps=10)), _Spy(Square(eps=eps, queries=100))
    one = AutoAttack(eps=eps, attacks=[APGD(eps=eps, steps=10)]).evaluate(model, x, y)
    both = AutoAttack(eps=eps, attacks=[first, second]).evaluate(model, x, y)
    assert both.robust_accuracy <= one.robust_accuracy
    after = list(both.accuracy_after.values())
    assert after == sorted(after, reverse=True) and after[-1] == both.robust_accuracy <= both.clean_accuracy
    # the first attack sees only the correctly classified inputs, the second only what the first left
    assert first.seen[0].shape[0] == 25 and torch.equal(first.seen[0], x[5:])
    left = both.accuracy_after["spy-apgd-ce"] * x.shape[0]
    assert second.seen and second.seen[0].shape[0] == round(left)
    assert all(b == "clean" for b in both.broken_by[:5])
    assert torch.equal(both.robust, _predict(model, both.x_adv) == y)
    assert _inside(both.x_adv, x, eps, "linf", (0.0, 1.0))
    rows = both.rows(model="tiny")
    assert [r["attack"] for r in rows] == ["clean", "spy-apgd-ce", "spy-square", "autoattack"]


def test_standard_ensemble_runs_apgd_ce_apgd_t_fab_t_square():
    aa = AutoAttack(norm="l2", eps=0.5)
    assert [a.name for a in aa.attacks(10)] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    apgd_t, fab_t, square = aa.attacks(10)[1:]
    assert (apgd_t.n_target_classes, apgd_t.steps, fab_t.n_target_classes, square.queries) == (9, 100, 9, 5000)
    assert [a.name for a in AutoAttack(eps=0.1, version="rand").attacks(10)] == ["apgd-ce", "apgd-dlr"]
    assert all(a.eot_samples == 20 for a in AutoAttack(eps=0.1, version="rand").attacks(10))
    assert "square" in [a.name for a in AutoAttack(eps=0.1, version="fast").attacks(10)]


# --------------------------------------------------------------------------- flags


class _Quantise(nn.Module):
    """Rounds inputs to a grid of 1/4: a zero gradient almost everywhere (gradient masking)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 4) / 4


def test_gradient_masking_is_seen_through_by_square_and_flagged():
    gen = torch.Generator().manual_seed(0)
    linear = nn.Linear(64, 10)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(10, 64, generator=gen))
        linear.bias.zero_()
    model = nn.Sequential(_Quantise(), nn.Flatten(), linear).eval()
    x = torch.rand(20, 1, 8, 8, generator=gen)
    y = _predict(model, x)
    eps = 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReliabilityWarning)
        ifgsm = (_predict(model, IFGSM(eps=eps, steps=10)(model, x, y)) == y).double().mean().item()
        pgd = (_predict(model, PGD(eps=eps, steps=10, seed=0)(model, x, y)) == y).double().mean().item()
    assert ifgsm >= 0.8 and pgd >= 0.7
    with pytest.warns(BlackBoxWarning), pytest.warns(VanishingGradientWarning):
        result = AutoAttack(eps=eps).evaluate(model, x, y)
    assert result.robust_accuracy <= min(ifgsm, pgd) - 0.4
    assert result.flags["zero_gradients"] and result.flags["black_box"]
    assert "square" in result.broken_by


def test_randomised_models_are_flagged_and_modes_are_restored():
    x = torch.rand(12, 16)
    cheap = [APGD(eps=0.05, steps=3)]

    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(16, 4)

        def forward(self, x):
            return self.linear(x + 0.05 * torch.randn_like(x))

    noisy = Noisy().eval()
    with pytest.warns(ReliabilityWarning, match="differ"):
        result = AutoAttack(eps=0.05, attacks=cheap).evaluate(noisy, x, _predict(noisy, x))
    assert result.flags["randomized"] and not result.flags["training"]

    dropout = nn.Sequential(nn.Linear(16, 32), nn.Dropout(0.5), nn.Linear(32, 4)).train()
    dropout[2].eval()  # a submodule with its own mode
    y = _predict(dropout.eval(), x)
    dropout.train()
    dropout[2].eval()
    with pytest.warns(ReliabilityWarning) as record:
        result = AutoAttack(eps=0.05, attacks=cheap).evaluate(dropout, x, y)
    assert any(isinstance(w.message, RandomizedModelWarning) for w in record)
    assert any("The model is in training mode" in str(w.message) for w in record)
    assert result.flags["randomized"] and result.flags["training"]
    assert [m.training for m in dropout] == [True, True, False]


def test_probabilities_and_large_eps_flags():
    torch.manual_seed(0)
    x = torch.rand(10, 8)
    probs = nn.Sequential(nn.Linear(8, 3), nn.Softmax(dim=1)).eval()
    with pytest.warns(ReliabilityWarning, match="probabilities"):
        result = AutoAttack(eps=0.05, attacks=[APGD(eps=0.05, steps=2)]).evaluate(probs, x, _predict(probs, x))
    assert result.flags["probabilities"] and result.flags["large_eps"] is None

    class Constant(nn.Module):  # predicts class 0 whatever the input
        def forward(self, x):
            return torch.tensor([2.0, 0.0, -1.0]).expand(x.shape[0], 3) + 0 * x[:, :1]

    aa = AutoAttack(eps=0.05, attacks=[APGD(eps=0.05, steps=2)])
    with pytest.warns(LargeEpsilonWarning):
        check = aa.check_large_eps(Constant(), x, torch.zeros(10, dtype=torch.int64), steps=2, queries=5)
    assert check.fired and check.eps == 1.0 and check.robust_accuracy == 1.0
    linear = nn.Linear(8, 3).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", LargeEpsilonWarning)
        result = aa.evaluate(linear, x, _predict(linear, x), large_eps=True)
    assert result.flags["large_eps"] is False


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("build,match", [
    (lambda: APGD(norm="l1", eps=0.1), "The 'norm' parameter of APGD must be 'linf' or 'l2'"),
    (lambda: APGD(eps=0.1, loss="margin"), "The 'loss' parameter of APGD must be one of"),
    (lambda: Square(eps=0.1, queries=0), "The 'queries' parameter of Square must be an int >= 1. Got 0 instead."),
    (lambda: Square(eps=0.1, p_init=1.5), "The 'p_init' parameter of Square must be a float in"),
    (lambda: FAB(eta=0.5), "The 'eta' parameter of FAB must be a finite float >= 1. Got 0.5 instead."),
    (lambda: AutoAttack(eps=0.1, version="plus"), "The 'version' parameter of AutoAttack must be one of"),
])
def test_bad_arguments_get_the_house_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_dlr_on_too_few_classes_is_refused_with_the_fix():
    model = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="The 'loss' parameter of APGD must be 'ce' for a model with 3 classes"):
        APGD(eps=0.1, loss="dlr", targeted=True, steps=2)(model.eval(), torch.rand(2, 4), torch.tensor([0, 1]))


# --------------------------------------------------------------------------- models without an input gradient


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("no backward for you")


class _Gradientless(nn.Module):
    """A linear classifier that detaches its input, computes under no_grad, or fails in its backward pass."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.linear = nn.Linear(16, 5)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(5, 16, generator=torch.Generator().manual_seed(3)))

    def forward(self, x):
        if self.how == "detach":
            return self.linear(x.detach())
        if self.how == "no_grad":
            with torch.no_grad():
                return self.linear(x)
        return self.linear(_NoBackward.apply(x))


@pytest.mark.parametrize("how", ["detach", "no_grad", "backward_raises"])
def test_a_model_without_input_gradient_is_flagged_and_only_square_breaks_it(how):
    model = _Gradientless(how).eval()
    x = torch.rand(20, 16, generator=torch.Generator().manual_seed(4))
    y = _predict(model, x)
    eps = 0.2
    spy = _Spy(APGD(eps=eps, steps=5))
    aa = AutoAttack(eps=eps, attacks=[spy, Square(eps=eps, queries=200)])
    with pytest.warns(VanishingGradientWarning, match=r"The model has no input gradient: .*gradient attacks are skipped"):
        result = aa.evaluate(model, x, y)
    assert result.flags["zero_gradients"] and not spy.seen  # skipped, not crashed
    assert result.accuracy_after["spy-apgd-ce"] == result.clean_accuracy == 1.0
    assert result.robust_accuracy < 1.0 and "square" in result.broken_by
    # APGD alone: a zero gradient, flagged, no autograd error (it can only break inputs at its random start)
    with pytest.warns(ReliabilityWarning, match="all-zero input gradient"):
        found = APGD(eps=eps, steps=5).run(model, x, y)
    assert found.x_adv.shape == x.shape


def test_normal_models_keep_every_gradient_attack():
    model = linear_model(5, 16, 0).eval()
    x = torch.rand(20, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    spy = _Spy(APGD(eps=0.2, steps=5))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReliabilityWarning)
        result = AutoAttack(eps=0.2, attacks=[spy]).evaluate(model, x, _predict(model, x))
    assert spy.seen and not result.flags["zero_gradients"]


# --------------------------------------------------------------------------- sweeps


def test_sweep_at_eps_zero_runs_no_attack_and_records_the_flags_per_radius():
    model = _image_model(seed=2)
    x = torch.rand(10, 2, 6, 6, generator=torch.Generator().manual_seed(2))
    y = _predict(model, x)
    spy = _Spy(APGD(eps=0.05, steps=3))
    aa = AutoAttack(eps=0.05, attacks=[spy])
    (clean,) = aa.sweep(model, x, y, [0.0])
    assert torch.equal(clean, x) and not spy.seen and aa.sweep_flags == {}
    y_wrong = (y + 1) % 5
    y_wrong[:5] = y[:5]
    probs = nn.Sequential(model, nn.Softmax(dim=1)).eval()
    with pytest.warns(ReliabilityWarning, match="probabilities"):
        advs = aa.sweep(probs, x, y_wrong, [0.0, 0.05])
    assert torch.equal(advs[0], x) and len(spy.seen) == 1
    assert list(aa.sweep_flags) == [0.05] and "probabilities" in aa.sweep_flags[0.05]
    aa.reset_sweep_flags()
    assert aa.sweep_flags == {}
