"""Lipschitz bounds and certified class-pure radii (deepmargin.metrics.lipschitz)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from deepmargin.attacks import PGD, DeepFool, Normalize
from deepmargin.data import load_dataset
from deepmargin.metrics import lipschitz_lower_bound, lipschitz_upper_bound, logit_margins, purity_radius
from deepmargin.metrics.lipschitz import SUPPORTED_LAYERS, BranchSum, Chain, operator_norm
from deepmargin.models import build_model
from deepmargin.models.wrn import PreActBlock

from _helpers import WIDE, fit

NORMS = ("l2", "linf-l2")


def dense_matrix(module: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """The linear part of ``module`` on inputs of ``shape`` as a dense float64 matrix (applied to the identity basis)."""
    n = math.prod(shape)
    double = copy.deepcopy(module).double().eval()
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    with torch.no_grad():
        out = double(eye) - double(torch.zeros(1, *shape, dtype=torch.float64))
    return out.reshape(n, -1).T


def spectral_norm(module: nn.Module, shape: tuple[int, ...]) -> float:
    return float(torch.linalg.matrix_norm(dense_matrix(module, shape), ord=2))


def _seeded(module: nn.Module, seed: int) -> nn.Module:
    """Re-draw every parameter from a standard normal (so tests do not depend on one initialisation)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return module


LINEAR_OPERATORS = [
    # (module, one input's shape); non-square inputs, strides, paddings, dilations
    *[(nn.Conv2d(2, 3, 3, stride=s, padding=p, dilation=d), (2, 7, 9))
      for s in (1, 2, 3) for p in (0, 1, 2) for d in (1, 2)],
    (nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 0)), (2, 6, 5)),
    (nn.Conv2d(4, 6, 3, padding=1, groups=2), (4, 6, 5)),
    (nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), (2, 6, 6)),
    (nn.Conv2d(2, 3, 4, padding="same"), (2, 6, 5)),
    (nn.Conv1d(2, 3, 4, stride=2, padding=1), (2, 11)),
    (nn.Conv3d(1, 2, 2, stride=2, padding=1), (1, 3, 4, 5)),
    (nn.ConvTranspose2d(2, 3, 3, stride=2), (2, 4, 5)),
    (nn.Linear(7, 5), (7,)),
    (nn.Linear(3, 9), (3,)),
    (nn.AvgPool2d(3, stride=2, padding=1), (2, 7, 8)),
    (nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), (1, 5, 5)),
    (nn.AvgPool2d(2), (1, 6, 6)),
    (nn.AvgPool1d(3, stride=2), (2, 9)),
    (nn.AdaptiveAvgPool2d((2, 3)), (2, 5, 7)),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("method", ["lanczos", "power"])
@pytest.mark.parametrize(("module", "shape"), LINEAR_OPERATORS, ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else str(v))
def test_power_iteration_equals_the_dense_spectral_norm(module, shape, method):
    _seeded(module, seed=len(shape))
    exact = spectral_norm(module, shape)
    if method == "lanczos":
        assert operator_norm(module, shape) == pytest.approx(exact, rel=1e-9)
    else:  # plain power iteration converges slowly where the top singular values are close
        assert operator_norm(module, shape, method="power", iterations=3000, tol=1e-12) == pytest.approx(exact, rel=1e-4)
    # both approach the norm from below
    assert operator_norm(module, shape, method=method, iterations=3) <= exact * (1 + 1e-12)


def test_the_walk_propagates_shapes_through_convolutions():
    """Each layer is bounded on the shape it sees: the product of the dense norms at those shapes."""
    conv1 = _seeded(nn.Conv2d(1, 3, 3, stride=2, padding=1), 1)
    pool = nn.AvgPool2d(2)
    conv2 = _seeded(nn.Conv2d(3, 2, 3, dilation=2, padding=2), 2)
    model = nn.Sequential(conv1, nn.ReLU(), pool, conv2, nn.Tanh(), nn.Flatten(), _seeded(nn.Linear(2 * 2 * 3, 4), 3))
    shapes = [(1, 9, 11), (3, 5, 6), (3, 2, 3), (2 * 2 * 3,)]
    expected = math.prod(spectral_norm(m, s) for m, s in zip((conv1, pool, conv2, model[6]), shapes))
    assert lipschitz_upper_bound(model, (1, 9, 11)) == pytest.approx(expected, rel=1e-8)


def test_a_linear_models_bound_is_its_spectral_norm_and_max_row_norm():
    model = _seeded(nn.Linear(6, 4), 0)
    w = model.weight.detach().double()
    assert lipschitz_upper_bound(model, (6,)) == pytest.approx(float(torch.linalg.matrix_norm(w, ord=2)), rel=1e-9)
    assert lipschitz_upper_bound(model, (6,), norm="linf-l2") == pytest.approx(float(w.norm(dim=1).max()), rel=1e-9)
    # a linear model's constants are attained: the lower bound is exact
    x = torch.randn(3, 6)
    for norm in NORMS:
        assert lipschitz_lower_bound(model, x, norm=norm) == pytest.approx(lipschitz_upper_bound(model, (6,), norm=norm),
                                                                       rel=1e-5)


def test_linf_l2_of_an_mlp_uses_the_last_layers_row_norms():
    fc1, fc2 = _seeded(nn.Linear(5, 8), 1), _seeded(nn.Linear(8, 3), 2)
    model = nn.Sequential(fc1, nn.ReLU(), fc2)
    w1, w2 = fc1.weight.detach().double(), fc2.weight.detach().double()
    two = lambda w: float(torch.linalg.matrix_norm(w, ord=2))  # noqa: E731
    rows2, rows1, l1_2 = float(w2.norm(dim=1).max()), float(w1.norm(dim=1).max()), float(w2.abs().sum(1).max())
    # the best of ||W2||_{2->inf} ||W1||_2 and ||W2||_{inf->inf} ||W1||_{2->inf}
    expected = min(rows2 * two(w1), l1_2 * rows1)
    assert lipschitz_upper_bound(model, (5,), norm="linf-l2") == pytest.approx(expected, rel=1e-9)
    assert lipschitz_upper_bound(model, (5,)) == pytest.approx(two(w2) * two(w1), rel=1e-9)
    assert expected <= rows2 * two(w1) <= two(w2) * two(w1)


@pytest.mark.parametrize("cls", [nn.BatchNorm1d, nn.BatchNorm2d])
def test_batch_norm_in_eval_mode_is_its_largest_scale(cls):
    gen = torch.Generator().manual_seed(0)
    bn = cls(5, eps=1e-3)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(5, generator=gen) * 2)  # signs included: |gamma| counts
        bn.bias.copy_(torch.randn(5, generator=gen))
        bn.running_var.copy_(torch.rand(5, generator=gen) + 0.1)
        bn.running_mean.copy_(torch.randn(5, generator=gen))
    expected = float((bn.weight.detach().abs() / (bn.running_var + bn.eps).sqrt()).max())
    shape = (5,) if cls is nn.BatchNorm1d else (5, 3, 4)
    model = nn.Sequential(bn).train()
    for norm in NORMS:
        assert lipschitz_upper_bound(model, shape, norm=norm) == pytest.approx(expected, rel=1e-6)
    assert model.training and bn.training  # mode restored
    assert int(bn.num_batches_tracked) == 0  # evaluated with the running statistics, which stay as they were
    no_affine = cls(5, affine=False)
    with torch.no_grad():
        no_affine.running_var.fill_(0.25)
    assert lipschitz_upper_bound(no_affine, shape) == pytest.approx(1 / math.sqrt(0.25 + no_affine.eps), rel=1e-6)


def test_normalize_is_the_diagonal_map_one_over_std():
    model = nn.Sequential(Normalize([0.5, 0.1], [0.25, 0.5]), nn.Flatten(), nn.Identity())
    assert lipschitz_upper_bound(model, (2, 3, 3)) == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("pool", "shape", "expected"),
    [
        (nn.MaxPool2d(2), (1, 6, 6), 1.0),  # non-overlapping windows
        (nn.MaxPool2d(3, stride=2), (1, 7, 7), 2.0),  # a pixel falls in up to 2 x 2 windows
        (nn.MaxPool2d(3, stride=1), (1, 6, 6), 3.0),  # up to 3 x 3 windows
        (nn.MaxPool2d(3, stride=1, padding=1), (1, 5, 4), 3.0),
        (nn.MaxPool1d(4, stride=1), (1, 9), 2.0),  # 4 windows
        (nn.MaxPool2d(2, stride=1, dilation=2), (1, 6, 6), 2.0),
        (nn.AdaptiveMaxPool2d((2, 2)), (1, 5, 5), 2.0),  # windows 0..2 and 2..4 share row/col 2
    ],
)
def test_max_pool_constant_is_the_root_of_the_largest_window_count(pool, shape, expected):
    assert lipschitz_upper_bound(pool, shape) == pytest.approx(expected)
    assert lipschitz_upper_bound(pool, shape, norm="linf-l2") == pytest.approx(1.0)
    # attained: an entry far above the others is the maximum of every window it falls in, and the
    # Jacobian's column for it holds one 1 per such window (its other columns are orthogonal to it)
    n = math.prod(shape)
    probes = torch.rand(n, *shape, generator=torch.Generator().manual_seed(0)) * 1e-3
    probes.view(n, n)[range(n), range(n)] = 1.0  # probe i: a spike at entry i
    assert lipschitz_lower_bound(nn.Sequential(pool, nn.Flatten()), probes) == pytest.approx(expected, rel=1e-6)


class Residual(nn.Module):
    """``x + branch(x)``, described by the lipschitz_structure protocol."""

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x):
        return x + self.branch(x)

    def lipschitz_structure(self):
        return BranchSum(None, self.branch)


def test_a_residual_block_is_bounded_by_the_sum_of_its_branches():
    fc = _seeded(nn.Linear(4, 4), 0)
    model = Residual(fc)
    w = fc.weight.detach().double()
    assert lipschitz_upper_bound(model, (4,)) == pytest.approx(1 + float(torch.linalg.matrix_norm(w, ord=2)), rel=1e-9)
    assert lipschitz_upper_bound(model, (4,), norm="linf-l2") == pytest.approx(
        min(1 + float(w.norm(dim=1).max()), 1 + float(torch.linalg.matrix_norm(w, ord=2))), rel=1e-9)
    # the identity plus a linear map is linear: the lower bound is ||I + W||_2
    assert lipschitz_lower_bound(model, torch.randn(2, 4)) == pytest.approx(
        float(torch.linalg.matrix_norm(torch.eye(4, dtype=torch.float64) + w, ord=2)), rel=1e-5)
    chained = nn.Sequential(Residual(nn.Sequential(nn.Linear(4, 4), nn.ReLU())), nn.Linear(4, 2))
    assert lipschitz_upper_bound(chained, (4,)) > 0
    assert repr(Chain(nn.ReLU(), BranchSum(None, nn.Tanh()))) == "Chain(ReLU, BranchSum(identity, Tanh))"


def _random_nets():
    block = PreActBlock(3, 6, stride=2, dropout=0.2, batch_norm=True)
    same = PreActBlock(4, 4, stride=1, dropout=0.0, batch_norm=True)
    return [
        ("mlp", build_model("mlp", num_classes=3, input_shape=(5,), hidden_sizes=(16, 16), batch_norm=True), (5,)),
        ("small cnn", build_model("digits_cnn", num_classes=10, input_shape=(1, 8, 8), width=4, fc_width=16,
                                  batch_norm=True, dropout=0.3), (1, 8, 8)),
        ("digits cnn 2-d input", build_model("digits_cnn", num_classes=10, input_shape=(8, 8), width=4), (8, 8)),
        ("residual block", nn.Sequential(same, nn.Flatten(), nn.Linear(4 * 5 * 5, 3)), (4, 5, 5)),
        ("strided residual block", nn.Sequential(block, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)),
         (3, 6, 6)),
        ("protocol residual", nn.Sequential(nn.Linear(3, 6), Residual(nn.Sequential(nn.Tanh(), nn.Linear(6, 6))),
                                            nn.Sigmoid(), nn.Linear(6, 2)), (3,)),
        ("lenet5", build_model("lenet5", num_classes=10, input_shape=(1, 16, 16), batch_norm=True), (1, 16, 16)),
        ("tiny wrn", build_model("wrn", num_classes=5, input_shape=(3, 8, 8), depth=10, width=1, dropout=0.1),
         (3, 8, 8)),
        ("normalised mlp", nn.Sequential(Normalize([0.5], [0.3]), build_model("mlp", num_classes=4, input_shape=(1, 3, 3),
                                                                              hidden_sizes=(8,))), (1, 3, 3)),
    ]


@pytest.mark.parametrize(("name", "model", "shape"), _random_nets(), ids=[n for n, _, _ in _random_nets()])
def test_lower_bound_is_below_upper_bound_on_random_nets(name, model, shape):
    torch.manual_seed(0)
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        with torch.no_grad():  # non-trivial running statistics
            model.train()(torch.randn(32, *shape) * 2 + 0.5)
    model.train()
    x = torch.rand(8, *shape)
    for norm in NORMS:
        upper = lipschitz_upper_bound(model, shape, norm=norm)
        lower = lipschitz_lower_bound(model, x, norm=norm, ascent_steps=2)
        assert 0 < lower <= upper * (1 + 1e-6), (norm, lower, upper)
    assert lipschitz_upper_bound(model, shape, norm="linf-l2") <= lipschitz_upper_bound(model, shape) * (1 + 1e-12)
    assert model.training and all(m.training for m in model.modules())


def test_ascent_does_not_lower_the_bound_and_climbs_on_a_smooth_net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
    x = torch.randn(4, 2) * 3  # tanh saturated: small Jacobians
    plain = lipschitz_lower_bound(model, x)
    climbed = lipschitz_lower_bound(model, x, ascent_steps=20, step_size=0.3)
    assert climbed > plain
    assert climbed <= lipschitz_upper_bound(model, (2,))


# --------------------------------------------------------------------------- certified radii


def _moons_mlp():
    bundle = load_dataset("moons", seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=2, input_shape=(2,), hidden_sizes=(16, 16))
    fit(model, bundle.train.x, bundle.train.y, steps=300, lr=1e-2)
    return model.eval(), bundle.test.x[:64]


class _Scaled(nn.Module):
    """``u -> model(x + r * u)`` per row: a ball of radius r_i around x_i becomes the unit ball (batched PGD)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, radius: torch.Tensor) -> None:
        super().__init__()
        self.model, self.x, self.radius = model, x, radius

    def forward(self, u):
        return self.model(self.x + self.radius.reshape(-1, *[1] * (self.x.dim() - 1)) * u)


def _flipped_by_pgd(model, x, radius, restarts: int = 8, steps: int = 100) -> torch.Tensor:
    """Which inputs a strong l2 PGD (margin loss, random restarts) moves off their decision within ``radius``."""
    with torch.no_grad():
        pred = model(x).argmax(1)
    scaled = _Scaled(model, x, radius).eval()
    u0 = torch.zeros_like(x)
    flipped = torch.zeros(x.shape[0], dtype=torch.bool)
    for seed in range(restarts):
        step_size = (0.05, 0.2)[seed % 2]
        attack = PGD(eps=1 - 1e-4, norm=2, steps=steps, step_size=step_size, bounds=WIDE, loss="margin", seed=seed)
        u = attack(scaled, u0, pred)
        assert bool((u.flatten(1).norm(dim=1) < 1).all())
        with torch.no_grad():
            flipped |= scaled(u).argmax(1) != pred
    return flipped


@pytest.fixture(scope="module")
def moons_mlp():
    return _moons_mlp()


@pytest.mark.parametrize("theorem", ["kesidis", "tsuzuku"])
@pytest.mark.parametrize("which", ["moons", "digits"])
def test_no_attack_changes_the_decision_inside_the_certified_radius(theorem, which, moons_mlp, digits_mlp):
    model, x = moons_mlp if which == "moons" else digits_mlp[:2]
    x = x[:64]
    norm = "linf-l2" if theorem == "kesidis" else "l2"
    lip = lipschitz_upper_bound(model, tuple(x.shape[1:]), norm=norm)
    radius = purity_radius(model, x, lipschitz=lip, theorem=theorem)
    positive = radius > 0
    assert int(positive.sum()) >= x.shape[0] // 2, "most inputs should get a certified radius"
    flipped = _flipped_by_pgd(model, x[positive], radius[positive])
    assert not bool(flipped.any()), f"{int(flipped.sum())} decisions changed inside the certified radius"
    # DeepFool's adversarial direction, scaled to just inside the certified ball, keeps the decision too
    with torch.no_grad():
        pred = model(x).argmax(1)
    result = DeepFool(norm=2, bounds=WIDE, steps=50).run(model, x, pred)
    ok = result.success & (result.delta_norm > 0)
    assert bool((radius[ok] <= result.delta_norm[ok]).all())  # certified radius <= distance <= attack distance
    delta = result.x_adv - x
    inside = x + delta * ((1 - 1e-4) * radius / result.delta_norm.clamp_min(1e-12)).reshape(-1, *[1] * (x.dim() - 1))
    with torch.no_grad():
        assert bool((model(inside[ok & positive]).argmax(1) == pred[ok & positive]).all())
    # the PGD above is strong: a little beyond the distance to the boundary it flips nearly every input
    beyond = _flipped_by_pgd(model, x[ok], 1.25 * result.delta_norm[ok], restarts=2)
    assert float(beyond.double().mean()) >= 0.9


def test_purity_radius_formulas():
    model = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
    x = torch.tensor([[3.0, 1.0, -2.0], [-1.0, -2.0, -0.5], [0.5, -1.0, 0.2]])
    kesidis = purity_radius(model, x, lipschitz=2.0)
    assert torch.allclose(kesidis, logit_margins(x, rectify=True) / 4)
    assert kesidis.tolist() == pytest.approx([0.5, 0.0, 0.075])  # all outputs <= 0: no certified ball
    tsuzuku = purity_radius(model, x, lipschitz=torch.tensor(2.0), theorem="tsuzuku")
    assert torch.allclose(tsuzuku, logit_margins(x) / (2 * math.sqrt(2)))
    assert purity_radius(model, x[:0], lipschitz=1.0).shape == (0,)
    model.train()
    purity_radius(model, x, lipschitz=1.0)
    assert model.training


# --------------------------------------------------------------------------- errors


class Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * self.weight


class Gate(nn.Module):
    """A container with its own forward and no lipschitz_structure."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) * torch.sigmoid(x)


class WrongStructure(Gate):
    def lipschitz_structure(self):
        return Chain(self.fc)


class LinearWithOwnForward(nn.Linear):
    def forward(self, x):
        return super().forward(x) ** 2


@pytest.mark.parametrize(
    ("model", "shape", "match"),
    [
        (nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), Scale())), (4,), r"layer '1\.1' \(Scale\)"),
        (nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.GELU()), (4,), r"layer '2' \(GELU\)"),
        (nn.Sequential(Gate()), (4,), r"layer '0' \(Gate\) \(a container with its own forward\)"),
        (nn.Sequential(LinearWithOwnForward(4, 4)), (4,), r"layer '0' \(LinearWithOwnForward\)"),
        (nn.Sequential(nn.MaxPool1d(2, return_indices=True)), (1, 4), r"\(MaxPool1d\) \(its output is a tuple"),
    ],
)
def test_unsupported_layers_are_named(model, shape, match):
    with pytest.raises(TypeError, match=match) as info:
        lipschitz_upper_bound(model, shape)
    message = str(info.value)
    assert "Supported layers: " in message and "Conv2d" in message and "lipschitz_structure()" in message


def test_lstm_is_named():
    with pytest.raises(TypeError, match=r"cannot bound layer 'rnn' \(LSTM\)"):
        lipschitz_upper_bound(_Named(rnn=nn.LSTM(3, 3)), (2, 3))
    assert "Linear" in SUPPORTED_LAYERS and "LSTM" not in SUPPORTED_LAYERS


def _Named(**modules) -> nn.Sequential:
    from collections import OrderedDict

    return nn.Sequential(OrderedDict(modules))


def test_a_structure_that_does_not_reproduce_the_forward_is_refused():
    with pytest.raises(ValueError, match="does not reproduce its forward pass"):
        lipschitz_upper_bound(WrongStructure(), (4,))
    with pytest.raises(ValueError, match="without running statistics"):
        lipschitz_upper_bound(nn.BatchNorm1d(4, track_running_stats=False), (4,))
    with pytest.raises(TypeError, match="The stages of Chain must be nn.Module, Chain, BranchSum or None"):
        Chain(nn.ReLU(), "relu")


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda m, x: lipschitz_upper_bound(m, (4,), norm="l1"), ValueError,
         "The 'norm' parameter of lipschitz_upper_bound must be one of ['l2', 'linf-l2']. Got 'l1' instead."),
        (lambda m, x: lipschitz_upper_bound(m, (4,), norm="linf"), ValueError, "Got 'linf' instead."),
        (lambda m, x: lipschitz_upper_bound(m, (0, 4)), ValueError, "The 'input_shape' parameter of lipschitz_upper_bound"),
        (lambda m, x: lipschitz_upper_bound(m, 4), ValueError, "must be a non-empty sequence of positive ints"),
        (lambda m, x: lipschitz_upper_bound(m, (4,), iterations=0), ValueError,
         "The 'iterations' parameter of lipschitz_upper_bound must be an int >= 1. Got 0 instead."),
        (lambda m, x: lipschitz_upper_bound(m, (4,), method="svd"), ValueError, "The 'method' parameter"),
        (lambda m, x: lipschitz_upper_bound("model", (4,)), TypeError, "The 'model' parameter of lipschitz_upper_bound"),
        (lambda m, x: lipschitz_lower_bound(m, x, norm="l2/l2"), ValueError,
         "The 'norm' parameter of lipschitz_lower_bound must be one of ['l2', 'linf-l2']. Got 'l2/l2' instead."),
        (lambda m, x: lipschitz_lower_bound(m, x, ascent_steps=-1), ValueError, "'ascent_steps' parameter"),
        (lambda m, x: lipschitz_lower_bound(m, x, step_size=0.0), ValueError, "'step_size' parameter"),
        (lambda m, x: lipschitz_lower_bound(m, x[:0]), TypeError, "with N >= 1"),
        (lambda m, x: purity_radius(m, x, lipschitz=1.0, theorem="weng"), ValueError,
         "The 'theorem' parameter of purity_radius must be one of ['kesidis', 'tsuzuku']. Got 'weng' instead."),
        (lambda m, x: purity_radius(m, x, lipschitz=0.0), ValueError,
         "The 'lipschitz' parameter of purity_radius must be a finite float > 0. Got 0.0 instead."),
        (lambda m, x: purity_radius(m, x, lipschitz=-1.0), ValueError, "Got -1.0 instead."),
        (lambda m, x: purity_radius(m, x, lipschitz=math.inf), ValueError, "Got inf instead."),
        (lambda m, x: purity_radius(m, x, lipschitz=math.nan), ValueError, "Got nan instead."),
        (lambda m, x: purity_radius(m, x, lipschitz="1"), ValueError, "Got '1' instead."),
        (lambda m, x: purity_radius(m, x, lipschitz=True), ValueError, "Got True instead."),
        (lambda m, x: purity_radius(m, x, lipschitz=torch.ones(2)), ValueError, "'lipschitz' parameter"),
        (lambda m, x: purity_radius(m, x.long(), lipschitz=1.0), TypeError, "The 'x' parameter of purity_radius"),
        (lambda m, x: operator_norm(nn.Linear(2, 2), (2,), tol=-1.0), ValueError, "The 'tol' parameter of operator_norm"),
    ],
)
def test_bad_arguments(call, error, message):
    model, x = nn.Linear(4, 3), torch.randn(2, 4)
    with pytest.raises(error) as info:
        call(model, x)
    assert message in str(info.value)
