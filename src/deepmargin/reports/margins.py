"""Per-input margin rows of ``deepmargin robustness``: atomic writing, reading back, and histograms.

``margins.csv`` holds one row per (model, norm, attack, input) with the columns of
:func:`deepmargin.metrics.margin_report` (``index, label, pred, correct, nearest_class,
linearized, min_norm, gap``). This module writes such rows (and any other result rows) atomically,
reads them back with their types, and draws the histogram of the minimum-norm distances per model
from them, so the picture can be redrawn without re-running the attack.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import matplotlib
from matplotlib.figure import Figure

from ..io import atomic_write

__all__ = [
    "MARGIN_FIELDS",
    "atomic_write",
    "load_margin_rows",
    "plot_margin_histogram",
    "write_rows_atomic",
]

#: Column order of ``margins.csv``.
MARGIN_FIELDS = (
    "model", "norm", "attack", "index", "label", "pred", "correct", "nearest_class", "linearized", "min_norm", "gap",
)

_INT_FIELDS = ("index", "label", "pred", "nearest_class")
_FLOAT_FIELDS = ("linearized", "min_norm", "gap", "certified_kesidis", "certified_tsuzuku")
_VALUES = ("min_norm", "linearized", "gap")
_NORM_TITLES = {"linf": r"$\ell_\infty$", "l2": r"$\ell_2$"}
_VALUE_LABELS = {
    "min_norm": "minimum-norm adversarial distance",
    "linearized": "linearised distance to the boundary",
    "gap": "min-norm distance - linearised distance",
}


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, allow_nan=True)
    return value


def write_rows_atomic(
    path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]], *, fieldnames: Sequence[str] | None = None
) -> Path:
    """Write result rows to a ``.csv`` or ``.jsonl`` file atomically (see :func:`atomic_write`).

    CSV: a header of ``fieldnames`` (default: the keys in first-seen order), ``None`` as an
    empty cell, lists and dicts as JSON. JSONL: one JSON object per row (``inf``/``nan`` written
    as ``Infinity``/``NaN``, which Python's ``json`` reads back).

    Args:
        path: destination ending in ``.csv`` or ``.jsonl``.
        rows: the rows (mappings of plain values).
        fieldnames: CSV columns; ignored for JSONL.

    Returns:
        ``path`` as a ``Path``.

    Example:
        >>> import tempfile, os
        >>> p = write_rows_atomic(os.path.join(tempfile.mkdtemp(), "r.csv"), [{"a": 1, "b": [0.1, 0.2]}])
        >>> p.read_text().splitlines()
        ['a,b', '1,"[0.1, 0.2]"']
    """
    path = Path(path)
    rows = [dict(r) for r in rows]
    if path.suffix == ".jsonl":
        def write(handle: IO[str]) -> None:
            for row in rows:
                handle.write(json.dumps(row, allow_nan=True) + "\n")
    elif path.suffix == ".csv":
        fields = list(fieldnames) if fieldnames is not None else list(dict.fromkeys(k for r in rows for k in r))

        def write(handle: IO[str]) -> None:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _csv_cell(row.get(k)) for k in fields})
    else:
        raise ValueError(
            f"The 'path' parameter of write_rows_atomic must end in .csv or .jsonl. Got {str(path)!r} instead."
        )
    return atomic_write(path, write)


def _parse_bool(text: str) -> bool | None:
    key = text.strip().lower()
    if key in ("true", "1"):
        return True
    if key in ("false", "0"):
        return False
    return None


def load_margin_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read per-input margin rows from ``margins.csv`` (or a ``.jsonl`` of them) with their types.

    ``index, label, pred, nearest_class`` become ints, ``correct`` a bool, ``linearized,
    min_norm, gap`` floats (``inf`` included); other columns stay strings.

    Example:
        >>> rows = load_margin_rows("runs/robustness/margins.csv")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Margin file {str(path)!r} does not exist.")
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    if path.suffix != ".csv":
        raise ValueError(
            f"The 'path' parameter of load_margin_rows must end in .csv or .jsonl. Got {str(path)!r} instead."
        )
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for number, row in enumerate(rows, start=2):
        try:
            for key in _INT_FIELDS:
                if row.get(key) not in (None, ""):
                    row[key] = int(row[key])
            for key in _FLOAT_FIELDS:
                if row.get(key) not in (None, ""):
                    row[key] = float(row[key])
        except ValueError as exc:
            raise ValueError(f"Line {number} of {str(path)!r} is not a margin row: {exc}") from exc
        if row.get("correct") not in (None, ""):
            row["correct"] = _parse_bool(row["correct"])
    return rows


def plot_margin_histogram(
    rows: Iterable[Mapping[str, Any]] | str | os.PathLike[str],
    *,
    value: str = "min_norm",
    bins: int = 30,
    title: str | None = None,
    panel_size: tuple[float, float] = (4.5, 3.5),
) -> Figure:
    """Histograms of per-input distances to the boundary: one panel per (norm, attack), one per model.

    Only correctly classified inputs with a finite value enter the histogram (misclassified
    inputs have ``min_norm = 0``; ``inf`` marks a failed attack); the legend gives, per model,
    how many inputs were left out for each reason. A dashed vertical line marks each model's
    median distance over *all* inputs (0 for misclassified, ``inf`` for failures; Finlay &
    Oberman's "median distance"), when it is finite.

    Args:
        rows: margin rows (as in ``margins.csv``), or the path of such a file.
        value: column to histogram: ``'min_norm'`` (default), ``'linearized'`` or ``'gap'``.
        bins: number of bins per panel (shared by the models of a panel).
        title: figure title.
        panel_size: ``(width, height)`` of one panel, in inches.

    Returns:
        The matplotlib ``Figure`` (object API; save it with ``fig.savefig(path)``).

    Example:
        >>> rows = [dict(model="m", norm="l2", attack="fmn", correct=True, min_norm=d) for d in (0.5, 1.0, 1.5)]
        >>> len(plot_margin_histogram(rows).axes)
        1

    Reference:
        C. Finlay, A. Oberman, B. Abbasi, "Improved robustness to adversarial examples using
        Lipschitz regularization of the loss", 2018 (median adversarial distance).
    """
    if value not in _VALUES:
        raise ValueError(
            f"The 'value' parameter of plot_margin_histogram must be one of {list(_VALUES)}. Got {value!r} instead."
        )
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"The 'bins' parameter of plot_margin_histogram must be an int >= 1. Got {bins!r} instead.")
    if isinstance(rows, (str, os.PathLike)):
        rows = load_margin_rows(rows)
    rows = list(rows)
    if not rows:
        raise ValueError("The 'rows' parameter of plot_margin_histogram must hold at least one row. Got none instead.")
    missing = [k for k in ("model", "norm", value) if any(k not in r for r in rows)]
    if missing:
        raise ValueError(
            f"The 'rows' parameter of plot_margin_histogram must have the columns {missing}. "
            f"Got {sorted(rows[0])} instead."
        )

    order = {"linf": 0, "l2": 1}
    panels = sorted(
        dict.fromkeys((str(r["norm"]), str(r.get("attack") or "")) for r in rows),
        key=lambda k: (order.get(k[0], len(order)), k),
    )
    models = list(dict.fromkeys(str(r["model"]) for r in rows))
    cycle = [c["color"] for c in matplotlib.rcParams["axes.prop_cycle"]]
    colors = {m: cycle[i % len(cycle)] for i, m in enumerate(models)}

    fig = Figure(figsize=(panel_size[0] * len(panels), panel_size[1]), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (norm, attack) in zip(axes, panels):
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for r in rows:
            if str(r["norm"]) == norm and str(r.get("attack") or "") == attack:
                groups.setdefault(str(r["model"]), []).append(r)
        shown = {
            m: [float(r[value]) for r in g if r.get("correct", True) is not False and math.isfinite(float(r[value]))]
            for m, g in groups.items()
        }
        pooled = [v for vs in shown.values() for v in vs]
        edges = _edges(pooled, bins)
        for model, group in groups.items():
            values = shown[model]
            wrong = sum(1 for r in group if r.get("correct", True) is False)
            failed = sum(1 for r in group if r.get("correct", True) is not False and not math.isfinite(float(r[value])))
            notes = [f"n={len(values)}"]
            notes += [f"{wrong} misclassified"] if wrong else []
            notes += [f"{failed} failed"] if failed else []
            ax.hist(values, bins=edges, histtype="step", linewidth=1.5, color=colors[model],
                    label=f"{model} ({', '.join(notes)})")
            median = _median_distance([float(r[value]) for r in group]) if value == "min_norm" else math.inf
            if math.isfinite(median):
                ax.axvline(median, color=colors[model], linestyle="--", linewidth=1)
        ax.set_title(" / ".join(s for s in (_NORM_TITLES.get(norm, norm), attack) if s))
        ax.set_xlabel(_VALUE_LABELS[value])
        ax.set_ylabel("inputs")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def _median_distance(values: Sequence[float]) -> float:
    """Finlay & Oberman's median distance of the rows' values (``metrics.median_adversarial_distance``)."""
    import torch

    from ..metrics import median_adversarial_distance

    return float(median_adversarial_distance(torch.tensor(values, dtype=torch.float64)))


def _edges(values: Sequence[float], bins: int) -> list[float]:
    """``bins + 1`` equal-width bin edges spanning ``values`` (a unit range when they are empty or equal)."""
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return [lo + (hi - lo) * i / bins for i in range(bins + 1)]

