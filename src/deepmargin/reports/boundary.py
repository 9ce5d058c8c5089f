"""Decision-boundary pictures of 2-D classifiers (the paper's Figure 1), drawn from a saved grid.

Figures are built with the matplotlib object API (``matplotlib.figure.Figure``, no pyplot and no
global backend change); ``fig.savefig`` renders them with Agg.

The data step (:func:`decision_grid`, :func:`save_boundary_data`) evaluates each model on a grid
and writes one ``.npz`` file; the picture (:func:`plot_decision_boundaries`) is made from that
file alone, so it can be redrawn without the models.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from ..capture import eval_mode
from ..io import atomic_write

__all__ = ["decision_grid", "load_boundary_data", "plot_decision_boundaries", "save_boundary_data"]


def decision_grid(
    model: nn.Module,
    points: torch.Tensor,
    *,
    resolution: int = 200,
    padding: float = 0.5,
    batch_size: int = 8192,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class probabilities of a 2-D classifier on a regular grid covering ``points``.

    Args:
        model: maps ``(N, 2)`` inputs to logits ``(N, C)``; evaluated in eval mode (restored after).
        points: ``(N, 2)`` points that the grid must cover (e.g. train and test points).
        resolution: grid points per axis (>= 2).
        padding: margin added around the points' bounding box, in input units.
        batch_size: grid points per forward pass.

    Returns:
        ``(xs, ys, probs)``: axis coordinates ``(R,)`` and ``(R,)``, and softmax probabilities
        ``(R, R, C)`` with ``probs[j, i]`` at ``(xs[i], ys[j])`` (the layout ``contourf`` expects).
    """
    if points.dim() != 2 or points.shape[1] != 2:
        raise ValueError(f"The 'points' parameter of decision_grid must have shape (N, 2). Got {tuple(points.shape)} instead.")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"The 'resolution' parameter of decision_grid must be an int >= 2. Got {resolution!r} instead.")
    pts = points.detach().double().cpu()
    lo = (pts.min(dim=0).values - padding).tolist()
    hi = (pts.max(dim=0).values + padding).tolist()
    xs = np.linspace(lo[0], hi[0], resolution)
    ys = np.linspace(lo[1], hi[1], resolution)
    gx, gy = np.meshgrid(xs, ys)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    grid = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], axis=1), dtype=dtype, device=device)
    with eval_mode(model), torch.no_grad():  # each module's own mode restored afterwards
        probs = torch.cat([torch.softmax(model(grid[i : i + batch_size]), dim=1) for i in range(0, len(grid), batch_size)])
    return xs, ys, probs.float().cpu().numpy().reshape(resolution, resolution, -1)


def save_boundary_data(
    path: str | os.PathLike[str],
    *,
    xs: np.ndarray,
    ys: np.ndarray,
    panels: Mapping[str, np.ndarray],
    titles: Mapping[str, str] | None = None,
    x_train: Any,
    y_train: Any,
    x_test: Any | None = None,
    y_test: Any | None = None,
) -> Path:
    """Write the grid, each panel's probabilities and the data points to one ``.npz`` file.

    Args:
        path: destination (``.npz``).
        xs, ys: grid axes from :func:`decision_grid`.
        panels: ``{key: probs (R, R, C)}``, one per model, in display order.
        titles: ``{key: title}`` for each panel (default: the key).
        x_train, y_train: training points ``(N, 2)`` and labels ``(N,)`` (drawn bold).
        x_test, y_test: optional test points and labels (drawn light).
    """
    keys = list(panels)
    titles = dict(titles or {})
    arrays: dict[str, np.ndarray] = {
        "xs": np.asarray(xs), "ys": np.asarray(ys),
        "keys": np.array(keys), "titles": np.array([titles.get(k, k) for k in keys]),
        "x_train": _np(x_train), "y_train": _np(y_train),
    }
    for i, k in enumerate(keys):
        arrays[f"probs_{i}"] = np.asarray(panels[k], dtype=np.float32)
    if x_test is not None and y_test is not None:
        arrays["x_test"], arrays["y_test"] = _np(x_test), _np(y_test)
    return atomic_write(path, lambda handle: np.savez_compressed(handle, **arrays), binary=True)


def _np(a: Any) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def load_boundary_data(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a file written by :func:`save_boundary_data` (no pickles are loaded)."""
    with np.load(Path(path), allow_pickle=False) as data:
        out = {k: data[k] for k in data.files}
    out["panels"] = [out.pop(f"probs_{i}") for i in range(len(out["keys"]))]
    return out


def plot_decision_boundaries(data: str | os.PathLike[str] | Mapping[str, Any], *, panel_size: float = 4.0) -> Figure:
    """Side-by-side decision regions of several 2-D classifiers (Elsayed et al. 2018, Figure 1).

    Each panel shades the predicted class (two classes: the probability of class 1, with the
    decision boundary p = 0.5 drawn as a line; more classes: the arg-max class, with the boundaries
    between classes drawn), the training points bold and the test points light.

    Args:
        data: a ``.npz`` path from :func:`save_boundary_data` or the dict of
            :func:`load_boundary_data`.
        panel_size: width and height of each panel in inches.

    Returns:
        The matplotlib ``Figure`` (Agg; save it with ``fig.savefig``).
    """
    if not isinstance(data, Mapping):
        data = load_boundary_data(data)
    panels: Sequence[np.ndarray] = data["panels"]
    titles = [str(t) for t in data["titles"]]
    xs, ys = data["xs"], data["ys"]
    fig = Figure(figsize=(panel_size * len(panels), panel_size), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    num_classes = panels[0].shape[-1] if panels else 2
    cmap_points = matplotlib.colormaps["coolwarm" if num_classes == 2 else "tab10"]
    for ax, probs, title in zip(axes, panels, titles):
        if num_classes == 2:
            ax.contourf(xs, ys, probs[..., 1], levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.35)
            ax.contour(xs, ys, probs[..., 1], levels=[0.5], colors="k", linewidths=1.5)
        else:
            pred = probs.argmax(axis=-1)
            ax.contourf(xs, ys, pred, levels=np.arange(num_classes + 1) - 0.5, cmap="tab10", vmin=0, vmax=9, alpha=0.3)
            ax.contour(xs, ys, pred, levels=np.arange(num_classes) + 0.5, colors="k", linewidths=1.0)
        colour = _point_colours(cmap_points, num_classes)
        if "x_test" in data:
            ax.scatter(data["x_test"][:, 0], data["x_test"][:, 1], c=colour(data["y_test"]), s=8, alpha=0.25, linewidths=0)
        ax.scatter(data["x_train"][:, 0], data["x_train"][:, 1], c=colour(data["y_train"]), s=14, edgecolors="k", linewidths=0.4)
        ax.set_title(title)
        ax.set_xlim(xs[0], xs[-1])
        ax.set_ylim(ys[0], ys[-1])
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def _point_colours(cmap: Any, num_classes: int) -> Any:
    def colour(labels: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels)
        if num_classes == 2:
            return cmap(np.where(labels == 1, 0.95, 0.05))
        return cmap(labels % 10)

    return colour
