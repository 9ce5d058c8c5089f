"""The studies engine: presets, grids, the plan, selection on validation, resume after SIGKILL, shards, reports."""

from __future__ import annotations

import fcntl
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from deepmargin.cli.main import main
from deepmargin.data import load_dataset
from deepmargin.experiments import (
    PAPER_LOSSES,
    PRESETS,
    ROW_COLUMNS,
    StudyOptions,
    assign_shards,
    build_plan,
    load_preset_file,
    parse_shard,
    resolve_grid,
    run_study,
    select_runs,
)
from deepmargin.experiments.engine import cell_result_path, merge_and_report
from deepmargin.experiments.protocol import PROTOCOLS, expand_grid, hp_tag
from deepmargin.reports.study import write_report

GRID = {"margin": {"gamma": {"2": [0.3, 1.2], "inf": [0.05, 0.2], "1": [1.0, 4.0]}}, "default": {}}


def small_digits(path: Path, n_train: int = 500, n_test: int = 150) -> str:
    """A .npz with the first ``n_train`` / ``n_test`` images of the bundled digits' splits."""
    bundle = load_dataset("digits", val_size=0.0, seed=0)
    np.savez(path, x_train=bundle.train.x[:n_train].numpy(), y_train=bundle.train.y[:n_train].numpy(),
             x_test=bundle.test.x[:n_test].numpy(), y_test=bundle.test.y[:n_test].numpy())
    return str(path)


def tiny(tmp_path: Path, **changes) -> StudyOptions:
    """A study setting that runs in seconds: small digits, two seeds, one epoch, two losses, a two-gamma grid."""
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps(GRID))
    values = dict(
        dataset=small_digits(tmp_path / "digits-small.npz"),
        studies=("noisy-labels", "limited-data", "adversarial"), losses=("ce", "margin-l2"), seeds=(0, 1), grid=str(grid),
        epochs=1, noise_levels=(0.0, 0.4), fractions=(1.0, 0.3), eps=(0.0, 0.05), noise_std=(0.0, 0.1), snr_db=(20.0,),
    )
    values.update(changes)
    return StudyOptions(**values)


def _rows_key(rows):
    return [tuple(r[c] for c in ROW_COLUMNS) for r in rows]


# -- presets and grids ---------------------------------------------------------------------------


def test_the_papers_presets_are_there_with_their_layers_and_norms():
    assert set(PAPER_LOSSES) | {"ce-adv", "margin-linf-adv"} <= set(PRESETS)
    for tag, norm in (("l1", "1"), ("l2", "2"), ("linf", "inf")):
        all_layers, input_only = PRESETS[f"margin-{tag}"].fields, PRESETS[f"margin-{tag}-input"].fields
        assert all_layers["norm"] == input_only["norm"] == norm
        assert all_layers["layers"] is None and input_only["layers"] == ["input"]
    assert PRESETS["hinge"].fields["hinge_ce_weight"] == 0.1
    assert PRESETS["ce-adv"].fields["adv_train"] == "fgsm" == PRESETS["margin-linf-adv"].fields["adv_train"]


def test_a_user_preset_file(tmp_path):
    path = tmp_path / "margin-l2-top3.json"
    path.write_text(json.dumps({"loss": "margin", "norm": 2, "top_k": 3, "description": "three rivals"}))
    preset = load_preset_file(path)
    assert preset.name == "margin-l2-top3" and preset.fields == {"loss": "margin", "norm": 2, "top_k": 3}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"loss": "margin", "gama": 1.0}))
    with pytest.raises(ValueError, match="bad.json.*gama"):
        load_preset_file(bad)
    clash = tmp_path / "ce.json"
    clash.write_text(json.dumps({"loss": "ce"}))
    with pytest.raises(ValueError, match="built-in preset"):
        build_plan(StudyOptions(studies=("noisy-labels",), preset_files=(str(clash),)))


def test_grids_expand_in_order_and_name_their_cells():
    grid = resolve_grid("reduced", PROTOCOLS["digits"])
    combos = expand_grid(grid, "margin-l2", "margin", "2")
    base = PROTOCOLS["digits"].gamma_base["2"]
    assert combos == [{"gamma": base, "dropout": 0.0}, {"gamma": base, "dropout": 0.5},
                      {"gamma": round(3 * base, 6), "dropout": 0.0}, {"gamma": round(3 * base, 6), "dropout": 0.5}]
    assert expand_grid(grid, "ce", "default", None) == [{"dropout": 0.0}, {"dropout": 0.5}]
    assert expand_grid(resolve_grid("none", PROTOCOLS["digits"]), "ce", "default", None) == [{}]
    paper = resolve_grid("paper", PROTOCOLS["digits"])
    assert len(expand_grid(paper, "margin-linf", "margin", "inf")) == 4 * 2 * 2 * 2
    assert hp_tag({"gamma": 0.6, "dropout": 0.0, "optimizer": "sgd"}) == "gamma0.6-dropout0-sgd"


def test_bad_grids_say_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="must be one of"):
        resolve_grid("huge", PROTOCOLS["digits"])
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"margin": {"gamma": []}}))
    with pytest.raises(ValueError, match="'gamma'.*non-empty list"):
        resolve_grid(str(path), PROTOCOLS["digits"])
    path.write_text("{nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        resolve_grid(str(path), PROTOCOLS["digits"])
    with pytest.raises(FileNotFoundError):
        resolve_grid(str(tmp_path / "missing.json"), PROTOCOLS["digits"])


def test_study_options_are_checked():
    with pytest.raises(ValueError, match="'studies'"):
        StudyOptions(studies=("noisy",))
    with pytest.raises(ValueError, match="'fractions'.*\\(0, 1\\]"):
        StudyOptions(fractions=(0.0,))
    with pytest.raises(ValueError, match="'seeds'.*repeat"):
        StudyOptions(seeds=(1, 1))
    with pytest.raises(ValueError, match="unknown \\['nope'\\]"):
        build_plan(StudyOptions(studies=("noisy-labels",), losses=("ce", "nope")))


# -- the plan ------------------------------------------------------------------------------------


def test_the_plan_shares_cells_and_keeps_dependencies_in_their_group(tmp_path):
    plan = build_plan(tiny(tmp_path))
    train = [c for c in plan.cells.values() if c.kind == "train"]
    evals = [c for c in plan.cells.values() if c.kind == "eval"]
    # 2 seeds x (noise 0, noise 0.4, fraction 0.3) x (ce: 1 + margin: 2 combinations)
    assert len(train) == 2 * 3 * 3 and len(evals) == 2 * 2
    shared = plan.candidates[("noisy-labels", "margin-l2", 0.0, 1.0, 0)]
    assert shared == plan.candidates[("limited-data", "margin-l2", 0.0, 1.0, 0)] == plan.candidates[("adversarial", "margin-l2", 0.0, 1.0, 0)]
    for cell in evals:
        assert all(plan.cells[d].group == cell.group for d in cell.deps)
    for cell in train:
        cfg = cell.config
        if cfg["loss"] == "margin":
            assert cfg["top_k"] == 9 and cfg["optimizer"] == "rmsprop" and cfg["norm"] == 2.0
        else:
            assert cfg["optimizer"] == "sgd"
        # limited data: the same number of optimisation steps, about
        assert cfg["epochs"] == (round(1 / 0.3) if cfg["train_fraction"] == 0.3 else 1)


def test_subsets_are_nested_and_the_same_for_every_loss(tmp_path):
    plan = build_plan(tiny(tmp_path, fractions=(1.0, 0.5, 0.2), studies=("limited-data",)))
    by_setting: dict[tuple, list[torch.Tensor]] = {}
    for cell in plan.cells.values():
        c = cell.config
        bundle = load_dataset(c["dataset"], val_size=c["val_size"], train_fraction=c["train_fraction"],
                              label_noise=c["label_noise"], seed=c["seed"])
        by_setting.setdefault((c["train_fraction"], c["seed"]), []).append(bundle.train.x.flatten(1))
    for xs in by_setting.values():  # identical across losses and grid combinations
        assert all(torch.equal(xs[0], x) for x in xs[1:])
    for seed in (0, 1):
        rows = {f: {tuple(r.tolist()) for r in by_setting[(f, seed)][0]} for f in (1.0, 0.5, 0.2)}
        assert rows[0.2] < rows[0.5] < rows[1.0]
    assert by_setting[(0.2, 0)][0].shape[0] != 0 and not torch.equal(by_setting[(0.5, 0)][0], by_setting[(0.5, 1)][0])


def test_select_runs_takes_the_best_validation_accuracy_and_the_earliest_on_ties():
    results = {"a": {"best_val_acc": 0.9, "test_acc_best": 0.1}, "b": {"best_val_acc": 0.95, "test_acc_best": 0.0},
               "c": {"best_val_acc": 0.95, "test_acc_best": 1.0}}
    assert select_runs(results, ["a", "b", "c"]) == "b"
    assert select_runs(results, ["a", "c", "b"]) == "c"
    assert select_runs(results, ["a", "missing"]) is None


def test_shards_split_groups_disjointly_and_deterministically(tmp_path):
    plan = build_plan(tiny(tmp_path))
    cells = list(plan.cells.values())
    for n in (1, 2, 3, 7):
        owner = assign_shards(cells, n)
        assert owner == assign_shards(cells, n)
        assert set(owner) == {c.group for c in cells}
        assert set(owner.values()) <= set(range(1, n + 1))
    owner = assign_shards(cells, 2)
    assert len(set(owner.values())) == 2  # both shards get work


def test_parse_shard_and_the_slurm_variables():
    assert parse_shard("1/1") == (1, 1)
    assert parse_shard(None, env={}) is None
    assert parse_shard(None, env={"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "3"}) == (1, 3)
    assert parse_shard(None, env={"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "3"}) == (3, 3)
    for bad in ("0/2", "3/2", "a/b", "2", "1/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


# -- running -------------------------------------------------------------------------------------


def _group(rows, keys):
    out = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny study, run once without interruption or shards."""
    root = tmp_path_factory.mktemp("reference")
    options = tiny(root)
    result = run_study(options, root / "study", jobs=1, report=write_report)
    return root, options, result


def test_a_study_writes_rows_plots_and_a_report(reference):
    root, options, result = reference
    out = result.out_dir
    rows = result.rows
    assert rows and all(list(r) == list(ROW_COLUMNS) for r in rows)
    studies = {r["study"] for r in rows}
    assert studies == {"noisy-labels", "limited-data", "adversarial"}
    noisy = [r for r in rows if r["study"] == "noisy-labels"]
    assert len(noisy) == 2 * 2 * 2  # losses x noise levels x seeds
    adv = [r for r in rows if r["study"] == "adversarial"]
    assert {(r["attack"], r["box"]) for r in adv} == {("fgsm", "white"), ("fgsm", "black"), ("ifgsm", "white"),
                                                     ("ifgsm", "black"), ("noise-std", "none"), ("noise-snr", "none"),
                                                     ("autoattack:apgd-ce", "white"), ("autoattack:apgd-t", "white"),
                                                     ("autoattack:square", "white"), ("autoattack", "white")}
    for (loss, seed), group in _group(adv, ("loss", "seed")).items():  # the worst case: never above IFGSM or any stage
        worst = [r for r in group if r["attack"] == "autoattack"]
        assert len(worst) == 1 and worst[0]["eps"] == 0.1 and worst[0]["n_test"] == 150
        stages = [r["test_acc"] for r in group if r["attack"].startswith("autoattack:")]
        assert stages == sorted(stages, reverse=True) and worst[0]["test_acc"] == stages[-1]
        ifgsm = [r for r in group if r["attack"] == "ifgsm" and r["box"] == "white" and r["eps"] == 0.1]
        assert worst[0]["test_acc"] <= ifgsm[0]["test_acc"] + 0.02  # a stronger attack (IFGSM can win a few inputs)
    clean = {(r["loss"], r["seed"]): r["test_acc"] for r in noisy if r["label_noise"] == 0.0}
    for r in adv:  # the clean accuracy of the attacked models is the noisy-labels study's noise-0 accuracy
        if r["eps"] == 0.0 and r["attack"] in ("fgsm", "ifgsm", "noise-std"):
            assert r["n_test"] == 150 and r["test_acc"] == clean[(r["loss"], r["seed"])]
    black_ce = [r for r in adv if r["box"] == "black" and r["loss"] == "ce"]
    white_ce = {(r["attack"], r["eps"], r["seed"]): r["test_acc"] for r in adv if r["box"] == "white" and r["loss"] == "ce"}
    assert all(white_ce[(r["attack"], r["eps"], r["seed"])] == r["test_acc"] for r in black_ce)  # ce attacks itself
    keys = [(r["study"], r["loss"], r["label_noise"], r["train_fraction"], r["attack"], r["eps"], r["box"], r["seed"]) for r in rows]
    assert len(keys) == len(set(keys))
    for name in ("rows.csv", "rows.jsonl", "study.json", "cells.json", "report.md", "report.html",
                 "figures/noisy-labels.png", "figures/limited-data.png", "figures/adversarial.png", "figures/noise.png"):
        assert (out / name).is_file(), name
    study = json.loads((out / "study.json").read_text())
    assert study["grid"]["margin"]["gamma"]["2"] == [0.3, 1.2] and "torch" in study["versions"]
    text = (out / "report.md").read_text()
    for part in ("Noisy labels", "Limited training data", "Adversarial", " ce on average", "chosen on validation",
                 "beside the paper"):
        assert part in text
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4 and "src=\"figures" not in page


def test_rerunning_a_finished_study_recomputes_nothing(reference):
    root, options, result = reference
    again = run_study(options, result.out_dir, jobs=1)
    assert again.ran == [] and _rows_key(again.rows) == _rows_key(result.rows)


def test_other_options_for_an_existing_study_are_refused(reference, tmp_path):
    root, options, result = reference
    import dataclasses

    with pytest.raises(ValueError, match="seeds: \\[0, 1\\] \\(saved\\) != \\[0\\] \\(now\\)"):
        run_study(dataclasses.replace(options, seeds=(0,)), result.out_dir)
    copy = tmp_path / "copy"
    run_study(dataclasses.replace(options, studies=("noisy-labels",), seeds=(0,), noise_levels=(0.0,)), copy)
    fresh = run_study(dataclasses.replace(options, studies=("noisy-labels",), seeds=(1,), noise_levels=(0.0,)), copy,
                      overwrite=True)
    assert {r["seed"] for r in fresh.rows} == {1}


@pytest.mark.slow  # a subprocess run (torchrun or a whole study); in the full suite, not the fast lane
def test_shards_together_equal_the_unsharded_run(reference, tmp_path):
    root, options, result = reference
    out = tmp_path / "sharded"
    first = run_study(options, out, shard=(1, 2))
    second = run_study(options, out, shard=(2, 2))
    assert first.ran and second.ran and not set(first.ran) & set(second.ran)
    assert not (out / "rows.csv").exists()
    assert len(first.rows) + len(second.rows) == len(result.rows)
    files = merge_and_report(out)
    assert files["missing"] == 0
    merged = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert _rows_key(merged) == _rows_key(result.rows)


@pytest.mark.slow  # a subprocess run (torchrun or a whole study); in the full suite, not the fast lane
def test_the_choice_of_hyperparameters_never_reads_the_test_split(tmp_path):
    """The same study on a copy of digits whose test labels are shuffled chooses the same configurations
    (4 grid points per preset, so a choice that read the test split would show)."""
    bundle = load_dataset("digits", val_size=0.0, seed=0)
    files = {}
    for name, y_test in (("clean", bundle.test.y), ("shuffled", bundle.test.y[torch.randperm(len(bundle.test.y), generator=torch.Generator().manual_seed(3))])):
        path = tmp_path / f"{name}.npz"
        np.savez(path, x_train=bundle.train.x.numpy(), y_train=bundle.train.y.numpy(), x_test=bundle.test.x.numpy(),
                 y_test=y_test.numpy())
        files[name] = path
    chosen = {}
    for name, path in files.items():
        grid = tmp_path / "grid4.json"
        grid.write_text(json.dumps({"margin": {"gamma": {"2": [0.3, 1.2]}, "dropout": [0.0, 0.5]},
                                    "default": {"dropout": [0.0, 0.5], "lr": [0.02, 0.1]}}))
        options = tiny(tmp_path, dataset=str(path), studies=("noisy-labels",), noise_levels=(0.0, 0.4), seeds=(0,),
                       grid=str(grid))
        result = run_study(options, tmp_path / name, report=False)
        chosen[name] = [(r["loss"], r["label_noise"], r["run"], r["val_acc"]) for r in result.rows]
        accs = [r["test_acc"] for r in result.rows]
        chosen[name + "_acc"] = accs
    assert chosen["clean"] == chosen["shuffled"]
    assert chosen["clean_acc"] != chosen["shuffled_acc"]  # the test split did change


def _kill_script(out: Path, options: StudyOptions) -> str:
    return (
        "import json\n"
        "from deepmargin.experiments.engine import options_from_dict, run_study\n"
        f"options = options_from_dict(json.loads({json.dumps(json.dumps(options.to_dict()))}))\n"
        f"run_study(options, {str(out)!r}, report=False)\n"
    )


@pytest.mark.slow
def test_a_sigkilled_study_resumes_without_recomputing_or_losing_a_cell(reference, tmp_path):
    root, options, result = reference
    out = tmp_path / "killed"
    plan = build_plan(options)
    cells = list(plan.cells.values())
    stop_after = random.Random(os.getpid()).randint(1, len(cells) - 2)
    proc = subprocess.Popen([sys.executable, "-c", _kill_script(out, options)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if sum(cell_result_path(out, c).exists() for c in cells) >= stop_after:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the study finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = {c.id: cell_result_path(out, c) for c in cells if cell_result_path(out, c).exists()}
    assert 1 <= len(finished) < len(cells)
    stamps = {cid: (p.stat().st_mtime_ns, p.read_bytes()) for cid, p in finished.items()}
    resumed = run_study(options, out, report=False)
    assert not set(resumed.ran) & set(finished)
    assert set(resumed.ran) | set(finished) == {c.id for c in cells}
    for cid, path in finished.items():
        assert (path.stat().st_mtime_ns, path.read_bytes()) == stamps[cid]
    assert _rows_key(resumed.rows) == _rows_key(result.rows)
    for cell in cells:  # every training run has each epoch exactly once
        if cell.kind == "train":
            epochs = [json.loads(line)["epoch"] for line in (out / cell.id / "metrics.jsonl").read_text().splitlines()]
            assert epochs == list(range(1, cell.config["epochs"] + 1))
    for lock in out.rglob(".lock"):  # the killed process's locks went with it
        with open(lock, "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


@pytest.mark.slow
def test_worker_processes_give_the_same_rows(reference, tmp_path):
    root, options, result = reference
    import dataclasses

    small = dataclasses.replace(options, studies=("noisy-labels",))
    one = run_study(small, tmp_path / "one", jobs=1, report=False)
    two = run_study(small, tmp_path / "two", jobs=2, report=False)
    assert _rows_key(one.rows) == _rows_key(two.rows)


def test_the_experiment_and_report_commands(tmp_path, capsys):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps(GRID))
    out = tmp_path / "cli"
    code = main(["experiment", "noisy-labels", "--losses", "ce", "margin-linf", "--seeds", "0", "--epochs", "1",
                 "--noise", "0", "0.6", "--grid", str(grid), "--jobs", "1", "--out", str(out)])
    assert code == 0
    assert "report" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert {(r["loss"], r["label_noise"]) for r in rows} == {("ce", 0.0), ("ce", 0.6), ("margin-linf", 0.0), ("margin-linf", 0.6)}
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").is_file()
    assert main(["experiment", "noisy-labels", "--seeds", "1", "--epochs", "1", "--out", str(out)]) == 2
    assert "refusing to continue" in capsys.readouterr().err
    assert main(["experiment", "noisy-labels", "--shard", "3/2", "--out", str(out)]) == 2
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_an_edited_grid_file_is_refused(tmp_path):
    options = tiny(tmp_path, studies=("noisy-labels",), seeds=(0,), noise_levels=(0.0,), losses=("ce",))
    run_study(options, tmp_path / "s", report=False)
    (tmp_path / "grid.json").write_text(json.dumps({"margin": {"gamma": {"2": [9.0]}}, "default": {"dropout": [0.0, 0.5]}}))
    with pytest.raises(ValueError, match="grid of the study .* changed"):
        run_study(options, tmp_path / "s", report=False)
    before = (tmp_path / "s" / "rows.jsonl").read_text()
    assert merge_and_report(tmp_path / "s")["missing"] == 0  # the report uses the saved grid
    assert (tmp_path / "s" / "rows.jsonl").read_text() == before


def test_every_built_in_protocol_resolves_its_cells():
    from deepmargin.experiments.studies import _train_config

    for name, protocol in PROTOCOLS.items():
        for preset in PRESETS.values():
            config = _train_config(protocol, StudyOptions(dataset=name), preset, {}, 0.2, 0.1, 0, 10, ("dropout",))
            assert config["dataset"] == name and config["model"] == protocol.model
            if preset.fields.get("loss") == "margin":  # no grid gamma: the protocol's base value for the norm
                key = "inf" if config["norm"] == "inf" else f"{config['norm']:g}"
                assert config["gamma"] == protocol.gamma_base[key]
    assert round(PROTOCOLS["mnist"].val_size * 60000) == 5000


def test_a_diverging_grid_point_is_recorded_and_never_chosen(tmp_path):
    grid = tmp_path / "lr.json"
    grid.write_text(json.dumps({"default": {"lr": [0.05, 1e12]}}))
    options = tiny(tmp_path, studies=("noisy-labels",), losses=("ce",), seeds=(0,), noise_levels=(0.0,), grid=str(grid))
    result = run_study(options, tmp_path / "s", report=False)
    diverged = [c for c in result.ran if json.loads((tmp_path / "s" / c / "results.json").read_text()).get("status") == "diverged"]
    assert len(diverged) == 1 and "lr1e+12" in diverged[0]
    assert [r["hp"] for r in result.rows] == ["lr0.05"]
    assert run_study(options, tmp_path / "s", report=False).ran == []


def test_snr_levels_must_be_finite():
    with pytest.raises(ValueError, match="'snr_db'"):
        StudyOptions(snr_db=(20.0, math.inf))


def test_overwrite_with_a_shard_is_refused(tmp_path):
    with pytest.raises(ValueError, match="other shards' work"):
        run_study(tiny(tmp_path), tmp_path / "s", shard=(1, 2), overwrite=True)


def test_a_finished_cell_with_another_configuration_is_refused(tmp_path):
    options = tiny(tmp_path, studies=("noisy-labels",), losses=("ce",), seeds=(0,), noise_levels=(0.0,))
    result = run_study(options, tmp_path / "s", report=False)
    path = tmp_path / "s" / result.ran[0] / "results.json"
    data = json.loads(path.read_text())
    data["config"]["lr"] = 123.0
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="trained with another configuration.*lr: 123.0"):
        run_study(options, tmp_path / "s", report=False)


def test_black_box_rows_are_attacks_crafted_on_the_ce_model(reference):
    """An independent computation: IFGSM crafted on the chosen ce model, evaluated on the chosen margin model."""
    from deepmargin.attacks import IFGSM
    from deepmargin.training.checkpoint import load_model

    root, options, result = reference
    rows = [r for r in result.rows if r["study"] == "adversarial" and r["attack"] == "ifgsm" and r["eps"] == 0.05 and r["seed"] == 0]
    margin = next(r for r in rows if r["loss"] == "margin-l2" and r["box"] == "black")
    ce_run = next(r for r in rows if r["loss"] == "ce")["run"]
    model, meta = load_model(result.out_dir / margin["run"] / "best.pt")
    source, _ = load_model(result.out_dir / ce_run / "best.pt")
    bundle = load_dataset(meta["config"]["dataset"], val_size=0.0, seed=0)
    x_adv = IFGSM(eps=0.05)(source.eval(), bundle.test.x, bundle.test.y)
    with torch.no_grad():
        expected = (model.eval()(x_adv).argmax(1) == bundle.test.y).double().mean().item()
    assert margin["test_acc"] == pytest.approx(expected, abs=1e-12) and margin["source"] == "ce"
    white = next(r for r in rows if r["loss"] == "margin-l2" and r["box"] == "white")
    assert white["test_acc"] != margin["test_acc"] or white["test_acc"] == 1.0


def test_paper_comparisons_pair_by_setting_and_seed_and_adversarial_models_meet_ce_adv():
    from deepmargin.reports.study import _ours, _verdict

    rows = []
    for seed in (0, 1):
        for noise, ce, margin in ((0.0, 0.9, 0.9), (0.8, 0.3, 0.5)):
            for loss, acc in (("ce", ce), ("margin-l2", margin)):
                rows.append({"study": "noisy-labels", "loss": loss, "label_noise": noise, "train_fraction": 1.0,
                             "attack": "none", "box": "none", "eps": None, "seed": seed, "test_acc": acc})
    assert _ours(rows, "noisy-labels", "margin-l2", "label_noise>0", "minus ce") == "+20.0 ± 0.0"
    assert _ours(rows, "noisy-labels", "margin-l2", "label_noise=0", "accuracy") == "90.0 ± 0.0"
    adv = [{"study": "adversarial", "loss": loss, "label_noise": 0.0, "train_fraction": 1.0, "attack": "ifgsm", "box": "black",
            "eps": 0.1, "seed": 0, "test_acc": acc} for loss, acc in (("ce", 0.2), ("ce-adv", 0.6), ("margin-linf-adv", 0.5))]
    (line,) = _verdict(adv, "eps", ["ce", "ce-adv", "margin-linf-adv"], "eps")
    assert "did not beat ce-adv" in line and "-10.0" in line
    assert _ours(adv, "adversarial", "best margin", "ifgsm black eps=0.1", "accuracy") == "not run"


def test_overwrite_checks_everything_before_deleting(tmp_path):
    import dataclasses

    options = tiny(tmp_path, studies=("noisy-labels",), losses=("ce",), seeds=(0,), noise_levels=(0.0,))
    result = run_study(options, tmp_path / "s", report=False)
    finished = tmp_path / "s" / result.ran[0] / "results.json"
    with pytest.raises(FileNotFoundError, match="typo.json"):
        run_study(dataclasses.replace(options, grid=str(tmp_path / "typo.json")), tmp_path / "s", overwrite=True)
    with pytest.raises(ValueError, match="unknown \\['nope'\\]"):
        run_study(dataclasses.replace(options, losses=("nope",)), tmp_path / "s", overwrite=True)
    assert finished.exists()  # nothing was deleted
    other = tmp_path / "not-a-study"
    (other / "train").mkdir(parents=True)
    (other / "train" / "mine.txt").write_text("keep")
    run_study(options, other, overwrite=True, report=False)
    assert (other / "train" / "mine.txt").read_text() == "keep"  # no study.json: nothing of ours to delete


def test_a_refused_cell_leaves_study_json_as_it_was(tmp_path):
    import dataclasses

    options = tiny(tmp_path, studies=("noisy-labels",), losses=("ce",), seeds=(0,), noise_levels=(0.0,))
    result = run_study(options, tmp_path / "s", report=False)
    path = tmp_path / "s" / result.ran[0] / "results.json"
    data = json.loads(path.read_text())
    data["config"]["epochs"] = 7
    path.write_text(json.dumps(data))
    before = (tmp_path / "s" / "study.json").read_text()
    with pytest.raises(ValueError, match="another configuration"):
        run_study(dataclasses.replace(options, studies=("limited-data",)), tmp_path / "s", report=False)
    assert (tmp_path / "s" / "study.json").read_text() == before


def test_slurm_arrays_with_gaps_are_refused_clearly():
    with pytest.raises(ValueError, match="contiguous array"):
        parse_shard(None, env={"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "3"})
