"""FGSM, IFGSM, PGD, Gaussian noise, transfer and accuracy-vs-epsilon rows.

Closed forms on linear models, the eps-ball/bounds invariants on a small trained MLP, and an
independent cross-check against foolbox 3 (test dependency only).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from deepmargin.attacks import (
    FGSM,
    IFGSM,
    PGD,
    GaussianNoise,
    Normalize,
    ReliabilityWarning,
    TransferAttack,
    accuracy_vs_epsilon,
    attack_loss,
    gaussian_noise,
    normalized,
    run_sweep,
    snr_db,
    transfer_accuracy,
)

from _helpers import accuracy as _accuracy, fit, lp as _lp


def _train_mlp(x: torch.Tensor, y: torch.Tensor, seed: int, steps: int = 80) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    return fit(model, x, y, steps=steps).eval()


@pytest.fixture(scope="module")
def digits():
    """sklearn's 8x8 digits in [0, 1], first 1200 for training, 300 of the rest for testing."""
    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(data.target, dtype=torch.int64)
    return x[:1200], y[:1200], x[1200:1500], y[1200:1500]


@pytest.fixture(scope="module")
def trained(digits):
    x_train, y_train, x_test, y_test = digits
    model = _train_mlp(x_train, y_train, seed=0)
    return model, x_test, y_test


@pytest.fixture(scope="module")
def surrogate(digits):
    x_train, y_train, _, _ = digits
    return _train_mlp(x_train, y_train, seed=1)


# ----------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("norm", [math.inf, 2.0])
def test_fgsm_on_linear_model_equals_closed_form(norm):
    torch.manual_seed(3)
    w, b = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    model = nn.Linear(6, 4).double().eval()
    with torch.no_grad():
        model.weight.copy_(w)
        model.bias.copy_(b)
    x = torch.rand(7, 6, dtype=torch.float64)
    y = torch.randint(0, 4, (7,))
    eps = 0.3
    # d CE / dx = W^T (softmax(Wx + b) - onehot(y)), written out by hand.
    p = torch.softmax(x @ w.T + b, dim=1)
    grad = (p - F.one_hot(y, 4).double()) @ w
    if math.isinf(norm):
        step = eps * grad.sign()
    else:
        step = eps * grad / grad.norm(dim=1, keepdim=True)
    expected = (x + step).clamp(0, 1)
    torch.testing.assert_close(FGSM(eps=eps, norm=norm)(model, x, y), expected, rtol=0, atol=1e-12)


def test_attack_loss_margin_is_runner_up_minus_true_logit():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, -1.0]])
    y = torch.tensor([0, 2])
    torch.testing.assert_close(attack_loss(logits, y, "margin"), torch.tensor([2.0 - 3.0, 5.0 - (-1.0)]))
    torch.testing.assert_close(attack_loss(logits, y, "ce"), F.cross_entropy(logits, y, reduction="none"))


def test_ifgsm_schedule_follows_kurakin_rule():
    # alpha = one grey level; T = floor(min(eps/alpha + 4, 1.25 eps/alpha)).
    for eps in (2 / 255, 8 / 255, 0.1, 0.3):
        steps, alpha = IFGSM(eps=eps).schedule(eps)
        assert alpha == pytest.approx(1 / 255)
        assert steps == max(1, math.floor(min(eps * 255 + 4, 1.25 * eps * 255) + 1e-9))
    steps, alpha = IFGSM(eps=0.2, bounds=(-1, 1)).schedule(0.2)
    assert alpha == pytest.approx(2 / 255)
    assert IFGSM(eps=0.1, steps=5).schedule(0.1) == (5, pytest.approx(0.02))
    assert IFGSM(eps=0.1, step_size=0.01).schedule(0.1) == (12, 0.01)  # min(14, 12.5)
    assert IFGSM(eps=0.1, steps=3, step_size=0.05).schedule(0.1) == (3, 0.05)
    assert PGD(eps=0.1, steps=40).schedule(0.1) == (40, pytest.approx(2.5 * 0.1 / 40))


def test_ifgsm_equals_independent_loop_on_linear_model():
    torch.manual_seed(5)
    model = nn.Linear(10, 3).double().eval()
    x, y = torch.rand(6, 10, dtype=torch.float64), torch.randint(0, 3, (6,))
    eps, alpha, steps = 0.1, 0.03, 6
    xa = x.clone()
    for _ in range(steps):  # Kurakin et al.: clip to the eps ball and to [0, 1] after every step
        xa.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)
        xa = torch.min(torch.max(xa.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
    out = IFGSM(eps=eps, steps=steps, step_size=alpha)(model, x, y)
    torch.testing.assert_close(out, xa, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- invariants


ATTACKS = [
    lambda eps, norm: FGSM(eps=eps, norm=norm),
    lambda eps, norm: IFGSM(eps=eps, norm=norm, steps=5),
    lambda eps, norm: PGD(eps=eps, norm=norm, steps=5, seed=0),
]


@pytest.mark.parametrize("make", ATTACKS, ids=["fgsm", "ifgsm", "pgd"])
@pytest.mark.parametrize("norm,eps", [(math.inf, 0.1), (2.0, 1.0)], ids=["linf", "l2"])
def test_perturbation_inside_ball_and_bounds(trained, make, norm, eps):
    model, x, y = trained
    x_adv = make(eps, norm)(model, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not x_adv.requires_grad
    assert bool((_lp(x_adv - x, norm) <= eps * (1 + 1e-5)).all())
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    assert bool((x_adv != x).any())


@pytest.mark.parametrize("make", ATTACKS, ids=["fgsm", "ifgsm", "pgd"])
def test_adversarial_accuracy_below_clean(trained, make):
    model, x, y = trained
    clean = _accuracy(model, x, y)
    assert clean > 0.8
    adv = _accuracy(model, make(0.1, math.inf)(model, x, y), y)
    assert adv < clean - 0.1


def test_margin_loss_attack_on_linear_model_and_trained_model(trained):
    # margin loss on a linear model: the gradient is w_j* - w_y with j* the runner-up class.
    torch.manual_seed(2)
    lin = nn.Linear(5, 4).double().eval()
    x, y = torch.rand(6, 5, dtype=torch.float64), torch.randint(0, 4, (6,))
    with torch.no_grad():
        logits = lin(x)
        runner_up = logits.scatter(1, y[:, None], float("-inf")).argmax(dim=1)
        grad = lin.weight[runner_up] - lin.weight[y]
    expected = (x + 0.2 * grad.sign()).clamp(0, 1)
    torch.testing.assert_close(FGSM(eps=0.2, loss="margin")(lin, x, y), expected, rtol=0, atol=1e-12)
    model, xt, yt = trained
    adv = PGD(eps=0.1, steps=10, loss="margin", seed=0)(model, xt, yt)
    assert _accuracy(model, adv, yt) < _accuracy(model, xt, yt) - 0.1


def test_iterative_attacks_monotone_in_eps_and_stronger_than_fgsm(trained):
    model, x, y = trained
    epsilons = [0.0, 0.02, 0.05, 0.1, 0.2]
    accs = {}
    for name, attack in [("fgsm", FGSM(eps=0.1)), ("ifgsm", IFGSM(eps=0.1)), ("pgd", PGD(eps=0.1, steps=10, seed=1))]:
        accs[name] = [_accuracy(model, a, y) for a in attack.sweep(model, x, y, epsilons)]
    clean = _accuracy(model, x, y)
    for name, curve in accs.items():
        assert curve[0] == clean
        assert all(b <= a + 0.02 for a, b in zip(curve, curve[1:])), (name, curve)
        assert curve[-1] < curve[0] - 0.3, (name, curve)
    for i in range(1, len(epsilons)):
        assert accs["ifgsm"][i] <= accs["fgsm"][i] + 0.01
        assert accs["pgd"][i] <= accs["fgsm"][i] + 0.01


def test_eps_zero_returns_clean_input(trained):
    model, x, y = trained
    for attack in (FGSM(eps=0.0), IFGSM(eps=0.0), PGD(eps=0.0, seed=0), PGD(eps=0.0, norm=2, seed=0)):
        assert torch.equal(attack(model, x, y), x)


def test_dtype_and_device_follow_inputs(trained):
    model, x, y = trained
    model64 = _copy_double(model)
    assert PGD(eps=0.1, steps=3, seed=0)(model64, x.double(), y).dtype == torch.float64
    out = PGD(eps=0.1, steps=3, random_start=False)(model64, x.double(), y)
    assert out.dtype == torch.float64 and out.device == x.device
    # the same attack in float32 agrees up to rare sign flips of tiny gradient entries
    out32 = PGD(eps=0.1, steps=3, random_start=False)(model, x, y)
    assert (out.float() - out32).abs().gt(1e-4).float().mean().item() < 0.01


def _copy_double(model: nn.Module) -> nn.Module:
    copy = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    copy.load_state_dict(model.state_dict())
    return copy.double().eval()


def test_eval_mode_during_attack_and_mode_restored():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.ReLU(), nn.Linear(16, 3))
    model.train()
    x, y = torch.rand(10, 8), torch.randint(0, 3, (10,))
    with pytest.warns(ReliabilityWarning, match="training mode"):
        first = IFGSM(eps=0.1, steps=4)(model, x, y)
    with pytest.warns(ReliabilityWarning, match="training mode"):
        second = IFGSM(eps=0.1, steps=4)(model, x, y)
    assert torch.equal(first, second)  # dropout was off during the attack
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    assert torch.equal(IFGSM(eps=0.1, steps=4)(model, x, y), first)
    assert not model.training


def test_works_under_no_grad_and_inputs_requiring_grad(trained):
    model, x, y = trained
    expected = FGSM(eps=0.05)(model, x, y)
    with torch.no_grad():
        assert torch.equal(FGSM(eps=0.05)(model, x, y), expected)
    assert torch.equal(FGSM(eps=0.05)(model, x.clone().requires_grad_(True), y), expected)


# ----------------------------------------------------------------------------- sweeps and seeds


@pytest.mark.parametrize("norm", [math.inf, 2.0])
def test_sweep_equals_single_calls(trained, norm):
    model, x, y = trained
    x, y = x[:64], y[:64]
    epsilons = [0.0, 0.05, 0.3] if math.isinf(norm) else [0.0, 0.5, 2.0]
    for make in (
        lambda e: FGSM(eps=e, norm=norm),
        lambda e: IFGSM(eps=e, norm=norm, steps=4),
        lambda e: PGD(eps=e, norm=norm, steps=4, seed=7),
    ):
        swept = make(epsilons[1]).sweep(model, x, y, epsilons)
        assert len(swept) == len(epsilons)
        for eps, batch in zip(epsilons, swept):
            torch.testing.assert_close(batch, make(eps)(model, x, y), rtol=0, atol=0)


@pytest.mark.parametrize("norm", [math.inf, 2.0])
def test_random_start_is_seeded_and_uniform_in_ball(trained, norm):
    model, x, y = trained
    x, y = x[:32], y[:32]
    seed = torch.randint(0, 2**31 - 1, ()).item()  # any seed
    eps = 0.1 if math.isinf(norm) else 1.0
    a = PGD(eps=eps, norm=norm, steps=2, seed=seed)(model, x, y)
    b = PGD(eps=eps, norm=norm, steps=2, seed=seed)(model, x, y)
    c = PGD(eps=eps, norm=norm, steps=2, seed=seed + 1)(model, x, y)
    assert torch.equal(a, b) and not torch.equal(a, c)
    gen = torch.Generator().manual_seed(seed)
    attack = PGD(eps=eps, norm=norm, steps=2, generator=gen)
    first, second = attack(model, x, y), attack(model, x, y)
    assert not torch.equal(first, second)  # the generator advances between calls
    # the start itself (zero steps is not allowed, so check with a tiny step): inside the ball
    start = PGD(eps=eps, norm=norm, steps=1, step_size=1e-9, seed=seed)(model, x, y)
    dist = _lp(start - x, norm)
    assert bool((dist <= eps * (1 + 1e-5)).all())
    assert dist.mean().item() > 0.3 * eps


def test_l2_random_start_radius_distribution():
    # uniform in the d-ball: P(||delta|| <= r eps) = r^d; no clipping with wide bounds.
    from deepmargin.attacks.gradient import _random_start

    d, n, eps = 3, 20000, 2.0
    gen = torch.Generator().manual_seed(torch.randint(0, 10**6, ()).item())
    x0 = torch.zeros(n, d, dtype=torch.float64)
    r = (_random_start(x0, eps, 2.0, gen).norm(dim=1) / eps)
    assert r.max().item() <= 1 + 1e-12
    for q in (0.5, 0.8):
        expected = q**d
        sd = math.sqrt(expected * (1 - expected) / n)
        assert abs((r <= q).double().mean().item() - expected) < 5 * sd


# ----------------------------------------------------------------------------- foolbox cross-check


def test_fgsm_identical_to_foolbox(trained):
    fb = pytest.importorskip("foolbox")
    model, x, y = trained
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    for eps in (0.03, 0.1, 0.25):
        _, clipped, _ = fb.attacks.LinfFastGradientAttack(random_start=False)(fmodel, x, y, epsilons=eps)
        assert torch.equal(FGSM(eps=eps)(model, x, y), clipped)
        _, clipped2, _ = fb.attacks.L2FastGradientAttack(random_start=False)(fmodel, x, y, epsilons=10 * eps)
        torch.testing.assert_close(FGSM(eps=10 * eps, norm=2)(model, x, y), clipped2, rtol=0, atol=1e-6)


@pytest.mark.parametrize("norm,eps", [(math.inf, 0.05), (math.inf, 0.1), (2.0, 0.5), (2.0, 1.0)])
def test_pgd_robust_accuracy_matches_foolbox(trained, norm, eps):
    fb = pytest.importorskip("foolbox")
    model, x, y = trained
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    steps, step = 20, eps / 8
    cls = fb.attacks.LinfPGD if math.isinf(norm) else fb.attacks.L2PGD
    _, clipped, success = cls(abs_stepsize=step, steps=steps, random_start=False)(fmodel, x, y, epsilons=eps)
    theirs = 1 - success.float().mean().item()
    ours = _accuracy(model, PGD(eps=eps, norm=norm, steps=steps, step_size=step, random_start=False)(model, x, y), y)
    assert abs(ours - theirs) <= 0.01
    assert theirs < _accuracy(model, x, y)  # the comparison is not vacuous


# ----------------------------------------------------------------------------- normalisation


def test_normalize_wrapper_attacks_in_raw_space(trained):
    model, x, y = trained
    mean, std = 0.3, 0.4
    # a model that expects normalised inputs: undo the normalisation inside, so that the
    # wrapped model computes exactly the raw model and the attacks must agree.
    inner = nn.Sequential(nn.Identity())
    inner.forward = lambda z: model(z * std + mean)  # type: ignore[method-assign]
    wrapped = normalized(inner, [mean], [std]).eval()
    torch.testing.assert_close(Normalize([mean], [std])(x), (x - mean) / std)
    torch.testing.assert_close(
        IFGSM(eps=0.1, steps=5)(wrapped, x, y), IFGSM(eps=0.1, steps=5)(model, x, y), rtol=0, atol=1e-5
    )
    with pytest.raises(ValueError, match="'std' parameter of Normalize must be positive"):
        Normalize([0.5], [0.0])


# ----------------------------------------------------------------------------- noise


def test_noise_at_snr_has_exact_snr_per_input():
    x = torch.rand(16, 3, 5, 5, dtype=torch.float64)
    for snr in (10.0, 20.0, 33.0):
        noisy = GaussianNoise(snr=snr, clip=False, seed=torch.randint(0, 999, ()).item())(None, x)
        torch.testing.assert_close(snr_db(x, noisy), torch.full((16,), snr, dtype=torch.float64))
    assert torch.equal(GaussianNoise(snr=math.inf)(None, x), x)


def test_noise_at_std_statistics_and_seed():
    seed = torch.randint(0, 10**6, ()).item()
    x = torch.full((200, 500), 0.5, dtype=torch.float64)
    std = 0.05
    noise = gaussian_noise(x, std=std, seed=seed) - x
    n = noise.numel()
    assert abs(noise.mean().item()) < 5 * std / math.sqrt(n)
    assert abs(noise.std().item() / std - 1) < 5 * math.sqrt(2 / n)
    assert torch.equal(gaussian_noise(x, std=std, seed=seed), gaussian_noise(x, std=std, seed=seed))
    assert not torch.equal(gaussian_noise(x, std=std, seed=seed), gaussian_noise(x, std=std, seed=seed + 1))
    # clipping to the bounds
    big = gaussian_noise(x, std=10.0, seed=seed)
    assert big.min().item() >= 0 and big.max().item() <= 1


def test_noise_sweep_scales_one_draw():
    x = torch.rand(4, 10)
    levels = [0.0, 0.1, 0.3]
    out = GaussianNoise(std=0.1, clip=False, seed=3).sweep(None, x, None, levels)
    assert torch.equal(out[0], x)
    torch.testing.assert_close(out[2] - x, 3 * (out[1] - x))
    snrs = GaussianNoise(snr=20.0, clip=False, seed=3).sweep(None, x, None, [40.0, 20.0])
    torch.testing.assert_close(snr_db(x, snrs[0]), torch.full((4,), 40.0))


def test_noise_validation():
    with pytest.raises(ValueError, match="Exactly one of the 'std' and 'snr'"):
        GaussianNoise(std=0.1, snr=20)
    with pytest.raises(ValueError, match="Exactly one of the 'std' and 'snr'"):
        GaussianNoise()
    with pytest.raises(ValueError, match="'std' parameter of GaussianNoise must be a finite float >= 0"):
        GaussianNoise(std=-1.0)
    with pytest.raises(ValueError, match="'seed' and 'generator' parameters of GaussianNoise are exclusive"):
        GaussianNoise(std=0.1, seed=1, generator=torch.Generator())


# ----------------------------------------------------------------------------- transfer and rows


def test_transfer_attack_crafts_on_source(trained, surrogate):
    target, x, y = trained
    attack = IFGSM(eps=0.1, steps=5)
    x_src = attack(surrogate, x, y)
    assert torch.equal(TransferAttack(attack, surrogate)(target, x, y), x_src)
    acc = transfer_accuracy(attack, surrogate, target, x, y, batch_size=128)
    assert acc == pytest.approx(_accuracy(target, x_src, y))
    accs = transfer_accuracy(attack, surrogate, target, x, y, epsilons=[0.0, 0.1])
    assert accs == pytest.approx([_accuracy(target, x, y), _accuracy(target, x_src, y)])
    # black-box is weaker than white-box on the target, but still hurts it
    white = _accuracy(target, attack(target, x, y), y)
    assert white <= acc < _accuracy(target, x, y)


def test_accuracy_vs_epsilon_rows(trained, surrogate):
    model, x, y = trained
    epsilons = [0.0, 0.05, 0.1]
    rows = accuracy_vs_epsilon({"a": model, "b": surrogate}, PGD(eps=0.1, steps=5), x, y, epsilons, batch_size=128, seed=4)
    assert [(r["model"], r["eps"]) for r in rows] == [(m, e) for m in "ab" for e in epsilons]
    assert {r["attack"] for r in rows} == {"pgd"} and {r["norm"] for r in rows} == {"linf"}
    assert {r["setting"] for r in rows} == {"white-box"} and {r["source"] for r in rows} == {None}
    assert all(r["n"] == len(y) and r["seed"] == 4 for r in rows)
    assert rows[0]["accuracy"] == pytest.approx(_accuracy(model, x, y))
    # deterministic attack, batched evaluation == one full-batch evaluation
    det = accuracy_vs_epsilon(model, IFGSM(eps=0.1, steps=5), x, y, epsilons, batch_size=70)
    for r, eps in zip(det, epsilons):
        expected = _accuracy(model, IFGSM(eps=eps, steps=5)(model, x, y), y) if eps else _accuracy(model, x, y)
        assert r["accuracy"] == pytest.approx(expected) and r["correct"] == round(expected * len(y))
    transfer = accuracy_vs_epsilon(model, IFGSM(eps=0.1, steps=5), x, y, epsilons, source=surrogate, source_name="s")
    assert {r["setting"] for r in transfer} == {"transfer"} and {r["source"] for r in transfer} == {"s"}
    noise = accuracy_vs_epsilon(model, GaussianNoise(std=0.1, seed=0), x, y, [0.0, 0.2])
    assert [r["norm"] for r in noise] == ["std", "std"] and noise[0]["setting"] == "noise"


class _FixedMinNorm:
    """A stand-in minimum-norm attack: a known perturbation of l2 norm r_i per input."""

    norm = 2.0

    def __init__(self, radii: torch.Tensor) -> None:
        self.radii = radii

    def __call__(self, model, x, y):
        direction = torch.zeros_like(x).flatten(1)
        direction[:, 0] = 1.0
        return x + (self.radii[:, None] * direction).reshape(x.shape)


def test_run_sweep_thresholds_minimum_norm_attacks():
    x = torch.zeros(5, 3)
    radii = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    out = run_sweep(_FixedMinNorm(radii), nn.Identity(), x, torch.zeros(5, dtype=torch.long), [0.0, 0.25, 1.0])
    kept = [(batch.abs().sum(dim=1) > 0).tolist() for batch in out]
    assert kept == [[False] * 5, [True, True, False, False, False], [True] * 5]


def test_accuracy_vs_epsilon_with_deepfool(trained):
    from deepmargin import attacks

    if not hasattr(attacks, "DeepFool"):
        pytest.skip("DeepFool not available yet")
    model, x, y = trained
    result = attacks.DeepFool(norm=2, steps=50).run(model, x, y)
    rows = accuracy_vs_epsilon(model, attacks.DeepFool(norm=2, steps=50), x, y, [0.0, 0.5, 1.0])
    with torch.no_grad():
        correct = model(x).argmax(dim=1) == y
    for r in rows:
        broken = result.success & (result.delta_norm <= r["eps"] * (1 + 1e-6))
        # robust accuracy at eps from a minimum-norm attack: correct and not broken within eps
        assert r["correct"] == int((correct & ~broken).sum())
    assert rows[0]["accuracy"] == pytest.approx(correct.float().mean().item())
    assert rows[-1]["accuracy"] < rows[0]["accuracy"]


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(eps=-0.1), ValueError, r"The 'eps' parameter of PGD must be a finite float >= 0\. Got -0\.1 instead\."),
        (dict(eps=float("nan")), ValueError, "'eps' parameter of PGD"),
        (dict(eps=0.1, norm=1), ValueError, "'norm' parameter of PGD must be one of"),
        (dict(eps=0.1, steps=0), ValueError, r"'steps' parameter of PGD must be an int >= 1\. Got 0"),
        (dict(eps=0.1, step_size=0.0), ValueError, "'step_size' parameter of PGD must be a finite float > 0"),
        (dict(eps=0.1, bounds=(1, 0)), ValueError, "'bounds' parameter of PGD must satisfy low < high"),
        (dict(eps=0.1, loss="hinge"), ValueError, "'loss' parameter of PGD must be one of"),
        (dict(eps=0.1, random_start=1), TypeError, "'random_start' parameter of PGD must be a bool"),
        (dict(eps=0.1, seed=1, generator=torch.Generator()), ValueError, "exclusive"),
        (dict(eps=0.1, seed=-3), ValueError, "'seed' parameter of PGD must be an int >= 0"),
    ],
)
def test_constructor_validation(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        PGD(**kwargs)


def test_ifgsm_needs_steps_with_infinite_bounds():
    with pytest.raises(ValueError, match="'steps' parameter of IFGSM must be given when the bounds are infinite"):
        IFGSM(eps=0.1, bounds=(-math.inf, math.inf))
    assert IFGSM(eps=0.1, steps=4, bounds=(-math.inf, math.inf)).schedule(0.1) == (4, pytest.approx(0.025))


def test_call_validation(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match=r"The 'x' parameter of FGSM\.sweep must lie within bounds=\(0\.0, 1\.0\)"):
        FGSM(eps=0.1)(model, x * 2, y)
    with pytest.raises(TypeError, match="The 'y' parameter of FGSM.sweep must be an integer tensor"):
        FGSM(eps=0.1)(model, x, y.float())
    with pytest.raises(ValueError, match="The 'y' parameter of FGSM.sweep must have shape"):
        FGSM(eps=0.1)(model, x, y[:-1])
    with pytest.raises(ValueError, match="The 'epsilons' parameter of PGD.sweep must be a finite float >= 0"):
        PGD(eps=0.1).sweep(model, x, y, [0.1, -1.0])
    with pytest.raises(ValueError, match="The 'epsilons' parameter of PGD.sweep must be non-empty"):
        PGD(eps=0.1).sweep(model, x, y, [])
    with pytest.raises(ValueError, match="The 'batch_size' parameter of accuracy_vs_epsilon must be an int >= 1"):
        accuracy_vs_epsilon(model, FGSM(eps=0.1), x, y, [0.1], batch_size=0)
    with pytest.raises(TypeError, match="The 'models' parameter of accuracy_vs_epsilon must be an nn.Module"):
        accuracy_vs_epsilon([model], FGSM(eps=0.1), x, y, [0.1])
