"""``deepmargin robustness`` on any classifier: a TorchScript file, an exported program and module:callable + state
dict of one network give the same AutoAttack rows and the same minimum-norm summary.

The network and its three saved forms are those of ``test_external_models.py`` (the ``saved``
fixture: a small CNN with a ``(logits, features)`` output, trained briefly on the bundled digits).
"""

from __future__ import annotations

import csv
import json
import re

import pytest

from deepmargin.cli.main import main
from deepmargin.experiments.robustness_eval import evaluate_suite
from deepmargin.models import load_classifier

from test_external_models import MODULE, saved  # noqa: F401  (saved: the module-scoped fixture)

N = 30
#: What the three sources share: the network's input shape and where its logits are.
COMMON = ["--input-shape", "1", "8", "8", "--output-index", "0"]
#: The summary numbers of the minimum-norm attack.
MIN_NORM = ("n", "clean_accuracy", "median_distance", "eps", "error_at_eps", "mean_linearized", "mean_min_norm",
            "failed")


def _source_args(s) -> dict[str, list[str]]:
    return {
        "torchscript": ["--model-file", str(s.script)],
        "exported": ["--model-file", str(s.exported)],
        "callable": ["--model", f"{MODULE}:build", "--weights", str(s.weights)],
    }


def _read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def runs(saved, tmp_path_factory):  # noqa: F811
    """``{source: out folder}`` of one ``--suite fast`` run per source, on the first N test inputs."""
    root = tmp_path_factory.mktemp("external_robustness")
    outs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(saved.root))  # the module of the callable source
        for name, args in _source_args(saved).items():
            outs[name] = root / name
            code = main(["-q", "robustness", *args, "--data", str(saved.data), *COMMON, "--suite", "fast",
                         "--norms", "linf", "--eps-linf", "0.1", "--n", str(N), "--steps", "20", "--no-plot",
                         "--out", str(outs[name])])
            assert code == 0, name
    return outs


def test_three_sources_give_identical_autoattack_rows_and_min_norm_summaries(runs, saved):  # noqa: F811
    names = {"torchscript": "net", "exported": "net", "callable": f"{MODULE}:build"}
    checkpoints = {"torchscript": str(saved.script), "exported": str(saved.exported), "callable": f"{MODULE}:build"}
    suite, summary = {}, {}
    for name, out in runs.items():
        rows = _read_csv(out / "autoattack.csv")
        assert {(r["model"], r["checkpoint"], r["dataset"]) for r in rows} == {(names[name], checkpoints[name],
                                                                                str(saved.data))}, name
        suite[name] = [{k: v for k, v in r.items() if k not in ("model", "checkpoint")} for r in rows]
        (row,) = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines() if line.strip()]
        assert (row["model"], row["checkpoint"], row["norm"]) == (names[name], checkpoints[name], "linf"), name
        summary[name] = {key: row[key] for key in MIN_NORM}
        config = json.loads((out / "config.json").read_text())
        assert config["checkpoints"] == {} and config["data_root"] is None and config["n"] == N
        assert config["model_source"]["output_index"] == 0 and config["model_source"]["input_shape"] == [1, 8, 8]
        assert config["suite"]["version"] == "fast"
    for name in runs:
        assert suite[name] == suite["callable"], name
        assert summary[name] == summary["callable"], name

    # a real measurement, and the library's numbers on the eager network
    stages = {r["attack"]: float(r["accuracy"]) for r in suite["callable"]}
    assert stages["clean"] > 0.9 and 0.0 < stages["autoattack"] < stages["clean"]
    eager = load_classifier(model=saved.net, output_index=0)
    entry = evaluate_suite(eager, saved.x[:N], saved.y[:N], norm="linf", eps=0.1, version="fast", seed=0)
    assert stages == {"clean": entry["clean_accuracy"], **entry["accuracy_after"], "autoattack": entry["robust_accuracy"]}
    assert summary["callable"]["clean_accuracy"] == entry["clean_accuracy"]
    assert 0.0 < summary["callable"]["median_distance"] < float("inf")


def test_certification_is_skipped_for_an_external_model(saved, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    code = main(["robustness", "--model-file", str(saved.exported), "--data", str(saved.data), *COMMON,
                 "--norms", "l2", "--eps-l2", "0.5", "--n", "10", "--steps", "5", "--no-plot", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "net: certification skipped" in captured.err
    (row,) = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines() if line.strip()]
    assert row["rho_adv"] is not None and row["median_distance"] > 0
    assert row["lipschitz_l2"] is None and row["median_certified_kesidis"] is None
    config = json.loads((out / "config.json").read_text())
    assert config["certify"] is False and config["lipschitz"] is None
    assert {r["certified_tsuzuku"] for r in _read_csv(out / "margins.csv")} == {""}


@pytest.mark.parametrize("argv, match", [
    (["ckpt.pt", "--model-file", "net.pt2", "--data", "d.npz"],
     r"The 'checkpoints' parameter of measure_checkpoints must be empty with a model_source .* Got ckpt\.pt instead"),
    ([], r"The 'checkpoints' parameter of measure_checkpoints must name at least one checkpoint, or give a model with "
         r"--model-file FILE or --model MODULE:CALLABLE \(and --data FILE\.npz\)"),
    (["--model-file", "net.pt2"], r"The 'data' parameter of load_external must be a \.npz file .* Got None"),
    (["--model-file", "net.pt2", "--data", "digits"], r"The 'data' parameter of load_external must be a \.npz file"),
    (["--weights", "w.pt"], r"The options --weights describe an external model and need --model-file"),
])
def test_robustness_command_errors(argv, match, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["robustness", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("deepmargin robustness: error: ")
    assert re.search(match, err), err
    assert not (tmp_path / "out").exists()
