"""compare-methods: every default method end to end on a tiny setting; rows equal the single-method commands."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from deepmargin.attacks import FMN, IFGSM
from deepmargin.cli.main import main
from deepmargin.data import load_dataset
from deepmargin.experiments import COMPARE_METHODS, StudyOptions, build_plan, compare_grid, run_study
from deepmargin.experiments.protocol import PROTOCOLS
from deepmargin.metrics import distance_summary
from deepmargin.training import TrainConfig, train
from deepmargin.training.checkpoint import load_model

METRICS = {
    ("deepfool", "rho_adv"), ("fmn-l2", "median_distance"), ("fmn-l2", "error_at_eps"), ("fmn-linf", "median_distance"),
    ("fmn-linf", "error_at_eps"), ("ifgsm", "accuracy"), ("fgsm", "accuracy"), ("purity-tsuzuku", "median_radius"),
    ("purity-kesidis", "median_radius"), ("purity-tsuzuku", "lipschitz"), ("purity-kesidis", "lipschitz"),
    ("detect", "auc"), ("detect", "tpr_at_fpr"), ("cost", "step_time_ratio"), ("cost", "peak_memory_ratio"),
}


def _value(r):
    return math.inf if r["value"] == "inf" else r["value"]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """Every default method, one seed, one epoch, on 400 digits (a .npz file): about a minute on 2 cores."""
    out = tmp_path_factory.mktemp("compare")
    bundle = load_dataset("digits", val_size=0.0, seed=0)
    data = out.parent / "tiny-digits.npz"
    np.savez(data, x_train=bundle.train.x[:400].numpy(), y_train=bundle.train.y[:400].numpy(),
             x_test=bundle.test.x[:24].numpy(), y_test=bundle.test.y[:24].numpy())
    options = StudyOptions(studies=("compare-methods",), dataset=str(data), seeds=(0,), grid="none", epochs=1)
    result = run_study(options, out, jobs=1, report=False)
    return out, result, data


@pytest.mark.slow
def test_every_default_method_runs_end_to_end_with_every_measurement(tiny_study):
    out, result, _ = tiny_study
    rows = [r for r in result.rows if r["study"] == "compare-methods"]
    for method in COMPARE_METHODS:
        mine = [r for r in rows if r["loss"] == method]
        assert {r["label_noise"] for r in mine if r["attack"] == "none"} == {0.0, 0.4}, method
        assert {(r["attack"], r["metric"]) for r in mine if r["metric"]} >= METRICS, method
        for r in mine:
            if r["metric"] in ("accuracy", "error_at_eps", "auc", "tpr_at_fpr"):
                assert 0.0 <= r["value"] <= 1.0, (method, r)
            if r["metric"] in ("median_distance", "median_radius", "lipschitz", "step_time_ratio"):
                assert _value(r) >= 0, (method, r)
            if r["metric"] == "rho_adv":
                assert r["value"] is None or r["value"] >= 0, (method, r)  # None: DeepFool found nothing to measure
    ce_cost = next(r for r in rows if r["loss"] == "ce" and r["metric"] == "step_time_ratio")
    assert ce_cost["value"] == 1.0
    matyasko = next(r for r in rows if r["loss"] == "matyasko-l2" and r["metric"] == "step_time_ratio")
    assert matyasko["value"] > 1.5  # double backpropagation is measurably dearer than cross-entropy


@pytest.mark.slow
def test_rows_equal_the_single_method_commands(tiny_study, tmp_path):
    out, result, data = tiny_study
    rows = [r for r in result.rows if r["study"] == "compare-methods" and r["loss"] == "margin-l2"]
    clean = next(r for r in rows if r["attack"] == "none" and r["label_noise"] == 0.0)
    config = json.loads((out / clean["run"] / "config.json").read_text())
    again = train(TrainConfig.from_dict(config), tmp_path / "again", verbose=False)
    assert again.test_acc_best == clean["test_acc"]

    model, meta = load_model(out / clean["run"] / "best.pt")
    model.eval()
    bundle = load_dataset(str(data), val_size=0.0, seed=0)
    x, y = bundle.test.x, bundle.test.y
    summary = distance_summary(model, x, y, norm=2, eps=[0.5], attack=FMN(norm=2, bounds=(0.0, 1.0)))
    fmn = {r["metric"]: r["value"] for r in rows if r["attack"] == "fmn-l2"}
    assert _value({"value": fmn["median_distance"]}) == pytest.approx(float(summary["median_distance"]), rel=1e-5)
    assert fmn["error_at_eps"] == pytest.approx(float(summary["error"][0]))
    white = next(r for r in rows if r["attack"] == "ifgsm" and r["box"] == "white")
    adv = IFGSM(eps=0.1, bounds=(0.0, 1.0))(model, x, y)
    with torch.no_grad():
        assert white["value"] == pytest.approx(float((model(adv).argmax(1) == y).float().mean()))

    cli = tmp_path / "robustness"
    assert main(["robustness", str(out / clean["run"] / "best.pt"), "--norms", "l2", "--attack", "fmn", "--n", "24",
                 "--out", str(cli)]) == 0


def test_the_compare_grid_searches_only_each_methods_own_weight():
    grid = compare_grid("reduced", PROTOCOLS["digits"])
    assert grid["matyasko"] == {"C": [0.03, 0.1]} and grid["default"] == {}
    assert grid["dropout"] == {"dropout": [0.25, 0.5]} and "dropout" not in grid["margin"]
    plan = build_plan(StudyOptions(studies=("compare-methods",), seeds=(0, 1), losses=("ce", "j2", "dropout")))
    train_ids = [c for c in plan.cells if c.startswith("train/")]
    assert len(train_ids) == 2 * 2 * (1 + 2 + 2)  # settings x seeds x grid points (ce 1, j2 2, dropout 2)
    assert {c for c in plan.cells if c.startswith("compare/")} == {f"compare/{m}/seed{s}" for m in ("ce", "j2", "dropout") for s in (0, 1)}
    assert plan.compare == {"noise": 0.4, "eps_l2": 0.5, "eps_linf": 0.1, "fpr": 0.05}
    with pytest.raises(ValueError, match="'fpr' parameter of StudyOptions must be a float in \\(0, 1\\)"):
        StudyOptions(studies=("compare-methods",), fpr=1.5)


def test_overwrite_deletes_the_compare_and_cost_cells_too(tmp_path):
    from deepmargin.experiments.engine import _delete_study

    (tmp_path / "study.json").write_text("{}")
    for cell in ("compare/ce/seed0", "cost/compare", "train/ce/x", "eval/ce/seed0"):
        (tmp_path / cell).mkdir(parents=True)
        (tmp_path / cell / "rows.json").write_text("{}")
    (tmp_path / "mine.txt").write_text("not the study's")
    _delete_study(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
