"""``deepmargin detect`` end to end on tiny digits checkpoints, and the four-panel margin histograms."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from deepmargin.attacks import FGSM
from deepmargin.cli.detect import DETECT_FIELDS
from deepmargin.cli.main import main
from deepmargin.data import load_dataset
from deepmargin.metrics import MarginPValues, logit_margins, threshold_at_fpr
from deepmargin.models import build_model
from deepmargin.reports.histograms import PANELS, plot_margin_histograms, read_panel_margins, write_panel_margins
from deepmargin.training.checkpoint import save_checkpoint

from _helpers import fit

KWARGS = {"num_classes": 10, "input_shape": [1, 8, 8], "hidden_sizes": [32]}


@pytest.fixture(scope="module")
def bundle():
    return load_dataset("digits", seed=0)  # val_size 0.1: what the checkpoints' configs imply


def _model(bundle, seed: int, steps: int = 60):
    torch.manual_seed(seed)
    model = build_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden_sizes=[32])
    if steps:
        fit(model, bundle.train.x, bundle.train.y, steps=steps)
    return model.eval()


def _save(path, model, **config):
    save_checkpoint(path, model=model, model_name="mlp", model_kwargs=KWARGS, config={"dataset": "digits", "seed": 0, **config})
    return str(path)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, bundle):
    root = tmp_path_factory.mktemp("detect")
    target, source = _model(bundle, 0), _model(bundle, 1)
    return {
        "target": _save(root / "target.pt", target, loss="kesidis", loss_options={"mu": 2.0, "rectify": False}),
        "source": _save(root / "source.pt", source, loss="ce"),
        "no_val": _save(root / "no_val.pt", target, val_size=0.0),
        "models": (target, source),
    }


def _csv(path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def test_detect_end_to_end_with_source(checkpoints, bundle, tmp_path, capsys):
    out = tmp_path / "out"
    n, eps = 120, [0.05, 0.1]
    code = main(["-q", "detect", checkpoints["target"], "--source", checkpoints["source"],
                 "--attacks", "fgsm", "ifgsm", "pgd", "--eps", *map(str, eps), "--steps", "3", "--fpr", "0.05",
                 "--max-components", "4", "--n", str(n), "--out", str(out)])
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    for name in ("rows.csv", "rows.jsonl", "mixture.json", "margins.csv", "margin_histograms.png", "config.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "margin_histograms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    header, csv_rows = _csv(out / "rows.csv")
    assert header == list(DETECT_FIELDS)
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == len(csv_rows) == 3 * len(eps) * 2
    assert {(r["attack"], r["eps"], r["box"]) for r in rows} == {
        (a, e, b) for a in ("fgsm", "ifgsm", "pgd") for e in eps for b in ("white", "transfer")
    }
    for r in rows:
        assert set(r) == set(DETECT_FIELDS)
        assert 0.0 <= r["auc"] <= 1.0 and 0.0 <= r["tpr"] <= 1.0 and 0.0 <= r["fpr_test"] <= 1.0
        assert r["n"] == n and r["calibration"] == "val" and r["n_calibration"] == len(bundle.val)
        assert r["fpr_calibration"] <= 0.05 and r["per_class"] is True and r["seed"] == 0
        assert r["source"] == ("source" if r["box"] == "transfer" else None)
        assert (r["auc_fooled"] is None) == (r["n_fooled"] == 0)

    # the threshold and the clean FPR equal the library's computation
    target, source = checkpoints["models"]
    with torch.no_grad():
        train_logits = target(bundle.train.x)
        val_logits, test_logits = target(bundle.val.x), target(bundle.test.x[:n])
    mu_train = logit_margins(train_logits, bundle.train.y).numpy()
    ok = (train_logits.argmax(1) == bundle.train.y).numpy() & (mu_train > 0)
    est = MarginPValues(per_class=True, max_components=4, random_state=0).fit(mu_train[ok], bundle.train.y.numpy()[ok])
    p_val = est.pvalues(logit_margins(val_logits).numpy(), val_logits.argmax(1).numpy())
    threshold = threshold_at_fpr(p_val, 0.05)
    p_test = est.pvalues(logit_margins(test_logits).numpy(), test_logits.argmax(1).numpy())
    clean_acc = (test_logits.argmax(1) == bundle.test.y[:n]).double().mean().item()
    for r in rows:
        assert r["threshold"] == pytest.approx(threshold, rel=1e-9)
        assert r["fpr_test"] == pytest.approx((p_test < threshold).mean())
        assert r["clean_accuracy"] == pytest.approx(clean_acc)
    white = {(r["attack"], r["eps"]): r for r in rows if r["box"] == "white"}
    assert white[("fgsm", 0.1)]["accuracy"] < clean_acc
    assert white[("pgd", 0.1)]["accuracy"] < clean_acc

    mixture = json.loads((out / "mixture.json").read_text())
    assert mixture["mu"] == 2.0 and mixture["threshold"] == pytest.approx(threshold)
    assert mixture["n_train_fitted"] == int(ok.sum())
    fits = mixture["fit"]["classes"]
    assert sorted(fits, key=int) == [str(k) for k in range(10)]
    for k, f in fits.items():
        assert len(f["bic"]) == min(4, f["n_samples"]) and f["n_components"] == est.n_components_[int(k)]
        np.testing.assert_allclose(f["means"], est.means_[int(k)])

    panels = read_panel_margins(out / "margins.csv")
    assert {k: len(v) for k, v in panels.items()} == {"train": len(bundle.train), "heldout": n, "test": n, "attacked": n}
    np.testing.assert_allclose(panels["train"], mu_train, rtol=1e-6)
    assert (panels["test"] >= 0).all() and (panels["heldout"] < 0).any() == (clean_acc < 1)
    # panel (d): FGSM at the first eps, crafted on --source, margins of the target by its own decision
    x_adv = FGSM(eps=eps[0]).sweep(source, bundle.test.x[:n], bundle.test.y[:n], [eps[0]])[0]
    with torch.no_grad():
        np.testing.assert_allclose(panels["attacked"], logit_margins(target(x_adv)).numpy(), rtol=1e-5, atol=1e-6)
    config = json.loads((out / "config.json").read_text())
    assert config["histogram"] == {"attack": "fgsm", "eps": 0.05, "box": "transfer"} and config["fpr"] == 0.05


def test_detect_pooled_without_validation_split(checkpoints, bundle, tmp_path):
    out = tmp_path / "pooled"
    assert main(["-q", "detect", checkpoints["no_val"], "--attacks", "ifgsm", "--eps", "0", "0.1", "--steps", "2",
                 "--pooled", "--no-plot", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    half = len(bundle.test) // 2
    assert [(r["attack"], r["eps"], r["box"]) for r in rows] == [("ifgsm", 0.0, "white"), ("ifgsm", 0.1, "white")]
    for r in rows:  # the threshold is set on the first half of the test split, measured on the rest
        assert r["calibration"] == "test-first-half" and r["n_calibration"] == half
        assert r["n"] == len(bundle.test) - half and r["per_class"] is False
    assert rows[0]["auc"] == pytest.approx(0.5) and rows[0]["tpr"] == pytest.approx(rows[0]["fpr_test"])
    fit_ = json.loads((out / "mixture.json").read_text())["fit"]
    assert fit_["per_class"] is False and len(fit_["bic"]) == 10 and len(fit_["weights"]) == fit_["n_components"]
    assert not (out / "margin_histograms.png").exists()
    # no fgsm in --attacks: panel (d) is still FGSM (white-box, no --source)
    assert len(read_panel_margins(out / "margins.csv")["attacked"]) == len(bundle.test) - half


def test_detect_errors(checkpoints, bundle, tmp_path, capsys):
    assert main(["detect", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("deepmargin detect: error: Checkpoint file") and err.count("\n") == 1
    for bad in ("0", "1", "1.5", "x"):
        with pytest.raises(SystemExit):
            main(["detect", checkpoints["target"], "--fpr", bad])
        assert "--fpr: must be a float in (0, 1)" in capsys.readouterr().err
    # a model that always says class 0: no correct training sample of the other classes
    path = _save(tmp_path / "constant.pt", _constant_model(bundle))
    assert main(["detect", path, "--attacks", "fgsm", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "at least 2 correctly classified training samples of every class" in err and "0 for class 1" in err
    assert "--pooled" in err
    other = _save(tmp_path / "moons.pt", _model(bundle, 0, steps=0), dataset="moons")
    assert main(["detect", checkpoints["target"], "--source", other, "--out", str(tmp_path / "m")]) == 2
    assert "must record the same dataset" in capsys.readouterr().err


def _constant_model(bundle):
    model = _model(bundle, 0, steps=0)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[0] = 1.0
    return model


# --------------------------------------------------------------------------- the figure


def test_histograms_figure_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    data = {"train": rng.gamma(5, 2, 200), "heldout": rng.normal(8, 4, 80), "test": rng.gamma(3, 2, 80),
            "attacked": np.r_[rng.gamma(1, 1, 79), np.inf]}
    fig = plot_margin_histograms(**data, mu=10.0, titles={"attacked": "(d) mine"}, title="t")
    axes = fig.axes
    assert [ax.get_title() for ax in axes][3] == "(d) mine" and len(axes) == 4
    assert any(abs(line.get_xdata()[0] - 10.0) < 1e-12 for line in axes[0].get_lines())  # the mu line
    assert "1 non-finite left out" in axes[3].texts[0].get_text()
    assert "< 0" in axes[1].texts[0].get_text()
    path = write_panel_margins(tmp_path / "m.csv", **data)
    back = read_panel_margins(path)
    assert list(back) == list(PANELS)
    for k in PANELS:
        np.testing.assert_array_equal(back[k], data[k])
    far = plot_margin_histograms(*(np.ones(3),) * 4, mu=1e6)
    assert "off the axis" in far.axes[0].texts[0].get_text()
    with pytest.raises(ValueError, match="'titles' parameter of plot_margin_histograms must hold 4 titles"):
        plot_margin_histograms(*(np.ones(3),) * 4, titles=["a"])
    with pytest.raises(ValueError, match="'bins' parameter"):
        plot_margin_histograms(*(np.ones(3),) * 4, bins=0)
