"""Running a study's cells: resumable, shardable, in parallel worker processes, with a progress display.

The runner is generic: it takes the cells of a plan (:func:`~deepmargin.experiments.studies.build_plan`),
and computes each through its kind (:mod:`deepmargin.experiments.cells`: what a training cell trains
and what an evaluation cell measures live there), once its dependencies are finished. A study
directory holds::

    study.json        the options, protocol, grid, presets and package versions (a rerun must match)
    cells.json        every cell with its resolved configuration and its shard group
    train/PRESET/SETTING/HP-seedS/   one training run each (config.json, metrics, last.pt, best.pt, results.json)
    eval/PRESET/seedS/rows.json      the attack rows of one chosen model
    compare/..., cost/...            compare-methods' measurements
    rows.csv, rows.jsonl             the tidy rows (an unsharded run, or ``deepmargin report``)
    shards/rows-I-of-N.jsonl/.csv    the rows of one shard
    report.md, report.html, figures/ the report (``report=`` of :func:`run_study`; the CLI passes
                                     :func:`deepmargin.reports.study.write_report`)

Safety: a cell is finished when its result file exists (``results.json`` / ``rows.json``, written
atomically last) and records the cell's configuration; finished cells are never recomputed, an
interrupted training cell resumes from its ``last.pt`` (the same numbers as an uninterrupted run on
CPU; on GPU up to nondeterministic kernels), an interrupted evaluation cell starts again. While a
process works on a cell it holds an ``flock`` on ``CELL/.cell.lock`` (the kernel releases it when the
process dies); other processes skip the cell and come back to it. ``study.json`` is read and
extended under ``.study.lock`` (:mod:`.studydir`). A training cell whose loss diverges is recorded as
such and never chosen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..training.records import write_json, write_rows
from .cells import CellError, CellJob, cell_kind, cell_result_path, read_results
from .progress import Progress
from .studies import ROW_COLUMNS, Cell, Plan, StudyOptions, build_plan, study_rows, unused_options
from .studydir import CELL_LOCK, check_resolved, delete_study, load_plan, locked, options_from_dict, prepare_dir, versions

__all__ = [
    "CellError", "ReportWriter", "StudyResult", "assign_shards", "cell_result_path", "collect_rows", "load_plan",
    "CELL_THREADS", "merge_and_report", "merge_rows", "options_from_dict", "parse_shard", "run_cell", "run_study", "usable_cpus",
]

logger = logging.getLogger(__name__)

_FORMAT = 1

#: What writes a report: ``writer(study directory, rows=rows) -> {role: file}`` (e.g.
#: :func:`deepmargin.reports.study.write_report`), run after the rows of an unsharded run are written.
ReportWriter = Callable[..., Mapping[str, Any]]

_delete_study = delete_study  # its old name


#: Torch threads of every study cell, whatever the number of cells running at once: results are
#: reproducible across ``--jobs`` and shards (the small models of the studies run about as fast on one
#: thread; use ``--jobs`` to fill the cores).
CELL_THREADS = 1


def usable_cpus() -> int:
    """CPU cores this process may use (its affinity mask where the platform has one)."""
    with contextlib.suppress(AttributeError, OSError):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def parse_shard(text: str | None, *, env: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """``"i/n"`` -> ``(i, n)`` (1-based); without text, Slurm's array variables if set, else ``None``.

    ``SLURM_ARRAY_TASK_ID`` is read relative to ``SLURM_ARRAY_TASK_MIN`` (default 0), so both
    ``--array=0-3`` and ``--array=1-4`` give shards 1/4 .. 4/4; ``SLURM_ARRAY_TASK_COUNT`` is n.

    Example:
        >>> parse_shard("2/3")
        (2, 3)
        >>> parse_shard(None, env={"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_COUNT": "2"})
        (2, 2)
    """
    if text is None:
        env = os.environ if env is None else env
        if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
            return None
        try:
            index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0")) + 1
            count = int(env["SLURM_ARRAY_TASK_COUNT"])
        except ValueError:
            raise ValueError(
                "The SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_MIN / SLURM_ARRAY_TASK_COUNT environment variables must be ints. "
                f"Got {env.get('SLURM_ARRAY_TASK_ID')!r}, {env.get('SLURM_ARRAY_TASK_MIN')!r}, {env.get('SLURM_ARRAY_TASK_COUNT')!r} instead."
            ) from None
        if count < 1 or not 1 <= index <= count:
            raise ValueError(
                "The Slurm array variables must describe a contiguous array (e.g. --array=0-7): read "
                f"SLURM_ARRAY_TASK_ID={env['SLURM_ARRAY_TASK_ID']}, SLURM_ARRAY_TASK_MIN={env.get('SLURM_ARRAY_TASK_MIN', '0')}, "
                f"SLURM_ARRAY_TASK_COUNT={env['SLURM_ARRAY_TASK_COUNT']}, which give shard {index}/{count}. Pass --shard I/N instead."
            )
        text = f"{index}/{count}"
    parts = str(text).split("/")
    try:
        index, count = (int(p) for p in parts) if len(parts) == 2 else (0, 0)
    except ValueError:
        index, count = 0, 0
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"The --shard option (shard) must be I/N with 1 <= I <= N, e.g. 1/4. Got {text!r} instead.")
    return index, count


def assign_shards(cells: Sequence[Cell], count: int) -> dict[tuple[float, float, int], int]:
    """Shard (1-based) of every group: the groups, largest estimated cost first, each to the least loaded shard.

    Deterministic (ties go to the earlier group and the lower shard), so every shard process
    computes the same assignment.
    """
    costs: dict[tuple[float, float, int], float] = {}
    for cell in cells:
        costs[cell.group] = costs.get(cell.group, 0.0) + cell.cost
    order = sorted(costs, key=lambda g: (-costs[g], list(costs).index(g)))
    load = [0.0] * count
    out = {}
    for group in order:
        shard = min(range(count), key=lambda i: (load[i], i))
        out[group] = shard + 1
        load[shard] += costs[group]
    return out


@dataclass
class StudyResult:
    """What :func:`run_study` returns.

    Attributes:
        out_dir: the study directory.
        rows: the rows this run wrote (a shard's own when sharded).
        ran, reused: the ids of the cells computed now and of those found finished.
        shard: ``(i, n)`` or ``None``.
        seconds: wall time.
        files: the files written, by role.
    """

    out_dir: Path
    rows: list[dict[str, Any]]
    ran: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    shard: tuple[int, int] | None = None
    seconds: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)


# -- cells --------------------------------------------------------------------------------------


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _check_study_folder(out_dir: str | os.PathLike[str]) -> None:
    from ..io import names_working_directory

    """Refuse a study folder that is empty text or the working directory itself, a file, or a
    training run's folder: a study would be written among files that are not its own."""
    text = os.fspath(out_dir)
    path = Path(text)
    if names_working_directory(text):
        raise ValueError(f"The 'out_dir' parameter of run_study (--out) must be a study folder's path, not empty nor "
                         f"the working directory itself. Got {text!r} instead.")
    if path.exists() and not path.is_dir():
        raise ValueError(f"The 'out_dir' parameter of run_study (--out) must be a folder. Got {text!r}, a file, instead.")
    if path.is_dir() and not (path / "study.json").exists() and any((path / f).exists() for f in ("last.pt", "config.json")):
        raise ValueError(f"The 'out_dir' parameter of run_study (--out) must be a study folder, new or made by "
                         f"deepmargin experiment. Got {text!r}, which holds a training run (config.json / last.pt), instead.")


def _init_worker(threads: int) -> None:
    """A worker process: its thread count, and it ends with its parent, whatever signal ends the
    parent (SIGTERM from Slurm or ``kill``, SIGKILL): on Linux the kernel sends it SIGTERM then
    (``prctl(PR_SET_PDEATHSIG)``); a cell it leaves unfinished is run again by the next run."""
    _set_threads(threads)
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - no prctl: workers end when their queue closes
            pass
        if os.getppid() == 1:  # the parent is already gone
            os._exit(1)


def run_cell(out: str, cell: dict[str, Any], dataset_label: str, threads: int) -> dict[str, Any]:
    """Compute one cell in this process (a worker's entry point); returns ``{"status", "seconds"}``.

    ``status`` is ``"done"`` (computed now), ``"found"`` (already finished), ``"locked"``
    (another live process works on it) or ``"diverged"`` (the training loss became NaN or
    infinite: recorded in ``results.json`` with no accuracy, so the grid point is never chosen
    and a rerun does not try it again). The cell's kind (:func:`~deepmargin.experiments.cells.cell_kind`)
    computes it.
    """
    _set_threads(threads)
    root = Path(out)
    the_cell = Cell(cell["id"], cell["kind"], tuple(cell["group"]), cell["config"], tuple(cell["deps"]), cell["cost"])
    kind = cell_kind(the_cell.kind)
    result_path = cell_result_path(root, the_cell)
    if result_path.exists():
        return {"status": "found", "seconds": 0.0}
    tic = time.perf_counter()
    with locked(root / the_cell.id / CELL_LOCK, blocking=False) as mine:
        if not mine:
            return {"status": "locked", "seconds": 0.0}
        if result_path.exists():
            return {"status": "found", "seconds": 0.0}
        try:
            status = kind.run(CellJob(root, the_cell, dataset_label, tic))
        except (CellError, KeyboardInterrupt):
            raise
        except Exception as exc:
            error = CellError(f"Cell {the_cell.id!r} of the study in {out!r} failed: {type(exc).__name__}: {exc}")
            error.user_error = isinstance(exc, (ValueError, TypeError, OSError, FloatingPointError))
            raise error from exc
    return {"status": status, "seconds": time.perf_counter() - tic}


# -- rows ---------------------------------------------------------------------------------------


def collect_rows(plan: Plan, out: str | os.PathLike[str], *, groups: set | None = None) -> list[dict[str, Any]]:
    """The rows of every finished cell of ``plan`` in ``out`` (only ``groups`` when given)."""
    results, cell_rows = {}, {}
    for cell_id, data in read_results(Path(out), plan.cells).items():
        if cell_kind(plan.cells[cell_id].kind).holds_rows:
            cell_rows[cell_id] = data["rows"]
        else:
            results[cell_id] = data
    return study_rows(plan, results, cell_rows, groups=groups)


# -- the run ------------------------------------------------------------------------------------


def _report_writer(report: Any) -> ReportWriter | None:
    if report is None or report is False:
        return None
    if not callable(report):
        raise ValueError(
            "The 'report' parameter of run_study must be None or a callable (study directory, *, rows) -> files, e.g. "
            f"deepmargin.reports.study.write_report (the experiments do not import the reports). Got {report!r} instead."
        )
    return report


def run_study(
    options: StudyOptions,
    out_dir: str | os.PathLike[str],
    *,
    shard: tuple[int, int] | None = None,
    jobs: int = 1,
    overwrite: bool = False,
    progress: bool | None = None,
    report: ReportWriter | None = None,
    wait_seconds: float = 5.0,
    cell_threads: int = CELL_THREADS,
) -> StudyResult:
    """Run (or continue) the studies of ``options`` in ``out_dir``.

    Args:
        options: what to run.
        out_dir: the study directory (created).
        shard: ``(i, n)``: run only the i-th of n disjoint parts of the grid (see :func:`assign_shards`).
        jobs: worker processes (``1``: in this process).
        cell_threads: torch threads of every cell (default :data:`CELL_THREADS`), whatever ``jobs`` is:
            torch's sums depend on the thread count, so a cell's numbers must not depend on how many
            cells run at once (the log records it).
        overwrite: delete the study files in ``out_dir`` first.
        progress: live progress line (``None``: when stderr is a terminal).
        report: called after an unsharded run has written its rows, as ``report(out_dir, rows=rows)``, to
            write the report (:func:`deepmargin.reports.study.write_report`); its files join
            ``StudyResult.files``. ``None`` (or False): no report.
        wait_seconds: polling interval while a cell is locked by another process.

    Returns:
        A :class:`StudyResult`.

    Raises:
        ValueError: ``out_dir`` holds a study run with other options (the differences are listed).
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"The 'jobs' parameter of run_study must be an int >= 1. Got {jobs!r} instead.")
    if overwrite and shard is not None:
        raise ValueError(
            "The 'overwrite' parameter of run_study (--overwrite) must be False with a shard: it would delete the other "
            f"shards' work. Got overwrite=True with shard {shard[0]}/{shard[1]} instead; delete the folder first."
        )
    writer = _report_writer(report)
    for text in unused_options(options):
        logger.warning(text)
    tic = time.perf_counter()
    _check_study_folder(out_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with locked(out / ".study.lock", blocking=True):  # concurrent runs read and extend study.json one at a time
        held = prepare_dir(out, options, overwrite)
        plan = build_plan(dataclasses.replace(options, studies=tuple(held)))  # every check before anything is deleted or written
        if overwrite:
            delete_study(out)
        else:
            check_resolved(out, plan)
            _check_finished(out, [c for c in plan.cells.values() if cell_result_path(out, c).exists()])
        describe = {"format": _FORMAT, **plan.describe(), "versions": versions()}
        describe["options"]["studies"] = list(held)
        write_json(out / "study.json", describe)
        write_json(out / "cells.json", {"cells": [c.to_dict() for c in plan.cells.values()]})

    cells = plan.cells_for(options.studies)
    groups = None
    if shard is not None:
        owner = assign_shards(list(plan.cells.values()), shard[1])
        groups = {g for g, s in owner.items() if s == shard[0]}
        cells = [c for c in cells if c.group in groups]
        if not groups:
            logger.warning(
                "shard %d/%d has no work: the grid splits into %d groups (label noise x fraction x seed); use at most "
                "that many shards", shard[0], shard[1], len(owner),
            )
    if isinstance(cell_threads, bool) or not isinstance(cell_threads, int) or cell_threads < 1:
        raise ValueError(f"The 'cell_threads' parameter of run_study must be an int >= 1. Got {cell_threads!r} instead.")
    threads = cell_threads  # fixed: the numbers of a cell do not depend on --jobs
    finished = {c.id for c in cells if cell_result_path(out, c).exists()}
    reused = sorted(finished)
    ran: list[str] = []
    display = Progress(len(cells), len(finished), jobs, progress)
    logger.info(
        "study %s on %s: %d cells%s, %d already finished, %d job(s) x %d thread(s)", "+".join(options.studies),
        plan.dataset_label, len(cells), f" (shard {shard[0]}/{shard[1]})" if shard else "", len(finished), jobs, threads,
    )
    pending = [c for c in cells if c.id not in finished]
    try:
        _schedule(out, plan, pending, finished, jobs, threads, display, ran, wait_seconds)
    finally:
        display.close()

    rows = collect_rows(plan, out, groups=groups)
    files: dict[str, Path] = {"study": out / "study.json", "cells": out / "cells.json"}
    if shard is not None:
        stem = out / "shards" / f"rows-{shard[0]}-of-{shard[1]}"
        write_rows(stem, rows, fieldnames=ROW_COLUMNS)
        files["rows"] = stem.with_suffix(".csv")
        logger.info("shard %d/%d finished; run `deepmargin report %s` when every shard has", shard[0], shard[1], out)
    else:
        write_rows(out / "rows", rows, fieldnames=ROW_COLUMNS)
        files["rows"] = out / "rows.csv"
        files["rows_jsonl"] = out / "rows.jsonl"
        if writer is not None:
            files.update(writer(out, rows=rows))
    return StudyResult(out, rows, ran, reused, shard, time.perf_counter() - tic, files)


def _check_finished(out: Path, cells: Sequence[Cell]) -> None:
    """Let each kind refuse its finished cells that were computed with another configuration."""
    by_kind: dict[str, list[Cell]] = {}
    for cell in cells:
        by_kind.setdefault(cell.kind, []).append(cell)
    for name, of_kind in by_kind.items():
        check = cell_kind(name).check_finished
        if check is not None:
            check(out, of_kind)


def _schedule(
    out: Path, plan: Plan, pending: list[Cell], finished: set[str], jobs: int, threads: int, display: Progress,
    ran: list[str], wait_seconds: float,
) -> None:
    """Run ``pending`` cells, each once its dependencies are finished; up to ``jobs`` at a time."""
    waiting = list(pending)
    retry_at: dict[str, float] = {}

    def ready() -> list[Cell]:
        now = time.monotonic()
        return [c for c in waiting if all(d in finished for d in c.deps) and retry_at.get(c.id, 0) <= now]

    def record(cell: Cell, outcome: Mapping[str, Any]) -> None:
        if outcome["status"] == "locked":
            retry_at[cell.id] = time.monotonic() + wait_seconds
            waiting.append(cell)
            logger.info("%s is being computed by another process; waiting for it", cell.id)
            return
        finished.add(cell.id)
        if outcome["status"] in ("done", "diverged"):
            ran.append(cell.id)
        display.finished(cell.id, outcome["seconds"], outcome["status"])

    label = plan.dataset_label
    if jobs == 1:
        while waiting:
            batch = ready()
            if not batch:
                _stalled(waiting, finished)
                time.sleep(min(wait_seconds, 1.0))
                continue
            cell = batch[0]
            waiting.remove(cell)
            display.running = 1
            display.draw()
            outcome = run_cell(str(out), cell.to_dict(), label, threads)
            display.running = 0
            record(cell, outcome)
        return

    import multiprocessing

    context = multiprocessing.get_context("spawn")
    running: dict[Future, Cell] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool:
        try:
            while waiting or running:
                for cell in ready():
                    if len(running) >= jobs:
                        break
                    waiting.remove(cell)
                    running[pool.submit(run_cell, str(out), cell.to_dict(), label, threads)] = cell
                display.running = len(running)
                display.draw()
                if not running:
                    _stalled(waiting, finished)
                    time.sleep(min(wait_seconds, 1.0))
                    continue
                done, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
                for future in done:
                    cell = running.pop(future)
                    display.running = len(running)
                    try:
                        outcome = future.result()
                    except BrokenProcessPool as exc:
                        raise CellError(
                            f"A worker process died while computing cell {cell.id!r} (out of memory, or killed): {exc}. "
                            "Run the same command again to continue; use fewer --jobs if memory is short."
                        ) from exc
                    record(cell, outcome)
                display.running = len(running)
        except BaseException:
            for future in running:
                future.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _stalled(waiting: Sequence[Cell], finished: set[str]) -> None:
    """Raise when no waiting cell can ever start (a dependency outside the run); never for locks."""
    ids = {c.id for c in waiting}
    for cell in waiting:
        missing = [d for d in cell.deps if d not in finished and d not in ids]
        if missing:
            raise CellError(f"Cell {cell.id!r} depends on cells that are not part of this run: {missing}.")


def merge_rows(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Rebuild ``rows.csv`` / ``rows.jsonl`` from every finished cell in ``out_dir`` (all shards).

    Returns the files written, by role, and ``"missing"``: the count of cells not finished.
    """
    return merge_and_report(out_dir)


def merge_and_report(out_dir: str | os.PathLike[str], *, report: ReportWriter | None = None) -> dict[str, Any]:
    """Rebuild ``rows.csv`` / ``rows.jsonl`` from every finished cell in ``out_dir`` (all shards), then
    ``report(out_dir, rows=rows)`` when given (``deepmargin report`` passes :func:`deepmargin.reports.study.write_report`).

    Returns the files written, by role; ``"missing"`` is not a file but the count of cells not finished.
    """
    writer = _report_writer(report)
    out = Path(out_dir)
    plan = load_plan(out)
    rows = collect_rows(plan, out)
    write_rows(out / "rows", rows, fieldnames=ROW_COLUMNS)
    files: dict[str, Any] = {"rows": out / "rows.csv", "rows_jsonl": out / "rows.jsonl"}
    missing = [c.id for c in plan.cells.values() if not cell_result_path(out, c).exists()]
    if missing:
        logger.warning("%d of %d cells are not finished yet (e.g. %s): the rows and the report cover the finished ones",
                       len(missing), len(plan.cells), missing[0])
    if writer is not None:
        files.update(writer(out, rows=rows))
    files["missing"] = len(missing)
    return files
