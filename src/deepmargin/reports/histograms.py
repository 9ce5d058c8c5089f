"""The four-panel margin histograms of Kesidis, Miller & Xiang's Figures 1-2.

Panels, from the output margin ``mu_f(x) = f_c(x) - max_{i != c} f_i(x)``
(:func:`deepmargin.metrics.logit_margins`):

(a) training samples, ``c`` the true class;
(b) labelled samples held out from training, ``c`` the true class (negative when misclassified);
(c) the same samples unlabelled, ``c`` the model's own decision (so ``mu_f >= 0``);
(d) adversarial samples (their FGSM, crafted on a cross-entropy model and transferred, on every
    test sample), ``c`` the model's own decision.

The margins are data first: :func:`write_panel_margins` stores them as tidy rows
(``panel, index, margin``) and :func:`read_panel_margins` reads them back, so
``plot_margin_histograms(**read_panel_margins(path))`` redraws the figure without re-running
anything.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from matplotlib.figure import Figure

from ..io import atomic_write, save_figure

__all__ = [
    "DEFAULT_TITLES",
    "PANELS",
    "plot_margin_histograms",
    "read_panel_margins",
    "save_margin_histograms",
    "write_panel_margins",
]

#: Panel names, in figure order (the keyword arguments of :func:`plot_margin_histograms`).
PANELS = ("train", "heldout", "test", "attacked")
#: Panel titles of their Figures 1-2.
DEFAULT_TITLES = {
    "train": "(a) training samples (true class)",
    "heldout": "(b) labelled held-out samples (true class)",
    "test": "(c) unlabelled test samples (own decision)",
    "attacked": "(d) FGSM samples, transferred (own decision)",
}


def _array(values: Any, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(
            f"The '{name}' parameter of plot_margin_histograms must be a 1-D array of margins. Got shape {arr.shape} instead."
        )
    return arr


def plot_margin_histograms(
    train: Any,
    heldout: Any,
    test: Any,
    attacked: Any,
    *,
    titles: Mapping[str, str] | Sequence[str] | None = None,
    mu: float | None = None,
    bins: int = 50,
    shared_bins: bool = True,
    title: str | None = None,
    panel_size: tuple[float, float] = (4.0, 3.2),
) -> Figure:
    """Four histograms of margins side by side, as in Kesidis, Miller & Xiang's Figures 1-2.

    Each panel notes its sample count and how many margins are negative (misclassified, panel (b))
    or zero (ties). A dashed line marks the target margin ``mu`` of a margin-trained model (when it
    lies beyond the bins, the note says so instead of stretching the axis), a dotted line zero.

    Args:
        train, heldout, test, attacked: 1-D arrays (numpy or torch) of the panels' margins (see the
            module docstring). Non-finite values are left out (and counted in the panel's note).
        titles: the four panel titles, as a sequence or a mapping over :data:`PANELS` (missing keys
            keep :data:`DEFAULT_TITLES`).
        mu: the training target margin, or ``None`` (no line).
        bins: bins per panel, an int >= 1.
        shared_bins: one set of bin edges spanning every panel (comparable panels; default) or
            each panel's own range.
        title: figure title.
        panel_size: ``(width, height)`` of one panel, in inches.

    Returns:
        The matplotlib ``Figure`` (object API, no pyplot; save it with
        :func:`save_margin_histograms` or ``deepmargin.io.save_figure``).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> fig = plot_margin_histograms(rng.gamma(5, 2, 100), rng.normal(8, 4, 50), rng.gamma(3, 2, 50),
        ...                              rng.gamma(1, 1, 50), mu=10.0)
        >>> len(fig.axes)
        4

    Reference:
        Kesidis, Miller & Xiang, "Notes on Margin Training and Margin p-Values", Figures 1-2.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"The 'bins' parameter of plot_margin_histograms must be an int >= 1. Got {bins!r} instead.")
    if mu is not None and (isinstance(mu, bool) or not isinstance(mu, (int, float)) or not math.isfinite(mu)):
        raise ValueError(f"The 'mu' parameter of plot_margin_histograms must be a finite float or None. Got {mu!r} instead.")
    names = dict(DEFAULT_TITLES)
    if titles is not None:
        if isinstance(titles, Mapping):
            unknown = sorted(set(titles) - set(PANELS))
            if unknown:
                raise ValueError(
                    f"The 'titles' parameter of plot_margin_histograms must have keys among {list(PANELS)}. "
                    f"Got {unknown} instead."
                )
            names.update({k: str(v) for k, v in titles.items()})
        else:
            titles = list(titles)
            if len(titles) != len(PANELS):
                raise ValueError(
                    f"The 'titles' parameter of plot_margin_histograms must hold {len(PANELS)} titles. "
                    f"Got {len(titles)} instead."
                )
            names.update(zip(PANELS, map(str, titles)))
    data = {name: _array(values, name) for name, values in zip(PANELS, (train, heldout, test, attacked))}
    finite = {name: arr[np.isfinite(arr)] for name, arr in data.items()}
    pooled = np.concatenate(list(finite.values()))

    fig = Figure(figsize=(panel_size[0] * len(PANELS), panel_size[1]), layout="constrained")
    axes = fig.subplots(1, len(PANELS), squeeze=False)[0]
    for ax, name in zip(axes, PANELS):
        values = finite[name]
        edges = _edges(pooled if shared_bins else values, bins)
        ax.hist(values, bins=edges, color="C0" if name != "attacked" else "C3", alpha=0.85)
        notes = [f"n={values.size}"]
        if (values < 0).any():
            notes.append(f"{int((values < 0).sum())} < 0")
        if (values == 0).any():
            notes.append(f"{int((values == 0).sum())} = 0")
        dropped = data[name].size - values.size
        if dropped:
            notes.append(f"{dropped} non-finite left out")
        slack = 0.05 * float(edges[-1] - edges[0])
        if mu is not None:
            if edges[0] - slack <= mu <= edges[-1] + slack:
                ax.axvline(float(mu), color="k", linestyle="--", linewidth=1, label=rf"$\mu$ = {mu:g}")
                ax.legend(loc="upper left", fontsize="small")
            else:
                notes.append(rf"$\mu$ = {mu:g} off the axis")
        ax.text(0.98, 0.97, "\n".join(notes), transform=ax.transAxes, ha="right", va="top", fontsize="small")
        ax.axvline(0.0, color="0.4", linestyle=":", linewidth=1)
        lo, hi = float(edges[0]), float(edges[-1])
        if mu is not None and lo - slack <= mu <= hi + slack:
            lo, hi = min(lo, float(mu)), max(hi, float(mu))
        ax.set_xlim(lo - 0.01 * (hi - lo), hi + 0.01 * (hi - lo))
        ax.set_title(names[name], fontsize="medium")
        ax.set_xlabel(r"margin $\mu_f(x)$")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("samples")
    if title:
        fig.suptitle(title)
    return fig


def save_margin_histograms(
    path: str | os.PathLike[str], train: Any, heldout: Any, test: Any, attacked: Any, *, dpi: int = 120, **kwargs: Any
) -> Path:
    """Draw :func:`plot_margin_histograms` and write it atomically to ``path`` (PNG by default, from the suffix).

    ``kwargs`` go to :func:`plot_margin_histograms`. Returns ``path`` as a ``Path``.
    """
    fig = plot_margin_histograms(train, heldout, test, attacked, **kwargs)
    return save_figure(fig, path, dpi=dpi)


def write_panel_margins(path: str | os.PathLike[str], **panels: Any) -> Path:
    """Write the panels' margins as CSV rows ``panel, index, margin`` atomically; returns ``path``.

    Args:
        path: the ``.csv`` file.
        panels: ``train=..., heldout=..., test=..., attacked=...`` 1-D arrays (any subset of :data:`PANELS`).
    """
    unknown = sorted(set(panels) - set(PANELS))
    if unknown:
        raise ValueError(f"The panels of write_panel_margins must be among {list(PANELS)}. Got {unknown} instead.")
    arrays = {name: _array(values, name) for name, values in panels.items()}

    def write(handle: IO[str]) -> None:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["panel", "index", "margin"])
        for name in PANELS:
            for i, value in enumerate(arrays.get(name, ())):
                writer.writerow([name, i, repr(float(value))])

    return atomic_write(path, write)


def read_panel_margins(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The panels' margins written by :func:`write_panel_margins`: ``{panel: float64 array}`` (every panel).

    A panel with no rows gives an empty array, so the result can be passed on as
    ``plot_margin_histograms(**read_panel_margins(path))``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"The margins file {str(path)!r} does not exist.")
    values: dict[str, list[float]] = {name: [] for name in PANELS}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"panel", "margin"} <= set(reader.fieldnames):
            raise ValueError(
                f"The margins file {str(path)!r} must have the columns panel, index, margin. "
                f"Got {reader.fieldnames} instead."
            )
        for number, row in enumerate(reader, start=2):
            if row["panel"] not in values:
                raise ValueError(
                    f"Line {number} of {str(path)!r} names the panel {row['panel']!r}; expected one of {list(PANELS)}."
                )
            values[row["panel"]].append(float(row["margin"]))
    return {name: np.asarray(v, dtype=np.float64) for name, v in values.items()}


def _edges(values: np.ndarray, bins: int) -> np.ndarray:
    """``bins + 1`` equal-width edges spanning ``values`` (a unit range when empty or constant)."""
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)
