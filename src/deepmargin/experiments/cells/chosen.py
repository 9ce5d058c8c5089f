"""What an evaluation cell measures: the validation-chosen model of its preset and seed, and the
black-box source (the baseline preset's chosen model of the same seed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..studies import Cell, select_runs
from .registry import CellError
from .train import read_train_results

__all__ = ["Chosen", "load_chosen"]


@dataclass
class Chosen:
    """An evaluation cell's models, in eval mode on the cell's device.

    Attributes:
        results: ``results.json`` of the cell's training cells, by id.
        run: the id of the chosen training cell.
        model, source: the chosen model and the black-box source.
        meta: the chosen checkpoint's metadata (``meta["config"]``: its training configuration).
    """

    results: dict[str, dict[str, Any]]
    run: str
    model: Any
    source: Any
    meta: dict[str, Any]


def load_chosen(root: Path, cell: Cell) -> Chosen | None:
    """The chosen model of ``cell`` (``config["candidates"]``) and its source (``config["source_candidates"]``),
    each the best-validation checkpoint of the grid point with the best validation accuracy;
    ``None`` when every grid point of either diverged.

    Raises:
        CellError: a training cell the choice needs is not finished.
    """
    import torch

    from ...training.checkpoint import load_model

    spec = cell.config
    results = read_train_results(root, list(cell.deps))
    chosen = select_runs(results, spec["candidates"])
    source_id = select_runs(results, spec["source_candidates"])
    if chosen is None or source_id is None:
        raise CellError(f"Cell {cell.id!r} started before its training cells finished: {sorted(set(cell.deps) - set(results))}.")
    if results[chosen].get("test_acc_best") is None or results[source_id].get("test_acc_best") is None:
        return None
    device = torch.device(spec["device"])
    model, meta = load_model(root / chosen / "best.pt", map_location="cpu")
    source, _ = load_model(root / source_id / "best.pt", map_location="cpu")
    return Chosen(results, chosen, model.to(device).eval(), source.to(device).eval(), meta)
