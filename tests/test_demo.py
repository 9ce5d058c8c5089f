"""The demo end to end on its small setting, and the report helpers it uses."""

from __future__ import annotations

import csv
import json
import math
import statistics

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from deepmargin.cli.main import main
from deepmargin.experiments import QUICK_SETTINGS, DemoSettings, demo_configs, run_demo
from deepmargin.models import build_model
from deepmargin.reports import (
    accuracy_table,
    decision_grid,
    format_table,
    load_boundary_data,
    plot_accuracy_grid,
    plot_decision_boundaries,
    plot_training_curves,
    save_boundary_data,
)
from deepmargin.training import read_jsonl


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = read_jsonl(out / "results.jsonl")
    runs = demo_configs(QUICK_SETTINGS)
    assert len(rows) == len(runs) == 2 * len(QUICK_SETTINGS.noise_levels) * len(QUICK_SETTINGS.seeds) + 2
    digits = [r for r in rows if r["dataset"] == "digits"]
    assert {(r["loss"], r["label_noise"]) for r in digits} == {(l, n) for l in ("ce", "margin") for n in (0.0, 0.4)}
    for r in rows:
        assert 0.0 <= r["test_acc"] <= 1.0 and r["epochs"] == (QUICK_SETTINGS.epochs if r["dataset"] == "digits" else QUICK_SETTINGS.toy_epochs)
        assert (out / r["run"] / "best.pt").is_file()
    with open(out / "results.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(rows)
    # the printed table is the one saved, and shows each loss at each noise level
    table = (out / "accuracy_table.txt").read_text()
    assert table.strip() in printed
    ce_clean = next(r["test_acc"] for r in digits if r["loss"] == "ce" and r["label_noise"] == 0.0)
    assert f"{100 * ce_clean:.2f}" in table
    # the picture and the data it is drawn from
    assert (out / "boundary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = load_boundary_data(out / "boundary.npz")
    assert len(data["panels"]) == 2 and data["panels"][0].shape == (QUICK_SETTINGS.resolution, QUICK_SETTINGS.resolution, 2)
    np.testing.assert_allclose(data["panels"][1].sum(axis=-1), 1.0, atol=1e-5)
    assert "cross-entropy" in str(data["titles"][0]) and "large margin" in str(data["titles"][1])
    # running again reuses the finished runs and gives the same numbers
    again = run_demo(out, quick=True)
    assert [r["test_acc"] for r in again.rows] == [r["test_acc"] for r in rows]


def test_demo_configs_cover_the_grid():
    settings = DemoSettings(seeds=(0, 1), noise_levels=(0.0, 0.2, 0.4))
    runs = demo_configs(settings)
    names = [n for n, _ in runs]
    assert len(set(names)) == len(names) == 2 * 2 * 3 + 2
    margin = [c for n, c in runs if c.dataset == "digits" and c.loss == "margin"]
    assert all(c.gamma == settings.margin["gamma"] and c.top_k == settings.margin["top_k"] for c in margin)
    assert {c.label_noise for c in margin} == {0.0, 0.2, 0.4} and {c.seed for c in margin} == {0, 1}
    toy = [c for _, c in runs if c.dataset == settings.toy_dataset]
    assert [c.loss for c in toy] == ["ce", "margin"] and all(c.model == "mlp" for c in toy)
    with pytest.raises(TypeError, match="'settings' parameter of run_demo must be a DemoSettings"):
        run_demo("unused", settings={"epochs": 1})
    with pytest.raises(ValueError, match="'num_threads' parameter of run_demo"):
        run_demo("unused", num_threads=0)


# ------------------------------------------------------------------------------------------ reports

def test_format_table_aligns_columns():
    text = format_table([{"name": "a", "x": 1.5}, {"name": "long name", "x": 10.25}, {"name": "b", "x": None}],
                        floatfmt=".1f")
    lines = text.splitlines()
    assert lines[0].split() == ["name", "x"]
    assert len({len(line) for line in lines[:3]}) == 1  # header, rule and widest row have the same width
    assert lines[2].endswith(" 1.5") and lines[3].endswith("10.2") and lines[4].rstrip() == "b"


def test_accuracy_table_means_and_stds():
    rows = [{"loss": "ce", "label_noise": 0.0, "test_acc": a} for a in (0.9, 0.8, 0.85)]
    rows += [{"loss": "margin", "label_noise": 0.0, "test_acc": 0.95}, {"loss": "margin", "label_noise": 0.4, "test_acc": None}]
    text = accuracy_table(rows)
    mean, std = statistics.fmean([90.0, 80.0, 85.0]), statistics.stdev([90.0, 80.0, 85.0])
    assert f"{mean:.2f} ± {std:.2f} (n=3)" in text
    assert "95.00" in text and "label_noise=0.4" not in text  # rows without a value are skipped


def test_decision_grid_of_a_linear_model_has_the_exact_boundary(tmp_path):
    model = build_model("mlp", num_classes=2, input_shape=(2,), hidden_sizes=())
    with torch.no_grad():
        model.fc1.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, -1.0]]))
        model.fc1.bias.zero_()
    points = torch.tensor([[-1.0, -2.0], [2.0, 1.0]])
    xs, ys, probs = decision_grid(model, points, resolution=21, padding=0.5)
    assert xs[0] == pytest.approx(-1.5) and xs[-1] == pytest.approx(2.5) and ys[0] == pytest.approx(-2.5)
    gx, gy = np.meshgrid(xs, ys)
    expected = 1 / (1 + np.exp(-(gx - gy)))  # p(class 1) = sigmoid(x - y)
    np.testing.assert_allclose(probs[..., 1], expected, rtol=1e-5, atol=1e-6)
    path = save_boundary_data(tmp_path / "b.npz", xs=xs, ys=ys, panels={"a": probs, "b": 1 - probs},
                              titles={"a": "first"}, x_train=points, y_train=torch.tensor([0, 1]))
    fig = plot_decision_boundaries(path)
    assert isinstance(fig, Figure) and [ax.get_title() for ax in fig.axes] == ["first", "b"]
    with pytest.raises(ValueError, match="'points' parameter of decision_grid must have shape"):
        decision_grid(model, torch.zeros(3, 3))


def test_decision_boundaries_with_three_classes():
    model = build_model("mlp", num_classes=3, input_shape=(2,), hidden_sizes=(4,))
    pts = torch.randn(10, 2)
    xs, ys, probs = decision_grid(model, pts, resolution=10)
    data = {"xs": xs, "ys": ys, "panels": [probs], "titles": ["m"], "x_train": pts.numpy(), "y_train": np.arange(10) % 3}
    fig = plot_decision_boundaries(data)
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "m"


def test_training_curves_and_accuracy_grid_from_rows(tmp_path):
    rows = [{"epoch": e, "train_loss": 1 / e, "train_acc": 1 - 1 / (e + 1), "val_acc": None} for e in (1, 2, 3)]
    fig = plot_training_curves({"run": rows}, metrics=("train_loss", "val_acc"))
    loss_ax, val_ax = fig.axes
    assert len(loss_ax.lines) == 1 and list(loss_ax.lines[0].get_ydata()) == [1.0, 0.5, 1 / 3]
    assert len(val_ax.lines) == 0  # no values to draw
    grid = [{"loss": l, "label_noise": n, "test_acc": a, "seed": s}
            for l, base in (("ce", 0.9), ("margin", 0.95)) for n in (0.0, 0.4) for s, a in enumerate((base - n / 10, base - n / 5))]
    fig = plot_accuracy_grid(grid)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "label_noise" and len(ax.get_legend().get_texts()) == 2
    line = ax.lines[0]
    assert list(line.get_xdata()) == [0.0, 0.4]
    assert list(line.get_ydata()) == pytest.approx([0.9, 0.9 - 0.4 * 0.15])
    assert all(math.isfinite(v) for v in line.get_ydata())


def test_demo_refuses_a_folder_with_other_settings(tmp_path):
    tiny = DemoSettings(epochs=1, seeds=(0,), noise_levels=(0.0,), train_fraction=0.1, toy_samples=20, toy_epochs=1,
                        resolution=5)
    first = run_demo(tmp_path, settings=tiny)
    assert len(first.rows) == 4 and first.files["boundary"].is_file()
    other = DemoSettings(**{**tiny.__dict__, "epochs": 2})
    with pytest.raises(ValueError, match=r"holds demo runs made with other settings.*epochs: 1 \(saved\) != 2 \(now\)"):
        run_demo(tmp_path, settings=other)
    assert json.loads((tmp_path / "config.json").read_text())["settings"]["epochs"] == 1
    redone = run_demo(tmp_path, settings=other, overwrite=True)
    assert all(r["epochs"] == 2 for r in redone.rows if r["dataset"] == "digits")
