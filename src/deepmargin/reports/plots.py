"""Plots of training runs and result grids, made from the result files (JSONL) so they can be redrawn."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .tables import pivot_rows

__all__ = ["plot_accuracy_grid", "plot_training_curves"]


def _rows(source: str | os.PathLike[str] | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if isinstance(source, (str, os.PathLike)):
        from ..training.records import read_jsonl

        path = Path(source)
        return read_jsonl(path / "metrics.jsonl" if path.is_dir() else path)
    return list(source)


def plot_training_curves(
    runs: Mapping[str, str | os.PathLike[str] | Sequence[Mapping[str, Any]]],
    *,
    metrics: Sequence[str] = ("train_loss", "train_acc", "val_acc"),
    panel_size: float = 3.5,
) -> Figure:
    """One panel per metric, one line per run, against the epoch.

    Args:
        runs: ``{label: run directory, metrics.jsonl path, or list of rows}``.
        metrics: keys of the metric rows to plot (missing values are skipped).
        panel_size: width and height of each panel in inches.

    Returns:
        The ``Figure``.
    """
    fig = Figure(figsize=(panel_size * len(metrics), panel_size), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for label, source in runs.items():
        rows = _rows(source)
        for ax, key in zip(axes, metrics):
            pts = [(r["epoch"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=label)
    for ax, key in zip(axes, metrics):
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    if runs:
        axes[0].legend()
    return fig


def plot_accuracy_grid(
    rows: str | os.PathLike[str] | Sequence[Mapping[str, Any]],
    *,
    x: str = "label_noise",
    group: str = "loss",
    value: str = "test_acc",
    size: tuple[float, float] = (5.0, 3.5),
) -> Figure:
    """Mean ``value`` (with min-max bars over repeated rows, e.g. seeds) against ``x``, one line per ``group``.

    As the paper's Figure 2 (test accuracy against label noise or training-set fraction).
    ``rows`` is a list of result rows or a JSONL file of them.
    """
    data = _rows(rows)
    groups, xs, cells = pivot_rows(data, index=group, columns=x, value=value)
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.subplots()
    order = sorted(xs, key=lambda v: (isinstance(v, str), v))
    for g in groups:
        pts = [(v, cells[(g, v)]) for v in order if (g, v) in cells]
        if not pts:
            continue
        xv = [p[0] for p in pts]
        mean = [sum(vals) / len(vals) for _, vals in pts]
        low = [m - min(vals) for m, (_, vals) in zip(mean, pts)]
        high = [max(vals) - m for m, (_, vals) in zip(mean, pts)]
        ax.errorbar(xv, mean, yerr=[low, high], marker="o", capsize=3, label=str(g))
    ax.set_xlabel(x)
    ax.set_ylabel(value)
    ax.grid(alpha=0.3)
    ax.legend(title=group)
    return fig
