"""Tests of the large-margin loss against closed forms, finite differences and an independent
re-statement of the released TensorFlow code's semantics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepmargin import LargeMarginLoss, large_margin_loss
from deepmargin.losses import linearized_distances

NORMS = [1, 2, math.inf, 3.0, 1.5]


def dual(p: float) -> float:
    if p == 1:
        return math.inf
    if math.isinf(p):
        return 1.0
    return p / (p - 1)


class SmoothNet(nn.Module):
    """Input (N, 4) -> tanh hidden (N, 6) -> softplus hidden (N, 5) -> logits (N, C)."""

    def __init__(self, classes: int = 4, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc1 = nn.Linear(4, 6).double()
        self.fc2 = nn.Linear(6, 5).double()
        self.fc3 = nn.Linear(5, classes).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))

    def forward(self, x):
        self.h1 = torch.tanh(self.fc1(x))
        self.h2 = F.softplus(self.fc2(self.h1))
        return self.fc3(self.h2)


def batch(n=7, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed + 100)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def run(net, x, y, **kw):
    x = x.clone().requires_grad_(True)
    logits = net(x)
    return large_margin_loss(logits, y, [x, net.h1, net.h2], **kw)


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("p", NORMS)
def test_linear_classifier_distance_is_exact(p):
    """For f = Wx + b the linearised distance is the exact l_p distance to each pairwise boundary."""
    torch.manual_seed(1)
    lin = nn.Linear(5, 4).double()
    x = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (9,))
    logits = lin(x)
    (d,), classes = linearized_distances(logits, y, [x], top_k=3, norm=p, epsilon=1e-300, return_classes=True)
    W, b = lin.weight.detach(), lin.bias.detach()
    q = dual(p)
    for n in range(9):
        for j in range(3):
            i = classes[n, j].item()
            w = W[y[n]] - W[i]
            margin = float(w @ x[n].detach() + b[y[n]] - b[i])
            # closed form: |margin| / ||w||_q, signed by the side of the boundary
            exact = margin / torch.linalg.vector_norm(w, ord=q).item()
            torch.testing.assert_close(d[n, j].item(), exact, rtol=1e-12, atol=1e-12)
            # the Hoelder-optimal displacement of that length lands on the boundary
            if math.isinf(p):
                delta = -torch.sign(w) * exact
            elif p == 1:
                k = torch.argmax(w.abs())
                delta = torch.zeros_like(w)
                delta[k] = -torch.sign(w[k]) * exact
            else:
                u = torch.sign(w) * w.abs() ** (q - 1)
                delta = -u / torch.linalg.vector_norm(u, ord=p) * exact
            torch.testing.assert_close(torch.linalg.vector_norm(delta, ord=p).item(), abs(exact), rtol=1e-10, atol=1e-12)
            moved = float(w @ (x[n].detach() + delta) + b[y[n]] - b[i])
            assert abs(moved) < 1e-9


def test_top_k_classes_are_the_highest_rivals():
    net = SmoothNet(classes=6)
    x, y = batch(classes=6)
    xg = x.clone().requires_grad_(True)
    logits = net(xg)
    _, classes = linearized_distances(logits, y, [xg], top_k=4, return_classes=True)
    masked = logits.detach().clone()
    masked[torch.arange(len(y)), y] = -math.inf
    assert torch.equal(classes, masked.argsort(dim=1, descending=True)[:, :4])
    assert not (classes == y[:, None]).any()


# --------------------------------------------------------------------------- value semantics


@pytest.mark.parametrize("aggregation", ["max", "sum"])
@pytest.mark.parametrize("alpha", [None, 0.5, 2.0])
@pytest.mark.parametrize("top_k", [1, 3])
def test_value_matches_the_formula(aggregation, alpha, top_k):
    net = SmoothNet()
    x, y = batch()
    gamma = [0.7, 1.3, 2.1]
    weights = [1.0, 0.5, 2.0]
    loss = run(net, x, y, gamma=gamma, alpha=alpha, top_k=top_k, aggregation=aggregation,
               layer_weights=weights, reduction="none")
    xg = x.clone().requires_grad_(True)
    logits = net(xg)
    layers = [xg, net.h1, net.h2]
    expected = torch.zeros(len(y), dtype=torch.float64)
    for l, h in enumerate(layers):
        for n in range(len(y)):
            rivals = [i for i in logits[n].detach().argsort(descending=True).tolist() if i != y[n]][:top_k]
            pens = []
            for i in rivals:
                diff = logits[n, y[n]] - logits[n, i]
                (g,) = torch.autograd.grad(diff, h, retain_graph=True)
                d = diff.item() / (g[n].norm(2).item() / weights[l] + 1e-6)
                pen = max(0.0, gamma[l] - d)
                if alpha is not None:
                    pen = min(pen, alpha * gamma[l])
                pens.append(pen)
            expected[n] += (max(pens) if aggregation == "max" else sum(pens)) / len(layers)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-10, atol=1e-10)


def test_reductions_and_per_layer_gamma_scale():
    net = SmoothNet()
    x, y = batch()
    none = run(net, x, y, gamma=1.0, reduction="none")
    assert none.shape == (len(y),)
    torch.testing.assert_close(run(net, x, y, gamma=1.0), none.mean())
    torch.testing.assert_close(run(net, x, y, gamma=1.0, reduction="sum"), none.sum())
    # a huge margin makes every penalty gamma - d: raising gamma by c adds exactly c
    big = run(net, x, y, gamma=1e4, reduction="none")
    bigger = run(net, x, y, gamma=[1e4 + 3, 1e4 + 3, 1e4 + 3], reduction="none")
    torch.testing.assert_close(bigger - big, torch.full_like(big, 3.0), rtol=0, atol=1e-8)
    # raising only one layer's gamma adds c / L
    one = run(net, x, y, gamma=[1e4, 1e4 + 3, 1e4], reduction="none")
    torch.testing.assert_close(one - big, torch.full_like(big, 1.0), rtol=0, atol=1e-8)
    # sum over top_k=3 of gamma - d with huge gamma is 3 gamma - sum d
    s3 = run(net, x, y, gamma=1e4, top_k=3, aggregation="sum", reduction="none")
    assert torch.all(s3 > 2.9e4)


def test_alpha_caps_each_penalty():
    net = SmoothNet()
    x, y = batch()
    capped = run(net, x, y, gamma=50.0, alpha=0.1, top_k=3, aggregation="sum", reduction="none")
    assert torch.all(capped <= 3 * 5.0 + 1e-12)
    assert torch.all(capped > 0)


# --------------------------------------------------------------------------- gradients


def _params(net):
    return [p for p in net.parameters()]


@pytest.mark.parametrize("p", [1, 2, math.inf, 3.0])
@pytest.mark.parametrize("aggregation", ["max", "sum"])
def test_gradcheck_exact_mode(p, aggregation):
    """approximate=False differentiates through the norm: float64 gradcheck against finite differences."""
    net = SmoothNet()
    x, y = batch(n=4)
    x = x.requires_grad_(True)
    W1 = net.fc1.weight.detach().clone().requires_grad_(True)

    def f(x_in, w1):
        h0 = x_in
        h1 = torch.tanh(F.linear(h0, w1, net.fc1.bias))
        h2 = F.softplus(net.fc2(h1))
        logits = net.fc3(h2)
        return large_margin_loss(logits, y, [h0, h1, h2], gamma=[20.0, 30.0, 40.0], top_k=2,
                                 norm=p, aggregation=aggregation, approximate=False, reduction="none")

    if math.isinf(p) or p == 1:
        # the l1 / l_inf dual norms are piecewise linear: check away from kinks only
        assert torch.autograd.gradcheck(f, (x, W1), eps=1e-7, atol=1e-5)
    else:
        assert torch.autograd.gradcheck(f, (x, W1), eps=1e-6, atol=1e-6)
        assert torch.autograd.gradgradcheck(f, (x, W1), eps=1e-6, atol=1e-4)


@pytest.mark.parametrize("p", [1, 2, math.inf])
def test_approximate_mode_treats_the_norm_as_constant(p):
    """approximate=True: the gradient is that of diff / (c + eps) with c frozen at its current value."""
    net = SmoothNet()
    x, y = batch(n=5)
    gamma, top_k = 30.0, 3
    loss = run(net, x, y, gamma=gamma, top_k=top_k, norm=p, aggregation="sum")
    grads = torch.autograd.grad(loss, _params(net))

    xg = x.clone().requires_grad_(True)
    logits = net(xg)
    layers = [xg, net.h1, net.h2]
    frozen = [d.detach() for d in linearized_distances(logits, y, layers, top_k=top_k, norm=p)]
    _, classes = linearized_distances(logits, y, layers, top_k=top_k, norm=p, return_classes=True)

    def frozen_loss():
        out = net(x)
        diff = out.gather(1, y[:, None]) - out.gather(1, classes)
        total = 0
        for d0 in frozen:
            c = diff.detach() / d0  # the frozen (norm + eps)
            total = total + F.relu(gamma - diff / c).sum(1)
        return (total / len(frozen)).mean()

    expected = torch.autograd.grad(frozen_loss(), _params(net))
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    # and the two modes really differ
    exact = torch.autograd.grad(run(net, x, y, gamma=gamma, top_k=top_k, norm=p, aggregation="sum",
                                    approximate=False), _params(net))
    assert max((a - b).abs().max().item() for a, b in zip(grads, exact)) > 1e-6


@pytest.mark.parametrize("approximate", [True, False])
@pytest.mark.parametrize("top_k", [1, 3])
def test_loop_batched_and_per_sample_agree(approximate, top_k):
    net = SmoothNet()
    x, y = batch()
    results = []
    for kw in ({"grad_method": "loop"}, {"grad_method": "batched"}, {"exact_per_sample": True}):
        loss = run(net, x, y, gamma=[5.0, 6.0, 7.0], top_k=top_k, aggregation="sum",
                   approximate=approximate, **kw)
        results.append((loss, torch.autograd.grad(loss, _params(net))))
    for loss, grads in results[1:]:
        torch.testing.assert_close(loss, results[0][0], rtol=1e-12, atol=1e-12)
        for a, b in zip(grads, results[0][1]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_per_sample_gradient_equals_single_sample_runs():
    net = SmoothNet()
    x, y = batch(n=5)
    together = run(net, x, y, gamma=9.0, top_k=2, reduction="none")
    alone = torch.cat([run(net, x[n:n + 1], y[n:n + 1], gamma=9.0, top_k=2, reduction="none") for n in range(5)])
    torch.testing.assert_close(together, alone, rtol=1e-12, atol=1e-12)


def test_batch_norm_training_couples_samples_and_exact_option_removes_it():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))

    def loss(exact):
        xg = x.clone().requires_grad_(True)
        return large_margin_loss(net(xg), y, [xg], gamma=50.0, reduction="none", exact_per_sample=exact)

    net.train()
    coupled, exact = loss(False), loss(True)
    assert (coupled - exact).abs().max() > 1e-6
    # exact equals each sample's own gradient through the batch statistics
    xg = x.clone().requires_grad_(True)
    logits = net(xg)
    rival = logits.detach().clone()
    rival[torch.arange(6), y] = -math.inf
    i = rival.argmax(1)
    for n in range(6):
        diff = logits[n, y[n]] - logits[n, i[n]]
        (g,) = torch.autograd.grad(diff, xg, retain_graph=True)
        d = diff.item() / (g[n].norm().item() + 1e-6)
        assert abs(exact[n].item() - max(0.0, 50.0 - d)) < 1e-9
    net.eval()
    torch.testing.assert_close(loss(False), loss(True), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- the released TF code


def reference_tf_semantics(logits, onehot, layers, *, gamma, alpha, top_k, p, eps, approximate, worst_case, weights):
    """The released TF code's documented behaviour, written as plain per-layer, per-class loops:
    softmax probabilities; the true class excluded by zeroing its probability; epsilon added after
    dividing the norm by the layer weight; worst case = min over the top_k columns; the kept
    column values are max(0, gamma - max(d, gamma (1 - alpha))) - gamma; mean over batch then layers."""
    prob = torch.softmax(logits, dim=1)
    correct = (prob * onehot).sum(1, keepdim=True)
    others = prob * (1 - onehot)
    top, _ = torch.topk(others, k=top_k, dim=1)
    diff = correct - top
    q = dual(p)
    per_layer = []
    for wt, h in zip(weights, layers):
        cols = []
        for i in range(top_k):
            (g,) = torch.autograd.grad(diff[:, i].sum(), h, retain_graph=True, create_graph=not approximate)
            cols.append((torch.linalg.vector_norm(g.reshape(g.shape[0], -1), ord=q, dim=1) / wt)[:, None])
        gn = torch.cat(cols, dim=1)
        if approximate:
            gn = gn.detach()
        dist = diff / (gn + eps)
        if worst_case:
            dist = dist.min(dim=1, keepdim=True).values
        dist = dist + F.relu(gamma * (1 - alpha) - dist)
        val = F.relu(gamma - dist) - gamma
        per_layer.append(val.sum(1).mean())
    return torch.stack(per_layer).mean()


@pytest.mark.parametrize("p", [1, 2, math.inf])
@pytest.mark.parametrize("top_k", [1, 2, 3])
@pytest.mark.parametrize("approximate", [True, False])
@pytest.mark.parametrize("alpha", [0.6, 2.0])
@pytest.mark.parametrize("worst_case", [True, False])
def test_matches_released_tf_semantics(p, top_k, approximate, alpha, worst_case):
    net = SmoothNet(classes=5, seed=3)
    x, y = batch(n=8, classes=5, seed=3)
    y[::2] = net(x)[::2].argmax(1)  # half the samples correctly classified: positive distances too
    gamma, eps, weights = 1.0, 1e-8, [1.0, 2.0, 0.5]
    kw = dict(gamma=gamma, alpha=alpha, top_k=top_k, norm=p, epsilon=eps, approximate=approximate,
              layer_weights=weights, scores="softmax", aggregation="max" if worst_case else "sum")
    ours = run(net, x, y, **kw)
    g_ours = torch.autograd.grad(ours, _params(net))

    xg = x.clone().requires_grad_(True)
    logits = net(xg)
    ref = reference_tf_semantics(logits, F.one_hot(y, 5).double(), [xg, net.h1, net.h2], gamma=gamma,
                                 alpha=alpha, top_k=top_k, p=p, eps=eps, approximate=approximate,
                                 worst_case=worst_case, weights=weights)
    g_ref = torch.autograd.grad(ref, _params(net))
    kept = 1 if worst_case else top_k
    torch.testing.assert_close(ours, ref + gamma * kept, rtol=0, atol=1e-10)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    assert any(a.abs().max() > 0 for a in g_ours)  # the comparison is not vacuous


# --------------------------------------------------------------------------- robustness of the numbers


@pytest.mark.parametrize("p", [1, 2, math.inf, 3.0])
@pytest.mark.parametrize("approximate", [True, False])
def test_dead_relu_gives_finite_loss_and_gradients(p, approximate):
    torch.manual_seed(0)
    lin1, lin2 = nn.Linear(3, 4), nn.Linear(4, 3)
    with torch.no_grad():
        lin1.bias.fill_(-100.0)  # every hidden unit dead: zero gradient to the input
    x = torch.randn(5, 3, requires_grad=True)
    h = torch.relu(lin1(x))
    logits = lin2(h)
    loss = large_margin_loss(logits, torch.randint(0, 3, (5,)), [x, h], gamma=1.0, top_k=2, norm=p,
                             approximate=approximate, aggregation="sum")
    grads = torch.autograd.grad(loss, list(lin1.parameters()) + list(lin2.parameters()) + [x])
    assert torch.isfinite(loss)
    assert all(torch.isfinite(g).all() for g in grads)


# --------------------------------------------------------------------------- the module form


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3)
        self.relu1 = nn.ReLU()
        self.fc1 = nn.Linear(3 * 4 * 4, 5)

    def forward(self, x):
        return self.fc1(self.relu1(self.conv1(x)).flatten(1))


def test_module_matches_functional_and_adds_cross_entropy():
    torch.manual_seed(0)
    net = Small()
    x, y = torch.rand(6, 1, 6, 6), torch.randint(0, 5, (6,))
    crit = LargeMarginLoss(net, ["input", "relu1", "conv1"], gamma=[0.1, 0.5, 0.5], top_k=2, ce_weight=0.5)
    loss, logits = crit(x, y)
    xg = x.clone().requires_grad_(True)
    c = net.conv1(xg)
    r = net.relu1(c)
    out = net.fc1(r.flatten(1))
    expected = large_margin_loss(out, y, [xg, r, c], gamma=[0.1, 0.5, 0.5], top_k=2) + 0.5 * F.cross_entropy(out, y)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(logits, out)
    loss.backward()
    assert net.conv1.weight.grad is not None and x.grad is None  # the caller's tensor is untouched


def test_module_rejects_unknown_layers_and_inplace_modification():
    net = Small()
    with pytest.raises(ValueError, match=r"does not have: \['conv9'\].*input, conv1, relu1, fc1"):
        LargeMarginLoss(net, ["input", "conv9"], gamma=1.0)
    with pytest.raises(ValueError, match="'gamma' parameter of LargeMarginLoss"):
        LargeMarginLoss(net, ["input", "conv1"], gamma=[1.0, 2.0, 3.0])
    net.relu1 = nn.ReLU(inplace=True)
    crit = LargeMarginLoss(net, ["conv1"], gamma=1.0)
    with pytest.raises(ValueError, match="modified in place"):
        crit(torch.rand(2, 1, 6, 6), torch.tensor([0, 1]))


# --------------------------------------------------------------------------- bad input


def _ok():
    torch.manual_seed(0)
    x = torch.randn(4, 3, requires_grad=True)
    lin = nn.Linear(3, 5)
    return lin(x), torch.tensor([0, 1, 2, 3]), [x]


@pytest.mark.parametrize(
    "change, exc, pattern",
    [
        (dict(norm=0.5), ValueError, r"'norm' parameter of large_margin_loss must be a real number p >= 1.*Got 0.5"),
        (dict(norm="two"), TypeError, r"'norm' parameter"),
        (dict(top_k=5), ValueError, r"'top_k' parameter of large_margin_loss must be an int in \[1, num_classes - 1\].*Got 5"),
        (dict(top_k=0), ValueError, r"'top_k'.*Got 0"),
        (dict(gamma=0.0), ValueError, r"'gamma' parameter of large_margin_loss must be a number > 0\. Got 0.0"),
        (dict(gamma=-1.0), ValueError, r"'gamma'"),
        (dict(gamma=[1.0, 2.0]), ValueError, r"'gamma'.*sequence of 1 floats.*length 2"),
        (dict(layer_weights=[1.0, 1.0]), ValueError, r"'layer_weights'"),
        (dict(alpha=-0.5), ValueError, r"'alpha'"),
        (dict(aggregation="mean"), ValueError, r"'aggregation'.*'max', 'sum'.*'mean'"),
        (dict(scores="probs"), ValueError, r"'scores'"),
        (dict(reduction="avg"), ValueError, r"'reduction'"),
        (dict(epsilon=0.0), ValueError, r"'epsilon'.*> 0"),
    ],
)
def test_bad_options_raise_clear_errors(change, exc, pattern):
    logits, target, layers = _ok()
    kw = dict(gamma=1.0) | change
    with pytest.raises(exc, match=pattern):
        large_margin_loss(logits, target, layers, **kw)


def test_bad_targets_and_layers_raise_clear_errors():
    logits, target, layers = _ok()
    with pytest.raises(ValueError, match=r"'target'.*class indices in \[0, 4\].*a target of 7"):
        large_margin_loss(logits, torch.tensor([0, 1, 7, 3]), layers, gamma=1.0)
    with pytest.raises(TypeError, match=r"'target'.*integer.*float32"):
        large_margin_loss(logits, target.float(), layers, gamma=1.0)
    with pytest.raises(ValueError, match=r"'target'.*shape \(4,\).*shape \(3,\)"):
        large_margin_loss(logits, target[:3], layers, gamma=1.0)
    with pytest.raises(ValueError, match=r"'layers\[0\]'.*shape \(N=4, \.\.\.\).*shape \(3, 3\)"):
        large_margin_loss(logits, target, [torch.randn(3, 3, requires_grad=True)], gamma=1.0)
    with pytest.raises(ValueError, match=r"'layers\[0\]'.*requires_grad_"):
        large_margin_loss(logits, target, [torch.randn(4, 3)], gamma=1.0)
    with pytest.raises(ValueError, match=r"'layers\[1\]'.*does not depend on"):
        large_margin_loss(logits, target, [layers[0], torch.randn(4, 2, requires_grad=True)], gamma=1.0)
    with pytest.raises(ValueError, match=r"'logits'.*\(N, C\) with C >= 2"):
        large_margin_loss(logits[:, :1], target * 0, layers, gamma=1.0)
    with pytest.raises(TypeError, match=r"'layers'.*sequence of tensors"):
        large_margin_loss(logits, target, layers[0], gamma=1.0)


def test_bf16_autocast_on_cpu_is_close_to_float32():
    torch.manual_seed(0)
    net = Small()
    x, y = torch.rand(8, 1, 6, 6), torch.randint(0, 5, (8,))
    crit = LargeMarginLoss(net, ["input", "relu1"], gamma=[0.5, 2.0], top_k=3, ce_weight=1.0)
    reference, _ = crit(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, logits = crit(x, y)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    torch.testing.assert_close(loss.float(), reference, rtol=3e-2, atol=3e-2)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
