"""``deepmargin robustness --suite``: AutoAttack robust accuracy per model, norm, eps and attack."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import warnings

import pytest
import torch
from torch import nn

from deepmargin.attacks import AutoAttack, ReliabilityWarning
from deepmargin.cli.main import main
from deepmargin.data import load_dataset
from deepmargin.experiments import robustness_eval
from deepmargin.experiments.robustness_eval import SUITE_FIELDS, evaluate_suite, measure_checkpoints, suite_rows
from deepmargin.models import build_model
from deepmargin.training.checkpoint import load_model, save_checkpoint

from _helpers import fit

N = 40
FAST = ["apgd-ce", "apgd-t", "square"]  # the 'fast' ensemble on a 10-class model, in order
STAGES = ["clean", *FAST, "autoattack"]
GRID = [("linf", 0.05), ("linf", 0.2), ("l2", 0.5)]  # (norm, eps) in the order measured


def _train_digits(path, *, seed: int, steps: int):
    """A briefly trained digits MLP (some test inputs misclassified), saved as a checkpoint."""
    bundle = load_dataset("digits", seed=0)
    kwargs = {"num_classes": bundle.num_classes, "input_shape": list(bundle.input_shape), "hidden_sizes": [32]}
    torch.manual_seed(seed)
    model = build_model("mlp", **kwargs)
    fit(model, bundle.train.x, bundle.train.y, steps=steps, lr=1e-2)
    save_checkpoint(path, model=model, model_name="mlp", model_kwargs=kwargs, config={"dataset": "digits", "seed": 0})
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite_ckpt")
    return [_train_digits(root / "a.pt", seed=0, steps=20), _train_digits(root / "b.pt", seed=1, steps=40)]


def _run(argv):
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["-q", "robustness", *argv])
    return code, buffer.getvalue()


COMMON = ["--norms", "linf", "l2", "--eps-linf", "0.2", "0.05", "--eps-l2", "0.5", "--n", str(N), "--steps", "5",
          "--no-certify", "--no-plot"]


@pytest.fixture(scope="module")
def suite_run(ckpts, tmp_path_factory):
    out = tmp_path_factory.mktemp("suite") / "out"
    code, stdout = _run([*map(str, ckpts), *COMMON, "--suite", "fast", "--out", str(out)])
    assert code == 0
    rows = [json.loads(line) for line in (out / "autoattack.jsonl").read_text().splitlines()]
    return out, rows, stdout


def _groups(rows):
    """``{(model, norm, eps): [rows in file order]}`` in first-seen order."""
    groups: dict[tuple, list] = {}
    for row in rows:
        groups.setdefault((row["model"], row["norm"], row["eps"]), []).append(row)
    return groups


def test_one_row_per_model_norm_eps_and_stage_in_order(suite_run, ckpts):
    out, rows, _ = suite_run
    groups = _groups(rows)
    assert list(groups) == [(model, norm, eps) for model in ("a", "b") for norm, eps in GRID]
    for (model, _, _), mine in groups.items():
        assert [r["attack"] for r in mine] == STAGES
        assert all(list(r) == list(SUITE_FIELDS) for r in mine)
        assert all(r["n"] == N and r["version"] == "fast" and r["seed"] == 0 and r["dataset"] == "digits"
                   for r in mine)
        assert {r["checkpoint"] for r in mine} == {str(ckpts["ab".index(model)])}
    with (out / "autoattack.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == list(SUITE_FIELDS) and len(table) == len(rows)
    for a, b in zip(table, rows):
        assert (a["model"], a["norm"], a["attack"]) == (b["model"], b["norm"], b["attack"])
        assert float(a["eps"]) == b["eps"] and float(a["accuracy"]) == b["accuracy"] and a["flags"] == b["flags"]


def test_worst_case_is_the_last_stage_and_below_the_clean_accuracy(suite_run, ckpts):
    _, rows, _ = suite_run
    test = load_dataset("digits", seed=0).test
    for (model, _, _), mine in _groups(rows).items():
        acc = [r["accuracy"] for r in mine]
        assert all(a >= b for a, b in zip(acc, acc[1:])), acc  # each attack runs only on what is still correct
        assert acc[-1] == min(acc) == acc[-2]
        net, _ = load_model(ckpts["ab".index(model)])
        with torch.no_grad():
            clean = (net(test.x[:N]).argmax(1) == test.y[:N]).double().mean().item()
        assert acc[0] == pytest.approx(clean)
    # the briefly trained models are not robust: the ensemble breaks inputs at every budget
    assert all(mine[-1]["accuracy"] < mine[0]["accuracy"] for mine in _groups(rows).values())


def test_bigger_eps_never_gives_higher_robust_accuracy(suite_run):
    _, rows, _ = suite_run
    worst = {key: mine[-1]["accuracy"] for key, mine in _groups(rows).items()}
    for model in ("a", "b"):
        assert worst[(model, "linf", 0.2)] <= worst[(model, "linf", 0.05)]


def test_json_summary_matches_the_rows(suite_run):
    out, rows, _ = suite_run
    summary = json.loads((out / "autoattack_summary.json").read_text())
    assert summary["version"] == "fast" and summary["seed"] == 0 and summary["dataset"] == "digits"
    results = summary["results"]
    groups = _groups(rows)
    assert [(r["model"], r["norm"], r["eps"]) for r in results] == list(groups)
    for result, mine in zip(results, groups.values()):
        by_stage = {r["attack"]: r["accuracy"] for r in mine}
        assert result["attacks"] == FAST and list(result["accuracy_after"]) == FAST
        assert result["accuracy_after"] == {name: by_stage[name] for name in FAST}
        assert result["clean_accuracy"] == by_stage["clean"] and result["robust_accuracy"] == by_stage["autoattack"]
        assert ";".join(result["flags"]) == mine[0]["flags"]
        assert result["n"] == N and result["version"] == "fast"


def test_config_and_printed_table(suite_run):
    out, rows, stdout = suite_run
    config = json.loads((out / "config.json").read_text())
    assert config["suite"] == {"version": "fast", "seed": 0, "batch_size": 256,
                               "eps": {"linf": [0.05, 0.2], "l2": [0.5]}, "attacks": {"linf": FAST, "l2": FAST}}
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:3] == ["model", "norm", "eps"])
    assert lines[start].split() == ["model", "norm", "eps", "n", "clean", *FAST, "autoattack", "flags"]
    printed = [line.split() for line in lines[start + 2:start + 2 + len(GRID) * 2]]
    for cells, mine in zip(printed, _groups(rows).values()):
        assert cells[:4] == [mine[0]["model"], mine[0]["norm"], f"{mine[0]['eps']:g}", str(N)]
        assert [float(c) for c in cells[4:9]] == pytest.approx([r["accuracy"] for r in mine], abs=5e-5)
    assert lines[-1].startswith("wrote") and "autoattack_summary.json" in lines[-1]


def test_without_suite_nothing_changes(suite_run, ckpts, tmp_path):
    suite_out, _, _ = suite_run
    out = tmp_path / "out"
    code, stdout = _run([*map(str, ckpts), *COMMON, "--out", str(out)])
    assert code == 0
    assert not list(out.glob("autoattack*")) and "autoattack" not in stdout
    for name in ("summary.csv", "summary.jsonl", "margins.csv"):  # the suite leaves the min-norm files as they were
        assert (out / name).read_bytes() == (suite_out / name).read_bytes(), name
    config, with_suite = (json.loads((o / "config.json").read_text()) for o in (out, suite_out))
    assert "suite" not in config
    with_suite.pop("suite")
    assert with_suite == config


def test_a_run_without_suite_removes_an_earlier_runs_autoattack_files(suite_run, ckpts, tmp_path):
    import shutil

    suite_out, _, _ = suite_run
    out = tmp_path / "reused"
    shutil.copytree(suite_out, out)
    assert list(out.glob("autoattack*"))
    code, _ = _run([*map(str, ckpts), *COMMON, "--out", str(out)])
    assert code == 0 and not list(out.glob("autoattack*"))  # they described another run


def test_chunks_combine_per_input(ckpts):
    """Two chunks of unequal size: each accuracy counts inputs over all of x (not a mean of chunk accuracies)."""
    model, _ = load_model(ckpts[0])
    test = load_dataset("digits", seed=0).test
    x, y = test.x[:30], test.y[:30]
    entry = evaluate_suite(model, x, y, norm="linf", eps=0.1, version="fast", seed=3, batch_size=20)
    ensemble = AutoAttack(norm="linf", eps=0.1, version="fast", seed=3)
    broken_by = []
    for start in (0, 20):
        broken_by += ensemble.evaluate(model, x[start:start + 20], y[start:start + 20]).broken_by
    stages = ["clean", *FAST]
    after = [sum(who == "" or (who in stages and stages.index(who) > i) for who in broken_by) / 30
             for i in range(len(stages))]
    assert entry["attacks"] == FAST
    assert entry["clean_accuracy"] == after[0]
    assert list(entry["accuracy_after"].values()) == after[1:]
    assert entry["robust_accuracy"] == broken_by.count("") / 30 < entry["clean_accuracy"]
    rows = suite_rows(entry, model="a")
    assert [r["attack"] for r in rows] == STAGES and rows[-1]["accuracy"] == entry["robust_accuracy"]


def test_eps_zero_runs_no_attack(ckpts):
    model, _ = load_model(ckpts[0])
    test = load_dataset("digits", seed=0).test
    entry = evaluate_suite(model, test.x[:N], test.y[:N], norm="l2", eps=0.0, version="standard", batch_size=16)
    with torch.no_grad():
        clean = (model(test.x[:N]).argmax(1) == test.y[:N]).double().mean().item()
    assert entry["attacks"] == [] and entry["accuracy_after"] == {} and entry["flags"] == []
    assert entry["clean_accuracy"] == entry["robust_accuracy"] == pytest.approx(clean)
    assert [r["attack"] for r in suite_rows(entry)] == ["clean", "autoattack"]


def test_reliability_warnings_become_flags_and_one_log_line(caplog):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Softmax(dim=1)).eval()  # probabilities, not logits
    x, y = torch.rand(12, 6), torch.randint(0, 5, (12,))
    with warnings.catch_warnings(record=True) as leaked, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        entry = evaluate_suite(model, x, y, norm="linf", eps=0.1, version="fast", batch_size=4, label="soft")
    assert "probabilities" in entry["flags"]
    assert not [w for w in leaked if issubclass(w.category, ReliabilityWarning)]  # logged instead
    mine = [r.getMessage() for r in caplog.records if r.name == robustness_eval.__name__]
    assert mine and all(m.startswith("[soft linf eps=0.1] ") for m in mine)
    assert len([m for m in mine if "probabilities" in m.lower()]) == 1  # once, not once per chunk
    assert any("(in 3 batches)" in m for m in mine)


def test_progress_counts_every_suite_batch(ckpts, monkeypatch):
    seen = []

    class Recorder(robustness_eval.StepProgress):
        def __exit__(self, *exc):
            seen.append((self.done, self.total))
            return super().__exit__(*exc)

    monkeypatch.setattr(robustness_eval, "StepProgress", Recorder)
    run = measure_checkpoints([str(ckpts[0])], norms=["linf"], eps_linf=[0.0, 0.1], n=10, steps=3, suite="fast",
                              suite_batch_size=4)
    # one min-norm chunk, then 3 suite chunks at each of the 2 budgets
    assert seen == [(1 + 2 * 3, 1 + 2 * 3)]
    assert [(e["eps"], e["n"]) for e in run.suite_summary] == [(0.0, 10), (0.1, 10)]
    assert len(run.suite_rows) == 2 + len(STAGES)


def test_bad_suite_options(ckpts, capsys):
    for extra, message in ((["--suite", "strong"], "invalid choice: 'strong'"),
                           (["--suite-seed", "-1"], "must be an int >= 0. Got '-1' instead.")):
        with pytest.raises(SystemExit) as info:
            main(["robustness", str(ckpts[0]), *extra])
        assert info.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"The 'suite' parameter of measure_checkpoints must be None or one of "
                                         r"\['standard', 'fast', 'rand'\]. Got 'strong' instead."):
        measure_checkpoints([str(ckpts[0])], suite="strong")
    with pytest.raises(ValueError, match="The 'suite_batch_size' parameter of measure_checkpoints must be"):
        measure_checkpoints([str(ckpts[0])], suite="fast", suite_batch_size=0)
    x, y = torch.rand(3, 4), torch.zeros(3, dtype=torch.int64)
    with pytest.raises(ValueError, match="The 'version' parameter of AutoAttack must be"):
        evaluate_suite(nn.Linear(4, 3), x, y, norm="linf", eps=0.0, version="strong")  # checked at eps 0 too
    with pytest.raises(ValueError, match="The 'batch_size' parameter of evaluate_suite must be an int >= 1"):
        evaluate_suite(nn.Linear(4, 3), x, y, norm="linf", eps=0.1, batch_size=0)
