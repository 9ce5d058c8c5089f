"""The ``deepmargin`` command line: train / evaluate / layers smoke tests and error reporting."""

from __future__ import annotations

import json

import pytest
import torch

from deepmargin.cli.main import build_parser, main
from deepmargin.data import load_dataset
from deepmargin.training import load_checkpoint, load_model, read_jsonl


TRAIN = ["train", "--data", "digits", "--train-fraction", "0.2", "--epochs", "1", "--batch-size", "32"]


@pytest.fixture(scope="module")
def margin_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    argv = [*TRAIN, "--loss", "margin", "--gamma", "1", "--top-k", "2", "--alpha", "1", "--norm", "inf",
            "--layers", "input", "relu3", "--dropout", "0.1", "--lr-schedule", "cosine", "--out", str(out)]
    assert main(["-q", *argv]) == 0
    return out


def test_train_writes_a_run(margin_run, capsys):
    for name in ("config.json", "metrics.jsonl", "metrics.csv", "last.pt", "best.pt", "results.json"):
        assert (margin_run / name).is_file(), name
    config = json.loads((margin_run / "config.json").read_text())
    assert config["loss"] == "margin" and config["norm"] == "inf" and config["layers"] == ["input", "relu3"]
    assert config["gamma"] == 1.0 and config["top_k"] == 2 and config["alpha"] == 1.0
    assert config["model_kwargs"] == {"dropout": 0.1} and config["lr_schedule"] == "cosine"
    assert config["train_fraction"] == 0.2 and config["epochs"] == 1
    rows = read_jsonl(margin_run / "metrics.jsonl")
    assert len(rows) == 1 and rows[0]["loss"] == "margin"
    meta = load_checkpoint(margin_run / "last.pt")
    assert meta["model_kwargs"]["dropout"] == 0.1 and meta["config"] == config


def test_train_prints_a_summary(tmp_path, capsys):
    assert main(["-q", *TRAIN, "--loss", "hinge", "--out", str(tmp_path / "h")]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "h" / "results.json").read_text())
    assert f"test accuracy     {result['test_acc']:.4f}" in out
    assert json.loads((tmp_path / "h" / "config.json").read_text())["loss"] == "hinge"


def test_train_resumes_and_reads_a_config_file(margin_run, tmp_path, capsys):
    # same options from the saved config.json: the finished run is recognised, not retrained
    assert main(["-q", "train", "--config", str(margin_run / "config.json"), "--out", str(margin_run)]) == 0
    assert "resumed from      epoch 1" in capsys.readouterr().out
    assert len(read_jsonl(margin_run / "metrics.jsonl")) == 1
    # one more epoch is another configuration: refused with a clear message
    code = main(["-q", "train", "--config", str(margin_run / "config.json"), "--epochs", "2", "--out", str(margin_run)])
    assert code == 2
    err = capsys.readouterr().err
    assert "deepmargin train: error:" in err and "refusing to resume" in err and "epochs: 1 (saved) != 2 (now)" in err


def test_evaluate_reports_accuracy_and_margins(margin_run, tmp_path, capsys):
    out_json = tmp_path / "eval.json"
    assert main(["-q", "evaluate", str(margin_run / "best.pt"), "--norm", "2", "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out_json.read_text())
    # independent accuracy: reload the checkpoint and predict the test split
    model, meta = load_model(margin_run / "best.pt")
    bundle = load_dataset("digits", seed=meta["config"]["seed"], train_fraction=0.2)
    with torch.no_grad():
        acc = (model(bundle.test.x).argmax(1) == bundle.test.y).double().mean().item()
    assert result["accuracy"] == pytest.approx(acc, abs=1e-12)
    assert result["n"] == len(bundle.test) and result["norm"] == 2.0
    assert list(result["layers"]) == ["input", "relu3"]  # the checkpoint's margin layers
    for summary in result["layers"].values():
        # a linearised margin is negative exactly when the sample is misclassified
        assert summary["frac_negative"] == pytest.approx(1 - acc, abs=1e-12)
        assert summary["q05"] <= summary["median"] <= summary["q95"]
    assert f"test accuracy  {acc:.4f}" in printed and "relu3" in printed


def test_evaluate_with_chosen_layers_and_split(margin_run, capsys):
    assert main(["-q", "evaluate", str(margin_run / "last.pt"), "--layers", "relu1", "fc1", "--split", "val",
                 "--max-samples", "20", "--norm", "inf"]) == 0
    printed = capsys.readouterr().out
    assert "val accuracy" in printed and "on 20 samples" in printed and "fc1" in printed and "linearised linf margins" in printed


def test_layers_command(capsys):
    assert main(["layers", "--model", "mnist_cnn"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert list(lines) == ["input", "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc1", "relu3", "fc2"]
    assert "32x28x28" in lines["relu1"] and "yes" in lines["relu1"] and "3136" in lines["flatten"]
    assert main(["layers", "--model", "mlp", "--input-shape", "2", "--hidden-sizes", "4"]) == 0
    assert "relu1" in capsys.readouterr().out


def test_train_list_layers(capsys):
    assert main(["train", "--data", "digits", "--model", "digits_cnn", "--list-layers"]) == 0
    out = capsys.readouterr().out
    assert "relu3" in out and "16x8x8" in out


def test_subcommands_are_registered():
    parser, modules = build_parser()
    assert {"train", "evaluate", "demo", "layers"} <= set(modules)
    for name, module in modules.items():
        assert callable(module.run) and callable(module.add_parser)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--epochs", "0"], "must be an int >= 1. Got '0' instead."),
        (["train", "--loss", "svm"], "invalid choice: 'svm'"),
        (["train", "--data", "imagenet"], "invalid choice: 'imagenet'"),
        (["train", "--gamma", "-1"], "must be a float > 0. Got '-1' instead."),
        (["train", "--label-noise", "1.5"], r"must be a float in [0, 1). Got '1.5' instead."),
        (["evaluate"], "the following arguments are required: checkpoint"),
    ],
)
def test_bad_arguments_exit_with_a_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*TRAIN, "--loss", "margin", "--layers", "input", "relu1", "--gamma", "1", "2", "3"], "'gamma' parameter of TrainConfig"),
        ([*TRAIN, "--norm", "0.5"], "'norm' parameter of TrainConfig must be a real number p >= 1 or 'inf'. Got '0.5' instead."),
        ([*TRAIN, "--loss", "margin", "--layers", "input", "conv7"], "conv7"),
        ([*TRAIN, "--model-kwargs", '{"depth": 3}'], "must be among"),
        (["evaluate", "no/such/file.pt"], "does not exist"),
        (["train", "--config", "no/such/config.json"], "does not exist"),
    ],
)
def test_bad_values_give_one_clear_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["-q", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"deepmargin {argv[0]}: error: ") and message in err
    assert "Traceback" not in err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_evaluate_rejects_a_dataset_that_does_not_fit(margin_run, capsys):
    assert main(["-q", "evaluate", str(margin_run / "best.pt"), "--data", "moons"]) == 2
    assert "does not fit the checkpoint's model" in capsys.readouterr().err


def test_options_map_onto_the_config():
    from deepmargin.cli.train import config_from_args

    parser, _ = build_parser()
    args = parser.parse_args(["train", "--loss", "margin", "--exact", "--gamma", "0.5", "--norm", "1",
                              "--hidden-sizes", "8", "4", "--model", "mlp", "--batch-norm", "--optimizer", "sgd",
                              "--scores", "softmax", "--aggregation", "sum", "--top-k", "3", "--grad-clip", "2"])
    cfg = config_from_args(args)
    assert cfg.approximate is False and cfg.gamma == 0.5 and cfg.norm == 1.0 and cfg.momentum is None
    assert cfg.model_kwargs == {"hidden_sizes": [8, 4], "batch_norm": True}
    assert (cfg.scores, cfg.aggregation, cfg.top_k, cfg.grad_clip) == ("softmax", "sum", 3, 2.0)
    default = config_from_args(parser.parse_args(["train"]))
    assert default.approximate is True and default.loss == "ce" and default.model_kwargs == {}


# ------------------------------------------------------------------------------- review fixes

TOY = ["train", "--data", "moons", "--model", "mlp", "--hidden-sizes", "8", "--epochs", "1", "--batch-size", "32"]


def test_overwrite_alone_restarts_and_refuses_resume(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["-q", *TOY, "--out", out]) == 0
    assert main(["-q", *TOY, "--out", out]) == 0
    assert "resumed from      epoch 1" in capsys.readouterr().out
    assert main(["-q", *TOY, "--lr", "0.02", "--out", out, "--overwrite"]) == 0  # no --no-resume needed
    printed = capsys.readouterr().out
    assert "resumed from" not in printed
    assert json.loads((tmp_path / "r" / "config.json").read_text())["lr"] == 0.02
    assert main(["-q", *TOY, "--out", out, "--resume", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("deepmargin train: error: ") and "--overwrite" in err and "--resume" in err


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A tiny moons run with 30% label noise and no validation split."""
    out = tmp_path_factory.mktemp("toy") / "run"
    assert main(["-q", *TOY, "--label-noise", "0.3", "--val-size", "0", "--epochs", "2", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("command", ["train", "evaluate", "attack", "robustness"])
@pytest.mark.parametrize("device", ["gpu", "cuda", "cuda:x"])
def test_bad_or_missing_device_gives_one_clear_line(command, device, toy_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on machines with a GPU
    monkeypatch.chdir(tmp_path)
    argv = [*TOY, "--out", str(tmp_path / "x")] if command == "train" else [command, str(toy_run / "best.pt")]
    assert main(["-q", *argv, "--device", device]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"deepmargin {command}: error: ") and "Traceback" not in err
    assert f"Got {device!r} instead" in err and ("--device" in err or "'device'" in err)
    if device == "cuda":
        assert "torch.cuda.is_available() is False" in err
    assert not (tmp_path / "x").exists()


def test_unexpected_runtime_errors_still_raise(monkeypatch):
    from deepmargin.cli import layers

    def broken(args):
        raise RuntimeError("an internal bug")

    monkeypatch.setattr(layers, "run", broken)
    with pytest.raises(RuntimeError, match="an internal bug"):
        main(["-q", "layers", "--model", "mlp", "--input-shape", "2"])


def test_config_file_momentum_does_not_follow_another_optimizer(tmp_path):
    from deepmargin.cli.train import config_from_args
    from deepmargin.training import TrainConfig, build_optimizer

    parser, _ = build_parser()
    new_style = tmp_path / "new.json"
    new_style.write_text(json.dumps(TrainConfig(optimizer="sgd").to_dict()))
    old_style = tmp_path / "old.json"  # config files of older versions stored the resolved default
    old_style.write_text(json.dumps({**TrainConfig(optimizer="sgd").to_dict(), "momentum": 0.9}))
    for path in (new_style, old_style):
        for optimizer, expected in (("rmsprop", 0.0), ("adam", None), ("sgd", 0.9)):
            cfg = config_from_args(parser.parse_args(["train", "--config", str(path), "--optimizer", optimizer]))
            opt = build_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.ones(1))], lr=0.1, momentum=cfg.momentum)
            assert opt.defaults.get("momentum") == expected, (path.name, optimizer)
    explicit = config_from_args(parser.parse_args(["train", "--config", str(old_style), "--optimizer", "rmsprop",
                                                   "--momentum", "0.5"]))
    assert explicit.momentum == 0.5


def test_train_names_its_options_in_toy_errors(capsys):
    assert main(["-q", *TRAIN, "--data-noise", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "--data-noise option of deepmargin train" in err and "load_dataset" not in err
    with pytest.raises(SystemExit):
        main(["train", "--data", "moons", "--data-noise", "-1"])
    assert "argument --data-noise: must be a finite float >= 0. Got '-1' instead." in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--data", "moons", "--n-samples", "1"])
    assert "argument --n-samples: must be an int >= 2" in capsys.readouterr().err


def test_demo_help_states_the_real_defaults(capsys):
    from deepmargin.experiments.demo import QUICK_SETTINGS, DemoSettings

    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # undo the line wrapping
    seeds = " ".join(map(str, DemoSettings().seeds))
    assert f"seeds (default: {seeds}; with --quick: {' '.join(map(str, QUICK_SETTINGS.seeds))})" in text
    assert f"(default: {DemoSettings().epochs}; with --quick: {QUICK_SETTINGS.epochs})" in text
    assert "default: None" not in text and "default: False" not in text


def test_evaluate_help_has_no_none_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: None" not in text and "--clean-labels" in text and "label noise" in text


@pytest.mark.parametrize(("norm", "label"), [("2", "l2"), ("inf", "linf"), ("3", "l3"), ("1.5", "l1.5")])
def test_evaluate_prints_short_norm_names(norm, label, toy_run, capsys):
    assert main(["-q", "evaluate", str(toy_run / "last.pt"), "--norm", norm]) == 0
    printed = capsys.readouterr().out
    assert f"linearised {label} margins" in printed and "l_" not in printed


def test_evaluate_names_its_norm_option(toy_run, capsys):
    from deepmargin.cli.evaluate import evaluate_checkpoint

    with pytest.raises(SystemExit):
        main(["evaluate", str(toy_run / "last.pt"), "--norm", "0.5"])
    err = capsys.readouterr().err
    assert "argument --norm: must be 1, 2, inf or a real number p >= 1. Got '0.5' instead." in err
    assert "TrainConfig" not in err
    with pytest.raises(ValueError, match=r"'norm' parameter of evaluate_checkpoint \(deepmargin evaluate\) \(--norm\)"):
        evaluate_checkpoint(toy_run / "last.pt", norm="l3")


def test_evaluate_train_split_says_which_labels(toy_run, tmp_path, capsys):
    model, meta = load_model(toy_run / "last.pt")
    cfg = meta["config"]
    bundle = load_dataset("moons", val_size=cfg["val_size"], label_noise=cfg["label_noise"], seed=cfg["seed"])
    assert bool(bundle.flipped_mask.any())
    with torch.no_grad():
        pred = model(bundle.train.x).argmax(1)
    noisy_acc = (pred == bundle.train.y).double().mean().item()
    clean_acc = (pred == bundle.train_clean_y).double().mean().item()
    assert noisy_acc != clean_acc
    for extra, acc, labels in (([], noisy_acc, "noisy"), (["--clean-labels"], clean_acc, "clean")):
        out_json = tmp_path / f"{labels}.json"
        assert main(["-q", "evaluate", str(toy_run / "last.pt"), "--split", "train", "--json", str(out_json), *extra]) == 0
        printed = capsys.readouterr().out
        result = json.loads(out_json.read_text())
        assert result["labels"] == labels and result["accuracy"] == pytest.approx(acc, abs=1e-12)
        assert f"train accuracy  {acc:.4f}" in printed
        assert (f"against the {labels} training labels" in printed)


def test_train_without_validation_says_how_best_was_chosen(toy_run, capsys):
    result = json.loads((toy_run / "results.json").read_text())
    assert result["best_selected_by"] == "train_acc" and result["best_val_acc"] is None


def test_train_resume_continues_to_more_epochs(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["-q", *TOY, "--lr-schedule", "step", "--out", out]) == 0
    assert main(["-q", *TOY, "--lr-schedule", "step", "--epochs", "2", "--out", out]) == 2
    assert "pass resume=True (--resume) to continue it to 2 epochs" in capsys.readouterr().err
    assert main(["-q", *TOY, "--lr-schedule", "step", "--epochs", "2", "--out", out, "--resume"]) == 0
    assert "resumed from      epoch 1" in capsys.readouterr().out
    assert [r["epoch"] for r in read_jsonl(tmp_path / "r" / "metrics.jsonl")] == [1, 2]
