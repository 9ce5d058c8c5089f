"""``deepmargin attack`` end to end on digits checkpoints, and the accuracy-vs-epsilon report."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from deepmargin.attacks import IFGSM, TransferAttack
from deepmargin.cli import attack as attack_cli
from deepmargin.data import load_dataset
from deepmargin.models import build_model
from deepmargin.reports.robustness import accuracy_table, load_rows, plot_accuracy_vs_epsilon, write_rows
from deepmargin.training.checkpoint import save_checkpoint

from _helpers import fit


@pytest.fixture(scope="module")
def bundle():
    return load_dataset("digits", seed=0)


def _checkpoint(path, bundle, seed: int, dataset: str = "digits"):
    torch.manual_seed(seed)
    kwargs = {"num_classes": 10, "input_shape": [1, 8, 8], "hidden_sizes": [32]}
    model = build_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden_sizes=[32])
    fit(model, bundle.train.x, bundle.train.y, steps=60)
    save_checkpoint(path, model=model, model_name="mlp", model_kwargs=kwargs, config={"dataset": dataset, "seed": 0})
    return model.eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, bundle):
    root = tmp_path_factory.mktemp("ckpt")
    target = _checkpoint(root / "target.pt", bundle, seed=0)
    source = _checkpoint(root / "source.pt", bundle, seed=1)
    return root, target, source


def _parse(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    attack_cli.add_parser(sub)
    return parser.parse_args(["attack", *argv])


def test_cli_writes_rows_config_and_plot(checkpoints, bundle, tmp_path):
    root, target, source = checkpoints
    out = tmp_path / "out"
    n, eps = 120, [0.0, 0.05, 0.1]
    args = _parse([
        str(root / "target.pt"), "--source", str(root / "source.pt"),
        "--attacks", "fgsm", "ifgsm", "pgd", "noise", "--norms", "linf", "l2", "--eps", *map(str, eps),
        "--eps-l2", "0", "1", "--steps", "5", "--n", str(n), "--batch-size", "50", "--seed", "0", "1",
        "--out", str(out),
    ])
    assert attack_cli.run(args) == 0
    for name in ("rows.csv", "rows.jsonl", "config.json", "accuracy_vs_eps.png"):
        assert (out / name).stat().st_size > 0
    rows = load_rows(out / "rows.jsonl")
    assert load_rows(out / "rows.csv") == rows
    # fgsm, ifgsm: 1 seed; pgd (random start), noise: 2 seeds. linf 3 eps, l2 2 eps, noise 3 levels.
    # gradient attacks get white-box and transfer rows, noise only its own.
    expected = 2 * (3 + 2) * 2 + (3 + 2) * 2 * 2 + 3 * 2
    assert len(rows) == expected
    keys = {(r["attack"], r["norm"], r["eps"], r["seed"], r["setting"]) for r in rows}
    assert len(keys) == len(rows)  # one row per grid point
    assert {r["model"] for r in rows} == {"target"}
    assert {r["source"] for r in rows if r["setting"] == "transfer"} == {"source"}
    assert {r["seed"] for r in rows if r["attack"] == "pgd"} == {0, 1}
    clean = (target(bundle.test.x[:n]).argmax(1) == bundle.test.y[:n]).float().mean().item()
    for r in rows:
        assert r["n"] == n
        if r["eps"] == 0:
            assert r["accuracy"] == pytest.approx(clean)
    # the transfer rows equal the library computation
    ifgsm = [r for r in rows if r["attack"] == "ifgsm" and r["setting"] == "transfer" and r["norm"] == "linf"]
    x, y = bundle.test.x[:n], bundle.test.y[:n]
    for r in ifgsm:
        x_adv = TransferAttack(IFGSM(eps=r["eps"], steps=5), source)(target, x, y)
        assert r["correct"] == int((target(x_adv).argmax(1) == y).sum())
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == "digits" and config["n"] == n and config["seeds"] == [0, 1]
    assert config["eps"] == {"linf": eps, "l2": [0.0, 1.0]} and config["steps"] == 5


def test_cli_through_main_and_white_box_below_clean(checkpoints, tmp_path, capsys):
    from deepmargin.cli.main import main

    root, _, _ = checkpoints
    out = tmp_path / "main"
    code = main(["attack", str(root / "target.pt"), str(root / "source.pt"), "--attacks", "pgd",
                 "--eps", "0", "0.2", "--steps", "5", "--n", "80", "--out", str(out), "--no-plot"])
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    rows = load_rows(out / "rows.csv")
    assert {r["model"] for r in rows} == {"target", "source"}
    for model in ("target", "source"):
        by_eps = {r["eps"]: r["accuracy"] for r in rows if r["model"] == model}
        assert by_eps[0.2] < by_eps[0.0]
    assert not (out / "accuracy_vs_eps.png").exists()


def test_transfer_source_is_named_apart_from_a_model_with_the_same_stem(checkpoints, tmp_path):
    root, _, _ = checkpoints
    (tmp_path / "ce").mkdir()
    (tmp_path / "margin").mkdir()
    for name, src in (("ce", "source.pt"), ("margin", "target.pt")):
        (tmp_path / name / "best.pt").write_bytes((root / src).read_bytes())
    out = tmp_path / "out"
    args = _parse([str(tmp_path / "margin" / "best.pt"), "--source", str(tmp_path / "ce" / "best.pt"),
                   "--attacks", "fgsm", "--eps", "0", "0.1", "--n", "40", "--no-plot", "--out", str(out)])
    assert attack_cli.run(args) == 0
    rows = load_rows(out / "rows.csv")
    assert {r["model"] for r in rows} == {"margin/best"}
    assert {r["source"] for r in rows if r["setting"] == "transfer"} == {"ce/best"}


def test_autoattack_rows_carry_their_flags_and_ignored_options_are_named(checkpoints, tmp_path, caplog):
    root, _, _ = checkpoints
    out = tmp_path / "out"
    args = _parse([str(root / "target.pt"), "--attacks", "fgsm", "autoattack", "--autoattack-version", "fast",
                   "--loss", "margin", "--step-size", "0.01", "--steps", "3", "--eps", "0", "0.1", "--n", "20",
                   "--no-plot", "--out", str(out)])
    with caplog.at_level("WARNING", logger="deepmargin"):
        assert attack_cli.run(args) == 0
    warned = [r.getMessage() for r in caplog.records if "do not apply" in r.getMessage()]
    assert len(warned) == 1 and "--loss by autoattack" in warned[0] and "--step-size by fgsm, autoattack" in warned[0] \
        and "--steps by fgsm, autoattack" in warned[0], warned
    config = json.loads((out / "config.json").read_text())
    assert config["autoattack_version"] == "fast"
    assert config["ignored"] == {"steps": ["fgsm", "autoattack"], "step_size": ["fgsm", "autoattack"],
                                 "loss": ["autoattack"]}
    assert any("version='fast'" in a for a in config["attack_objects"])
    rows = load_rows(out / "rows.jsonl")
    assert all("flags" in r for r in rows)
    assert {r["flags"] for r in rows if r["attack"] == "fgsm"} == {None}
    auto = {r["eps"]: r for r in rows if r["attack"] == "autoattack"}
    assert auto[0.0]["flags"] is None and auto[0.0]["accuracy"] == rows[0]["accuracy"]  # eps 0: the clean inputs
    assert auto[0.1]["accuracy"] < auto[0.0]["accuracy"]
    header = (out / "rows.csv").read_text().splitlines()[0].split(",")
    assert "flags" in header


def test_autoattack_flags_that_fired_are_in_the_rows(checkpoints, tmp_path, monkeypatch):
    from deepmargin.attacks import autoattack

    root, _, _ = checkpoints
    monkeypatch.setattr(autoattack, "warn_if_probabilities", lambda *a, **k: True)  # pretend the check fired
    out = tmp_path / "out"
    args = _parse([str(root / "target.pt"), "--attacks", "autoattack", "--autoattack-version", "fast", "--eps", "0",
                   "0.05", "--n", "10", "--no-plot", "--out", str(out)])
    assert attack_cli.run(args) == 0
    rows = {r["eps"]: r["flags"] for r in load_rows(out / "rows.csv")}
    assert rows == {0.0: None, 0.05: "probabilities"}


def test_help_texts_name_every_attack_an_option_applies_to(capsys):
    from deepmargin.cli.main import COMMANDS, main

    with pytest.raises(SystemExit):
        _parse(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "steps of ifgsm/pgd/apgd-ce/apgd-dlr/apgd-t/fab" in text
    assert "randomised attacks (pgd, noise, apgd-*, fab, square, autoattack) run once per seed" in text
    assert "--autoattack-version {standard,fast,rand}" in text
    for name in ("attack", "robustness"):
        assert "AutoAttack" in COMMANDS[name] and "any classifier" in COMMANDS[name] and "\n" not in COMMANDS[name]
    with pytest.raises(SystemExit):
        main(["experiment", "--help"])
    assert "default: the protocol's (0.1; cifar10 8/255)" in " ".join(capsys.readouterr().out.split())


def test_cli_rejects_mixed_datasets(checkpoints, bundle, tmp_path):
    root, _, _ = checkpoints
    _checkpoint(tmp_path / "other.pt", bundle, seed=2, dataset="mnist")
    args = _parse([str(root / "target.pt"), str(tmp_path / "other.pt"), "--out", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="must all record the same dataset"):
        attack_cli.run(args)


@pytest.mark.parametrize(
    "argv,match",
    [(["--norms", "l1"], "must be one of linf, l2"), (["--eps", "-0.1"], "must be a finite float >= 0"),
     (["--attacks", "cw"], "invalid choice"), (["--steps", "0"], "must be an int >= 1")],
)
def test_cli_argument_errors(argv, match, capsys):
    with pytest.raises(SystemExit):
        _parse(["model.pt", *argv])
    assert match in capsys.readouterr().err


# ----------------------------------------------------------------------------- report


def _toy_rows():
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.1)):
        for eps in (0.0, 0.1, 0.2):
            rows.append(dict(model="ce", attack="ifgsm", norm="linf", eps=eps, accuracy=0.9 - eps - shift,
                             correct=0, n=10, seed=seed, setting="white-box", source=None))
            rows.append(dict(model="margin", attack="ifgsm", norm="linf", eps=eps, accuracy=0.9 - eps / 2,
                             correct=0, n=10, seed=seed, setting="transfer", source="ce"))
    rows.append(dict(model="ce", attack="pgd", norm="l2", eps=1.0, accuracy=0.3, correct=3, n=10, seed=0,
                     setting="white-box", source=None))
    return rows


def test_accuracy_table_averages_seeds():
    table = accuracy_table(_toy_rows())
    ce = [r for r in table if r["model"] == "ce" and r["norm"] == "linf"]
    assert [r["eps"] for r in ce] == [0.0, 0.1, 0.2]
    for r in ce:
        assert r["accuracy"] == pytest.approx(0.9 - r["eps"] - 0.05)
        assert r["accuracy_std"] == pytest.approx(0.05)
        assert r["seeds"] == 2


def test_plot_from_rows_and_files(tmp_path):
    rows = _toy_rows()
    csv_path, jsonl_path = write_rows(rows, tmp_path)
    for source in (rows, csv_path, jsonl_path):
        fig = plot_accuracy_vs_epsilon(source, title="t")
        assert [ax.get_title() for ax in fig.axes] == [r"$\ell_\infty$", r"$\ell_2$"]
        linf = fig.axes[0]
        labels = sorted(line.get_label() for line in linf.get_lines())
        assert labels == ["ce / ifgsm", "margin / ifgsm from ce"]
        ce_line = next(line for line in linf.get_lines() if line.get_label() == "ce / ifgsm")
        assert list(ce_line.get_xdata()) == [0.0, 0.1, 0.2]
        assert list(ce_line.get_ydata()) == pytest.approx([0.85, 0.75, 0.65])
        transfer = next(line for line in linf.get_lines() if "from" in line.get_label())
        assert transfer.get_linestyle() == "--"
    fig.savefig(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 0
    with pytest.raises(ValueError, match="must hold at least one row"):
        plot_accuracy_vs_epsilon([])
    with pytest.raises(ValueError, match=r"must end in \.csv or \.jsonl"):
        load_rows(csv_path.with_suffix(".csv").rename(tmp_path / "rows.txt"))


def test_write_rows_roundtrip_keeps_none_and_inf(tmp_path):
    rows = [dict(model="m", attack="noise", norm="snr_db", eps=math.inf, accuracy=0.5, correct=5, n=10, seed=None,
                 setting="noise", source=None)]
    csv_path, jsonl_path = write_rows(rows, tmp_path)
    assert load_rows(jsonl_path) == rows
    assert load_rows(csv_path) == rows
