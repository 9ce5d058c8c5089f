"""The kinds of cell a study runs, each registered with how it is computed (:mod:`.registry`).

Importing this package registers the built-in kinds: ``train`` (:mod:`.train`), ``eval`` (the
adversarial study, :mod:`.adversarial`), ``compare`` and ``cost`` (``compare-methods``,
:mod:`.compare_methods`).
"""

from . import adversarial, compare_methods, train
from .registry import (CELL_KINDS, ROWS_FILE, CellError, CellJob, CellKind, cell_kind, cell_result_path, read_json,
                       read_results, register_cell_kind, rows_cell)

__all__ = [
    "CELL_KINDS",
    "ROWS_FILE",
    "CellError",
    "CellJob",
    "CellKind",
    "adversarial",
    "cell_kind",
    "cell_result_path",
    "compare_methods",
    "read_json",
    "read_results",
    "register_cell_kind",
    "rows_cell",
    "train",
]
