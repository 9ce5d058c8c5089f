"""Tidy result files: JSONL and CSV rows, and JSON documents written atomically."""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["append_row", "read_jsonl", "write_json", "write_rows"]


def _clean(value: Any) -> Any:
    """JSON-safe value: non-finite floats become strings ("inf", "-inf", "nan")."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON, atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(_clean(dict(data)), handle, indent=2, sort_keys=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(_clean(value))
    return value


def append_row(stem: str | os.PathLike[str], row: Mapping[str, Any], *, fieldnames: Sequence[str] | None = None) -> None:
    """Append one row to ``stem.jsonl`` and ``stem.csv`` (the CSV header is written on creation).

    ``fieldnames`` fixes the CSV columns (default: the row's keys); missing values are left empty.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    with open(stem.with_suffix(".jsonl"), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(_clean(dict(row))) + "\n")
    csv_path = stem.with_suffix(".csv")
    new = not csv_path.exists() or csv_path.stat().st_size == 0
    columns = list(fieldnames) if fieldnames is not None else list(row)
    with open(csv_path, "a", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: _csv_value(row.get(k)) for k in columns})


def write_rows(stem: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]], *, fieldnames: Sequence[str] | None = None) -> None:
    """Replace ``stem.jsonl`` and ``stem.csv`` with ``rows``."""
    stem = Path(stem)
    rows = list(rows)
    for suffix in (".jsonl", ".csv"):
        stem.with_suffix(suffix).unlink(missing_ok=True)
    if fieldnames is None and rows:
        fieldnames = list(dict.fromkeys(k for r in rows for k in r))
    for row in rows:
        append_row(stem, row, fieldnames=fieldnames)


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
