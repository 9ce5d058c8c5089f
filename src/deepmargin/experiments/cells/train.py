"""The training cell: one run of :func:`deepmargin.training.train` (one preset, grid point, data setting, seed).

Its folder is the run folder (``config.json``, metrics, ``last.pt``, ``best.pt``) and its result
``results.json``, which :func:`~deepmargin.training.train` writes last. An interrupted cell resumes
from ``last.pt``. A run whose loss becomes NaN or infinite is recorded as diverged (no accuracy), so
its grid point is never chosen and a rerun does not try it again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...training.records import write_json
from ..studies import Cell
from .registry import CellJob, CellKind, read_json, register_cell_kind

__all__ = ["RESULTS_FILE", "TRAIN", "read_train_results"]

logger = logging.getLogger(__name__)

#: The kind's name.
TRAIN = "train"
#: The result file of a training run.
RESULTS_FILE = "results.json"


def _run(job: CellJob) -> str:
    from ...training import TrainConfig, train

    cell = job.cell
    try:
        train(TrainConfig.from_dict(cell.config), job.cell_dir, resume=None, progress=False, verbose=False)
    except FloatingPointError as exc:
        write_json(job.result_path, {"status": "diverged", "error": str(exc), "config": cell.config,
                                     "best_val_acc": None, "test_acc": None, "test_acc_best": None,
                                     "seconds_total": time.perf_counter() - job.started})
        logger.warning("%s diverged (%s); it is never chosen", cell.id, exc)
        return "diverged"
    return "done"


def _check_finished(out: Path, cells: Sequence[Cell]) -> None:
    """Refuse finished training cells whose recorded configuration is not the cell's (never reuse another run)."""
    from ...losses import loss_spec
    from ...training.config import RESUME_FREE_KEYS, config_differences

    layers: dict[str, list[str] | None] = {}  # default layers by (model, model options, dataset), for this check only
    for cell in cells:
        saved = read_json(out / cell.id / RESULTS_FILE).get("config") or {}
        now = dict(cell.config)
        uses_layers = loss_spec(now.get("loss", "ce")).uses_layers
        if uses_layers and now.get("layers") is None:
            now["layers"] = _default_layers(now, layers)  # what train() resolves None to
        ignore = RESUME_FREE_KEYS | ({"layers"} if not uses_layers else set())
        diff = config_differences(saved, now, ignore=ignore)
        if diff:
            lines = "; ".join(f"{k}: {a!r} (saved) != {b!r} (now)" for k, (a, b) in diff.items())
            raise ValueError(
                f"The finished cell {cell.id!r} in {str(out)!r} was trained with another configuration ({lines}). "
                "Use another --out, or --overwrite to start the study again."
            )


def _default_layers(config: Mapping[str, Any], memo: dict[str, list[str] | None]) -> list[str] | None:
    """The default margin layers of a cell's model (None when the model cannot be built here), kept in ``memo``."""
    key = json.dumps([config["model"], config.get("model_kwargs"), config["dataset"]], sort_keys=True)
    if key not in memo:
        from ...data import dataset_from_config
        from ...losses.large_margin import default_margin_layers
        from ...models import build_model

        try:
            bundle = dataset_from_config(config, val_size=0.0, seed=0, train_fraction=1.0, label_noise=0.0)
            model = build_model(config["model"], num_classes=bundle.num_classes, input_shape=bundle.input_shape,
                                **(config.get("model_kwargs") or {}))
            memo[key] = default_margin_layers(model)
        except (ValueError, TypeError, OSError):
            memo[key] = None
    return memo[key]


def read_train_results(root: Path, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``results.json`` of the finished training cells among ``ids``, by id."""
    out = {}
    for cell_id in ids:
        path = Path(root) / cell_id / RESULTS_FILE
        if path.exists():
            out[cell_id] = read_json(path)
    return out


register_cell_kind(CellKind(TRAIN, _run, result_file=RESULTS_FILE, holds_rows=False, check_finished=_check_finished))
