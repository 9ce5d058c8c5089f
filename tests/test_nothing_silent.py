"""Inputs that used to be accepted silently (or answered with a foreign error) get the house error."""

from __future__ import annotations

import warnings

import sys

import pytest
import torch
from torch import nn

from deepmargin.cli.main import main
from deepmargin.training import TrainConfig


@pytest.mark.parametrize("argv, flag, owner", [
    (["--loss", "ce", "--layers", "nosuch"], "--layers", "margin"),
    (["--loss", "hinge", "--gamma", "2"], "--gamma", "margin"),
    (["--loss", "margin", "--hinge-margin", "2"], "--hinge-margin", "hinge"),
    (["--loss", "vat", "--exact"], "--exact", "margin"),
])
def test_an_option_of_another_loss_is_refused_naming_both_losses(argv, flag, owner, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *argv, "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"The {flag} option of deepmargin train is an option of loss '{owner}'" in err
    assert f"--loss '{argv[1]}' does not use" in err
    assert not out.exists()  # nothing trained, nothing written


def test_options_of_the_chosen_loss_are_still_taken(tmp_path):
    from deepmargin.cli.main import build_parser
    from deepmargin.cli.train import config_from_args

    parser, _ = build_parser()
    args = parser.parse_args(["train", "--loss", "margin", "--layers", "input", "--gamma", "2", "--exact"])
    config = config_from_args(args)
    assert config.layers == ["input"] and config.gamma == 2.0 and config.approximate is False


def test_the_api_warns_about_a_field_the_chosen_loss_ignores():
    with pytest.warns(UserWarning, match="'layers' parameter of TrainConfig is an option of loss 'margin'; loss 'ce' ignores it"):
        TrainConfig(loss="ce", layers=["nosuch"])
    with pytest.warns(UserWarning, match="'top_k'.*loss 'hinge' ignores it"):
        TrainConfig(loss="hinge", top_k=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TrainConfig(loss="margin", layers=["input"], gamma=[2.0], top_k=3)  # its own options: no warning
        TrainConfig(loss="hinge", hinge_margin=2.0)
        TrainConfig.from_dict(TrainConfig(loss="margin", gamma=2.0).to_dict())


def test_a_binary_config_file_gets_the_house_error(tmp_path, capsys):
    path = tmp_path / "weights.json"
    path.write_bytes(bytes(range(128, 256)) * 4)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "The --config option of deepmargin train must be a JSON file of TrainConfig fields" in err
    assert "not UTF-8 text" in err and "codec" not in err


def test_the_losses_listing_names_only_real_flags_and_valid_ranges(capsys):
    assert main(["losses"]) == 0
    listing = capsys.readouterr().out
    assert "--approximate" not in listing and "--exact (sets approximate)" in listing
    round_line = next(line for line in listing.splitlines() if "round_epochs" in line)
    assert "an int >= 1" in round_line and ">= 0" not in round_line


def test_layer_table_leaves_a_batch_norm_model_exactly_as_found():
    from deepmargin.capture import layer_table

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4, 2))
    model.train()
    model[3].eval()  # a frozen submodule stays frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    rows = layer_table(model, torch.zeros(1, 3))  # a batch of one zero: train-mode batch norm would fail or update
    assert [r["shape"] for r in rows[1:]] == [(4,), (4,), (4,), (4,), (2,)]
    assert [m.training for m in model.modules()] == modes
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # running statistics untouched


def test_every_third_party_import_is_a_declared_dependency():
    """Issue 17, item 15: scipy was imported but not declared."""
    import ast
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = (root / "pyproject.toml").read_text()
    block = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    declared = {re.split(r"[<>=!~ ]", d.strip().strip('",'))[0].lower() for d in block.splitlines() if d.strip()}
    names = {"scikit-learn": "sklearn"}
    importable = {names.get(d, d) for d in declared if d}
    used = set()
    for path in (root / "src" / "deepmargin").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                used.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                used.add(node.module.split(".")[0])
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    third_party = {u for u in used if u not in stdlib and u != "deepmargin"}
    assert third_party <= importable, f"imported but not declared: {sorted(third_party - importable)}"


def test_train_download_fetches_only_with_the_flag(tmp_path, monkeypatch, capsys):
    import deepmargin.data.download as download

    calls = []

    def fake(name, root=None, **kwargs):
        calls.append((name, root))
        raise download.DownloadError(f"offline test: {name}")

    monkeypatch.setattr(download, "download_dataset", fake)
    assert main(["train", "--data", "mnist", "--data-root", str(tmp_path / "data"), "--download",
                 "--out", str(tmp_path / "run")]) == 2
    assert calls == [("mnist", str(tmp_path / "data"))] and "offline test: mnist" in capsys.readouterr().err
    calls.clear()
    assert main(["train", "--data", "mnist", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "run")]) == 2
    assert calls == []  # nothing downloads without --download
    # experiment --download fetches before the study starts (and nothing is written when it fails)
    assert main(["experiment", "noisy-labels", "--data", "mnist", "--data-root", str(tmp_path / "data"), "--download",
                 "--out", str(tmp_path / "study")]) == 2
    assert calls == [("mnist", str(tmp_path / "data"))] and not (tmp_path / "study").exists()


def test_help_and_a_mistyped_command_import_no_subcommand():
    """Issue 17, item 19: `deepmargin --help` and a parse error import neither torch nor any subcommand."""
    import subprocess

    code = ("import sys; from deepmargin.cli.main import main\n"
            "for argv in (['--help'], ['trian']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('MODULES', sorted(m for m in sys.modules if m == 'torch' or (m.startswith('deepmargin.') and "
            "m not in ('deepmargin.cli', 'deepmargin.cli.main'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "COMMAND" in done.stdout and "invalid choice: 'trian'" in done.stderr
    assert done.stdout.split("MODULES", 1)[1].strip() == "[]"


def test_each_subcommand_lists_the_one_line_help_of_the_table():
    from deepmargin.cli.main import COMMANDS, build_parser

    parser, _ = build_parser()
    listed = {a.dest: a.help for a in parser._subparsers._group_actions[0]._choices_actions}
    assert listed == COMMANDS


def test_a_checkpoint_with_non_finite_weights_is_refused_for_evaluation(tmp_path, capsys):
    """Issue 17, item 3: evaluate, attack, robustness and detect refuse it, naming the tensor."""
    from deepmargin.training import TrainConfig, train
    from deepmargin.training.checkpoint import load_checkpoint, load_model, save_checkpoint

    run = tmp_path / "run"
    train(TrainConfig(dataset="digits", epochs=1, train_fraction=0.1), run, verbose=False)
    ckpt = load_checkpoint(run / "best.pt")
    state = ckpt["model_state"]
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    from deepmargin.models import build_model

    kwargs = dict(ckpt["model_kwargs"])
    model = build_model(ckpt["model_name"], **kwargs)
    model.load_state_dict(state)
    bad = tmp_path / "nan.pt"
    save_checkpoint(bad, model=model, model_name=ckpt["model_name"], model_kwargs=kwargs, config=ckpt["config"],
                    epoch=1, metrics={})
    with pytest.raises(ValueError, match=f"holds non-finite weights: '{name}'"):
        load_model(bad)
    assert load_model(bad, allow_non_finite=True)[0] is not None
    for argv in (["evaluate", str(bad)], ["attack", str(bad), "--n", "20", "--out", str(tmp_path / "a")],
                 ["robustness", str(bad), "--n", "20", "--out", str(tmp_path / "r")]):
        assert main(argv) == 2
        assert f"holds non-finite weights: '{name}'" in capsys.readouterr().err


def test_item_10_errors_name_the_parameter_and_what_to_do(tmp_path, capsys):
    """evaluate --json DIR, an integer input to LargeMarginLoss and a corrupt last.pt get the house error."""
    from deepmargin import LargeMarginLoss
    from deepmargin.training import TrainConfig, train

    run = tmp_path / "run"
    train(TrainConfig(dataset="digits", epochs=1, train_fraction=0.1), run, verbose=False)
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert main(["evaluate", str(run / "best.pt"), "--json", str(folder)]) == 2
    assert "is a directory; give a file path" in capsys.readouterr().err

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    criterion = LargeMarginLoss(model, ["input", "1"], gamma=1.0)
    with pytest.raises(TypeError, match="'x' parameter of LargeMarginLoss must be a floating-point tensor.*int64"):
        criterion(torch.ones(2, 3, dtype=torch.long), torch.zeros(2, dtype=torch.long))

    (run / "last.pt").write_bytes(b"not a checkpoint")
    before = (run / "best.pt").read_bytes()
    assert main(["train", "--data", "digits", "--epochs", "2", "--train-fraction", "0.1", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "corrupt or truncated" in err and "--overwrite" in err
    assert (run / "best.pt").read_bytes() == before  # nothing already written is touched


def test_a_study_plan_does_not_log_a_validation_split_of_zero(caplog):
    """Issue 17, item 18: `experiment` logged 'val=0' while every cell holds out a validation split."""
    import logging

    from deepmargin.experiments import StudyOptions, build_plan

    with caplog.at_level(logging.INFO, logger="deepmargin"):
        build_plan(StudyOptions(studies=("noisy-labels",), losses=("ce",), seeds=(0,), noise_levels=(0.0,), grid="none"))
    text = caplog.text
    assert "val=0" not in text and "holds out its protocol's validation share" in text


def test_the_boundary_grid_restores_each_module_own_mode():
    """Issue 17, item 11: model.train(was_training) unfroze a frozen batch norm."""
    from deepmargin.reports.boundary import decision_grid

    model = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    model.train()
    model[1].eval()
    decision_grid(model, torch.randn(10, 2), resolution=5)
    assert model.training and not model[1].training


def test_a_verdict_from_too_few_seeds_or_within_its_spread_says_it_is_not_evidence():
    """Issue 17, item 17: 'margin-l2 beat ce ... +36.8 ± 0.0' from one seed read like a finding."""
    from deepmargin.reports.study import _verdict

    def rows(accs):
        return [{"loss": loss, "label_noise": 0.0, "seed": seed, "test_acc": acc}
                for loss, per_seed in accs.items() for seed, acc in enumerate(per_seed)]

    one_seed = _verdict(rows({"ce": [0.5], "margin-l2": [0.868]}), "label_noise", ["ce", "margin-l2"], "noise")
    assert "beat ce" in one_seed[0] and "**Not evidence**: 1 seed per setting" in one_seed[0]
    noisy = _verdict(rows({"ce": [0.5, 0.6, 0.5], "margin-l2": [0.6, 0.5, 0.52]}), "label_noise", ["ce", "margin-l2"], "noise")
    assert "within the spread of the paired differences" in noisy[0]
    clear = _verdict(rows({"ce": [0.5, 0.6, 0.55], "margin-l2": [0.7, 0.8, 0.76]}), "label_noise", ["ce", "margin-l2"], "noise")
    assert "beat ce" in clear[0] and "Not evidence" not in clear[0]


def test_a_grid_never_picks_a_collapsed_run_and_its_row_says_so():
    """Issue 17, item 20: a run at chance sat in the study as an ordinary 10.0%."""
    from deepmargin.experiments.studies import ROW_COLUMNS, _collapse_reason, select_runs

    collapsed = {"reason": "the training accuracy stayed at chance", "likely_causes": ["gamma=18.4 may be far above"]}
    results = {"a": {"best_val_acc": 0.99, "collapsed": collapsed}, "b": {"best_val_acc": 0.5, "collapsed": None}}
    assert select_runs(results, ["a", "b"]) == "b"  # the higher validation accuracy of a collapsed run does not count
    only = {"a": {"best_val_acc": 0.1, "collapsed": collapsed}, "c": {"best_val_acc": 0.12, "collapsed": collapsed}}
    assert select_runs(only, ["a", "c"]) == "c"  # when every candidate collapsed, the row carries the verdict
    assert "collapsed" in ROW_COLUMNS
    assert _collapse_reason(only["c"]) == "the training accuracy stayed at chance (likely: gamma=18.4 may be far above)"
    assert _collapse_reason({"collapsed": None}) is None and _collapse_reason({}) is None


def test_attack_and_robustness_log_their_progress_when_not_on_a_terminal(tmp_path, caplog):
    """Issue 17, item 16: both commands printed nothing until they finished."""
    import logging

    from deepmargin.training import TrainConfig, train

    run = tmp_path / "run"
    train(TrainConfig(dataset="digits", epochs=1, train_fraction=0.1), run, verbose=False)
    with caplog.at_level(logging.INFO, logger="deepmargin"):
        assert main(["attack", str(run / "best.pt"), "--attacks", "fgsm", "ifgsm", "--norms", "linf", "--eps", "0.1",
                     "--n", "20", "--out", str(tmp_path / "a"), "--no-plot"]) == 0
        assert main(["robustness", str(run / "best.pt"), "--norms", "l2", "--n", "20", "--out", str(tmp_path / "r")]) == 0
    text = caplog.text
    assert "attack: 1/2 steps (fgsm linf seed 0)" in text and "attack: 2/2 steps" in text
    assert "robustness: 3/3 steps" in text


def test_the_report_of_an_unfinished_study_says_it_is_partial(tmp_path):
    """Issue 17, item 17: a report of an unfinished study read like a finished one."""
    import shutil

    out = tmp_path / "study"
    assert main(["-q", "experiment", "noisy-labels", "--losses", "ce", "hinge", "--seeds", "0", "--noise", "0",
                 "--epochs", "1", "--grid", "none", "--out", str(out), "--no-progress", "--jobs", "1"]) == 0
    assert "Partial study" not in (out / "report.md").read_text()
    gone = next(p for p in (out / "train").glob("hinge/*/*") if p.is_dir())
    shutil.rmtree(gone)
    assert main(["-q", "report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "**Partial study**: 1 of 2 cells are not finished" in report and gone.name in report


def test_a_study_is_never_written_among_files_that_are_not_its_own(tmp_path, monkeypatch, capsys):
    """Found by a hostile run: --out '' wrote the study into the working directory, and a training
    run's folder (or a file) was accepted as a study folder."""
    from deepmargin.training import TrainConfig, train

    run = tmp_path / "run"
    train(TrainConfig(dataset="digits", epochs=1, train_fraction=0.1), run, verbose=False)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    monkeypatch.chdir(tmp_path)
    base = ["experiment", "noisy-labels", "--losses", "ce", "--seeds", "0", "--noise", "0", "--epochs", "1",
            "--grid", "none", "--no-report", "--out"]
    for out, says in (("", "not empty nor the working directory"), (str(a_file), "a file"),
                      (str(run), "holds a training run")):
        before = sorted(p.name for p in run.iterdir())
        assert main([*base, out]) == 2
        assert says in capsys.readouterr().err
        assert sorted(p.name for p in run.iterdir()) == before
    assert not (tmp_path / "study.json").exists()


def test_a_radius_given_twice_is_measured_once(tmp_path):
    import csv

    from deepmargin.training import TrainConfig, train

    run = tmp_path / "run"
    train(TrainConfig(dataset="digits", epochs=1, train_fraction=0.1), run, verbose=False)
    out = tmp_path / "attack"
    assert main(["-q", "attack", str(run / "best.pt"), "--attacks", "fgsm", "--norms", "linf", "--eps", "0.1", "0.1",
                 "--n", "20", "--out", str(out), "--no-plot"]) == 0
    with open(out / "rows.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["eps"]) for r in rows] == [0.1]


def test_a_study_option_no_chosen_study_reads_is_named():
    """Issue 17 leftover: `experiment noisy-labels --fractions 0.5` ignored --fractions silently."""
    from deepmargin.experiments.studies import StudyOptions, unused_options

    assert unused_options(StudyOptions(studies=("noisy-labels", "limited-data"), fractions=(0.5,), noise_levels=(0.2,))) == []
    texts = unused_options(StudyOptions(studies=("noisy-labels",), fractions=(0.5,), eps=(0.1,), fpr=0.1, attack_n=5))
    assert [t.split()[0] for t in texts] == ["--fractions", "--eps", "--attack-n", "--fpr"]
    assert "adversarial and compare-methods studies" in texts[2]
    assert unused_options(StudyOptions(studies=("compare-methods",), attack_n=5, autoattack="none")) == []
