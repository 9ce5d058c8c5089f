"""run_detection: the one margin p-value detection pipeline, called by `deepmargin detect` and compare-methods."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from deepmargin.attacks import build_attack
from deepmargin.cli.main import main
from deepmargin.data import load_dataset
from deepmargin.experiments.checkpoints import load_training_bundle
from deepmargin.experiments.detection import DETECT_FIELDS, detect_checkpoint, margin_settings, run_detection
from deepmargin.models import build_model
from deepmargin.training.checkpoint import save_checkpoint

from _helpers import fit

KWARGS = {"num_classes": 10, "input_shape": [1, 8, 8], "hidden_sizes": [16]}


@pytest.fixture(scope="module")
def bundle():
    return load_dataset("digits", seed=0)


def _model(bundle, seed: int, steps: int = 40):
    torch.manual_seed(seed)
    model = build_model("mlp", **KWARGS)
    return fit(model, bundle.train.x, bundle.train.y, steps=steps).eval()


@pytest.fixture(scope="module")
def paths(tmp_path_factory, bundle):
    root = tmp_path_factory.mktemp("pipeline")
    out = {}
    for name, seed, loss in (("target", 0, "ce"), ("source", 1, "ce")):
        out[name] = str(root / f"{name}.pt")
        save_checkpoint(out[name], model=_model(bundle, seed), model_name="mlp", model_kwargs=KWARGS,
                        config={"dataset": "digits", "seed": 0, "loss": loss})
    return out


def _same_rows(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert set(ra) == set(DETECT_FIELDS)
        for key in DETECT_FIELDS:
            if isinstance(ra[key], float) and isinstance(rb[key], float) and math.isnan(ra[key]):
                assert math.isnan(rb[key])
            else:
                assert ra[key] == rb[key], key


def test_library_gives_the_rows_of_the_command(paths, tmp_path):
    args = ["--source", paths["source"], "--attacks", "fgsm", "pgd", "--eps", "0.05", "0.1", "--steps", "3",
            "--n", "80", "--max-components", "3", "--seed", "2", "--no-plot"]
    assert main(["-q", "detect", paths["target"], *args, "--out", str(tmp_path / "cli")]) == 0
    cli_rows = [json.loads(line) for line in (tmp_path / "cli" / "rows.jsonl").read_text().splitlines()]

    run = detect_checkpoint(paths["target"], source=paths["source"], attacks=["fgsm", "pgd"], eps=[0.05, 0.1],
                            steps=3, n=80, max_components=3, seed=2)
    _same_rows(run.result.rows, cli_rows)
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["attack_objects"] == run.config["attack_objects"]

    # and run_detection on the pieces, without any checkpoint file
    from deepmargin.training import load_model

    model, meta = load_model(paths["target"])
    source, _ = load_model(paths["source"])
    data = load_training_bundle(meta)
    attacks = {a: build_attack(a, norm="linf", bounds=(0.0, 1.0), steps=3, seed=2) for a in ("fgsm", "pgd")}
    result = run_detection(model.eval(), data, attacks=attacks, eps=[0.05, 0.1], source=source.eval(),
                           source_name="source", n=80, max_components=3, seed=2, name="target",
                           checkpoint=paths["target"], rectify=margin_settings(meta)[0])
    _same_rows(result.rows, cli_rows)
    assert result.n == 80 and result.calibration == "val" and result.n_calibration == len(data.val)
    assert result.panels["attacked"] is not None and result.histogram == {"attack": "fgsm", "eps": 0.05, "box": "transfer"}


def test_transfer_only_auto_per_class_and_kept_adversarials(paths, bundle):
    from deepmargin.training import load_model

    model, _ = load_model(paths["target"])
    source, _ = load_model(paths["source"])
    fgsm = build_attack("fgsm", eps=0.1)
    result = run_detection(model.eval(), bundle, attacks={"fgsm": fgsm}, eps=[0.1], source=source.eval(),
                           source_name="ce", white_box=False, per_class="auto", n=60, check=False,
                           histogram=False, keep_adversarial=True)
    assert [(r["box"], r["attack"], r["eps"]) for r in result.rows] == [("transfer", "fgsm", 0.1)]
    x_adv = result.adversarial[("transfer", "fgsm", 0.1)]
    torch.testing.assert_close(x_adv, fgsm(source, bundle.test.x[:60], bundle.test.y[:60]), rtol=0, atol=0)
    assert result.panels["attacked"] is None and isinstance(result.per_class, bool)
    assert 0.0 <= result.rows[0]["auc"] <= 1.0
    # an untrained model decides classes it has no correctly classified sample of: pooled
    torch.manual_seed(0)
    untrained = build_model("mlp", **KWARGS).eval()
    pooled = run_detection(untrained, bundle, attacks={"fgsm": fgsm}, eps=[0.1], per_class="auto", n=60, check=False)
    assert pooled.per_class is False and pooled.estimator.per_class is False


def test_errors(paths, bundle):
    from deepmargin.training import load_model

    model, _ = load_model(paths["target"])
    fgsm = {"fgsm": build_attack("fgsm")}
    with pytest.raises(ValueError, match=r"The 'per_class' parameter of run_detection must be True, False or 'auto'"):
        run_detection(model, bundle, attacks=fgsm, eps=[0.1], per_class="yes")
    with pytest.raises(ValueError, match=r"The 'source' parameter of run_detection must be a model"):
        run_detection(model, bundle, attacks=fgsm, eps=[0.1], white_box=False)
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="per-class fit of deepmargin detect needs at least 2"):
        run_detection(build_model("mlp", **KWARGS).eval(), bundle, attacks=fgsm, eps=[0.1], check=False)
    assert np.isfinite(run_detection(model, bundle, attacks=fgsm, eps=[0.1], n=20, check=False).threshold)
