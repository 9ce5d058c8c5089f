"""Plain-text tables from result rows (no dependencies beyond the standard library)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["accuracy_table", "format_table", "pivot_rows"]


def _cell(value: Any, floatfmt: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return format(value, floatfmt)
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *, floatfmt: str = ".4f") -> str:
    """Format ``rows`` as an aligned text table (header, rule, one line per row).

    Number columns (and their headers) are right-aligned, text left-aligned; floats use ``floatfmt``; ``None`` is blank.

    Example:
        >>> print(format_table([{"loss": "ce", "acc": 0.5}, {"loss": "margin", "acc": 0.75}], floatfmt=".2f"))
        loss     acc
        ------  ----
        ce      0.50
        margin  0.75
    """
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_cell(r.get(c), floatfmt) for c in columns] for r in rows]
    numeric = [
        all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) for r in rows if r.get(c) is not None)
        for c in columns
    ]
    widths = [max([len(str(c))] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if numeric[i] else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths))]
        return "  ".join(parts).rstrip()

    out = [line([str(c) for c in columns]), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    return "\n".join(out)


def pivot_rows(
    rows: Sequence[Mapping[str, Any]], *, index: str, columns: str, value: str
) -> tuple[list[Any], list[Any], dict[tuple[Any, Any], list[float]]]:
    """Group ``rows[value]`` by ``(rows[index], rows[columns])``.

    Returns ``(index_keys, column_keys, cells)`` with keys in first-seen order and ``cells`` mapping
    each pair to the list of values (one per seed, say). Rows with a missing value are skipped.
    """
    index_keys: list[Any] = []
    column_keys: list[Any] = []
    cells: dict[tuple[Any, Any], list[float]] = {}
    for row in rows:
        if row.get(value) is None:
            continue
        i, c = row.get(index), row.get(columns)
        if i not in index_keys:
            index_keys.append(i)
        if c not in column_keys:
            column_keys.append(c)
        cells.setdefault((i, c), []).append(float(row[value]))
    return index_keys, column_keys, cells


def accuracy_table(
    rows: Sequence[Mapping[str, Any]],
    *,
    index: str = "loss",
    columns: str = "label_noise",
    value: str = "test_acc",
    percent: bool = True,
    column_label: str | None = None,
    decimals: int = 2,
) -> str:
    """A text table of ``value`` with one line per ``index`` and one column per ``columns`` value.

    Cells show the mean over repeated rows (seeds), times 100 when ``percent``, with ``decimals``
    digits and ``± std`` and ``(n=...)`` when there is more than one.

    Example:
        >>> rows = [{"loss": "ce", "label_noise": 0.0, "test_acc": 0.9},
        ...         {"loss": "margin", "label_noise": 0.0, "test_acc": 0.95}]
        >>> print(accuracy_table(rows))
        loss    label_noise=0.0
        ------  ---------------
        ce      90.00
        margin  95.00
    """
    index_keys, column_keys, cells = pivot_rows(rows, index=index, columns=columns, value=value)
    label = column_label or columns
    names = [f"{label}={c}" for c in column_keys]
    table = []
    for i in index_keys:
        line: dict[str, Any] = {index: i}
        for c, name in zip(column_keys, names):
            vals = cells.get((i, c), [])
            if not vals:
                line[name] = ""
                continue
            scale = 100.0 if percent else 1.0
            mean = statistics.fmean(vals) * scale
            text = f"{mean:.{decimals}f}"
            if len(vals) > 1:
                text += f" ± {statistics.stdev(vals) * scale:.{decimals}f} (n={len(vals)})"
            line[name] = text
        table.append(line)
    return format_table(table, [index, *names])
