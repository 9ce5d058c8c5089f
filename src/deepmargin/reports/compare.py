"""The ``compare-methods`` part of the studies' report: every method side by side, the winners, the papers' tables.

:func:`compare_section` adds to the report (``write_report`` calls it when the rows hold the study):

- one headline table, one line per method: clean accuracy, accuracy under label noise, Matyasko &
  Chau's ``rho_adv``, Finlay & Oberman's FMN median distances and errors at eps, white- and
  black-box IFGSM, the median certified radii (Tsuzuku, Kesidis), the detection AUC of margin
  p-values and the cost of a training step against cross-entropy; every cell ``mean ± std (n)``
  over seeds;
- a scatter of clean accuracy against the median l_2 adversarial distance, and a bar chart of the
  step time and peak memory relative to cross-entropy;
- which method wins each column, by how much over the runner-up and over ``ce``, and whether the
  gap is beyond the spread of seeds;
- each seed paper's table in its own layout with the numbers it states (:data:`PAPER_NUMBERS`)
  beside ours, and the pairs of methods whose order differs from the paper's.

Every number comes from the rows (``metric`` / ``value`` for the measurements, ``test_acc`` for the
trained models); nothing is recomputed from models.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..experiments.compare import COMPARE
from ..experiments.presets import BASELINE_PRESET
from ..io import save_figure
from .papers import compare_numbers, read_paper_numbers

__all__ = ["PAPER_NUMBERS", "compare_section", "compare_table", "plot_accuracy_vs_distance", "plot_cost"]

#: The study these rows belong to.
STUDY = COMPARE

#: The numbers the seed documents state, in their own units, by paper (read from
#: ``paper_numbers.json``, :mod:`.papers`). ``tables`` maps a setting (the paper's dataset and model)
#: to its rows ``(paper's row name, our presets, {metric: value})``; a value is ``(mean, std)`` where
#: the paper gives a spread, else a number. ``metrics`` names each quantity, the budget ``eps`` it is
#: measured at where it has one (``eps_text``: as the paper writes it) and the format the paper prints
#: it in (``fmt``; default ``g``). ``layout`` is the paper's table layout: ``"by-method"`` (a row per
#: method, a column per quantity) or ``"by-quantity"`` (a row per quantity, a column per method).
PAPER_NUMBERS: dict[str, dict[str, Any]] = compare_numbers(read_paper_numbers())

_MISSING = "–"
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


# -- columns and statistics -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    """One quantity per method: which rows hold it, the number in a row, how to show and rank it.

    ``kind`` ``"pct"`` shows ``scale x value`` (default 100) with ``decimals`` decimals and states
    differences in points; ``"num"`` shows ``scale x value`` with 3 significant digits.
    """

    header: str
    select: Callable[[Mapping[str, Any]], bool]
    value: Callable[[Mapping[str, Any]], Any]
    kind: str = "num"
    higher: bool = True
    scale: float = 1.0
    decimals: int = 1


@dataclass(frozen=True)
class _Stat:
    """Mean and standard deviation over seeds (rows of one seed averaged first)."""

    mean: float
    std: float
    n: int
    per_seed: dict[Any, float] = field(default_factory=dict)


def _num(value: float, column: _Column) -> str:
    value = column.scale * value
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return f"{value:.{column.decimals}f}" if column.kind == "pct" else f"{value:.3g}"


def _cell(stat: _Stat | None, column: _Column) -> str:
    """``mean ± std (n)``, in the column's units; ``–`` when there is no value."""
    if stat is None:
        return _MISSING
    if stat.n > 1:
        return f"{_num(stat.mean, column)} ± {_num(stat.std, column)} ({stat.n})"
    return f"{_num(stat.mean, column)} ({stat.n})"


def _stat(rows: Sequence[Mapping[str, Any]], column: _Column, method: str) -> _Stat | None:
    by_seed: dict[Any, list[float]] = {}
    for r in rows:
        if r.get("loss") != method or not column.select(r):
            continue
        v = column.value(r)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        by_seed.setdefault(r.get("seed"), []).append(float(v))
    if not by_seed:
        return None
    per_seed = {s: statistics.fmean(v) for s, v in sorted(by_seed.items(), key=lambda kv: (kv[0] is None, kv[0]))}
    values = list(per_seed.values())
    mean = statistics.fmean(values)
    if len(values) < 2:
        std = 0.0
    elif all(math.isfinite(v) for v in values):
        std = statistics.stdev(values)
    else:
        std = math.nan
    return _Stat(mean, std, len(values), per_seed)


def _close(a: Any, b: Any) -> bool:
    return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def _is_training(r: Mapping[str, Any]) -> bool:
    return r.get("attack") == "none" and r.get("metric") is None


def _training_column(header: str, noise: float, *, error: bool = False, decimals: int = 1) -> _Column:
    def select(r: Mapping[str, Any]) -> bool:
        return _is_training(r) and _close(r.get("label_noise"), noise)

    if error:
        return _Column(header, select, lambda r: None if r.get("test_acc") is None else 1.0 - r["test_acc"],
                       kind="pct", higher=False, scale=100.0, decimals=decimals)
    return _Column(header, select, lambda r: r.get("test_acc"), kind="pct", higher=True, scale=100.0, decimals=decimals)


def _metric_column(header: str, attack: str, metric: str, *, kind: str = "num", higher: bool = True,
                   box: str | None = None, eps: float | None = None, scale: float | None = None, decimals: int = 1) -> _Column:
    """Rows ``attack`` / ``metric`` (and ``box`` / ``eps`` when given), their ``value``."""

    def select(r: Mapping[str, Any]) -> bool:
        return (r.get("attack") == attack and r.get("metric") == metric and (box is None or r.get("box") == box)
                and (eps is None or _close(r.get("eps"), eps)))

    return _Column(header, select, lambda r: r.get("value"), kind=kind, higher=higher,
                   scale=(100.0 if kind == "pct" else 1.0) if scale is None else scale, decimals=decimals)


def _eps_values(rows: Sequence[Mapping[str, Any]], attack: str, metric: str, box: str | None = None) -> list[float]:
    found = {round(float(r["eps"]), 12) for r in rows if r.get("attack") == attack and r.get("metric") == metric
             and (box is None or r.get("box") == box) and r.get("eps") is not None}
    return sorted(found)


def _eps_or_default(rows: Sequence[Mapping[str, Any]], attack: str, metric: str, default: float | None,
                    box: str | None = None) -> list[float | None]:
    """The budgets the rows hold for a quantity; else the study's setting (``None``: unknown)."""
    return list(_eps_values(rows, attack, metric, box)) or [default]


def _at(eps: float | None) -> str:
    return f" @ eps={eps:g}" if eps is not None else ""


def _headline_columns(rows: Sequence[Mapping[str, Any]], settings: Mapping[str, Any]) -> list[_Column]:
    noises = sorted({round(float(r["label_noise"]), 12) for r in rows if _is_training(r) and r.get("label_noise")})
    if not noises and settings.get("noise") is not None:
        noises = [float(settings["noise"])]
    l2, linf = settings.get("eps_l2"), settings.get("eps_linf")
    cols = [_training_column("clean acc (%)", 0.0)]
    cols += [_training_column(f"acc @ label noise {n:g} (%)", n) for n in noises]
    cols.append(_metric_column("rho_adv", "deepfool", "rho_adv"))
    for attack, name, default in (("fmn-l2", "l2", l2), ("fmn-linf", "linf", linf)):
        cols.append(_metric_column(f"median {name} dist", attack, "median_distance"))
        cols += [_metric_column(f"err {name}{_at(e)} (%)", attack, "error_at_eps", kind="pct", higher=False, eps=e)
                 for e in _eps_or_default(rows, attack, "error_at_eps", default)]
    for box in ("white", "black"):
        cols += [_metric_column(f"IFGSM {box}{_at(e)} (%)", "ifgsm", "accuracy", kind="pct", box=box, eps=e)
                 for e in _eps_or_default(rows, "ifgsm", "accuracy", linf, box)]
    if _has_worst_case(rows):
        cols += [_metric_column(f"AutoAttack{_at(e)} (%)", "autoattack", "accuracy", kind="pct", box="white", eps=e)
                 for e in _eps_or_default(rows, "autoattack", "accuracy", linf, "white")]
    cols.append(_metric_column("certified radius Tsuzuku (median)", "purity-tsuzuku", "median_radius"))
    cols.append(_metric_column("certified radius Kesidis (median)", "purity-kesidis", "median_radius"))
    cols += [_metric_column(f"detection AUC{_at(e)}", "detect", "auc", eps=e)
             for e in _eps_or_default(rows, "detect", "auc", linf)]
    cols.append(_metric_column("step cost x CE", "cost", "step_time_ratio", higher=False))
    cols.append(_metric_column("memory x CE", "cost", "peak_memory_ratio", higher=False))
    return cols


def _has_worst_case(rows: Sequence[Mapping[str, Any]]) -> bool:
    return any(r.get("attack") == "autoattack" and r.get("metric") == "accuracy" for r in rows)


def _other_columns(rows: Sequence[Mapping[str, Any]], settings: Mapping[str, Any]) -> list[_Column]:
    linf = settings.get("eps_linf")
    cols = [_metric_column(f"FGSM black{_at(e)} (%)", "fgsm", "accuracy", kind="pct", box="black", eps=e)
            for e in _eps_or_default(rows, "fgsm", "accuracy", linf, "black")]
    boxes = sorted({str(r.get("box")) for r in rows if r.get("attack") == "detect" and r.get("metric") == "tpr_at_fpr"})
    if not boxes and settings.get("fpr") is not None:
        boxes = [f"fpr{float(settings['fpr']):g}"]
    for box in boxes:
        cols += [_metric_column(f"detection TPR at {box}{_at(e)} (%)", "detect", "tpr_at_fpr", kind="pct", box=box, eps=e)
                 for e in _eps_or_default(rows, "detect", "tpr_at_fpr", linf, box)]
    cols.append(_metric_column("Lipschitz bound l2 (Tsuzuku)", "purity-tsuzuku", "lipschitz", higher=False))
    cols.append(_metric_column("Lipschitz bound linf/l2 (Kesidis)", "purity-kesidis", "lipschitz", higher=False))
    cols.append(_metric_column("seconds per step", "cost", "step_seconds", higher=False))
    return cols


def _methods(rows: Sequence[Mapping[str, Any]], losses: Sequence[str] | None) -> list[str]:
    """The study's losses in order, then any other method in the rows, as they first appear."""
    return list(dict.fromkeys([*(losses or ()), *(r["loss"] for r in rows if r.get("loss") is not None)]))


def compare_table(
    rows: Sequence[Mapping[str, Any]], *, losses: Sequence[str] | None = None, settings: Mapping[str, Any] | None = None,
    other: bool = False,
) -> tuple[list[str], list[dict[str, str]]]:
    """The headline table of ``compare-methods`` (or, ``other=True``, the table of the further measurements).

    Args:
        rows: the study's rows (``study == "compare-methods"``).
        losses: the methods in order (default: as they first appear); methods of the rows not
            listed follow.
        settings: the study's settings (``study.json``'s ``compare``: ``noise``, ``eps_l2``,
            ``eps_linf``, ``fpr``), used for the column headers when no row states them.
        other: the table of the measurements the headline leaves out.

    Returns:
        ``(columns, table)``: ``"method"`` and one column per quantity; each cell
        ``mean ± std (n)`` over seeds (accuracies and errors in %), ``–`` where missing.

    Example:
        >>> rows = [{"loss": "ce", "seed": s, "attack": "none", "label_noise": 0.0, "metric": None, "test_acc": a}
        ...         for s, a in ((0, 0.9), (1, 0.8))]
        >>> columns, table = compare_table(rows)
        >>> table[0]["clean acc (%)"]
        '85.0 ± 7.1 (2)'
    """
    rows = [r for r in rows if r.get("study", STUDY) == STUDY]
    cols = (_other_columns if other else _headline_columns)(rows, settings or {})
    table = []
    for method in _methods(rows, losses):
        line = {"method": method}
        for col in cols:
            line[col.header] = _cell(_stat(rows, col, method), col)
        table.append(line)
    return ["method", *(c.header for c in cols)], table


# -- which method wins ----------------------------------------------------------------------------


def _spread(a: _Stat, b: _Stat) -> str:
    stds = [s.std for s in (a, b) if s.n > 1]
    if not stds:
        return "one seed each, so no spread to judge by"
    if abs(a.mean - b.mean) < max(stds):
        return "within the spread of seeds"
    return "beyond the spread of seeds"


def _gap(best: _Stat, other: _Stat, column: _Column) -> str:
    diff = column.scale * (other.mean - best.mean)
    if diff == 0:
        return "tied"
    size = f"{abs(diff):.{column.decimals}f} points" if column.kind == "pct" else f"{abs(diff):.3g}"
    return f"{size} {'higher' if diff > 0 else 'lower'} ({_spread(best, other)})"


def _ranked(stats: Mapping[str, _Stat | None], column: _Column) -> list[tuple[str, _Stat]]:
    have = [(m, s) for m, s in stats.items() if s is not None and not math.isnan(s.mean)]
    return sorted(have, key=lambda ms: -ms[1].mean if column.higher else ms[1].mean)  # stable: the study's order on ties


def _winner(column: _Column, stats: Mapping[str, _Stat | None]) -> str | None:
    ranked = _ranked(stats, column)
    if not ranked:
        return None
    (best, b), rest = ranked[0], ranked[1:]
    text = (f"**{column.header}** ({'higher' if column.higher else 'lower'} is better): **{best}** wins with "
            f"{_cell(b, column)}")
    if not rest:
        return text + "; no other method has a value."
    runner, r = rest[0]
    parts = [f"the runner-up {runner} has {_cell(r, column)}, {_gap(b, r, column)}"]
    ce = stats.get(BASELINE_PRESET)
    if best == BASELINE_PRESET:
        parts.append("cross-entropy itself is best")
    elif runner != BASELINE_PRESET:
        parts.append(f"{BASELINE_PRESET} has {_cell(ce, column)}, {_gap(b, ce, column)}" if ce is not None
                     else f"{BASELINE_PRESET} has no value")
    return text + "; " + "; ".join(parts) + "."


# -- figures --------------------------------------------------------------------------------------


def _style(i: int) -> dict[str, Any]:
    from matplotlib import colormaps

    return {"color": colormaps["tab20"]((2 * i) % 20 + (i // 10) % 2), "marker": _MARKERS[i % len(_MARKERS)]}


def plot_accuracy_vs_distance(
    rows: Sequence[Mapping[str, Any]], *, losses: Sequence[str] | None = None, title: str = "",
) -> Figure | None:
    """Clean test accuracy (%) against the median l_2 adversarial distance (FMN), a point per method and seed.

    Returns:
        The Figure, or ``None`` when no method has both numbers for one seed.
    """
    acc = _training_column("clean acc (%)", 0.0)
    dist = _metric_column("median l2 dist", "fmn-l2", "median_distance")
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    drawn = 0
    for i, method in enumerate(_methods(rows, losses)):
        a, d = _stat(rows, acc, method), _stat(rows, dist, method)
        if a is None or d is None:
            continue
        seeds = [s for s in a.per_seed if s in d.per_seed]
        if not seeds:
            continue
        ax.scatter([d.per_seed[s] for s in seeds], [100 * a.per_seed[s] for s in seeds], label=method, s=28, **_style(i))
        drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("median l2 distance to the nearest adversarial (FMN)")
    ax.set_ylabel("clean test accuracy (%)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def plot_cost(rows: Sequence[Mapping[str, Any]], *, losses: Sequence[str] | None = None, title: str = "") -> Figure | None:
    """Bars of the training-step time and peak memory of each method relative to cross-entropy (1 = ce).

    Returns:
        The Figure, or ``None`` when the rows hold no cost measurement.
    """
    cols = (_metric_column("step time", "cost", "step_time_ratio"), _metric_column("peak memory", "cost", "peak_memory_ratio"))
    methods = [m for m in _methods(rows, losses) if any(_stat(rows, c, m) is not None for c in cols)]
    if not methods:
        return None
    fig = Figure(figsize=(max(5.0, 0.55 * len(methods) + 2.0), 3.6), layout="constrained")
    ax = fig.subplots()
    width = 0.4
    for k, col in enumerate(cols):
        stats = [_stat(rows, col, m) for m in methods]
        xs = [i + (k - 0.5) * width for i in range(len(methods))]
        means = [s.mean if s is not None else math.nan for s in stats]
        errs = [s.std if s is not None and s.n > 1 else 0.0 for s in stats]
        bars = ax.bar(xs, means, width, yerr=errs if any(errs) else None, capsize=2, label=col.header)
        ax.bar_label(bars, fmt="%.2g", fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("x cross-entropy")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return fig


# -- the papers' tables ---------------------------------------------------------------------------


def _nearest_eps(rows: Sequence[Mapping[str, Any]], attack: str, metric: str, box: str | None, paper_eps: float) -> float | None:
    found = _eps_values(rows, attack, metric, box)
    return min(found, key=lambda e: (abs(e - paper_eps), e)) if found else None


def _paper_column(key: str, meta: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> tuple[_Column, float | None]:
    """Our quantity for one of the papers' metrics, in the paper's units, and the budget it is measured at."""
    paper_eps = meta.get("eps")
    if key == "error":
        return _training_column("error", 0.0, error=True, decimals=2), None
    if key == "clean":
        return _training_column("clean", 0.0, decimals=2), None
    if key == "rho_adv":
        return _metric_column("rho_adv", "deepfool", "rho_adv", scale=10.0), None
    if key in ("median_l2", "median_linf"):
        return _metric_column(key, "fmn-" + key.split("_")[1], "median_distance"), None
    if key in ("err_l2", "err_linf"):
        attack = "fmn-" + key.split("_")[1]
        eps = _nearest_eps(rows, attack, "error_at_eps", None, paper_eps)
        return _metric_column(key, attack, "error_at_eps", kind="pct", higher=False, eps=eps, decimals=2), eps
    if key == "fgsm":
        eps = _nearest_eps(rows, "fgsm", "accuracy", "black", paper_eps)
        return _metric_column(key, "fgsm", "accuracy", kind="pct", box="black", eps=eps, decimals=2), eps
    raise ValueError(f"The paper metric {key!r} has no counterpart in the compare-methods rows.")


def _paper_value(value: Any, fmt: str = "g") -> str:
    if isinstance(value, tuple):
        return f"{value[0]:{fmt}} ± {value[1]:{fmt}}"
    return f"{value:{fmt}}"


def _mean_of(value: Any) -> float:
    return float(value[0] if isinstance(value, tuple) else value)


def _with_eps(label: str, eps: float | str | None) -> str:
    return label if eps is None else f"{label} at eps={eps}" if isinstance(eps, str) else f"{label} at eps={eps:g}"


def _paper_tables(doc: Any, rows: Sequence[Mapping[str, Any]], dataset: str) -> None:
    for paper in PAPER_NUMBERS.values():
        columns = {m: _paper_column(m, meta, rows) for m, meta in paper["metrics"].items()}
        for setting, spec in paper["tables"].items():
            theirs = f"paper ({spec['dataset']})"
            ours = f"ours ({dataset})"
            if paper["layout"] == "by-quantity":  # e.g. Kesidis et al.'s Table I: a column per training objective
                presets = list(dict.fromkeys(p for _, ps, _ in spec["rows"] for p in ps))
                header = ["quantity", *(f"{theirs}: {name}" for name, _, _ in spec["rows"]), *(f"{ours}: {p}" for p in presets)]
                table = []
                for metric, meta in paper["metrics"].items():
                    col, eps = columns[metric]
                    label = meta["label"] + (f" (paper eps={meta['eps']:g}, ours eps={eps:g})" if eps is not None else
                                             f" (paper eps={meta['eps']:g})" if meta.get("eps") is not None else "")
                    line = {"quantity": label}
                    for name, _, values in spec["rows"]:
                        line[f"{theirs}: {name}"] = (_paper_value(values[metric], meta.get("fmt", "g")) if metric in values
                                                     else _MISSING)
                    for p in presets:
                        line[f"{ours}: {p}"] = _cell(_stat(rows, col, p), col)
                    table.append(line)
            else:  # Matyasko & Chau's and Finlay & Oberman's layout: a row per method, a column per quantity
                heads = {}
                for metric, meta in paper["metrics"].items():
                    _, eps = columns[metric]
                    heads[metric] = (f"{theirs}: {_with_eps(meta['label'], meta.get('eps_text', meta.get('eps')))}",
                                     f"{ours}: {_with_eps(meta['label'], eps if meta.get('eps') is not None else None)}")
                header = ["paper row", "ours", *(h for pair in heads.values() for h in pair)]
                table = []
                for name, presets, values in spec["rows"]:
                    for p in presets:
                        line = {"paper row": name, "ours": p}
                        for (metric, meta), (head_paper, head_ours) in zip(paper["metrics"].items(), heads.values()):
                            col, _ = columns[metric]
                            line[head_paper] = _paper_value(values[metric], meta.get("fmt", "g")) if metric in values else _MISSING
                            line[head_ours] = _cell(_stat(rows, col, p), col)
                        table.append(line)
            doc.table(header, table, f"{paper['paper']}, {setting}: the paper's numbers ({paper['where']}) beside ours "
                                     f"(mean ± std (n seeds); – not run)")


def _ranking_differences(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """For each paper, setting and quantity: the pairs of methods whose order in our rows is not the paper's."""
    lines = []
    for paper in PAPER_NUMBERS.values():
        columns = {m: _paper_column(m, meta, rows)[0] for m, meta in paper["metrics"].items()}
        found = []
        for setting, spec in paper["tables"].items():
            counts: dict[str, int] = {}
            for _, presets, _ in spec["rows"]:
                for p in presets:
                    counts[p] = counts.get(p, 0) + 1
            for metric, meta in paper["metrics"].items():
                col = columns[metric]
                items = []
                for name, presets, values in spec["rows"]:
                    for p in presets:
                        stat = _stat(rows, col, p)
                        if metric in values and stat is not None:
                            label = p if counts[p] == 1 else f"{p} [{name}]"
                            items.append((name, p, label, _mean_of(values[metric]), stat))
                if len(items) < 2:
                    continue
                swaps, same, ties = [], 0, 0
                for i, (row_a, p_a, a, pa, sa) in enumerate(items):
                    for row_b, p_b, b, pb, sb in items[i + 1:]:
                        if row_a == row_b or p_a == p_b:
                            continue
                        paper_sign = (pa > pb) - (pa < pb)
                        our_sign = (sa.mean > sb.mean) - (sa.mean < sb.mean)
                        if paper_sign == 0:
                            ties += 1
                        elif paper_sign == our_sign:
                            same += 1
                        else:  # name the paper's higher one first
                            (hi, p_hi, s_hi), (lo, p_lo, s_lo) = sorted(((a, pa, sa), (b, pb, sb)), key=lambda t: -t[1])
                            ours = (f"ties them at {_num(s_hi.mean, col)}" if our_sign == 0 else
                                    f"has {hi} {_num(s_hi.mean, col)} below {lo} {_num(s_lo.mean, col)} ({_spread(s_hi, s_lo)})")
                            swaps.append(f"{hi} / {lo}: the paper has {hi} {p_hi:g} above {lo} {p_lo:g}, ours {ours}")
                where = f"{paper['paper']}, {setting}, {meta['label']}"
                tied = f"; {ties} pair{'s' if ties != 1 else ''} tied in the paper" if ties else ""
                total = len(swaps) + same
                if swaps:
                    found.append(f"{where}: {len(swaps)} of {total} pair{'s' if total != 1 else ''} "
                                 f"swap{'s' if len(swaps) == 1 else ''}: " + "; ".join(swaps) + tied + ".")
                elif total:
                    found.append(f"{where}: the same order as the paper ({total} pair{'s' if total != 1 else ''})" + tied + ".")
                else:
                    found.append(f"{where}: the paper's methods we ran are tied in the paper" + tied + ".")
        if not found:
            mapped = list(dict.fromkeys(p for spec in paper["tables"].values() for _, ps, _ in spec["rows"] for p in ps))
            ran = [p for p in mapped if any(r.get("loss") == p for r in rows)]
            found.append(f"{paper['paper']}: fewer than two of its methods ({', '.join(mapped)}) were run here "
                         f"(ran: {', '.join(ran) or 'none'}); nothing to rank.")
        lines += found
    return lines


# -- the section ----------------------------------------------------------------------------------


def compare_section(
    doc: Any, rows: Sequence[Mapping[str, Any]], figures_dir: str | Path, *, dataset: str,
    losses: Sequence[str] | None = None, settings: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Add the ``compare-methods`` tables, figures, winners and the papers' tables to a report.

    Args:
        doc: the report being built (``deepmargin.reports.study._Doc``: ``heading``, ``para``,
            ``bullets``, ``table``, ``image``).
        rows: the rows of the study (others are ignored).
        figures_dir: where the figures go (the report's ``figures/``; the Markdown links them
            relative to its parent).
        dataset: the dataset's name, for the labels.
        losses: the study's methods in order (``study.json``'s ``study_losses["compare-methods"]``).
        settings: ``study.json``'s ``compare`` (label noise, eps, fpr), for headers no row states.

    Returns:
        ``{"figure_compare_scatter": png, "figure_compare_cost": png}`` for the figures it drew.
    """
    rows = [r for r in rows if r.get("study", STUDY) == STUDY]
    figures_dir = Path(figures_dir)
    settings = dict(settings or {})
    methods = _methods(rows, losses)
    files: dict[str, Path] = {}

    doc.para(
        "Every method trained on the same data with the same protocol; each method's own weight chosen on validation "
        "accuracy per seed; the clean model of each method and seed then measured on the test split. Cells: mean ± std "
        "(number of seeds); accuracies and errors in %; – where a method has no value."
    )
    columns, table = compare_table(rows, losses=methods, settings=settings)
    doc.table(columns, table, f"{dataset}: every method side by side")

    fig = plot_accuracy_vs_distance(rows, losses=methods, title=f"{dataset}: clean accuracy vs robustness")
    if fig is not None:
        files["figure_compare_scatter"] = save_figure(fig, figures_dir / "compare_accuracy_vs_distance.png")
        doc.image(files["figure_compare_scatter"], f"{figures_dir.name}/compare_accuracy_vs_distance.png",
                  "clean test accuracy against the median l2 adversarial distance (FMN), one point per method and seed")
    fig = plot_cost(rows, losses=methods, title=f"{dataset}: training cost relative to cross-entropy")
    if fig is not None:
        files["figure_compare_cost"] = save_figure(fig, figures_dir / "compare_cost.png")
        doc.image(files["figure_compare_cost"], f"{figures_dir.name}/compare_cost.png",
                  "time of a training step and its peak memory, relative to a cross-entropy step (dashed: 1)")

    doc.heading("Which method wins each column", 3)
    cols = _headline_columns(rows, settings)
    worst_case = _has_worst_case(rows)
    if worst_case:  # robustness is decided by the worst case: IFGSM numbers are upper bounds masking can inflate
        cols = [c for c in cols if not c.header.startswith("IFGSM")]
    winners = [_winner(c, {m: _stat(rows, c, m) for m in methods}) for c in cols]
    doc.bullets([w for w in winners if w] or ["No column has a value yet."])
    if worst_case:
        from .worst_case import worst_case_section

        doc.para("Under attack the winner is named from the AutoAttack column (the worst case per input); the IFGSM "
                 "columns stay in the table but name no winner, since a model that masks gradients can top them.")
        doc.heading("IFGSM against the worst case (AutoAttack)", 3)
        worst_case_section(doc, rows, methods)

    doc.heading("Further measurements", 3)
    doc.table(*compare_table(rows, losses=methods, settings=settings, other=True),
              "FGSM transferred from ce (Kesidis et al.'s Table I), detection rate at the FPR set on clean validation data, "
              "the Lipschitz upper bounds the certified radii use, and the seconds of one training step")

    doc.heading("Beside the seed papers' tables", 3)
    doc.para(
        f"The papers' numbers are for their datasets and models (Matyasko & Chau: MNIST; Finlay & Oberman: CIFAR-10 and "
        f"CIFAR-100; Kesidis et al.: CIFAR-10), ours for **{dataset}** with this study's model and budgets, so the "
        "levels are not comparable across the columns; the orders of the methods are."
    )
    _paper_tables(doc, rows, dataset)
    doc.para("Where our ranking differs from the paper's (each pair of the paper's methods that we ran; values in the "
             "paper's units):")
    doc.bullets(_ranking_differences(rows))
    return files
