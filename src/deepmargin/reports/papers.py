"""The numbers the papers state, read from ``paper_numbers.json`` (shipped with the package).

The file holds the reference numbers the studies' report sets beside ours: ``"studies"`` (Elsayed
et al. 2018, by dataset; :data:`deepmargin.reports.study.PAPER_NUMBERS`) and ``"compare-methods"``
(the seed papers' tables; :data:`deepmargin.reports.compare.PAPER_NUMBERS`). Each entry's ``note``
says where in the paper the numbers come from. Editing a number means editing the file, not code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["PAPER_NUMBERS_FILE", "compare_numbers", "read_paper_numbers", "study_numbers"]

#: The data file.
PAPER_NUMBERS_FILE = Path(__file__).with_name("paper_numbers.json")

_FORMAT = 1
_STUDY_FIELDS = ("study", "loss", "setting", "what", "value", "where")


def read_paper_numbers(path: str | os.PathLike[str] = PAPER_NUMBERS_FILE) -> dict[str, Any]:
    """The whole file as plain data.

    Raises:
        ValueError: the file is not a paper-numbers file of a format this version reads.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"The paper-numbers file {str(path)!r} cannot be read ({exc}).") from exc
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"The 'format' of the paper-numbers file {str(path)!r} must be {_FORMAT}. Got {found!r} instead.")
    return doc


def _value(value: Any) -> Any:
    """``[mean, std]`` -> ``(mean, std)``; a number or a text stays as it is."""
    return tuple(value) if isinstance(value, list) else value


def study_numbers(doc: dict[str, Any]) -> dict[str, list[tuple[str, str, str, str, float | str, str]]]:
    """Elsayed et al.'s numbers by dataset: ``(study, loss, setting, what, value, where)`` tuples."""
    return {dataset: [tuple(row[k] for k in _STUDY_FIELDS) for row in rows]
            for dataset, rows in doc["studies"]["datasets"].items()}


def compare_numbers(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The seed papers' tables by paper; each table's rows as ``(paper's row name, our presets, {metric: value})``
    with a value ``(mean, std)`` where the paper gives a spread."""
    out = {}
    for key, paper in doc["compare-methods"].items():
        tables = {
            setting: {**{k: v for k, v in spec.items() if k != "rows"},
                      "rows": [(row["name"], tuple(row["presets"]), {m: _value(v) for m, v in row["values"].items()})
                               for row in spec["rows"]]}
            for setting, spec in paper["tables"].items()
        }
        out[key] = {**paper, "tables": tables}
    return out
