"""Tidy result files: JSONL and CSV rows, and JSON documents written atomically."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_write_text

__all__ = ["append_row", "json_safe", "read_jsonl", "write_json", "write_rows"]


def json_safe(value: Any) -> Any:
    """JSON-safe value: non-finite floats become strings ("inf", "-inf", "nan"), tuples lists.

    Example:
        >>> json_safe({"eps": (0.1, float("inf"))})
        {'eps': [0.1, 'inf']}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


_clean = json_safe  # the name used before it was public


def write_json(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON, atomically (:func:`deepmargin.io.atomic_write`)."""
    return atomic_write_text(path, json.dumps(_clean(dict(data)), indent=2, sort_keys=False) + "\n")


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(_clean(value))
    return value


def _csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in columns})
    return buffer.getvalue()


def append_row(stem: str | os.PathLike[str], row: Mapping[str, Any], *, fieldnames: Sequence[str] | None = None) -> None:
    """Append one row to ``stem.jsonl`` and ``stem.csv`` (the CSV header is written on creation).

    ``fieldnames`` fixes the CSV columns (default: the row's keys); missing values are left empty.
    Each file is rewritten atomically, so an interruption never leaves a half-written line.
    """
    stem = Path(stem)
    jsonl_path, csv_path = stem.with_suffix(".jsonl"), stem.with_suffix(".csv")
    old_jsonl = jsonl_path.read_text(encoding="utf-8") if jsonl_path.exists() else ""
    atomic_write_text(jsonl_path, old_jsonl + json.dumps(_clean(dict(row))) + "\n")
    old_csv = csv_path.read_text(encoding="utf-8") if csv_path.exists() else ""
    columns = list(fieldnames) if fieldnames is not None else list(row)
    atomic_write_text(csv_path, old_csv + _csv_text([row], columns, header=not old_csv))


def write_rows(stem: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]], *, fieldnames: Sequence[str] | None = None) -> None:
    """Replace ``stem.jsonl`` and ``stem.csv`` with ``rows``, atomically."""
    stem = Path(stem)
    rows = list(rows)
    if fieldnames is None:
        fieldnames = list(dict.fromkeys(k for r in rows for k in r))
    atomic_write_text(stem.with_suffix(".jsonl"), "".join(json.dumps(_clean(dict(r))) + "\n" for r in rows))
    atomic_write_text(stem.with_suffix(".csv"), _csv_text(rows, fieldnames, header=True) if fieldnames else "")


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read the rows of a JSONL file (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Result file {str(path)!r} does not exist.")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"Line {number} of {str(path)!r} is not valid JSON: {exc}") from exc
    return rows
