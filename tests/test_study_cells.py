"""The study runner is generic: cell kinds register how they run, the report is the caller's, the
grid families come from the loss registry, the papers' numbers from a data file."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import sys

import pytest

from deepmargin.experiments import StudyOptions, run_study
from deepmargin.experiments.cells import CELL_KINDS, CellError, CellKind, cell_kind, register_cell_kind, rows_cell
from deepmargin.experiments.engine import cell_result_path, merge_and_report, run_cell
from deepmargin.experiments.protocol import expand_grid
from deepmargin.experiments.studies import Cell
from deepmargin.experiments.studydir import CELL_LOCK, locked
from deepmargin.losses import LossSpec, register_loss, unregister_loss

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def echo_kind():
    """A kind whose cells return their configuration's rows (or raise its error)."""

    def measure(root, cell, label):
        if "error" in cell.config:
            raise ValueError(cell.config["error"])
        return [{**row, "dataset": label} for row in cell.config["rows"]]

    kind = register_cell_kind(CellKind("test-echo", rows_cell(measure)))
    yield kind
    CELL_KINDS.pop(kind.name, None)


def _cell(config):
    return Cell("echo/a", "test-echo", (0.0, 1.0, 0), config)


def test_the_built_in_kinds_are_registered():
    assert {"train", "eval", "compare", "cost"} <= set(CELL_KINDS)
    assert cell_kind("train").result_file == "results.json" and not cell_kind("train").holds_rows
    assert all(cell_kind(k).result_file == "rows.json" and cell_kind(k).holds_rows for k in ("eval", "compare", "cost"))
    with pytest.raises(ValueError, match="The 'kind' of a study cell must be one of .*'train'.*Got 'nope' instead"):
        cell_kind("nope")
    with pytest.raises(ValueError, match="must have a new name. Got 'train' instead"):
        register_cell_kind(CellKind("train", lambda job: "done"))
    with pytest.raises(TypeError, match="must be a CellKind"):
        register_cell_kind("train")


def test_the_runner_runs_any_registered_kind(echo_kind, tmp_path):
    cell = _cell({"rows": [{"loss": "x", "value": 1.5}]})
    assert run_cell(str(tmp_path), cell.to_dict(), "toy", 1)["status"] == "done"
    path = cell_result_path(tmp_path, cell)
    assert path == tmp_path / "echo" / "a" / "rows.json"
    assert json.loads(path.read_text())["rows"] == [{"loss": "x", "value": 1.5, "dataset": "toy"}]
    assert run_cell(str(tmp_path), cell.to_dict(), "toy", 1) == {"status": "found", "seconds": 0.0}
    path.unlink()
    with locked(tmp_path / cell.id / CELL_LOCK, blocking=False) as mine:  # another worker holds the cell
        assert mine
        assert run_cell(str(tmp_path), cell.to_dict(), "toy", 1)["status"] == "locked"
    assert not path.exists()


def test_a_failing_cell_names_itself(echo_kind, tmp_path):
    with pytest.raises(CellError, match="Cell 'echo/a' of the study in .* failed: ValueError: broken") as info:
        run_cell(str(tmp_path), _cell({"error": "broken"}).to_dict(), "toy", 1)
    assert info.value.user_error
    assert not cell_result_path(tmp_path, _cell({})).exists()


def test_the_report_is_written_by_the_callers_writer(tmp_path):
    options = StudyOptions(studies=("noisy-labels",), losses=("ce",), seeds=(0,), noise_levels=(0.0,), epochs=1, grid="none")
    with pytest.raises(ValueError, match="The 'report' parameter of run_study must be None or a callable"):
        run_study(options, tmp_path / "s", report=True)
    assert not (tmp_path / "s").exists()  # refused before anything was written
    calls = []

    def writer(out, *, rows):
        calls.append((out, list(rows)))
        return {"report": out / "my-report.txt"}

    result = run_study(options, tmp_path / "s", report=writer)
    assert len(calls) == 1 and calls[0][0] == tmp_path / "s" and calls[0][1] == result.rows and len(result.rows) == 1
    assert result.files["report"] == tmp_path / "s" / "my-report.txt"
    assert not (tmp_path / "s" / "report.md").exists()
    (tmp_path / "s" / "rows.csv").unlink()
    files = merge_and_report(tmp_path / "s")  # rows only
    assert files["missing"] == 0 and (tmp_path / "s" / "rows.csv").is_file() and "report" not in files and len(calls) == 1
    assert merge_and_report(tmp_path / "s", report=writer)["report"] == tmp_path / "s" / "my-report.txt" and len(calls) == 2
    assert run_study(options, tmp_path / "s", report=None).ran == [] and len(calls) == 2


GRID = {"margin": {"gamma": {"2": [0.5, 1.0]}, "dropout": [0.0, 0.5]}, "default": {"dropout": [0.0, 0.5], "gamma": [7.0]},
        "plug": {"C": [1, 2]}}


@pytest.fixture
def plugin_loss():
    spec = register_loss(LossSpec(name="test-grid-plugin", summary="a test plug-in", reference="this test", options=(),
                                  build=lambda model, options: None, grid_family="plug-family"))
    yield spec
    unregister_loss(spec.name)


def test_grid_families_come_from_the_loss_registry(plugin_loss):
    # a registered loss's family without an entry of its own: the "default" dimensions, never gamma
    assert expand_grid(GRID, "p", plugin_loss.family, None) == [{"dropout": 0.0}, {"dropout": 0.5}]
    assert expand_grid({**GRID, "plug-family": {"C": [3]}}, "p", plugin_loss.family, None) == [{"C": 3}]
    # the large-margin loss's family: its own entry only, gamma per norm
    assert expand_grid(GRID, "m", "margin", 2) == [{"gamma": g, "dropout": d} for g in (0.5, 1.0) for d in (0.0, 0.5)]
    assert expand_grid({"default": {"dropout": [0.0, 0.5]}}, "m", "margin", 2) == [{}]
    # the default family (cross-entropy, hinge): gamma is not theirs
    assert expand_grid(GRID, "ce", "default", None) == [{"dropout": 0.0}, {"dropout": 0.5}]
    # a preset's own entry wins
    assert expand_grid(GRID, "plug", plugin_loss.family, None) == [{"C": 1}, {"C": 2}]


def test_the_papers_numbers_are_package_data():
    from deepmargin.reports import compare, study
    from deepmargin.reports.papers import PAPER_NUMBERS_FILE, compare_numbers, read_paper_numbers, study_numbers

    doc = json.loads(PAPER_NUMBERS_FILE.read_text(encoding="utf-8"))
    assert PAPER_NUMBERS_FILE.parent == Path(study.__file__).parent
    assert study.PAPER_NUMBERS == study_numbers(doc) and compare.PAPER_NUMBERS == compare_numbers(doc)
    assert study.PAPER_NUMBERS["mnist"][0] == ("noisy-labels", "ce", "label_noise=0", "accuracy", 99.4, "Sec. 4.2")
    baseline = compare.PAPER_NUMBERS["matyasko-chau"]["tables"]["MNIST, LeNet-5 (second table)"]["rows"][0]
    assert baseline == ("Baseline", ("ce",), {"error": (0.72, 0.06), "rho_adv": (1.54, 0.04)})
    assert {p["layout"] for p in compare.PAPER_NUMBERS.values()} == {"by-method", "by-quantity"}
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "reports/*.json" in config["tool"]["setuptools"]["package-data"]["deepmargin"]
    bad = PAPER_NUMBERS_FILE.parent / "missing.json"
    with pytest.raises(ValueError, match="cannot be read"):
        read_paper_numbers(bad)


def test_a_cell_runs_with_the_same_thread_count_whatever_jobs_is(tmp_path, monkeypatch):
    """Issue 17, item 7: --jobs 1 and --jobs 2 gave different rows (torch sums depend on the thread
    count); every cell now runs with CELL_THREADS threads."""
    from deepmargin.experiments import StudyOptions, engine

    seen = []

    def fake_schedule(out, plan, pending, finished, jobs, threads, display, ran, wait_seconds):
        seen.append((jobs, threads))

    monkeypatch.setattr(engine, "_schedule", fake_schedule)
    options = StudyOptions(studies=("noisy-labels",), losses=("ce",), seeds=(0,), noise_levels=(0.0,), grid="none")
    for jobs in (1, 2, 3):
        engine.run_study(options, tmp_path / f"jobs{jobs}", jobs=jobs)
    assert [t for _, t in seen] == [engine.CELL_THREADS] * 3 and engine.CELL_THREADS == 1
    with pytest.raises(ValueError, match="'cell_threads' parameter of run_study must be an int >= 1"):
        engine.run_study(options, tmp_path / "bad", cell_threads=0)


def _children(pid: int) -> set[int]:
    from pathlib import Path

    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids.update(int(k) for k in (task / "children").read_text().split())
        except OSError:
            pass
    return kids


def _alive(pid: int) -> bool:
    from pathlib import Path

    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the worker processes")
def test_workers_stop_with_a_terminated_parent_and_the_study_resumes(tmp_path):
    """Issue 17, item 9: SIGTERM to `experiment --jobs 2` used to leave its workers running."""
    import signal
    import subprocess
    import time

    out = tmp_path / "study"
    argv = [sys.executable, "-m", "deepmargin", "-q", "experiment", "noisy-labels", "--losses", "ce", "hinge",
            "--seeds", "0", "1", "--noise", "0", "--epochs", "40", "--grid", "none", "--jobs", "2", "--out", str(out),
            "--no-progress", "--no-report"]
    parent = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    deadline = time.time() + 60
    while time.time() < deadline and len(workers) < 2 and parent.poll() is None:
        workers = _children(parent.pid)
        time.sleep(0.2)
    assert len(workers) >= 2, "the study started no worker processes"
    parent.send_signal(signal.SIGTERM)
    parent.wait(timeout=30)
    deadline = time.time() + 5  # a cell takes longer: a worker still alive then is running on alone
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers), "worker processes outlived their terminated parent"
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (out / "rows.csv").exists()
