"""Plain helpers shared by the test modules: linear models with closed-form distances, tiny trained MLPs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

WIDE = (-1e6, 1e6)  # bounds that never clip
NORMS = [2, math.inf]


def lp(t: torch.Tensor, p: float) -> torch.Tensor:
    """Per-sample l_p norm of a batch ``(N, *)`` -> ``(N,)``."""
    return t.flatten(1).norm(p=p, dim=1)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` that ``model`` classifies as ``y``."""
    with torch.no_grad():
        return (model(x).argmax(1) == y).double().mean().item()


def linear_model(num_classes: int, dim: int, seed: int) -> nn.Linear:
    """A float64 ``nn.Linear(dim, num_classes)`` with standard normal weights and biases."""
    gen = torch.Generator().manual_seed(seed)
    model = nn.Linear(dim, num_classes).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(num_classes, dim, generator=gen, dtype=torch.float64))
        model.bias.copy_(torch.randn(num_classes, generator=gen, dtype=torch.float64))
    return model


def exact_linear_distance(model: nn.Linear, x: torch.Tensor, y: torch.Tensor, norm: float) -> torch.Tensor:
    """min_{j != y} (z_y - z_j) / ||W_y - W_j||_q: the exact distance for an unbounded linear model."""
    q = 2.0 if norm == 2 else 1.0  # the dual exponent, for norm in {2, inf}
    with torch.no_grad():
        z = model(x)
        out = torch.full((x.shape[0],), math.inf, dtype=x.dtype)
        for j in range(z.shape[1]):
            w = model.weight[y] - model.weight[j]
            d = (z.gather(1, y[:, None]).squeeze(1) - z[:, j]) / w.norm(p=q, dim=1)
            out = torch.where(y == j, out, torch.minimum(out, d))
    return out


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, lr: float = 1e-2) -> nn.Module:
    """``steps`` full-batch Adam steps on the cross-entropy of ``model(x)``; returns ``model``."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def train_digits_mlp(seed: int = 0, n_test: int = 200) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small ReLU MLP on scikit-learn's bundled 8x8 digits (inputs in [0, 1]), trained for ~0.5 s.

    Returns ``(model in eval mode, x_test, y_test)``: the last ``n_test`` of a seeded shuffle are held out.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.int64)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    fit(model, x[:-n_test], y[:-n_test], steps=150)
    return model.eval(), x[-n_test:], y[-n_test:]
