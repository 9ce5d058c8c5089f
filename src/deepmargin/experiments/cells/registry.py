"""Kinds of cell: how the runner (:mod:`deepmargin.experiments.engine`) computes a cell of each kind.

A cell kind registers its name (the ``kind`` of a :class:`~deepmargin.experiments.studies.Cell`, as
``cells.json`` records it), the file whose presence marks a cell finished and the function that
computes one. The runner looks the kind up and calls it; it knows nothing of what a cell trains or
measures. Built-in kinds (:mod:`deepmargin.experiments.cells`)::

    train     one training run                   results.json  (cells/train.py)
    eval      the adversarial study's attacks    rows.json     (cells/adversarial.py)
    compare   compare-methods' measurements      rows.json     (cells/compare_methods.py)
    cost      compare-methods' step cost         rows.json     (cells/compare_methods.py)

A kind that holds rows writes ``{"rows": [...], "seconds": s}`` (:func:`rows_cell` makes its ``run``
from a function returning the rows); a kind that does not (``train``) leaves a result that the
study definitions read (:func:`~deepmargin.experiments.studies.study_rows`). Worker processes
import this package afresh, so a kind must be registered when its module is imported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...training.records import write_json
from ..studies import Cell

__all__ = [
    "CELL_KINDS", "CellError", "CellJob", "CellKind", "ROWS_FILE", "cell_kind", "cell_result_path", "read_json", "read_results",
    "register_cell_kind", "rows_cell",
]

#: The result file of a kind that holds rows.
ROWS_FILE = "rows.json"


class CellError(RuntimeError):
    """A cell of a study failed (its id and the reason are in the message); a user-level error."""

    user_error = True


@dataclass(frozen=True)
class CellJob:
    """One cell being computed, as the runner hands it to its kind.

    Attributes:
        root: the study directory.
        cell: the cell.
        dataset_label: the dataset's name in the rows.
        started: ``time.perf_counter()`` when the runner took the cell.
    """

    root: Path
    cell: Cell
    dataset_label: str
    started: float

    @property
    def cell_dir(self) -> Path:
        """The cell's folder (its id under the study directory)."""
        return self.root / self.cell.id

    @property
    def result_path(self) -> Path:
        """The file that marks the cell finished; written last, atomically."""
        return cell_result_path(self.root, self.cell)


@dataclass(frozen=True)
class CellKind:
    """How cells of one kind are computed.

    Attributes:
        name: the ``kind`` of its cells.
        run: ``(CellJob) -> status``: compute the cell and write its result file (last); the status
            is ``"done"``, or ``"diverged"`` for a run recorded as diverged.
        result_file: the file, in the cell's folder, whose presence marks it finished.
        holds_rows: the result file is ``{"rows": [...], ...}``: rows of the study as they are.
        check_finished: ``(study directory, finished cells of this kind) -> None``, raising
            ValueError for a finished cell that was computed with another configuration than the
            plan's (never reuse another run); called before a run continues a study.
    """

    name: str
    run: Callable[[CellJob], str]
    result_file: str = ROWS_FILE
    holds_rows: bool = True
    check_finished: Callable[[Path, Sequence[Cell]], None] | None = None


#: Registered cell kinds by name.
CELL_KINDS: dict[str, CellKind] = {}


def register_cell_kind(kind: CellKind) -> CellKind:
    """Add ``kind`` to :data:`CELL_KINDS` (a name may be registered once)."""
    if not isinstance(kind, CellKind):
        raise TypeError(f"The 'kind' parameter of register_cell_kind must be a CellKind. Got {type(kind).__name__} instead.")
    if kind.name in CELL_KINDS:
        raise ValueError(f"The 'kind' parameter of register_cell_kind must have a new name. Got {kind.name!r} instead "
                         f"(registered: {sorted(CELL_KINDS)}).")
    CELL_KINDS[kind.name] = kind
    return kind


def cell_kind(name: str) -> CellKind:
    """The registered kind ``name``.

    Raises:
        ValueError: no kind of that name (the registered ones are listed).
    """
    kind = CELL_KINDS.get(name)
    if kind is None:
        raise ValueError(f"The 'kind' of a study cell must be one of {sorted(CELL_KINDS)}. Got {name!r} instead.")
    return kind


def cell_result_path(out: Path, cell: Cell) -> Path:
    """The file whose presence marks ``cell`` finished."""
    return Path(out) / cell.id / cell_kind(cell.kind).result_file


def rows_cell(measure: Callable[[Path, Cell, str], list[dict[str, Any]]]) -> Callable[[CellJob], str]:
    """The ``run`` of a kind that holds rows: ``measure(study directory, cell, dataset label)`` gives
    them; they are written with the cell's seconds to its result file."""

    def run(job: CellJob) -> str:
        rows = measure(job.root, job.cell, job.dataset_label)
        write_json(job.result_path, {"rows": rows, "seconds": time.perf_counter() - job.started})
        return "done"

    run.__name__ = run.__qualname__ = f"rows_cell({getattr(measure, '__name__', 'measure')})"
    return run


def read_json(path: Path) -> dict[str, Any]:
    """A cell's result file (a CellError naming the file when it cannot be read)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CellError(f"The result file {str(path)!r} cannot be read ({exc}); delete it to recompute that cell.") from exc


def read_results(root: Path, cells: Sequence[Cell] | Mapping[str, Cell]) -> dict[str, dict[str, Any]]:
    """The result files of the finished ``cells``, by id."""
    out = {}
    for cell in (cells.values() if isinstance(cells, Mapping) else cells):
        path = cell_result_path(root, cell)
        if path.exists():
            out[cell.id] = read_json(path)
    return out
