"""``deepmargin robustness`` end to end: summary, margin report, histogram, config, errors."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math

import numpy as np
import pytest
import torch

from deepmargin.cli.main import build_parser, main
from deepmargin.data import load_dataset
from deepmargin.models import build_model
from deepmargin.reports.margins import (
    MARGIN_FIELDS,
    atomic_write,
    load_margin_rows,
    plot_margin_histogram,
    write_rows_atomic,
)
from deepmargin.training.checkpoint import load_model, save_checkpoint

from _helpers import fit


def _train(path, dataset: str, hidden: list[int], *, seed: int, steps: int, lr: float):
    """Full-batch Adam on the training split; saved as a checkpoint that records its dataset."""
    bundle = load_dataset(dataset, seed=0)
    kwargs = {"num_classes": bundle.num_classes, "input_shape": list(bundle.input_shape), "hidden_sizes": hidden}
    torch.manual_seed(seed)
    model = build_model("mlp", num_classes=bundle.num_classes, input_shape=bundle.input_shape, hidden_sizes=hidden)
    fit(model, bundle.train.x, bundle.train.y, steps=steps, lr=lr)
    save_checkpoint(path, model=model, model_name="mlp", model_kwargs=kwargs, config={"dataset": dataset, "seed": 0})
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("robustness_ckpt")
    return {
        # briefly trained, so that some of the first test inputs are misclassified
        "digits": _train(root / "digits.pt", "digits", [32], seed=0, steps=20, lr=1e-2),
        # no hidden layer: a linear model, on unbounded 2-D inputs
        "lin_a": _train(root / "lin_a.pt", "moons", [], seed=0, steps=60, lr=5e-2),
        "lin_b": _train(root / "lin_b.pt", "moons", [], seed=1, steps=5, lr=5e-2),
    }


N = 64


@pytest.fixture(scope="module")
def digits_result(ckpts, tmp_path_factory):
    """One run on the digits MLP: both norms, unsorted and repeated budgets, chunks of 40 inputs."""
    out = tmp_path_factory.mktemp("robustness") / "out"
    argv = ["-q", "robustness", str(ckpts["digits"]), "--norms", "l2", "linf", "--eps-l2", "1", "0.1", "0.5", "0.5",
            "--eps-linf", "0.3", "0.05", "0.1", "--n", str(N), "--steps", "10", "--batch-size", "40", "--out", str(out)]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(argv)
    return out, code, buffer.getvalue()


def _summary(out):
    with (out / "summary.jsonl").open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_subcommand_is_registered():
    _, modules = build_parser()
    assert "robustness" in modules
    assert callable(modules["robustness"].run) and callable(modules["robustness"].add_parser)


def test_writes_every_file_and_prints_a_table(digits_result):
    out, code, stdout = digits_result
    assert code == 0
    for name in ("summary.csv", "summary.jsonl", "margins.csv", "config.json", "margin_histogram.png"):
        assert (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*.tmp"))
    lines = stdout.splitlines()
    assert lines[0].split()[:3] == ["model", "norm", "attack"]
    assert sum(1 for line in lines if line.startswith("digits ")) == 2
    assert "wrote" in lines[-1] and "margins.csv" in lines[-1]


def test_config_records_the_resolved_options(digits_result):
    out, _, _ = digits_result
    config = json.loads((out / "config.json").read_text())
    assert config["command"] == "robustness" and config["dataset"] == "digits"
    assert config["n"] == N and config["attack"] == "fmn" and config["steps"] == 10 and config["batch_size"] == 40
    assert config["norms"] == ["l2", "linf"]
    assert config["eps"] == {"l2": [0.1, 0.5, 1.0], "linf": [0.05, 0.1, 0.3]}  # sorted, de-duplicated
    assert config["bounds"] == [0.0, 1.0]
    assert "FMN(norm=2.0, steps=10" in config["attack_objects"]["l2"]
    assert config["rho_adv_attack"].startswith("DeepFool(norm=2.0")


def test_summary_rows_agree_with_the_margin_rows(digits_result, ckpts):
    out, _, _ = digits_result
    rows = _summary(out)
    assert [(r["model"], r["norm"], r["attack"]) for r in rows] == [("digits", "l2", "fmn"), ("digits", "linf", "fmn")]
    with (out / "summary.csv").open(newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert len(csv_rows) == 2 and json.loads(csv_rows[0]["error_at_eps"]) == rows[0]["error_at_eps"]

    margins = load_margin_rows(out / "margins.csv")
    assert len(margins) == 2 * N
    model, _ = load_model(ckpts["digits"])
    test = load_dataset("digits", seed=0).test
    x, y = test.x[:N], test.y[:N]
    with torch.no_grad():
        pred = model(x).argmax(1)
    for row in rows:
        mine = [m for m in margins if m["norm"] == row["norm"]]
        assert [m["index"] for m in mine] == list(range(N))  # chunks of 40 keep their global index
        assert [m["label"] for m in mine] == y.tolist()
        assert [m["pred"] for m in mine] == pred.tolist()
        d = np.array([m["min_norm"] for m in mine])
        assert row["n"] == N
        assert row["clean_accuracy"] == pytest.approx(float((pred == y).double().mean()))
        assert row["median_distance"] == pytest.approx(float(np.median(d)), rel=1e-6)
        errors = row["error_at_eps"]
        assert row["eps"] == sorted(row["eps"]) and len(errors) == len(row["eps"])
        assert all(a <= b for a, b in zip(errors, errors[1:])), errors
        assert errors == pytest.approx([float(np.mean(d <= e)) for e in row["eps"]])
        assert all(e >= 1 - row["clean_accuracy"] - 1e-12 for e in errors)
        ok = [m for m in mine if m["correct"] and math.isfinite(m["min_norm"])]
        assert row["mean_min_norm"] == pytest.approx(np.mean([m["min_norm"] for m in ok]))
        assert row["mean_linearized"] == pytest.approx(np.mean([m["linearized"] for m in ok]))
    l2, linf = rows
    assert l2["rho_adv"] is not None and 0 < l2["rho_adv"] < math.inf
    assert linf["rho_adv"] is None and csv_rows[1]["rho_adv"] == ""


def test_misclassified_inputs_have_min_norm_zero(digits_result):
    out, _, _ = digits_result
    margins = load_margin_rows(out / "margins.csv")
    wrong = [m for m in margins if not m["correct"]]
    right = [m for m in margins if m["correct"]]
    assert wrong, "the briefly trained model should misclassify some of the first test inputs"
    assert all(m["min_norm"] == 0.0 and m["pred"] != m["label"] for m in wrong)
    assert all(m["linearized"] <= 0 for m in wrong)
    assert all(m["min_norm"] > 0 and m["linearized"] > 0 and m["pred"] == m["label"] for m in right)
    assert all(m["gap"] == pytest.approx(m["min_norm"] - m["linearized"], abs=1e-6) for m in margins)


# FMN reaches the exact distance d (up to its tolerance). DeepFool steps onto the linear boundary in
# one step of length d + nudge and scales the total by 1 + overshoot (defaults 1e-4 and 0.02).
@pytest.mark.parametrize(
    ("attack", "expected", "rel"),
    [("fmn", lambda d: d, 1e-3), ("deepfool", lambda d: 1.02 * (d + 1e-4), 1e-4)],
)
def test_linear_model_distances_are_the_closed_form(ckpts, tmp_path, attack, expected, rel):
    out = tmp_path / "out"
    code = main(["-q", "robustness", str(ckpts["lin_a"]), str(ckpts["lin_b"]), "--attack", attack,
                 "--eps-l2", "0.1", "1", "--eps-linf", "0.1", "1", "--n", str(N), "--out", str(out)])
    assert code == 0
    margins = load_margin_rows(out / "margins.csv")
    assert len(margins) == 2 * 2 * N and {m["attack"] for m in margins} == {attack}
    test = load_dataset("moons", seed=0).test
    x, y = test.x[:N].double(), test.y[:N]
    checked = 0
    for name in ("lin_a", "lin_b"):
        model, _ = load_model(ckpts[name])
        w, b = model.fc1.weight.detach().double(), model.fc1.bias.detach().double()
        z = x @ w.T + b
        f = z[:, 0] - z[:, 1]  # logit difference, class 0 minus class 1
        for norm, q in (("l2", 2), ("linf", 1)):
            exact = f.abs() / torch.linalg.vector_norm(w[0] - w[1], ord=q)  # |f(x)| / ||w_0 - w_1||_q
            for m in margins:
                if m["model"] != name or m["norm"] != norm:
                    continue
                i = m["index"]
                correct = bool((f[i] > 0) == (y[i] == 0))
                assert m["correct"] == correct
                if not correct:
                    assert m["min_norm"] == 0.0
                    assert m["linearized"] == pytest.approx(-float(exact[i]), rel=1e-4, abs=1e-5)
                    continue
                assert m["linearized"] == pytest.approx(float(exact[i]), rel=1e-4, abs=1e-5)
                assert m["min_norm"] == pytest.approx(expected(float(exact[i])), rel=rel, abs=1e-5)
                checked += 1
    assert checked > N  # most inputs of both models are classified correctly


def test_histogram_is_redrawn_from_margins_csv(ckpts, tmp_path):
    out = tmp_path / "out"
    assert main(["-q", "robustness", str(ckpts["lin_a"]), str(ckpts["lin_b"]), "--norms", "l2",
                 "--n", "40", "--steps", "5", "--out", str(out)]) == 0
    rows = load_margin_rows(out / "margins.csv")
    fig = plot_margin_histogram(out / "margins.csv")
    assert len(fig.axes) == 1
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    for name in ("lin_a", "lin_b"):
        shown = sum(1 for r in rows if r["model"] == name and r["correct"] and math.isfinite(r["min_norm"]))
        assert any(label.startswith(f"{name} (n={shown}") for label in labels), labels
    assert len(plot_margin_histogram(rows, value="gap").axes) == 1
    with pytest.raises(ValueError, match="'value' parameter of plot_margin_histogram must be one of"):
        plot_margin_histogram(rows, value="margin")
    with pytest.raises(ValueError, match="must hold at least one row"):
        plot_margin_histogram([])


def test_margin_rows_round_trip(tmp_path):
    rows = [dict(model="m", norm="l2", attack="fmn", index=i, label=1, pred=p, correct=p == 1, nearest_class=0,
                 linearized=0.5 * i - 0.25, min_norm=math.inf if i == 2 else 0.5 * i, gap=0.25) for i, p in
            enumerate([0, 1, 1])]
    path = write_rows_atomic(tmp_path / "margins.csv", rows, fieldnames=MARGIN_FIELDS)
    assert load_margin_rows(path) == rows
    assert load_margin_rows(write_rows_atomic(tmp_path / "margins.jsonl", rows)) == rows


def test_a_failing_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "summary.csv"
    path.write_text("old\n")

    def crash(handle):
        handle.write("half a row,")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, crash)
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv"]
    with pytest.raises(ValueError, match="must end in .csv or .jsonl. Got"):
        write_rows_atomic(tmp_path / "rows.txt", [])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--norms", "l3"], "must be one of linf, l2"),
        (["--eps-l2", "-1"], "must be a finite float >= 0. Got '-1' instead."),
        (["--eps-linf", "nan"], "must be a finite float >= 0. Got 'nan' instead."),
        (["--n", "0"], "must be an int >= 1. Got '0' instead."),
        (["--attack", "pgd"], "invalid choice: 'pgd'"),
    ],
)
def test_bad_options_exit_with_a_usage_error(ckpts, extra, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["robustness", str(ckpts["lin_a"]), *extra])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_values_give_one_clear_line(ckpts, tmp_path, capsys):
    cases = [
        ([str(ckpts["lin_a"]), str(tmp_path / "missing.pt")], "does not exist"),
        ([str(ckpts["lin_a"]), "--norms", "l2", "--eps-linf", "0.1"],
         "The '--eps-linf' option of deepmargin robustness needs linf in --norms. Got --norms l2 instead."),
        ([str(ckpts["lin_a"]), str(ckpts["digits"])], "must all record the same dataset"),
    ]
    for argv, message in cases:
        out = tmp_path / "out"
        assert main(["-q", "robustness", *argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("deepmargin robustness: error: ") and message in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not out.exists()  # nothing is written when the input is bad


def _cell(value):
    """A certified-radius cell of margins.csv (``load_margin_rows`` keeps unknown columns as text)."""
    return None if value in ("", None) else float(value)


def test_certified_radii_are_below_the_attack_distances(digits_result, ckpts):
    from deepmargin.metrics import lipschitz_upper_bound, purity_radius

    out, _, stdout = digits_result
    rows = _summary(out)
    l2, linf = rows
    margins = load_margin_rows(out / "margins.csv")
    assert all(_cell(m["certified_kesidis"]) is None and _cell(m["certified_tsuzuku"]) is None
               for m in margins if m["norm"] == "linf")
    mine = [m for m in margins if m["norm"] == "l2"]
    kesidis = np.array([_cell(m["certified_kesidis"]) for m in mine])
    tsuzuku = np.array([_cell(m["certified_tsuzuku"]) for m in mine])
    assert (kesidis >= 0).all() and (tsuzuku >= 0).all() and (kesidis > 0).any() and (tsuzuku > 0).any()
    checked = 0
    for m, k, t in zip(mine, kesidis, tsuzuku):
        if m["correct"] and math.isfinite(m["min_norm"]):  # certified radius <= true distance <= attack distance
            assert k <= m["min_norm"] and t <= m["min_norm"], m
            checked += 1
    assert checked > N // 2

    # the bounds and radii are the library's, recomputed from the checkpoint
    model, _ = load_model(ckpts["digits"])
    x = load_dataset("digits", seed=0).test.x[:N]
    lip_2 = lipschitz_upper_bound(model, tuple(x.shape[1:]), norm="l2")
    lip_inf = lipschitz_upper_bound(model, tuple(x.shape[1:]), norm="linf-l2")
    assert l2["lipschitz_l2"] == pytest.approx(lip_2, rel=1e-6)
    assert l2["lipschitz_linf_l2"] == pytest.approx(lip_inf, rel=1e-6)
    assert 0 < l2["lipschitz_linf_l2"] <= l2["lipschitz_l2"]
    assert kesidis == pytest.approx(purity_radius(model, x, lipschitz=lip_inf).numpy(), rel=1e-5, abs=1e-7)
    assert tsuzuku == pytest.approx(purity_radius(model, x, lipschitz=lip_2, theorem="tsuzuku").numpy(), rel=1e-5,
                                    abs=1e-7)
    correct = np.array([m["correct"] for m in mine])
    for key, values in (("median_certified_kesidis", kesidis), ("median_certified_tsuzuku", tsuzuku)):
        assert l2[key] == pytest.approx(float(np.median(np.where(correct, values, 0.0))), rel=1e-6)
        assert l2[key] <= l2["median_distance"]
        assert linf[key] is None
    assert linf["lipschitz_l2"] is None and linf["lipschitz_linf_l2"] is None
    config = json.loads((out / "config.json").read_text())
    assert config["certify"] is True and config["lipschitz_iterations"] == 100
    assert config["lipschitz"]["digits"] == {"l2": pytest.approx(lip_2, rel=1e-6), "linf-l2": pytest.approx(lip_inf, rel=1e-6)}
    assert "cert_kesidis" in stdout.splitlines()[0] and "cert_tsuzuku" in stdout.splitlines()[0]


def test_certified_radii_of_a_linear_model_are_below_the_exact_distance(ckpts, tmp_path):
    out = tmp_path / "out"
    assert main(["-q", "robustness", str(ckpts["lin_a"]), "--norms", "l2", "--n", str(N), "--steps", "5",
                 "--out", str(out)]) == 0
    margins = load_margin_rows(out / "margins.csv")
    model, _ = load_model(ckpts["lin_a"])
    x = load_dataset("moons", seed=0).test.x[:N].double()
    w, b = model.fc1.weight.detach().double(), model.fc1.bias.detach().double()
    z = x @ w.T + b
    exact = (z[:, 0] - z[:, 1]).abs() / torch.linalg.vector_norm(w[0] - w[1])  # distance to the decision boundary
    # the bounds of a linear model are its spectral norm and largest row norm
    (row,) = _summary(out)
    assert row["lipschitz_l2"] == pytest.approx(float(torch.linalg.matrix_norm(w, ord=2)), rel=1e-6)
    assert row["lipschitz_linf_l2"] == pytest.approx(float(w.norm(dim=1).max()), rel=1e-6)
    tsuzuku = torch.tensor([_cell(m["certified_tsuzuku"]) for m in margins], dtype=torch.float64)
    kesidis = torch.tensor([_cell(m["certified_kesidis"]) for m in margins], dtype=torch.float64)
    assert torch.allclose(tsuzuku, (z[:, 0] - z[:, 1]).abs() / (math.sqrt(2) * row["lipschitz_l2"]), rtol=1e-4)
    assert bool((tsuzuku <= exact * (1 + 1e-5)).all()) and bool((kesidis <= exact * (1 + 1e-5)).all())
    assert bool((tsuzuku > 0).all())


def test_no_certify_leaves_the_columns_empty(ckpts, tmp_path):
    out = tmp_path / "out"
    assert main(["-q", "robustness", str(ckpts["lin_a"]), "--norms", "l2", "--no-certify", "--n", "16",
                 "--steps", "5", "--no-plot", "--out", str(out)]) == 0
    (row,) = _summary(out)
    for key in ("lipschitz_l2", "lipschitz_linf_l2", "median_certified_kesidis", "median_certified_tsuzuku"):
        assert row[key] is None
    margins = load_margin_rows(out / "margins.csv")
    assert len(margins) == 16
    assert all(_cell(m["certified_kesidis"]) is None and _cell(m["certified_tsuzuku"]) is None for m in margins)
    config = json.loads((out / "config.json").read_text())
    assert config["certify"] is False and config["lipschitz"] is None
