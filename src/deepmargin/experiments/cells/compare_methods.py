"""The cells of ``compare-methods`` that measure (:mod:`deepmargin.experiments.compare` says what):

- ``compare``: the chosen clean model of one method and seed (:func:`~deepmargin.experiments.compare.evaluate_compare`);
- ``cost``: the step time and peak memory of every method relative to the baseline, interleaved in
  one process (:func:`~deepmargin.experiments.compare.measure_cost`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..compare import COMPARE, evaluate_compare, measure_cost
from ..studies import Cell, hp_label
from .chosen import load_chosen
from .registry import CellKind, register_cell_kind, rows_cell

__all__ = ["COMPARE_CELL", "COST_CELL", "compare_rows", "cost_rows"]

logger = logging.getLogger(__name__)

#: The kinds' names.
COMPARE_CELL = "compare"
COST_CELL = "cost"


def compare_rows(root: Path, cell: Cell, dataset_label: str) -> list[dict[str, Any]]:
    """The compare-methods measurements of one chosen clean model."""
    from ...data import dataset_from_config

    spec = cell.config
    found = load_chosen(root, cell)
    if found is None:
        logger.warning("%s: every grid point of %s or of its source diverged; nothing to measure", cell.id, spec["loss"])
        return []
    config = found.meta["config"]
    bundle = dataset_from_config(config, root=spec.get("data_root") or config.get("data_root"))  # the run's own splits
    base = {"study": COMPARE, "loss": spec["loss"], "label_noise": 0.0, "train_fraction": 1.0, "seed": int(spec["seed"]),
            "val_acc": found.results[found.run].get("best_val_acc"), "n_train": len(bundle.train), "hp": hp_label(found.run),
            "run": found.run, "dataset": dataset_label}
    return evaluate_compare(found.model, found.source, bundle, spec, base)


def cost_rows(root: Path, cell: Cell, dataset_label: str) -> list[dict[str, Any]]:
    """The step time and peak memory of every compare-methods method relative to the baseline."""
    plan_cells = {c["id"]: c for c in json.loads((root / "cells.json").read_text(encoding="utf-8"))["cells"]}
    configs = {name: plan_cells[run]["config"] for name, run in cell.config["runs"].items()}
    base = {"study": COMPARE, "dataset": dataset_label, "label_noise": 0.0, "train_fraction": 1.0, "seed": cell.config["seed"]}
    return measure_cost(configs, cell.config, base)


register_cell_kind(CellKind(COMPARE_CELL, rows_cell(compare_rows)))
register_cell_kind(CellKind(COST_CELL, rows_cell(cost_rows)))
