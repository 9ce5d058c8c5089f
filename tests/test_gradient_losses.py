"""Tests of the gradient-based losses: gradient margin (Matyasko & Chau), input-gradient / tulip
(Finlay & Oberman) and VAT (Miyato et al.)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from deepmargin.losses import (
    GradientMarginLoss,
    InputGradientLoss,
    VATLoss,
    gradient_margin_loss,
    input_gradient_loss,
    vat_loss,
)
from deepmargin.losses.vat import _adversarial_direction

NORMS = [1, 2, math.inf]


def _linear(k: int, d: int, seed: int) -> nn.Linear:
    gen = torch.Generator().manual_seed(seed)
    model = nn.Linear(d, k).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(k, d, generator=gen, dtype=torch.float64))
        model.bias.copy_(torch.randn(k, generator=gen, dtype=torch.float64))
    return model


def _mlp(seed: int, d: int = 3, h: int = 5, k: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, k)).double()


def _data(n: int, d: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=gen)
    return x, y


# --------------------------------------------------------------------------- gradient margin


@pytest.mark.parametrize("norm", NORMS)
def test_gradient_margin_linear_closed_form(norm):
    k, d, n = 4, 6, 7
    model = _linear(k, d, seed=1)
    x, y = _data(n, d, k, seed=2)
    x.requires_grad_(True)
    logits = model(x)
    C, margin = 0.3, 2.0
    got = gradient_margin_loss(logits, y, x, C=C, norm=norm, margin=margin, reduction="none")

    W = model.weight.detach().numpy()
    f = logits.detach().numpy()
    expected = []
    for i in range(n):
        yi = int(y[i])
        hinge = max(max(0.0, margin + f[i, j] - f[i, yi]) for j in range(k) if j != yi)
        pen = max(np.linalg.norm(W[yi] - W[j], ord=norm) for j in range(k) if j != yi)
        expected.append(hinge + C * pen)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    # the hinge alone (C = 0) matches the loop's hinge part, and mean/sum reduce 'none'
    hinge_only = gradient_margin_loss(logits, y, x, C=0.0, norm=norm, margin=margin, reduction="none")
    pen_direct = [max(np.linalg.norm(W[int(y[i])] - W[j], ord=norm) for j in range(k) if j != int(y[i]))
                  for i in range(n)]
    np.testing.assert_allclose((got - hinge_only).detach().numpy(), C * np.array(pen_direct), rtol=1e-12)
    mean = gradient_margin_loss(logits, y, x, C=C, norm=norm, margin=margin)
    total = gradient_margin_loss(logits, y, x, C=C, norm=norm, margin=margin, reduction="sum")
    assert torch.allclose(mean, got.mean()) and torch.allclose(total, got.sum())


def test_gradient_margin_double_backprop_linear_matches_closed_form_gradient():
    """Gradients w.r.t. W, b equal those of the closed form written directly in W."""
    k, d, n = 3, 5, 6
    model = _linear(k, d, seed=3)
    x, y = _data(n, d, k, seed=4)
    x.requires_grad_(True)
    loss = gradient_margin_loss(model(x), y, x, C=0.7, norm=2, margin=1.5, reduction="sum")
    gW, gb = torch.autograd.grad(loss, [model.weight, model.bias])

    W, b = model.weight, model.bias
    f = x.detach() @ W.t() + b
    mask = F.one_hot(y, k).bool()
    hinge = F.relu(1.5 + f - f.gather(1, y[:, None])).masked_fill(mask, 0).amax(1)
    pen = (W[y][:, None, :] - W[None, :, :]).norm(dim=2).masked_fill(mask, -math.inf).amax(1)
    ref = (hinge + 0.7 * pen).sum()
    rW, rb = torch.autograd.grad(ref, [W, b])
    assert torch.allclose(loss, ref)
    assert torch.allclose(gW, rW, atol=1e-12) and torch.allclose(gb, rb, atol=1e-12)
    # the penalty really contributes to the weight gradient
    (hW,) = torch.autograd.grad(gradient_margin_loss(model(x), y, x, C=0.0, reduction="sum"), [W])
    assert not torch.allclose(gW, hW)


def _param_fn(loss_fn, model, x, y, **kw):
    names = [name for name, _ in model.named_parameters()]

    def fn(*params):
        with torch.enable_grad():
            xi = x.detach().clone().requires_grad_(True)
            logits = functional_call(model, dict(zip(names, params)), (xi,))
            return loss_fn(logits, y, xi, reduction="sum", **kw)

    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())
    return fn, params


@pytest.mark.parametrize("norm", [1, 2, math.inf])
def test_gradcheck_gradient_margin_tanh_mlp(norm):
    model = _mlp(seed=5)
    x, y = _data(4, 3, 3, seed=6)
    fn, params = _param_fn(gradient_margin_loss, model, x, y, C=0.5, norm=norm, margin=3.0)
    assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("norm,lip", [(1, 0.0), (2, 0.0), (2, 0.4), (math.inf, 0.0)])
def test_gradcheck_input_gradient_tanh_mlp(norm, lip):
    model = _mlp(seed=7)
    x, y = _data(4, 3, 3, seed=8)
    fn, params = _param_fn(input_gradient_loss, model, x, y, eps=0.5, norm=norm, lipschitz=lip)
    assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_second_order_terms_nonzero_in_tanh_mlp():
    """The penalty's parameter gradient differs from the one with the gradient norm detached."""
    model = _mlp(seed=9)
    x, y = _data(5, 3, 3, seed=10)
    x.requires_grad_(True)
    loss = input_gradient_loss(model(x), y, x, eps=1.0)
    g_full = torch.autograd.grad(loss, list(model.parameters()))
    ce = F.cross_entropy(model(x), y)
    g_ce = torch.autograd.grad(ce, list(model.parameters()))
    assert any(not torch.allclose(a, b) for a, b in zip(g_full, g_ce))


# --------------------------------------------------------------------------- input gradient


@pytest.mark.parametrize("norm", NORMS)
def test_input_gradient_linear_closed_form(norm):
    k, d, n = 4, 5, 8
    model = _linear(k, d, seed=11)
    x, y = _data(n, d, k, seed=12)
    x.requires_grad_(True)
    logits = model(x)
    eps = 0.25
    got = input_gradient_loss(logits, y, x, eps=eps, norm=norm, reduction="none")

    W = model.weight.detach().numpy()
    f = logits.detach().numpy()
    s = np.exp(f - f.max(1, keepdims=True))
    s /= s.sum(1, keepdims=True)
    onehot = np.eye(k)[y.numpy()]
    g = (s - onehot) @ W  # rows: W^T (softmax - onehot)
    ce = -np.log(s[np.arange(n), y.numpy()])
    expected = ce + eps * np.linalg.norm(g, ord=norm, axis=1)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-12)
    mean = input_gradient_loss(logits, y, x, eps=eps, norm=norm)
    assert mean.item() == pytest.approx(expected.mean(), rel=1e-12)

    lam = 0.6
    tulip = input_gradient_loss(logits, y, x, eps=eps, norm=norm, lipschitz=lam, reduction="none")
    lip = lam * np.linalg.norm(g, ord=2, axis=1).max()
    np.testing.assert_allclose(tulip.detach().numpy(), expected + lip, rtol=1e-12)
    tulip_mean = input_gradient_loss(logits, y, x, eps=eps, norm=norm, lipschitz=lam)
    assert tulip_mean.item() == pytest.approx(expected.mean() + lip, rel=1e-12)
    tulip_sum = input_gradient_loss(logits, y, x, eps=eps, norm=norm, lipschitz=lam, reduction="sum")
    assert tulip_sum.item() == pytest.approx(expected.sum() + n * lip, rel=1e-12)


def test_input_gradient_eps_zero_is_cross_entropy():
    model = _mlp(seed=13)
    x, y = _data(6, 3, 3, seed=14)
    x.requires_grad_(True)
    logits = model(x)
    assert torch.allclose(input_gradient_loss(logits, y, x, eps=0.0), F.cross_entropy(logits, y))


# --------------------------------------------------------------------------- per-sample independence


@pytest.mark.parametrize("which", ["margin", "input_gradient"])
def test_per_sample_independence(which):
    model = _mlp(seed=15, d=4, k=4)
    x, y = _data(6, 4, 4, seed=16)

    def run(xb, yb):
        xb = xb.clone().requires_grad_(True)
        logits = model(xb)
        if which == "margin":
            return gradient_margin_loss(logits, yb, xb, C=0.5, norm=2, reduction="none")
        return input_gradient_loss(logits, yb, xb, eps=0.5, norm=1, reduction="none")

    batch = run(x, y)
    alone = torch.cat([run(x[i:i + 1], y[i:i + 1]) for i in range(len(x))])
    assert torch.allclose(batch, alone, rtol=1e-12, atol=1e-12)


def test_mlp_gradient_difference_matches_jacobian():
    """On a tanh MLP, the penalty equals the max over j of ||J_y - J_j|| from torch.func.jacrev."""
    model = _mlp(seed=17, d=4, k=3)
    x, y = _data(5, 4, 3, seed=18)
    xr = x.clone().requires_grad_(True)
    got = gradient_margin_loss(model(xr), y, xr, C=1.0, margin=1e-9, reduction="none")
    got = got - gradient_margin_loss(model(xr), y, xr, C=0.0, margin=1e-9, reduction="none")
    for i in range(len(x)):
        J = torch.func.jacrev(model)(x[i])  # (K, D)
        yi = int(y[i])
        ref = max((J[yi] - J[j]).norm() for j in range(3) if j != yi)
        assert got[i].item() == pytest.approx(ref.item(), rel=1e-10)


# --------------------------------------------------------------------------- gradient margin: grad_method

GRAD_METHODS = ["auto", "argmax", "argmax_batched", "loop"]


def _small_cnn(seed: int, k: int = 4) -> nn.Module:
    """conv, batch norm (eval, non-trivial running statistics), relu, max pool, dropout (train), linear."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(27, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, k),
    ).double()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.uniform_(0.5, 1.5)
    model.eval()
    model[7].train()  # dropout active: a random mask, fixed in the graph of one forward pass
    return model


def _reference_margin_loss(logits, y, x, C, p, margin):
    """Straightforward: every class's input gradient with create_graph, the max taken sample by sample."""
    n, k = logits.shape
    grads = [torch.autograd.grad(logits[:, c].sum(), x, create_graph=True)[0] for c in range(k)]
    out = []
    for i in range(n):
        yi = int(y[i])
        hinge = max(F.relu(margin + logits[i, j] - logits[i, yi]) for j in range(k) if j != yi)
        pen = max(torch.linalg.vector_norm((grads[yi][i] - grads[j][i]).flatten(), ord=p)
                  for j in range(k) if j != yi)
        out.append(hinge + C * pen)
    return torch.stack(out)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("method", GRAD_METHODS)
def test_gradient_margin_methods_match_direct_reference_float64(method, norm):
    """Value and gradients (parameters and input) of every grad_method equal the K-pass reference."""
    model = _small_cnn(seed=40)
    gen = torch.Generator().manual_seed(41)
    x = torch.rand(7, 1, 6, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (7,), generator=gen)
    params = list(model.parameters())

    def run(fn):
        xi = x.clone().requires_grad_(True)
        torch.manual_seed(42)  # the same dropout mask for both
        loss = fn(model(xi), xi)
        return (loss, *torch.autograd.grad(loss, params + [xi]))

    got = run(lambda logits, xi: gradient_margin_loss(logits, y, xi, C=0.7, norm=norm, margin=1.5,
                                                      reduction="sum", grad_method=method))
    ref = run(lambda logits, xi: _reference_margin_loss(logits, y, xi, 0.7, norm, 1.5).sum())
    assert torch.allclose(got[0], ref[0], rtol=1e-12, atol=1e-12)
    for g, r in zip(got[1:], ref[1:]):
        assert torch.allclose(g, r, rtol=1e-10, atol=1e-12)
    assert got[1].abs().sum() > 0  # the conv weights get a gradient (through the penalty too)
    # 'none' agrees per sample, and the penalty reached the weights by double backpropagation
    xi = x.clone().requires_grad_(True)
    torch.manual_seed(42)
    logits = model(xi)
    per = gradient_margin_loss(logits, y, xi, C=0.7, norm=norm, margin=1.5, reduction="none", grad_method=method)
    assert torch.allclose(per, _reference_margin_loss(logits, y, xi, 0.7, norm, 1.5), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["argmax", "argmax_batched", "loop"])
@pytest.mark.parametrize("norm", [1, 2, math.inf])
def test_gradcheck_gradient_margin_methods(method, norm):
    model = _mlp(seed=43, d=3, h=5, k=4)
    x, y = _data(4, 3, 4, seed=44)
    fn, params = _param_fn(gradient_margin_loss, model, x, y, C=0.5, norm=norm, margin=3.0, grad_method=method)
    assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradient_margin_batch_norm_train_mode_is_batch_sum_gradient():
    """Batch norm in training mode couples the samples. As documented, the penalty then uses batch-sum
    gradients: grad_x sum_n f_k[n] per class with 'loop' (= the direct reference), grad_x sum_n
    (f_y[n] - f_j[n]) with 'argmax' (sample n's r-th rival j in pass r, then each sample's
    maximising rival j* in the differentiated pass), so the methods differ there; in eval mode all
    agree with the one-sample-at-a-time values."""
    torch.manual_seed(45)
    model = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 4)).double()
    x, y = _data(6, 3, 4, seed=46)
    n, k = 6, 4

    def loss(method, xb=x, yb=y):
        xi = xb.clone().requires_grad_(True)
        return gradient_margin_loss(model(xi), yb, xi, C=1.0, reduction="none", grad_method=method)

    model.train()
    xi = x.clone().requires_grad_(True)
    logits = model(xi)
    assert torch.allclose(loss("loop"), _reference_margin_loss(logits, y, xi, 1.0, 2, 1.0), rtol=1e-12)

    onehot_y = F.one_hot(y, k).double()
    rivals = torch.tensor([[j for j in range(k) if j != int(y[i])] for i in range(n)])  # (N, K-1)
    norms = torch.stack([
        torch.autograd.grad(logits, xi, onehot_y - F.one_hot(rivals[:, r], k).double(), retain_graph=True)[0]
        .norm(dim=1) for r in range(k - 1)], dim=1)  # (N, K-1)
    best = rivals.gather(1, norms.argmax(1, keepdim=True))[:, 0]
    g = torch.autograd.grad(logits, xi, onehot_y - F.one_hot(best, k).double(), retain_graph=True)[0]
    hinge = gradient_margin_loss(logits, y, xi, C=0.0, reduction="none")
    argmax = loss("argmax")
    assert torch.allclose(argmax, hinge + g.norm(dim=1), rtol=1e-12)
    assert torch.allclose(loss("argmax_batched"), argmax, rtol=1e-12)
    assert not torch.allclose(argmax, loss("loop"))

    model.eval()
    alone = torch.cat([loss("loop", x[i:i + 1], y[i:i + 1]) for i in range(n)])
    for method in GRAD_METHODS:
        assert torch.allclose(loss(method), alone, rtol=1e-12, atol=1e-12)


def test_gradient_margin_tie_value_and_module_option():
    """At an exact tie of rivals the value is the same; the module passes grad_method through."""
    # rows 1 and 2 of W are equidistant from row 0: ||W0 - W1|| = ||W0 - W2||
    model = nn.Linear(2, 3, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64))
    x = torch.randn(4, 2, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.int64)
    values = {}
    for method in GRAD_METHODS:
        crit = GradientMarginLoss(model, C=0.5, reduction="none", grad_method=method)
        assert f"grad_method={method!r}" in repr(crit)
        values[method], _ = crit(x, y)
    for method in GRAD_METHODS:
        assert torch.allclose(values[method], values["loop"], rtol=1e-12)


def test_gradient_margin_bad_grad_method():
    model = _mlp(seed=47)
    x, y = _data(4, 3, 3, seed=48)
    xr = x.clone().requires_grad_(True)
    with pytest.raises(ValueError, match="'grad_method' parameter of gradient_margin_loss must be one of 'auto', "
                                         "'argmax', 'argmax_batched', 'loop'. Got 'vmap'"):
        gradient_margin_loss(model(xr), y, xr, C=0.1, grad_method="vmap")
    with pytest.raises(ValueError, match="'grad_method' parameter of GradientMarginLoss"):
        GradientMarginLoss(model, C=0.1, grad_method="batched")
    for method in ("argmax", "argmax_batched", "loop"):  # logits not computed from inputs, each method
        with pytest.raises(ValueError, match="'inputs'.*does not depend"):
            gradient_margin_loss(model(xr), y, x.clone().requires_grad_(True), C=0.1, grad_method=method)


# --------------------------------------------------------------------------- VAT


def test_vat_power_iteration_finds_top_eigenvector():
    k, d, n = 4, 6, 5
    model = _linear(k, d, seed=19)
    x, _ = _data(n, d, k, seed=20)
    x = 0.3 * x  # keep the softmax away from saturation
    with torch.no_grad():
        logits = model(x)
    log_p = F.log_softmax(logits, dim=1)
    gen = torch.Generator().manual_seed(0)
    dirs = _adversarial_direction(model, x, log_p, 1e-6, 100, gen)
    W = model.weight.detach().numpy()
    for i in range(n):
        p = log_p[i].exp().numpy()
        H = W.T @ (np.diag(p) - np.outer(p, p)) @ W
        evals, evecs = np.linalg.eigh(H)
        assert evals[-1] > 1.2 * evals[-2]  # a gap, so the power iteration converges
        cos = abs(float(np.dot(evecs[:, -1], dirs[i].numpy())))  # sign is arbitrary
        assert cos > 0.99
        # and with a small eps, KL(p || p(x + r_adv)) ~ eps^2 lambda_max / 2
    eps = 1e-3
    gen = torch.Generator().manual_seed(0)
    loss = vat_loss(model, x, eps=eps, power_iterations=100, reduction="none", generator=gen)
    for i in range(n):
        p = log_p[i].exp().numpy()
        lam = np.linalg.eigvalsh(W.T @ (np.diag(p) - np.outer(p, p)) @ W)[-1]
        assert loss[i].item() == pytest.approx(0.5 * eps**2 * lam, rel=1e-2)


def test_vat_one_iteration_beats_random_direction():
    model = _linear(5, 8, seed=21)
    x, _ = _data(32, 8, 5, seed=22)
    adv = vat_loss(model, x, eps=0.5, power_iterations=1, generator=torch.Generator().manual_seed(1))
    rnd = vat_loss(model, x, eps=0.5, power_iterations=0, generator=torch.Generator().manual_seed(1))
    assert adv > rnd > 0


def test_vat_reproducible_keeps_mode_and_backprops():
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.0), nn.Tanh(), nn.Linear(8, 3)).double()
    x, _ = _data(6, 4, 3, seed=23)
    for mode in (True, False):
        model.train(mode)
        a = vat_loss(model, x, eps=1.0, generator=torch.Generator().manual_seed(3))
        b = vat_loss(model, x, eps=1.0, generator=torch.Generator().manual_seed(3))
        assert model.training is mode
        assert torch.equal(a, b)
    model.zero_grad()
    a.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_vat_module_semi_supervised():
    model = _mlp(seed=24, d=4, k=3).eval()
    x, _ = _data(6, 4, 3, seed=25)
    y = torch.tensor([0, -1, 2, -1, 1, 1])
    crit = VATLoss(model, eps=0.8, xi=1e-6, power_iterations=2, ce_weight=0.5, reduction="none",
                   generator=torch.Generator().manual_seed(4))
    loss, logits = crit(x, y)
    vat = vat_loss(model, x, eps=0.8, power_iterations=2, reduction="none",
                   generator=torch.Generator().manual_seed(4))
    ce = F.cross_entropy(logits, y.clamp_min(0), reduction="none") * (y != -1)
    assert torch.allclose(loss, 0.5 * ce + vat)
    assert torch.allclose(loss[y == -1], vat[y == -1])

    crit_mean = VATLoss(model, eps=0.8, power_iterations=2, ce_weight=0.5,
                        generator=torch.Generator().manual_seed(4))
    loss_mean, logits2 = crit_mean(x, y)
    assert torch.allclose(loss_mean, 0.5 * F.cross_entropy(logits, y, ignore_index=-1) + vat.mean())
    assert torch.equal(logits2, logits)
    loss_mean.backward()
    assert all(p.grad is not None for p in model.parameters())
    # all unlabelled: only the VAT term
    crit_mean.generator = torch.Generator().manual_seed(4)
    unl, _ = crit_mean(x, torch.full((6,), -1))
    assert torch.allclose(unl, vat.mean())


# --------------------------------------------------------------------------- modules


@pytest.mark.parametrize("make", [
    lambda m: GradientMarginLoss(m, C=0.3, norm=1),
    lambda m: InputGradientLoss(m, eps=0.3, norm=2, lipschitz=0.1),
    lambda m: VATLoss(m, eps=0.5),
])
def test_modules_return_loss_and_logits_and_backprop(make):
    model = _mlp(seed=26, d=4, k=3)
    x, y = _data(5, 4, 3, seed=27)
    loss, logits = make(model)(x, y)
    assert loss.dim() == 0 and logits.shape == (5, 3)
    assert torch.allclose(logits, model(x))
    loss.backward()
    for p in model.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert x.grad is None  # the input passed in is not modified


def test_module_matches_function():
    model = _mlp(seed=28, d=4, k=3)
    x, y = _data(5, 4, 3, seed=29)
    xr = x.clone().requires_grad_(True)
    loss, _ = GradientMarginLoss(model, C=0.2, norm=math.inf, margin=0.5, reduction="sum")(x, y)
    assert torch.allclose(loss, gradient_margin_loss(model(xr), y, xr, C=0.2, norm="inf", margin=0.5,
                                                     reduction="sum"))
    loss, _ = InputGradientLoss(model, eps=0.2, norm=1, reduction="none")(x, y)
    assert torch.allclose(loss, input_gradient_loss(model(xr), y, xr, eps=0.2, norm=1, reduction="none"))


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("fn,kw", [(gradient_margin_loss, {"C": 0.1}), (input_gradient_loss, {"eps": 0.1})])
def test_bad_inputs(fn, kw):
    model = _mlp(seed=30)
    x, y = _data(4, 3, 3, seed=31)
    xr = x.clone().requires_grad_(True)
    logits = model(xr)
    # logits not computed from inputs
    other = x.clone().requires_grad_(True)
    with pytest.raises(ValueError, match="'inputs'.*does not depend"):
        fn(logits, y, other, **kw)
    with pytest.raises(ValueError, match="'inputs'.*does not depend"):
        fn(logits.detach(), y, xr, **kw)
    with pytest.raises(ValueError, match="'inputs'.*requires_grad"):
        fn(logits, y, x, **kw)
    with pytest.raises(ValueError, match="'inputs'"):
        fn(logits, y, xr[:3], **kw)
    with pytest.raises(ValueError, match="'target'"):
        fn(logits, y[:3], xr, **kw)
    with pytest.raises(ValueError, match="'target'.*a target of 3"):
        fn(logits, torch.tensor([0, 1, 3, 0]), xr, **kw)
    with pytest.raises(ValueError, match="'target'"):
        fn(logits, torch.tensor([0, -1, 2, 0]), xr, **kw)
    with pytest.raises(TypeError, match="'target'"):
        fn(logits, y.double(), xr, **kw)
    with pytest.raises(ValueError, match="'logits'"):
        fn(logits[:, :1], y, xr, **kw)
    for bad in (3, 0, 0.5, -1):
        with pytest.raises(ValueError, match="'norm' parameter of .* must be one of 1, 2, math.inf"):
            fn(logits, y, xr, norm=bad, **kw)
    with pytest.raises(ValueError, match="'reduction'"):
        fn(logits, y, xr, reduction="avg", **kw)
    name = next(iter(kw))
    with pytest.raises(ValueError, match=f"The '{name}' parameter of {fn.__name__} must be a number >= 0. Got -1"):
        fn(logits, y, xr, **{name: -1})
    with pytest.raises(TypeError, match=f"'{name}'"):
        fn(logits, y, xr, **{name: float("nan")})


def test_bad_specific_parameters():
    model = _mlp(seed=32)
    x, y = _data(4, 3, 3, seed=33)
    xr = x.clone().requires_grad_(True)
    logits = model(xr)
    with pytest.raises(ValueError, match="'lipschitz'"):
        input_gradient_loss(logits, y, xr, eps=0.1, lipschitz=-0.5)
    with pytest.raises(ValueError, match="'margin'"):
        gradient_margin_loss(logits, y, xr, C=0.1, margin=0.0)
    with pytest.raises(ValueError, match="'C' parameter of GradientMarginLoss"):
        GradientMarginLoss(model, C=-1)
    with pytest.raises(ValueError, match="'norm' parameter of GradientMarginLoss"):
        GradientMarginLoss(model, C=1, norm=3)
    with pytest.raises(ValueError, match="'eps' parameter of InputGradientLoss"):
        InputGradientLoss(model, eps=-0.1)
    with pytest.raises(ValueError, match="'lipschitz' parameter of InputGradientLoss"):
        InputGradientLoss(model, eps=0.1, lipschitz=-1)
    with pytest.raises(ValueError, match="'eps' parameter of vat_loss"):
        vat_loss(model, x, eps=0.0)
    with pytest.raises(ValueError, match="'xi' parameter of vat_loss"):
        vat_loss(model, x, eps=1.0, xi=-1e-6)
    with pytest.raises(ValueError, match="'power_iterations' parameter of vat_loss"):
        vat_loss(model, x, eps=1.0, power_iterations=-1)
    with pytest.raises(TypeError, match="'x' parameter of vat_loss"):
        vat_loss(model, torch.ones(4, 3, dtype=torch.int64), eps=1.0)
    with pytest.raises(ValueError, match="'reduction' parameter of vat_loss"):
        vat_loss(model, x, eps=1.0, reduction="avg")
    with pytest.raises(ValueError, match="'eps' parameter of VATLoss"):
        VATLoss(model, eps=-1.0)
    crit = VATLoss(model, eps=1.0)
    with pytest.raises(ValueError, match="'target' parameter of VATLoss.*a target of -2"):
        crit(x, torch.tensor([0, -2, 1, 1]))
    with pytest.raises(ValueError, match="'target' parameter of VATLoss.*a target of 3"):
        crit(x, torch.tensor([0, 3, 1, 1]))
    with pytest.raises(ValueError, match="'target' parameter of VATLoss"):
        crit(x, torch.tensor([0, 1, 1]))
