"""The files of ``deepmargin detect``, written from its result (:class:`~deepmargin.experiments.detection.DetectRun`).

In the output folder, each file atomically: ``rows.csv`` / ``rows.jsonl`` (one row per attack, eps
and box: :data:`~deepmargin.experiments.detection.DETECT_FIELDS`), ``mixture.json`` (the fitted
components, weights, means, sigmas and BIC curves, and the threshold), ``margins.csv`` (the margins
of the four histogram panels) with ``margin_histograms.png`` (Kesidis et al.'s Figures 1-2: panel
(d) is FGSM at the first nonzero eps, transferred from the source when given, else white-box), and
``config.json``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..experiments.detection import DetectRun

__all__ = ["write_detection"]


def write_detection(run: DetectRun, out: str | os.PathLike[str], *, plot: bool = True) -> list[Path]:
    """Write the files of a :class:`~deepmargin.experiments.detection.DetectRun` into ``out``; return their paths."""
    from ..experiments.detection import DETECT_FIELDS
    from ..training.records import write_json
    from .histograms import DEFAULT_TITLES, save_margin_histograms, write_panel_margins
    from .margins import write_rows_atomic

    out = Path(out)
    result = run.result
    rows = result.rows
    written = [
        write_rows_atomic(out / "rows.csv", rows, fieldnames=DETECT_FIELDS),
        write_rows_atomic(out / "rows.jsonl", [{k: r.get(k) for k in DETECT_FIELDS} for r in rows]),
        write_json(out / "mixture.json", run.mixture),
        write_panel_margins(out / "margins.csv", **result.panels),
    ]
    if plot:
        hist = result.histogram
        where = f"transferred from {run.source_name}" if hist["box"] == "transfer" else "white-box"
        titles = {"attacked": f"(d) FGSM eps={hist['eps']:g}, {where}"}
        written.append(save_margin_histograms(
            out / "margin_histograms.png", **result.panels, titles={**DEFAULT_TITLES, **titles}, mu=run.mu,
            title=f"{run.name} on {run.dataset}: output margins",
        ))
    written.append(write_json(out / "config.json", run.config))
    return written
