"""Per-sample linearised margins of a trained model at chosen layers."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..capture import INPUT, ActivationCapture, eval_mode
from ..checks import check_int
from ..losses.large_margin import linearized_distances

__all__ = ["linearized_margins", "summarize_margins"]


def linearized_margins(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    layers: Sequence[str],
    *,
    norm: float = 2,
    batch_size: int = 256,
    epsilon: float = 1e-12,
) -> dict[str, torch.Tensor]:
    r"""Signed linearised distance of each sample to its nearest decision boundary, per layer.

    .. math:: m_l(x) = \min_{i \ne y} \frac{f_y(x) - f_i(x)}{\lVert \nabla_{h_l}(f_y - f_i)(x) \rVert_q}

    the quantity the large-margin loss pushes above ``gamma_l`` (Elsayed et al. 2018, eq. 7),
    over *all* rival classes. Negative for misclassified samples. For a linear model and the
    input layer it is the exact l_p distance to the decision boundary.

    Args:
        model: maps a batch to logits; evaluated in eval mode (its mode is restored afterwards).
        x: inputs ``(N, ...)``. y: int64 labels ``(N,)``.
        layers: layer names (``"input"`` or names from :func:`deepmargin.capture.list_layers`).
        norm: the l_p norm of the distance (1, 2, inf or real p >= 1).
        batch_size: samples per forward pass.
        epsilon: added to the gradient norm, ``>= 0``; ``0`` gives ``+-inf`` where a gradient is
            exactly zero (see :func:`deepmargin.losses.large_margin.linearized_margin`). Default 1e-12.

    Returns:
        ``{layer name: (N,) tensor}`` on the device and dtype of ``x``.
    """
    check_int(batch_size, "batch_size", "linearized_margins", low=1, type_exc=ValueError)
    names = list(layers)
    out: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    with eval_mode(model):
        capture = ActivationCapture(model, names)
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size].detach().clone().requires_grad_(True)
            yb = y[start:start + batch_size]
            with torch.enable_grad(), capture as cap:
                logits = model(xb)
                tensors = [xb if n == INPUT else cap.activations[n] for n in names]
                num_classes = logits.shape[1]
                dists = linearized_distances(logits, yb, tensors, top_k=num_classes - 1, norm=norm,
                                             epsilon=epsilon)
            for n, d in zip(names, dists):
                out[n].append(d.detach().min(dim=1).values)
    return {n: torch.cat(v) if v else x.new_zeros(0) for n, v in out.items()}


def summarize_margins(margins: torch.Tensor) -> dict[str, float]:
    """Summary of per-sample margins: count, mean, quantiles, and the share that is negative."""
    m = margins.detach().double().flatten().cpu()
    if m.numel() == 0:
        return {"n": 0}
    q = torch.quantile(m, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64)).tolist()
    return {
        "n": int(m.numel()),
        "mean": float(m.mean()),
        "std": float(m.std()) if m.numel() > 1 else 0.0,
        "min": float(m.min()),
        "q05": q[0], "q25": q[1], "median": q[2], "q75": q[3], "q95": q[4],
        "max": float(m.max()),
        "frac_negative": float((m < 0).double().mean()),
        "mean_positive": float(m[m > 0].mean()) if (m > 0).any() else math.nan,
    }
