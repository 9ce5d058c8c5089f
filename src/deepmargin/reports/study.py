"""The studies' report: tables, the paper's figures redrawn from ``rows.jsonl``, verdicts, the paper's numbers.

``write_report(DIR)`` writes ``DIR/report.md`` (figures in ``DIR/figures/``) and
``DIR/report.html`` (the same, with the figures embedded, readable offline). Every number comes
from the rows; the verdicts compare each margin model with cross-entropy seed by seed (paired
differences: mean and standard deviation over seeds) and say so when margin did not win.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..experiments.compare import COMPARE
from ..experiments.presets import ADVERSARIAL_BASELINE_PRESET, BASELINE_PRESET
from ..io import atomic_write_text, save_figure
from .papers import read_paper_numbers, study_numbers

__all__ = ["PAPER_NUMBERS", "plot_study_curves", "study_tables", "write_report"]

#: Numbers Elsayed et al. (2018) state in the text (test accuracy in %, or a difference in
#: points), by dataset: ``(study, loss, setting, what, value, where)``, read from
#: ``paper_numbers.json`` (:mod:`.papers`). "best margin" is the non-adversarially trained margin
#: model with the highest mean; "minus ce" a difference from cross-entropy in the same setting and
#: seed (averaged over the settings for ``label_noise>0``).
PAPER_NUMBERS: dict[str, list[tuple[str, str, str, str, float | str, str]]] = study_numbers(read_paper_numbers())

_STUDY_TITLES = {
    "noisy-labels": "Noisy labels (paper Fig. 2 left, Fig. 4 left)",
    "limited-data": "Limited training data (paper Fig. 2 right, Fig. 4 right)",
    "adversarial": "Adversarial perturbations and noise (paper Fig. 3, Fig. 5, supplementary)",
    COMPARE: "Every margin method side by side (Matyasko & Chau, Finlay & Oberman, Kesidis et al.)",
}


# -- statistics -----------------------------------------------------------------------------------


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [float(v) for v in values]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _pct(mean: float, std: float, n: int) -> str:
    if math.isnan(mean):
        return ""
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if n > 1 else f"{100 * mean:.1f}"


def _by(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[tuple, list[Mapping[str, Any]]]:
    out: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:
        out.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    return out


def _order(values: Sequence[Any], *, reverse: bool = False) -> list[Any]:
    return sorted(set(values), key=lambda v: (v is None, v), reverse=reverse)


# -- figures --------------------------------------------------------------------------------------


def plot_study_curves(
    rows: Sequence[Mapping[str, Any]], *, x: str, title: str = "", xlabel: str | None = None, logx: bool = False,
    reverse_x: bool = False, losses: Sequence[str] | None = None, ax: Any = None,
) -> Figure:
    """Mean test accuracy (%) against ``x``, one line per loss, a band of +-1 std over seeds.

    Args:
        rows: study rows (one per loss, setting and seed), already filtered to one curve family.
        x: the row key on the horizontal axis (``label_noise``, ``train_fraction``, ``eps``).
        title, xlabel: labels; logx: a log axis (training fractions); reverse_x: decreasing x.
        losses: the lines, in order (default: as they appear).
        ax: draw into this Axes instead of a new Figure.

    Returns:
        The Figure.
    """
    if ax is None:
        fig = Figure(figsize=(5.0, 3.6), layout="constrained")
        ax = fig.subplots()
    else:
        fig = ax.figure
    names = list(losses) if losses is not None else list(dict.fromkeys(r["loss"] for r in rows))
    groups = _by(rows, ("loss", x))
    for name in names:
        xs = _order([k[1] for k in groups if k[0] == name])
        if not xs:
            continue
        stats = [_mean_std([r["test_acc"] for r in groups[(name, v)]]) for v in xs]
        mean = [100 * m for m, _ in stats]
        std = [100 * s for _, s in stats]
        style = "--" if name.endswith("-input") else "-"
        line, = ax.plot(xs, mean, style, marker="o", markersize=3, label=name)
        ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], color=line.get_color(), alpha=0.15)
    if logx:
        ax.set_xscale("log")
    if reverse_x:
        ax.invert_xaxis()
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel("test accuracy (%)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if names:
        ax.legend(fontsize=7)
    return fig


def _adversarial_figure(rows: Sequence[Mapping[str, Any]], losses: Sequence[str], adv_losses: Sequence[str]) -> Figure:
    plain = [n for n in losses if n not in adv_losses]
    fig = Figure(figsize=(10.0, 7.2), layout="constrained")
    axes = fig.subplots(2, 2)
    for ax, (attack, box) in zip(axes.flat, (("ifgsm", "white"), ("ifgsm", "black"), ("fgsm", "white"), ("fgsm", "black"))):
        sub = [r for r in rows if r["attack"] == attack and r["box"] == box and r["loss"] in plain]
        plot_study_curves(sub, x="eps", xlabel="epsilon (l_inf)", ax=ax, losses=plain,
                          title=f"{attack.upper()}, {'white-box' if box == 'white' else 'black-box (crafted on ce)'}")
    return fig


def _adv_trained_figure(rows: Sequence[Mapping[str, Any]], adv_losses: Sequence[str]) -> Figure:
    fig = Figure(figsize=(10.0, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, box in zip(axes, ("white", "black")):
        sub = [r for r in rows if r["attack"] == "ifgsm" and r["box"] == box and r["loss"] in (BASELINE_PRESET, *adv_losses)]
        plot_study_curves(sub, x="eps", xlabel="epsilon (l_inf)", ax=ax, losses=[BASELINE_PRESET, *adv_losses],
                          title=f"adversarially trained, IFGSM {'white-box' if box == 'white' else 'black-box (crafted on ce)'}")
    return fig


def _noise_figure(rows: Sequence[Mapping[str, Any]], losses: Sequence[str]) -> Figure:
    fig = Figure(figsize=(10.0, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    plot_study_curves([r for r in rows if r["attack"] == "noise-std"], x="eps", xlabel="noise standard deviation",
                      ax=axes[0], losses=losses, title="Gaussian noise (std)")
    plot_study_curves([r for r in rows if r["attack"] == "noise-snr"], x="eps", xlabel="SNR (dB) = 20 log10(||x|| / ||delta||)",
                      ax=axes[1], losses=losses, title="Gaussian noise (SNR)", reverse_x=True)
    return fig


# -- tables and verdicts ----------------------------------------------------------------------------


def _loss_table(
    rows: Sequence[Mapping[str, Any]], x: str, losses: Sequence[str], label: str,
    cell: Any,
) -> tuple[list[str], list[dict[str, Any]]]:
    """One line per loss, one column per value of ``x``; ``cell(rows of that loss and value)`` fills it."""
    groups = _by(rows, ("loss", x))
    xs = _order([k[1] for k in groups])
    columns = ["loss", *[f"{label}={v:g}" for v in xs]]
    table = []
    for name in losses:
        line: dict[str, Any] = {"loss": name}
        for v, col in zip(xs, columns[1:]):
            line[col] = cell(groups.get((name, v), []))
        table.append(line)
    return columns, table


def _pivot(rows: Sequence[Mapping[str, Any]], x: str, losses: Sequence[str], label: str) -> tuple[list[str], list[dict[str, Any]]]:
    def accuracy(group: Sequence[Mapping[str, Any]]) -> str:
        vals = [r["test_acc"] for r in group]
        return _pct(*_mean_std(vals), len(vals)) if vals else ""

    return _loss_table(rows, x, losses, label, accuracy)


def _paired(
    rows: Sequence[Mapping[str, Any]], x: str, name: str, reference: str = BASELINE_PRESET,
) -> dict[Any, tuple[float, float, int, int]]:
    """``{x value: (mean, std, n, wins)}`` of the seed-paired differences ``acc(name) - acc(reference)``.

    ``wins`` counts the seeds where ``name`` was strictly better.

    Example:
        >>> rows = [{"loss": "ce", "eps": 0.1, "seed": 0, "test_acc": 0.5}, {"loss": "m", "eps": 0.1, "seed": 0, "test_acc": 0.7},
        ...         {"loss": "ce", "eps": 0.1, "seed": 1, "test_acc": 0.6}, {"loss": "m", "eps": 0.1, "seed": 1, "test_acc": 0.6}]
        >>> {k: tuple(round(v, 3) for v in t) for k, t in _paired(rows, "eps", "m").items()}
        {0.1: (0.1, 0.141, 2, 1)}
    """
    groups = _by(rows, ("loss", x, "seed"))
    out = {}
    for v in _order([k[1] for k in groups]):
        diffs = [groups[(name, v, s)][0]["test_acc"] - groups[(reference, v, s)][0]["test_acc"]
                 for (n, vv, s) in groups if n == name and vv == v and (reference, v, s) in groups]
        if diffs:
            out[v] = (*_mean_std(diffs), len(diffs), sum(d > 0 for d in diffs))
    return out


def _verdict(rows: Sequence[Mapping[str, Any]], x: str, losses: Sequence[str], label: str) -> list[str]:
    """One sentence per margin model: where it beat its reference (ce, or ce-adv for adversarially
    trained models), by how much (paired over seeds), and where not."""
    lines = []
    for name in losses:
        if not name.startswith("margin"):
            continue
        reference = _reference(name)
        if reference not in losses:
            lines.append(f"**{name}**: no {reference} model in this study to compare with")
            continue
        diffs = _paired(rows, x, name, reference)
        if not diffs:
            continue
        wins = [v for v, (m, *_rest) in diffs.items() if m > 0]
        losses_at = [v for v, (m, *_rest) in diffs.items() if m < 0]
        seed_wins = sum(w for *_rest, w in diffs.values())
        seed_total = sum(n for _m, _s, n, _w in diffs.values())
        detail = ", ".join(f"{label} {v:g}: {100 * m:+.1f} ± {100 * s:.1f} ({w}/{n} seeds better)"
                           for v, (m, s, n, w) in diffs.items())
        overall = statistics.fmean(m for m, *_rest in diffs.values())
        outcome = "beat" if overall > 0 else "did not beat"
        lines.append(
            f"**{name}** {outcome} {reference} on average ({100 * overall:+.1f} points over the {len(diffs)} settings): "
            f"higher mean at {len(wins)}, lower at {len(losses_at)}; better on {seed_wins} of {seed_total} (setting, seed) pairs. "
            f"Per setting (points, mean ± std of the paired differences over seeds): {detail}." + _evidence(diffs, overall)
        )
    return lines


#: Seeds per setting below which a verdict is not evidence.
MIN_SEEDS_FOR_EVIDENCE = 3


def _evidence(diffs: Mapping[Any, tuple[float, float, int, int]], overall: float) -> str:
    """The caveat a verdict carries when it is not evidence: too few seeds, or a mean paired
    difference within the differences' own spread ('' otherwise).

    Example:
        >>> _evidence({0.0: (0.368, 0.0, 1, 1)}, 0.368)
        ' **Not evidence**: 1 seed per setting (at least 3 are needed to tell a difference from seed noise).'
        >>> _evidence({0.0: (0.01, 0.05, 3, 2)}, 0.01)
        ' **Not evidence**: the mean difference (+1.0 points) is within the spread of the paired differences (± 5.0).'
    """
    seeds = min(n for _m, _s, n, _w in diffs.values())
    if seeds < MIN_SEEDS_FOR_EVIDENCE:
        return (f" **Not evidence**: {seeds} seed{'s' if seeds != 1 else ''} per setting (at least "
                f"{MIN_SEEDS_FOR_EVIDENCE} are needed to tell a difference from seed noise).")
    spread = statistics.fmean(sd for _m, sd, _n, _w in diffs.values())
    if abs(overall) <= spread:
        return (f" **Not evidence**: the mean difference ({100 * overall:+.1f} points) is within the spread of the "
                f"paired differences (± {100 * spread:.1f}).")
    return ""


def _chosen_table(rows: Sequence[Mapping[str, Any]], x: str, label: str, losses: Sequence[str]) -> tuple[list[str], list[dict[str, Any]]]:
    def chosen(group: Sequence[Mapping[str, Any]]) -> str:
        counts: dict[str, int] = {}
        for r in group:
            counts[r["hp"]] = counts.get(r["hp"], 0) + 1
        return ", ".join(f"{hp} x{n}" if n > 1 else hp for hp, n in sorted(counts.items(), key=lambda kv: -kv[1]))

    return _loss_table(rows, x, losses, label, chosen)


def study_tables(rows: Sequence[Mapping[str, Any]], study: str, losses: Sequence[str]) -> list[tuple[str, list[str], list[dict[str, Any]]]]:
    """``(caption, columns, rows)`` of the accuracy tables of one study (accuracy in %, mean ± std over seeds)."""
    sub = [r for r in rows if r["study"] == study]
    if study == "noisy-labels":
        return [("test accuracy (%) vs label noise", *_pivot(sub, "label_noise", losses, "noise"))]
    if study == "limited-data":
        return [("test accuracy (%) vs training fraction", *_pivot(sub, "train_fraction", losses, "fraction"))]
    out = []
    for attack, box, caption in (
        ("ifgsm", "white", "IFGSM white-box"), ("ifgsm", "black", "IFGSM black-box (crafted on ce)"),
        ("fgsm", "white", "FGSM white-box"), ("fgsm", "black", "FGSM black-box (crafted on ce)"),
        ("autoattack", "white", "AutoAttack, the worst case per input (white-box)"),
        ("noise-std", "none", "Gaussian noise, standard deviation"), ("noise-snr", "none", "Gaussian noise, SNR in dB"),
    ):
        part = [r for r in sub if r["attack"] == attack and r["box"] == box]
        if part:
            names = [n for n in losses if any(r["loss"] == n for r in part)]
            out.append((f"accuracy (%): {caption}", *_pivot(part, "eps", names, "eps")))
    return out


# -- the document ---------------------------------------------------------------------------------


class _Doc:
    """Blocks rendered both as Markdown and as self-contained HTML."""

    def __init__(self) -> None:
        self.blocks: list[tuple[str, Any]] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", (level, text)))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, columns: Sequence[str], rows: Sequence[Mapping[str, Any]], caption: str = "") -> None:
        self.blocks.append(("table", (caption, list(columns), [dict(r) for r in rows])))

    def image(self, path: Path, rel: str, caption: str) -> None:
        self.blocks.append(("img", (path, rel, caption)))

    def markdown(self) -> str:
        out = []
        for kind, value in self.blocks:
            if kind == "h":
                out.append("#" * value[0] + " " + value[1])
            elif kind == "p":
                out.append(value)
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in value))
            elif kind == "table":
                caption, columns, rows = value
                lines = [f"*{caption}*", ""] if caption else []
                lines.append("| " + " | ".join(columns) + " |")
                lines.append("|" + "|".join("---" for _ in columns) + "|")
                for r in rows:
                    lines.append("| " + " | ".join(_text(r.get(c)) for c in columns) + " |")
                out.append("\n".join(lines))
            else:
                _, rel, caption = value
                out.append(f"![{caption}]({rel})\n\n*{caption}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        parts = [
            "<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">", f"<title>{html.escape(title)}</title>",
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
            "table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:.9em}td,th{border:1px solid #bbb;padding:3px 8px;"
            "text-align:right}td:first-child,th:first-child{text-align:left}caption{font-style:italic;text-align:left;"
            "padding:3px 0}img{max-width:100%}figcaption{font-style:italic;font-size:.9em}code{background:#f3f3f3}</style>",
            "</head><body>",
        ]
        for kind, value in self.blocks:
            if kind == "h":
                parts.append(f"<h{value[0]}>{_inline(value[1])}</h{value[0]}>")
            elif kind == "p":
                parts.append(f"<p>{_inline(value)}</p>")
            elif kind == "ul":
                parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in value) + "</ul>")
            elif kind == "table":
                caption, columns, rows = value
                head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
                body = "".join("<tr>" + "".join(f"<td>{html.escape(_text(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows)
                cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
                parts.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            else:
                path, _, caption = value
                data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
                parts.append(f"<figure><img alt=\"{html.escape(caption)}\" src=\"data:image/png;base64,{data}\">"
                             f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _inline(text: str) -> str:
    """Escape ``text`` for HTML, keeping ``**bold**`` and ``code`` spans."""
    out, bold, code = [], False, False
    i = 0
    while i < len(text):
        if text.startswith("**", i) and not code:
            out.append("</b>" if bold else "<b>")
            bold = not bold
            i += 2
        elif text[i] == "`":
            out.append("</code>" if code else "<code>")
            code = not code
            i += 1
        else:
            out.append(html.escape(text[i]))
            i += 1
    return "".join(out)


def _paper_section(doc: _Doc, dataset: str, rows: Sequence[Mapping[str, Any]]) -> None:
    doc.heading("Our numbers beside the paper's")
    numbers = PAPER_NUMBERS.get(dataset)
    if not numbers:
        doc.para(
            f"The paper states numbers for MNIST and CIFAR-10 (and ImageNet) only; this study ran on **{dataset}**, so there is "
            "no number to set beside ours. The effects to look for are the paper's qualitative claims: margin models at or above "
            "cross-entropy under label noise and with little data, and far above it under black-box IFGSM."
        )
        return
    table = []
    for study, loss, setting, what, value, where in numbers:
        ours = _ours(rows, study, loss, setting, what)
        table.append({"study": study, "model": loss, "setting": setting, "quantity": what,
                      "paper": f"{value:g}" if isinstance(value, float) else str(value), "ours": ours,
                      "direction holds": _direction(rows, (study, loss, setting, what, value, where), numbers),
                      "where": where})
    doc.table(["study", "model", "setting", "quantity", "paper", "ours", "direction holds", "where"], table,
              "accuracy in %, differences in points; ours: mean ± std over seeds ('best margin': the margin model with the highest mean)")


def _reference(name: str) -> str:
    """The model a preset is compared with: ``ce-adv`` for adversarially trained presets, else ``ce``."""
    if name.endswith("-adv") and name != ADVERSARIAL_BASELINE_PRESET:
        return ADVERSARIAL_BASELINE_PRESET
    return BASELINE_PRESET


def _setting_key(r: Mapping[str, Any]) -> tuple:
    return (r["seed"], r["label_noise"], r["train_fraction"], r["attack"], r["box"], r["eps"])


def _ours(rows: Sequence[Mapping[str, Any]], study: str, loss: str, setting: str, what: str) -> str:
    """Our value for one of :data:`PAPER_NUMBERS`: mean ± std over seeds (differences paired by setting and seed)."""
    best = _ours_stats(rows, study, loss, setting, what)
    if best is None:
        return "not run"
    m, s, n, name = best
    text = f"{100 * m:+.1f} ± {100 * s:.1f}" if what == "minus ce" else f"{100 * m:.1f} ± {100 * s:.1f}"
    if n == 1:
        text = text.split(" ±")[0]
    return text + (f" ({name})" if loss == "best margin" else "")


def _direction(rows: Sequence[Mapping[str, Any]], entry: tuple, numbers: Sequence[tuple]) -> str:
    """Whether our numbers go the paper's way for one of its claims: a model against cross-entropy in
    the same setting (a ``minus ce`` value, or an accuracy beside the paper's ce accuracy there).
    ``'yes'`` / ``'no'``, with ``(within the seed spread)`` when the paired difference's mean is
    within its standard deviation or fewer than 3 seeds ran; ``'–'`` where the paper states no comparison."""
    study, loss, setting, what, value, _where = entry
    if loss == BASELINE_PRESET:
        return "–"
    if what == "minus ce":
        if not isinstance(value, (int, float)):
            text = str(value).split()[0]
            try:
                value = float(text)
            except ValueError:
                return "–"
        paper = float(value)
    else:
        ce = [v for (st, lo, se, wh, v, _w) in numbers if (st, lo, se, wh) == (study, BASELINE_PRESET, setting, what)]
        if not ce or not isinstance(value, (int, float)) or not isinstance(ce[0], (int, float)):
            return "–"
        paper = float(value) - float(ce[0])
    ours = _ours_stats(rows, study, loss, setting, "minus ce")
    if ours is None:
        return "not run"
    m, sd, n, _name = ours
    within = abs(m) <= sd
    if paper == 0:
        verdict = "yes (no difference, as the paper)" if within else f"no ({'higher' if m > 0 else 'lower'} than ce)"
    else:
        verdict = ("yes" if (m > 0) == (paper > 0) else "no") + (" (within the seed spread)" if within else "")
    if n < MIN_SEEDS_FOR_EVIDENCE:
        verdict += f"; {n} seed{'s' if n != 1 else ''}: not evidence"
    return verdict


def _ours_stats(rows: Sequence[Mapping[str, Any]], study: str, loss: str, setting: str,
                what: str) -> tuple[float, float, int, str] | None:
    """``(mean, std, seeds, model)`` behind :func:`_ours` (the best margin model for ``'best margin'``)."""
    sub = [r for r in rows if r["study"] == study]
    if setting == "label_noise>0":
        sub = [r for r in sub if r["label_noise"] > 0]
    elif setting.startswith("label_noise="):
        sub = [r for r in sub if math.isclose(r["label_noise"], float(setting.split("=")[1]))]
    elif setting.startswith("train_fraction="):
        sub = [r for r in sub if math.isclose(r["train_fraction"], float(setting.split("=")[1]))]
    elif " eps=" in setting:
        attack_box, eps = setting.split(" eps=")
        parts = attack_box.split()
        attack, box = parts[0], (parts[1] if len(parts) > 1 else "none")
        sub = [r for r in sub if r["attack"] == attack and r["box"] == box and r["eps"] is not None and math.isclose(r["eps"], float(eps))]
    if not sub:
        return None
    if loss == "best margin":
        names = sorted({r["loss"] for r in sub if r["loss"].startswith("margin") and not r["loss"].endswith("-adv")})
    else:
        names = [loss]
    ce = {_setting_key(r): r["test_acc"] for r in sub if r["loss"] == BASELINE_PRESET}
    best = None
    for name in names:
        if what == "minus ce":
            by_seed: dict[int, list[float]] = {}
            for r in sub:
                if r["loss"] == name and _setting_key(r) in ce:
                    by_seed.setdefault(r["seed"], []).append(r["test_acc"] - ce[_setting_key(r)])
            vals = [statistics.fmean(v) for v in by_seed.values()]  # one value per seed (mean over settings)
        else:
            vals = [r["test_acc"] for r in sub if r["loss"] == name]
        if vals:
            m, s = _mean_std(vals)
            if best is None or m > best[0]:
                best = (m, s, len(vals), name)
    return best


def write_report(
    out_dir: str | os.PathLike[str], *, rows: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Path]:
    """Redraw the figures and write ``report.md`` and ``report.html`` for the study in ``out_dir``.

    Args:
        out_dir: a study directory (``deepmargin experiment --out``).
        rows: its rows (default: read from ``rows.jsonl``).

    Returns:
        ``{"report": report.md, "html": report.html, "figure_<name>": png, ...}``.
    """
    from ..training.records import read_jsonl

    out = Path(out_dir)
    study = json.loads((out / "study.json").read_text(encoding="utf-8"))
    if rows is None:
        rows = read_jsonl(out / "rows.jsonl")
    rows = list(rows)
    figures = out / "figures"
    files: dict[str, Path] = {}
    doc = _Doc()
    options, protocol = study["options"], study["protocol"]
    dataset = study["dataset"]
    doc.heading(f"deepmargin studies on {dataset}", 1)
    _setup(doc, study, out)
    collapsed = [r for r in rows if r.get("collapsed")]
    if collapsed:
        doc.para(f"**Collapsed runs** ({len(collapsed)}): every candidate of these settings kept its training "
                 "accuracy at chance, so the number reported for them measures no learning (see `collapsed` in rows.csv):")
        doc.bullets([f"{r['study']}, {r['loss']}, noise {r['label_noise']:g}, fraction {r['train_fraction']:g}, seed "
                     f"{r['seed']}: {r['collapsed']}" for r in collapsed])
    study_losses = study["study_losses"]
    adv_losses = [n for n in study_losses.get("adversarial", []) if study["presets"].get(n, {}).get("fields", {}).get("adv_train", "none") != "none"]
    for name in ("noisy-labels", "limited-data", "adversarial"):
        if name not in study_losses:
            continue
        losses = list(study_losses[name])
        if name == "adversarial" and BASELINE_PRESET not in losses:
            losses.insert(0, BASELINE_PRESET)
        sub = [r for r in rows if r["study"] == name]
        doc.heading(_STUDY_TITLES[name])
        if not sub:
            doc.para("No finished cells yet.")
            continue
        for caption, columns, table in study_tables(rows, name, losses):
            doc.table(columns, table, caption)
        if name in ("noisy-labels", "limited-data"):
            x, label = ("label_noise", "noise") if name == "noisy-labels" else ("train_fraction", "fraction")
            fig = plot_study_curves(sub, x=x, logx=name == "limited-data", losses=losses,
                                    xlabel="fraction of flipped training labels" if x == "label_noise" else "fraction of the training set (log)",
                                    title=f"{dataset}: {name}")
            files[f"figure_{name}"] = save_figure(fig, figures / f"{name}.png")
            doc.image(files[f"figure_{name}"], f"figures/{name}.png", f"test accuracy vs {label}: mean over seeds, band ±1 std")
            doc.para("Did margin beat cross-entropy? (test accuracy of the validation-chosen models)")
            doc.bullets(_verdict(sub, x, losses, label))
            doc.table(*_chosen_table(sub, x, label, losses), "hyperparameters chosen on validation accuracy (per seed)")
        else:
            plain = [n for n in losses if n not in adv_losses]
            fig = _adversarial_figure(sub, plain, adv_losses)
            files["figure_adversarial"] = save_figure(fig, figures / "adversarial.png")
            doc.image(files["figure_adversarial"], "figures/adversarial.png", "accuracy vs epsilon, white- and black-box FGSM / IFGSM")
            if adv_losses:
                fig = _adv_trained_figure(sub, adv_losses)
                files["figure_adv_trained"] = save_figure(fig, figures / "adversarially_trained.png")
                doc.image(files["figure_adv_trained"], "figures/adversarially_trained.png", "adversarially trained models under IFGSM")
            if any(r["attack"].startswith("noise") for r in sub):
                fig = _noise_figure(sub, losses)
                files["figure_noise"] = save_figure(fig, figures / "noise.png")
                doc.image(files["figure_noise"], "figures/noise.png", "accuracy under Gaussian noise")
            for attack, box, text in (("ifgsm", "black", "black-box IFGSM"), ("ifgsm", "white", "white-box IFGSM"),
                                      ("fgsm", "black", "black-box FGSM"), ("noise-std", "none", "Gaussian noise (std)")):
                part = [r for r in sub if r["attack"] == attack and r["box"] == box and (r["eps"] or 0) > 0]
                if part:
                    doc.para(f"Did margin beat cross-entropy under {text}?")
                    doc.bullets(_verdict(part, "eps", losses, "eps"))
            if any(r["attack"] == "autoattack" for r in sub):
                from .worst_case import worst_case_section

                doc.heading("IFGSM against the worst case (AutoAttack)", 3)
                worst_case_section(doc, sub, losses, verdict=_verdict)
            clean = [r for r in sub if r["attack"] == "fgsm" and r["box"] == "white" and r["eps"] == 0]
            doc.table(*_chosen_table([{**r, "eps": 0.0} for r in clean], "eps", "eps", losses),
                      "hyperparameters chosen on validation accuracy (clean, full data; per seed)")
    compare_rows = [r for r in rows if r["study"] == COMPARE]
    if compare_rows:
        from .compare import compare_section

        doc.heading(_STUDY_TITLES[COMPARE])
        files.update(compare_section(doc, compare_rows, figures, dataset=dataset, losses=study_losses.get(COMPARE),
                                     settings=study.get("compare")))
    _paper_section(doc, dataset, rows)
    doc.heading("Files")
    doc.bullets([
        "`rows.csv` / `rows.jsonl`: one row per study, loss, setting, attack, epsilon, box and seed",
        "`study.json`: options, protocol, grid, presets, versions; `cells.json`: every cell's resolved configuration",
        "`train/...`, `eval/...`: each cell's run folder (config, metrics, checkpoints) or attack rows",
    ])
    files["report"] = atomic_write_text(out / "report.md", doc.markdown())
    files["html"] = atomic_write_text(out / "report.html", doc.html(f"deepmargin studies on {dataset}"))
    return files


def _protocol_notes(protocol: Mapping[str, Any]) -> list[str]:
    """Setup lines for the protocol's per-family training overrides and its AutoAttack settings."""
    lines = []
    for family, fields in (protocol.get("train_overrides") or {}).items():
        text = ", ".join(f"{k}={v}" for k, v in fields.items())
        if "denominator_refresh" in fields:
            text += (f" (the margin denominators cached and refreshed every {fields['denominator_refresh']} epochs, where "
                     "the preset allows it: not with adversarial training; chosen because it kept validation accuracy "
                     "within the seed spread at a fraction of the cost, see deepmargin.experiments.protocol)")
        lines.append(f"training overrides for the `{family}` presets: {text}")
    version = protocol.get("autoattack")
    if version and version != "none":
        lines.append(f"AutoAttack `{version}` (l_inf, eps {protocol.get('autoattack_eps', 0.1):g}) beside IFGSM on the "
                     f"attacked test inputs ({protocol.get('attack_n') or 'all'})")
    return lines


def _setup(doc: _Doc, study: Mapping[str, Any], out: Path) -> None:
    options, protocol, data = study["options"], study["protocol"], study.get("data", {})
    seconds = 0.0
    with_time = 0
    cells_path = out / "cells.json"
    missing: list[str] = []
    total = 0
    if cells_path.exists():
        from ..experiments.cells.registry import cell_kind

        for cell in json.loads(cells_path.read_text(encoding="utf-8"))["cells"]:
            total += 1
            path = out / cell["id"] / cell_kind(cell["kind"]).result_file
            if path.exists():
                res = json.loads(path.read_text(encoding="utf-8"))
                seconds += float(res.get("seconds_total", res.get("seconds", 0.0)) or 0.0)
                with_time += 1
            else:
                missing.append(cell["id"])
    if missing:
        shown = ", ".join(f"`{m}`" for m in missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        doc.para(f"**Partial study**: {len(missing)} of {total} cells are not finished, so the tables, figures and "
                 f"verdicts below rest on the finished ones only. Missing: {shown}. Run the same `deepmargin "
                 "experiment` command again to finish it (finished cells are reused).")
    versions = study.get("versions", {})
    doc.heading("Setup")
    doc.bullets([
        f"dataset **{study['dataset']}**: {data.get('n_pool')} training images (before the validation split), "
        f"{data.get('n_test')} test images, {data.get('num_classes')} classes, input {data.get('input_shape')}",
        f"model `{protocol['model']}` {protocol.get('model_kwargs') or ''}; {protocol['epochs']} epochs on full data "
        f"(limited-data runs: x min(1/fraction, {protocol['max_epoch_scale']:g})), batch {protocol['batch_size']}, "
        f"learning rates {protocol['lr']}, schedule {protocol['lr_schedule']}",
        f"validation split {protocol['val_size']:g} of the training set (clean labels); the hyperparameters of each model, setting and "
        "seed are chosen on validation accuracy, the test split only reports the chosen model (its best-validation checkpoint)",
        f"grid `{options['grid']}`: `{json.dumps(study['grid'])}`",
        f"seeds {options['seeds']} (tables: mean ± std over seeds)",
        *_protocol_notes(protocol),
        f"presets: " + "; ".join(f"`{n}`: {p['description']}" for n, p in study["presets"].items()),
        f"compute: {with_time} finished cells, {seconds / 60:.1f} min of cell time; "
        + ", ".join(f"{k} {v}" for k, v in versions.items()),
    ])
