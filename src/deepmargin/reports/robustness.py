"""Accuracy-vs-epsilon tables and plots made from the tidy rows of ``deepmargin attack``.

The rows (one per model, attack, norm, eps, seed; see
:func:`deepmargin.attacks.accuracy_vs_epsilon`) are written as CSV or JSONL; this module reads
them back and draws the curves of Elsayed et al. (2018, Fig. 3 and 5): test accuracy against the
perturbation size, one panel per norm, one line per model, attack and setting (white-box or
transfer from a source model).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from ..io import atomic_write, atomic_write_text

__all__ = ["load_rows", "write_rows", "write_attack_run", "write_robustness_run", "suite_table", "accuracy_table",
           "plot_accuracy_vs_epsilon", "ROW_FIELDS"]

#: Column order of the CSV written by :func:`write_rows` (extra keys follow, sorted).
ROW_FIELDS = ("model", "attack", "norm", "eps", "accuracy", "correct", "n", "seed", "setting", "source")

_NUMERIC = {"eps": float, "accuracy": float, "correct": int, "n": int, "seed": int}
_NORM_TITLES = {"linf": r"$\ell_\infty$", "l2": r"$\ell_2$", "std": "Gaussian noise (std)", "snr_db": "Gaussian noise (SNR, dB)"}


def _parse(value: str, kind: type) -> Any:
    if value in ("", "None", "null"):
        return None
    try:
        return kind(value)
    except ValueError:
        return float(value) if kind is int else value


def load_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read result rows from a ``.csv`` or ``.jsonl`` file (numbers parsed, empty cells as ``None``).

    Example:
        >>> rows = load_rows("runs/attack/rows.csv")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Result file {str(path)!r} does not exist.")
    if path.suffix == ".jsonl":
        with path.open() as handle:
            return [json.loads(line) for line in handle if line.strip()]
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        for row in rows:
            for key, value in row.items():
                row[key] = _parse(value, _NUMERIC[key]) if key in _NUMERIC else (value if value != "" else None)
        return rows
    raise ValueError(f"The 'path' parameter of load_rows must end in .csv or .jsonl. Got {str(path)!r} instead.")


def write_rows(rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike[str], stem: str = "rows") -> tuple[Path, Path]:
    """Write rows as ``<stem>.csv`` and ``<stem>.jsonl`` in ``out_dir`` (created); return both paths.

    Example:
        >>> import tempfile
        >>> csv_path, jsonl_path = write_rows([{"model": "m", "eps": 0.1, "accuracy": 0.5}], tempfile.mkdtemp())
        >>> load_rows(csv_path)[0]["eps"]
        0.1
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra = sorted({k for row in rows for k in row} - set(ROW_FIELDS))
    fields = [f for f in ROW_FIELDS if any(f in row for row in rows)] + extra
    csv_path, jsonl_path = out / f"{stem}.csv", out / f"{stem}.jsonl"
    def write_csv(handle) -> None:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})

    atomic_write(csv_path, write_csv)
    atomic_write_text(jsonl_path, "".join(json.dumps(dict(row), allow_nan=True) + "\n" for row in rows))
    return csv_path, jsonl_path


def write_attack_run(run: Any, out_dir: str | os.PathLike[str], *, plot: bool = True) -> list[Path]:
    """Write the files of ``deepmargin attack`` from an :class:`~deepmargin.experiments.attack_eval.AttackRun`.

    ``rows.csv`` and ``rows.jsonl`` (:func:`write_rows`), ``config.json`` (the resolved
    configuration) and, with ``plot``, ``accuracy_vs_eps.png`` drawn from ``rows.csv``. Returns the
    paths in that order.
    """
    from ..io import save_figure

    out = Path(out_dir)
    csv_path, jsonl_path = write_rows(run.rows, out)
    written = [csv_path, jsonl_path,
               atomic_write_text(out / "config.json", json.dumps(run.config, indent=2, default=str) + "\n")]
    if plot:
        fig = plot_accuracy_vs_epsilon(csv_path, title=f"{run.dataset}: accuracy under attack (n={run.n})")
        written.append(save_figure(fig, out / "accuracy_vs_eps.png", dpi=120))
    return written


def write_robustness_run(run: Any, out_dir: str | os.PathLike[str], *, plot: bool = True) -> list[Path]:
    """Write the files of ``deepmargin robustness`` from a :class:`~deepmargin.experiments.robustness_eval.RobustnessRun`.

    ``summary.csv`` / ``summary.jsonl`` (the summary rows), ``margins.csv`` (the per-input margin
    report), with ``plot`` ``margin_histogram.png`` drawn from ``margins.csv``, when the run has
    AutoAttack rows ``autoattack.csv`` / ``autoattack.jsonl`` (the rows) and
    ``autoattack_summary.json`` (one result per model, norm and eps: clean and robust accuracy, the
    accuracy after each attack in order, the flags), and ``config.json``; each atomically. Returns
    the paths in that order.
    """
    from ..experiments.robustness_eval import CERTIFIED_FIELDS, SUITE_FIELDS, SUMMARY_FIELDS
    from ..training.records import write_json
    from .margins import MARGIN_FIELDS, plot_margin_histogram, write_rows_atomic

    out = Path(out_dir)
    written = [
        write_rows_atomic(out / "summary.csv", run.summary_rows, fieldnames=SUMMARY_FIELDS),
        write_rows_atomic(out / "summary.jsonl", run.summary_rows),
        write_rows_atomic(out / "margins.csv", run.margin_rows, fieldnames=(*MARGIN_FIELDS, *CERTIFIED_FIELDS)),
    ]
    if plot:
        fig = plot_margin_histogram(out / "margins.csv", title=f"{run.dataset}: distance to the boundary (n={run.n})")
        written.append(atomic_write(out / "margin_histogram.png", lambda h: fig.savefig(h, format="png", dpi=120),
                                    binary=True))
    if getattr(run, "suite_rows", None):
        suite = run.config.get("suite", {})
        written += [
            write_rows_atomic(out / "autoattack.csv", run.suite_rows, fieldnames=SUITE_FIELDS),
            write_rows_atomic(out / "autoattack.jsonl", run.suite_rows),
            write_json(out / "autoattack_summary.json", {
                "dataset": run.dataset, "version": suite.get("version"), "seed": suite.get("seed"),
                "results": [{key: e[key] for key in _SUITE_SUMMARY_KEYS} for e in run.suite_summary],
            }),
        ]
    else:  # a run without --suite into a folder that held one: its AutoAttack files would describe another run
        for name in _SUITE_FILES:
            (out / name).unlink(missing_ok=True)
    written.append(write_json(out / "config.json", run.config))
    return written


#: The files of ``--suite``, removed by a run without it into the same folder.
_SUITE_FILES = ("autoattack.csv", "autoattack.jsonl", "autoattack_summary.json")

#: Keys of each result in ``autoattack_summary.json``.
_SUITE_SUMMARY_KEYS = ("model", "norm", "eps", "version", "seed", "n", "clean_accuracy", "attacks", "accuracy_after",
                       "robust_accuracy", "flags", "checkpoint")


def suite_table(summary: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the printed AutoAttack table: model, norm, eps, n, clean, each attack, autoattack, flags.

    Every row has every column (``None`` where an attack did not run, as at eps 0), so that the
    columns come out in ensemble order.

    Example:
        >>> entry = dict(model="m", norm="linf", eps=0.1, n=4, clean_accuracy=1.0, accuracy_after={"apgd-ce": 0.5},
        ...              robust_accuracy=0.5, flags=[])
        >>> list(suite_table([entry])[0])
        ['model', 'norm', 'eps', 'n', 'clean', 'apgd-ce', 'autoattack', 'flags']
    """
    attacks = list(dict.fromkeys(name for e in summary for name in e["accuracy_after"]))
    return [
        {"model": e["model"], "norm": e["norm"], "eps": f"{e['eps']:g}", "n": e["n"], "clean": e["clean_accuracy"],
         **{name: e["accuracy_after"].get(name) for name in attacks}, "autoattack": e["robust_accuracy"],
         "flags": ",".join(e["flags"])}
        for e in summary
    ]


def _line_key(row: Mapping[str, Any]) -> tuple[str, str, str, str]:
    return (str(row["model"]), str(row["attack"]), str(row.get("setting") or "white-box"), str(row.get("source") or ""))


def _line_label(key: tuple[str, str, str, str]) -> str:
    model, attack, setting, source = key
    if setting == "transfer":
        return f"{model} / {attack} from {source}"
    return f"{model} / {attack}"


def accuracy_table(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Average accuracy over seeds: one dict per (model, attack, setting, source, norm, eps).

    Keys: those of the grid plus ``accuracy`` (mean over seeds), ``accuracy_std`` (population
    standard deviation over seeds, 0 for one seed) and ``seeds`` (their number).

    Example:
        >>> rows = [dict(model="m", attack="pgd", norm="linf", eps=0.1, accuracy=a, seed=s)
        ...         for s, a in enumerate([0.4, 0.6])]
        >>> accuracy_table(rows)[0]["accuracy"]
        0.5
    """
    groups: dict[tuple, list[float]] = defaultdict(list)
    for row in rows:
        groups[(*_line_key(row), str(row["norm"]), float(row["eps"]))].append(float(row["accuracy"]))
    table = []
    for (model, attack, setting, source, norm, eps), accs in groups.items():
        mean = sum(accs) / len(accs)
        std = math.sqrt(sum((a - mean) ** 2 for a in accs) / len(accs))
        table.append(
            dict(model=model, attack=attack, setting=setting, source=source or None, norm=norm, eps=eps,
                 accuracy=mean, accuracy_std=std, seeds=len(accs))
        )
    table.sort(key=lambda r: (r["norm"], r["model"], r["attack"], r["setting"], r["source"] or "", r["eps"]))
    return table


def plot_accuracy_vs_epsilon(
    rows: Iterable[Mapping[str, Any]] | str | os.PathLike[str],
    *,
    title: str | None = None,
    panel_size: tuple[float, float] = (4.5, 3.5),
) -> Figure:
    """Plot test accuracy against epsilon: one panel per norm, one line per model/attack/setting.

    Seeds are averaged (shaded band: +- one standard deviation when there are several); transfer
    lines are dashed. For SNR panels the x axis is reversed (more noise to the right).

    Args:
        rows: result rows, or the path of a ``.csv``/``.jsonl`` file of them.
        title: figure title.
        panel_size: ``(width, height)`` of one panel, in inches.

    Returns:
        The matplotlib ``Figure`` (object API; save it with ``fig.savefig(path)``).

    Example:
        >>> rows = [dict(model="ce", attack="ifgsm", norm="linf", eps=e, accuracy=1 - e, seed=0)
        ...         for e in (0.0, 0.1, 0.2)]
        >>> fig = plot_accuracy_vs_epsilon(rows)
        >>> len(fig.axes)
        1

    Reference:
        Elsayed et al., "Large Margin Deep Networks for Classification", NeurIPS 2018, Fig. 3 and 5.
    """
    if isinstance(rows, (str, os.PathLike)):
        rows = load_rows(rows)
    table = accuracy_table(rows)
    if not table:
        raise ValueError("The 'rows' parameter of plot_accuracy_vs_epsilon must hold at least one row. Got none instead.")
    order = {"linf": 0, "l2": 1, "std": 2, "snr_db": 3}
    norms = sorted(dict.fromkeys(r["norm"] for r in table), key=lambda n: (order.get(n, len(order)), n))
    fig = Figure(figsize=(panel_size[0] * len(norms), panel_size[1]), layout="constrained")
    axes = fig.subplots(1, len(norms), squeeze=False)[0]
    cycle = [c["color"] for c in matplotlib.rcParams["axes.prop_cycle"]]
    keys = list(dict.fromkeys((r["model"], r["attack"], r["setting"], r["source"] or "") for r in table))
    colors = {key: cycle[i % len(cycle)] for i, key in enumerate(keys)}
    for ax, norm in zip(axes, norms):
        lines: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        for r in table:
            if r["norm"] == norm:
                lines[(r["model"], r["attack"], r["setting"], r["source"] or "")].append(r)
        for key, points in lines.items():
            points.sort(key=lambda r: r["eps"])
            xs = [p["eps"] for p in points]
            ys = [p["accuracy"] for p in points]
            (line,) = ax.plot(xs, ys, marker="o", markersize=3, linestyle="--" if key[2] == "transfer" else "-",
                              color=colors[key], label=_line_label(key))
            if any(p["seeds"] > 1 for p in points):
                lo = [p["accuracy"] - p["accuracy_std"] for p in points]
                hi = [p["accuracy"] + p["accuracy_std"] for p in points]
                ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(_NORM_TITLES.get(norm, norm))
        ax.set_xlabel("SNR (dB)" if norm == "snr_db" else ("noise std" if norm == "std" else r"$\epsilon$"))
        if norm == "snr_db":
            ax.invert_xaxis()
        ax.set_ylabel("test accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig
