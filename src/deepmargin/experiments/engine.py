"""Running a study's cells: resumable, shardable, in parallel worker processes, with a progress display.

A study directory holds::

    study.json        the options, protocol, grid, presets and package versions (a rerun must match)
    cells.json        every cell with its resolved configuration and its shard group
    train/PRESET/SETTING/HP-seedS/   one training run each (config.json, metrics, last.pt, best.pt, results.json)
    eval/PRESET/seedS/rows.json      the attack rows of one chosen model
    rows.csv, rows.jsonl             the tidy rows (an unsharded run, or ``deepmargin report``)
    shards/rows-I-of-N.jsonl/.csv    the rows of one shard
    report.md, report.html, figures/ the report (:mod:`deepmargin.reports.study`)

Safety: a cell is finished when its result file exists (``results.json`` / ``rows.json``, written
atomically last) and records the cell's configuration; finished cells are never recomputed, an
interrupted training cell resumes from its ``last.pt`` (the same numbers as an uninterrupted run on
CPU; on GPU up to nondeterministic kernels), an interrupted evaluation cell starts again. While a
process works on a cell it holds an ``flock`` on ``CELL/.lock`` (the kernel releases it when the
process dies); other processes skip the cell and come back to it. ``study.json`` is read and
extended under ``.study.lock``. A training cell whose loss diverges is recorded as such and never
chosen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import math
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..training.records import _clean, write_json, write_rows
from .compare import COMPARE
from .presets import preset_family
from .studies import ALL_STUDIES, ROW_COLUMNS, Cell, Plan, StudyOptions, build_plan, study_rows

__all__ = [
    "StudyResult", "assign_shards", "collect_rows", "load_plan", "merge_and_report", "options_from_dict", "parse_shard",
    "run_study", "usable_cpus",
]

logger = logging.getLogger(__name__)

#: Options that may change between runs of one study directory.
FREE_OPTIONS = frozenset({"device", "data_root", "studies"})
#: What ``--overwrite`` deletes (only what a study writes).
STUDY_FILES = ("train", "eval", "compare", "cost", "shards", "figures", "rows.csv", "rows.jsonl", "report.md", "report.html", "study.json", "cells.json")

_FORMAT = 1


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


def _versions() -> dict[str, str]:
    import platform

    import numpy
    import sklearn
    import torch

    from .. import __version__

    return {"deepmargin": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "scikit-learn": sklearn.__version__, "python": platform.python_version()}


def _options_key(options: StudyOptions) -> dict[str, Any]:
    """The options that must match, as they read back from ``study.json`` (a JSON round trip)."""
    plain = json.loads(json.dumps(_clean(options.to_dict())))
    return {k: v for k, v in plain.items() if k not in FREE_OPTIONS}


def _delete_study(out: Path) -> None:
    """``--overwrite``: delete what a study wrote in ``out`` -- only when ``out`` holds a study, and
    never while another process works on one of its cells."""
    if not (out / "study.json").exists():
        return
    for lock in out.rglob(".lock"):
        with _locked(lock, blocking=False) as free:
            if not free:
                raise ValueError(
                    f"The study in {str(out)!r} cannot be overwritten: another process is computing the cell "
                    f"{str(lock.parent.relative_to(out))!r} (it holds {str(lock)!r}). Stop it first, or use another --out."
                )
    for name in STUDY_FILES:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _prepare_dir(out: Path, options: StudyOptions, overwrite: bool) -> tuple[str, ...]:
    """Check ``out/study.json`` against ``options`` (not with ``overwrite``); returns the studies the
    directory holds after this run."""
    path = out / "study.json"
    if overwrite:
        return tuple(s for s in ALL_STUDIES if s in options.studies)
    if not path.exists():
        return tuple(s for s in ALL_STUDIES if s in options.studies)
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        saved_options = saved["options"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{str(path)!r} is not a study file written by deepmargin ({exc}). Choose another --out, or --overwrite.") from exc
    now = _options_key(options)
    old = {k: v for k, v in saved_options.items() if k not in FREE_OPTIONS}
    diff = {k: (old.get(k), now.get(k)) for k in sorted(set(old) | set(now)) if old.get(k) != now.get(k)}
    if diff:
        lines = "; ".join(f"{k}: {a!r} (saved) != {b!r} (now)" for k, (a, b) in diff.items())
        raise ValueError(
            f"The study in {str(out)!r} was run with other options, refusing to continue it: {lines}. "
            "Use the same options, another --out, or --overwrite to start again."
        )
    held = set(saved_options.get("studies", ())) | set(options.studies)
    return tuple(s for s in ALL_STUDIES if s in held)


def _check_resolved(out: Path, plan: Plan) -> None:
    """Refuse a grid file or a preset file whose content changed since the study in ``out`` was started."""
    path = out / "study.json"
    if not path.exists():
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    now = plan.describe()
    families = {"default", *plan.presets, *(preset_family(p.fields) for p in plan.presets.values())}
    for key in ("grid", "presets", "protocol", "data"):
        old, new = saved.get(key), json.loads(json.dumps(_clean(now[key])))
        if key == "grid" and isinstance(old, dict):  # only the families this study's presets use
            old = {k: v for k, v in old.items() if k in families}
            new = {k: v for k, v in new.items() if k in families}
        if key == "presets" and isinstance(old, dict):  # what trains, not the descriptions
            common = set(old) & set(new)
            old, new = {k: old[k].get("fields") for k in common}, {k: new[k].get("fields") for k in common}
        elif key == "data" and isinstance(old, dict):
            common = set(old) & set(new)
            old, new = {k: old[k] for k in common}, {k: new[k] for k in common}
        # order matters for the grid (it names the cells and breaks ties): compare the JSON text
        if old is not None and json.dumps(old) != json.dumps(new):
            raise ValueError(
                f"The {key} of the study in {str(out)!r} changed since it was started (a grid, preset or data file was "
                f"edited, or another deepmargin version): {json.dumps(old)} (saved) != {json.dumps(new)} (now). "
                "Restore it, use another --out, or --overwrite."
            )


# -- locks ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path, *, blocking: bool) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created, never deleted) for the ``with`` block.

    Yields False, without waiting, when another process holds it and ``blocking`` is False. The
    kernel drops the lock when its holder dies (SIGKILL, power loss of that process's host on
    NFS after the lease), so a lock is never left behind. The file itself stays (deleting a lock
    file while another process waits on it would let two processes hold "the" lock).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        except OSError as exc:  # e.g. Lustre mounted with noflock, NFS without a lock manager
            raise OSError(
                f"Cannot lock {str(path)!r} ({exc}): the file system of the study directory does not support flock. "
                "Put --out on a file system that does (a local disk, NFS with locking, Lustre with -o flock)."
            ) from exc
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}))
            handle.flush()
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# -- cells --------------------------------------------------------------------------------------


def cell_result_path(out: Path, cell: Cell) -> Path:
    """The file whose presence marks ``cell`` finished."""
    return out / cell.id / ("results.json" if cell.kind == "train" else "rows.json")


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class CellError(RuntimeError):
    """A cell of a study failed (its id and the reason are in the message); a user-level error."""

    user_error = True


def run_cell(out: str, cell: dict[str, Any], dataset_label: str, threads: int) -> dict[str, Any]:
    """Compute one cell in this process (a worker's entry point); returns ``{"status", "seconds"}``.

    ``status`` is ``"done"`` (computed now), ``"found"`` (already finished), ``"locked"``
    (another live process works on it) or ``"diverged"`` (the training loss became NaN or
    infinite: recorded in ``results.json`` with no accuracy, so the grid point is never chosen
    and a rerun does not try it again).
    """
    _set_threads(threads)
    root = Path(out)
    the_cell = Cell(cell["id"], cell["kind"], tuple(cell["group"]), cell["config"], tuple(cell["deps"]), cell["cost"])
    result_path = cell_result_path(root, the_cell)
    if result_path.exists():
        return {"status": "found", "seconds": 0.0}
    cell_dir = root / the_cell.id
    tic = time.perf_counter()
    with _locked(cell_dir / ".lock", blocking=False) as mine:
        if not mine:
            return {"status": "locked", "seconds": 0.0}
        if result_path.exists():
            return {"status": "found", "seconds": 0.0}
        status = "done"
        try:
            if the_cell.kind == "train":
                from ..training import TrainConfig, train

                try:
                    train(TrainConfig.from_dict(the_cell.config), cell_dir, resume=None, progress=False, verbose=False)
                except FloatingPointError as exc:
                    status = "diverged"
                    write_json(result_path, {"status": "diverged", "error": str(exc), "config": the_cell.config,
                                             "best_val_acc": None, "test_acc": None, "test_acc_best": None,
                                             "seconds_total": time.perf_counter() - tic})
                    logger.warning("%s diverged (%s); it is never chosen", the_cell.id, exc)
            else:
                evaluate = {"eval": _evaluate, "compare": _evaluate_compare, "cost": _measure_cost}[the_cell.kind]
                rows = evaluate(root, the_cell, dataset_label)
                write_json(result_path, {"rows": rows, "seconds": time.perf_counter() - tic})
        except (CellError, KeyboardInterrupt):
            raise
        except Exception as exc:
            error = CellError(f"Cell {the_cell.id!r} of the study in {out!r} failed: {type(exc).__name__}: {exc}")
            error.user_error = isinstance(exc, (ValueError, TypeError, OSError, FloatingPointError))
            raise error from exc
    return {"status": status, "seconds": time.perf_counter() - tic}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CellError(f"The result file {str(path)!r} cannot be read ({exc}); delete it to recompute that cell.") from exc


def _read_results(root: Path, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for cell_id in ids:
        path = root / cell_id / "results.json"
        if path.exists():
            out[cell_id] = _read_json(path)
    return out


def _evaluate(root: Path, cell: Cell, dataset_label: str) -> list[dict[str, Any]]:
    """The adversarial-study rows of one chosen model: FGSM/IFGSM white- and black-box, Gaussian noise."""
    import torch

    from ..attacks import FGSM, IFGSM, GaussianNoise, accuracy_vs_epsilon
    from ..data import load_dataset
    from .studies import hp_label

    spec = cell.config
    found = _load_chosen(root, cell)
    if found is None:
        logger.warning("%s: every grid point of %s or of its source diverged; nothing to attack", cell.id, spec["loss"])
        return []
    results, chosen, model, source, meta = found
    device = torch.device(spec["device"])
    config = meta["config"]
    data_root = spec.get("data_root") or config.get("data_root")
    bundle = load_dataset(config["dataset"], root=data_root, val_size=0.0, seed=0)
    x, y = bundle.test.x, bundle.test.y
    if spec["attack_n"] is not None:
        x, y = x[: spec["attack_n"]], y[: spec["attack_n"]]
    x, y = x.to(device), y.to(device)
    bounds = tuple(bundle.bounds) if bundle.bounds is not None else (-math.inf, math.inf)
    steps = None if math.isfinite(bounds[1] - bounds[0]) else 10  # IFGSM's grey-level schedule needs finite bounds
    seed = int(spec["seed"])
    name = spec["loss"]
    base = {
        "study": "adversarial", "dataset": dataset_label, "loss": name, "label_noise": 0.0, "train_fraction": 1.0,
        "seed": seed, "val_acc": results[chosen].get("best_val_acc"), "test_acc_last": None,
        "n_train": (results[chosen].get("data") or {}).get("sizes", {}).get("train"),
        "hp": hp_label(chosen), "run": chosen,
    }
    rows: list[dict[str, Any]] = []

    def add(attack_rows: Sequence[Mapping[str, Any]], attack: str, box: str, source_name: str | None) -> None:
        for r in attack_rows:
            rows.append({**base, "attack": attack, "eps": float(r["eps"]), "box": box, "test_acc": r["accuracy"],
                         "n_test": r["n"], "source": source_name})

    eps = [float(e) for e in spec["eps"]]
    for attack_name, attack in (("fgsm", FGSM(eps=max(eps) or 1.0, bounds=bounds)),
                                ("ifgsm", IFGSM(eps=max(eps) or 1.0, bounds=bounds, steps=steps))):
        add(accuracy_vs_epsilon({name: model}, attack, x, y, eps), attack_name, "white", None)
        add(accuracy_vs_epsilon({name: model}, attack, x, y, eps, source=source, source_name=spec["source"]),
            attack_name, "black", spec["source"])
    clip_bounds = bounds if math.isfinite(bounds[1] - bounds[0]) else (-math.inf, math.inf)
    if spec["noise_std"]:
        noise = GaussianNoise(std=1.0, bounds=clip_bounds, clip=math.isfinite(bounds[1] - bounds[0]))
        add(accuracy_vs_epsilon({name: model}, noise, x, y, [float(s) for s in spec["noise_std"]], seed=seed), "noise-std", "none", None)
    if spec["snr_db"]:
        noise = GaussianNoise(snr=20.0, bounds=clip_bounds, clip=math.isfinite(bounds[1] - bounds[0]))
        add(accuracy_vs_epsilon({name: model}, noise, x, y, [float(s) for s in spec["snr_db"]], seed=seed), "noise-snr", "none", None)
    return rows


def _load_chosen(root: Path, cell: Cell):
    """``(results, chosen id, model, source, meta)`` of an evaluation cell: its preset's validation-chosen
    model and the ``ce`` source of the same seed, in eval mode on the cell's device; ``None`` when every
    grid point of either diverged."""
    import torch

    from ..training.checkpoint import load_model
    from .studies import select_runs

    spec = cell.config
    results = _read_results(root, list(cell.deps))
    chosen = select_runs(results, spec["candidates"])
    source_id = select_runs(results, spec["source_candidates"])
    if chosen is None or source_id is None:
        raise CellError(f"Cell {cell.id!r} started before its training cells finished: {sorted(set(cell.deps) - set(results))}.")
    if results[chosen].get("test_acc_best") is None or results[source_id].get("test_acc_best") is None:
        return None
    device = torch.device(spec["device"])
    model, meta = load_model(root / chosen / "best.pt", map_location="cpu")
    source, _ = load_model(root / source_id / "best.pt", map_location="cpu")
    return results, chosen, model.to(device).eval(), source.to(device).eval(), meta


def _chosen_models(root: Path, cell: Cell):
    """The chosen model of a measurement cell and its ``ce`` source, with the run's data bundle and row fields."""
    from ..data import load_dataset
    from .studies import hp_label

    spec = cell.config
    found = _load_chosen(root, cell)
    if found is None:
        return None
    results, chosen, model, source, meta = found
    config = meta["config"]
    bundle = load_dataset(config["dataset"], root=spec.get("data_root") or config.get("data_root"), val_size=config["val_size"],
                          train_fraction=config["train_fraction"], label_noise=config["label_noise"], seed=config["seed"])
    base = {"study": COMPARE, "loss": spec["loss"], "label_noise": 0.0, "train_fraction": 1.0, "seed": int(spec["seed"]),
            "val_acc": results[chosen].get("best_val_acc"), "n_train": len(bundle.train), "hp": hp_label(chosen), "run": chosen}
    return model, source, bundle, base


def _evaluate_compare(root: Path, cell: Cell, dataset_label: str) -> list[dict[str, Any]]:
    """The compare-methods measurements of one chosen clean model (:func:`.compare.evaluate_compare`)."""
    from .compare import evaluate_compare

    chosen = _chosen_models(root, cell)
    if chosen is None:
        logger.warning("%s: every grid point of %s or of its source diverged; nothing to measure", cell.id, cell.config["loss"])
        return []
    model, source, bundle, base = chosen
    return evaluate_compare(model, source, bundle, cell.config, {**base, "dataset": dataset_label})


def _measure_cost(root: Path, cell: Cell, dataset_label: str) -> list[dict[str, Any]]:
    """The step time and peak memory of every compare-methods method relative to ``ce`` (one process, interleaved)."""
    from .compare import measure_cost

    plan_cells = {c["id"]: c for c in json.loads((root / "cells.json").read_text(encoding="utf-8"))["cells"]}
    configs = {name: plan_cells[run]["config"] for name, run in cell.config["runs"].items()}
    base = {"study": COMPARE, "dataset": dataset_label, "label_noise": 0.0, "train_fraction": 1.0, "seed": cell.config["seed"]}
    return measure_cost(configs, cell.config, base)


# -- rows ---------------------------------------------------------------------------------------


def collect_rows(plan: Plan, out: str | os.PathLike[str], *, groups: set | None = None) -> list[dict[str, Any]]:
    """The rows of every finished cell of ``plan`` in ``out`` (only ``groups`` when given)."""
    root = Path(out)
    train_ids = [c.id for c in plan.cells.values() if c.kind == "train"]
    results = _read_results(root, train_ids)
    eval_rows = {}
    for cell in plan.cells.values():
        if cell.kind != "train":
            path = cell_result_path(root, cell)
            if path.exists():
                eval_rows[cell.id] = _read_json(path)["rows"]
    return study_rows(plan, results, eval_rows, groups=groups)


# -- progress -----------------------------------------------------------------------------------


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _Progress:
    """Cells done / running / left, elapsed and estimated time left: one rewritten line on a
    terminal, a log line per finished cell otherwise."""

    def __init__(self, total: int, done: int, jobs: int, show: bool | None) -> None:
        self.total, self.done, self.jobs = total, done, jobs
        self.running = 0
        self.start = time.perf_counter()
        self.durations: list[float] = []
        try:
            tty = sys.stderr.isatty()
        except (AttributeError, ValueError):
            tty = False
        self.live = tty if show is None else bool(show) and tty

    def eta(self) -> float | None:
        if not self.durations:
            return None
        left = self.total - self.done
        return sum(self.durations) / len(self.durations) * left / max(1, min(self.jobs, left or 1))

    def line(self) -> str:
        eta = self.eta()
        return (f"cells {self.done}/{self.total} done, {self.running} running, {self.total - self.done - self.running} left, "
                f"elapsed {_clock(time.perf_counter() - self.start)}, left ~{'?' if eta is None else _clock(eta)}")

    def draw(self) -> None:
        if self.live:
            sys.stderr.write("\r" + self.line().ljust(100))
            sys.stderr.flush()

    def finished(self, cell: Cell, seconds: float, status: str) -> None:
        self.done += 1
        if status in ("done", "diverged"):
            self.durations.append(seconds)
        if self.live:
            self.draw()
        else:
            logger.info("[%d/%d] %s %s (%.1f s); %s", self.done, self.total, cell.id, status, seconds, self.line())

    def close(self) -> None:
        if self.live:
            sys.stderr.write("\n")
            sys.stderr.flush()


# -- the run ------------------------------------------------------------------------------------


def _needed(plan: Plan, studies: Sequence[str]) -> list[Cell]:
    ids: dict[str, None] = {}
    for (study, *_rest), cands in plan.candidates.items():
        if study in studies:
            ids.update(dict.fromkeys(cands))
    if "adversarial" in studies:
        ids.update({c.id: None for c in plan.cells.values() if c.kind == "eval"})
    if COMPARE in studies:
        ids.update({c.id: None for c in plan.cells.values() if c.kind in ("compare", "cost")})
    return [plan.cells[i] for i in plan.cells if i in ids]


def run_study(
    options: StudyOptions,
    out_dir: str | os.PathLike[str],
    *,
    shard: tuple[int, int] | None = None,
    jobs: int = 1,
    overwrite: bool = False,
    progress: bool | None = None,
    report: bool = True,
    wait_seconds: float = 5.0,
) -> StudyResult:
    """Run (or continue) the studies of ``options`` in ``out_dir``.

    Args:
        options: what to run.
        out_dir: the study directory (created).
        shard: ``(i, n)``: run only the i-th of n disjoint parts of the grid (see :func:`assign_shards`).
        jobs: worker processes (``1``: in this process). Each gets ``usable_cpus() // jobs`` torch threads.
        overwrite: delete the study files in ``out_dir`` first.
        progress: live progress line (``None``: when stderr is a terminal).
        report: write the report after an unsharded run.
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
    tic = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out / ".study.lock", blocking=True):  # concurrent runs read and extend study.json one at a time
        held = _prepare_dir(out, options, overwrite)
        plan = build_plan(_with_studies(options, held))  # every check before anything is deleted or written
        if overwrite:
            _delete_study(out)
        else:
            _check_resolved(out, plan)
            _check_finished(out, [c for c in plan.cells.values() if cell_result_path(out, c).exists()])
        describe = {"format": _FORMAT, **plan.describe(), "versions": _versions()}
        describe["options"]["studies"] = list(held)
        write_json(out / "study.json", describe)
        write_json(out / "cells.json", {"cells": [c.to_dict() for c in plan.cells.values()]})

    cells = _needed(plan, options.studies)
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
    threads = max(1, usable_cpus() // jobs)
    finished = {c.id for c in cells if cell_result_path(out, c).exists()}
    reused = sorted(finished)
    ran: list[str] = []
    display = _Progress(len(cells), len(finished), jobs, progress)
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
        if report:
            from ..reports.study import write_report

            files.update(write_report(out, rows=rows))
    return StudyResult(out, rows, ran, reused, shard, time.perf_counter() - tic, files)


def _check_finished(out: Path, cells: Sequence[Cell]) -> None:
    """Refuse finished training cells whose recorded configuration is not the cell's (never reuse another run)."""
    from ..losses import loss_spec
    from ..training.config import RESUME_FREE_KEYS, config_differences

    for cell in cells:
        if cell.kind != "train":
            continue
        saved = _read_json(cell_result_path(out, cell)).get("config") or {}
        now = dict(cell.config)
        uses_layers = loss_spec(now.get("loss", "ce")).uses_layers
        if uses_layers and now.get("layers") is None:
            now["layers"] = _default_layers(now)  # what train() resolves None to today
        ignore = RESUME_FREE_KEYS | ({"layers"} if not uses_layers else set())
        diff = config_differences(saved, now, ignore=ignore)
        if diff:
            lines = "; ".join(f"{k}: {a!r} (saved) != {b!r} (now)" for k, (a, b) in diff.items())
            raise ValueError(
                f"The finished cell {cell.id!r} in {str(out)!r} was trained with another configuration ({lines}). "
                "Use another --out, or --overwrite to start the study again."
            )


def _default_layers(config: Mapping[str, Any]) -> list[str] | None:
    """The default margin layers of a cell's model (None when the model cannot be built here)."""
    from ..models import build_model
    from ..training.objective import default_margin_layers

    key = json.dumps([config["model"], config.get("model_kwargs"), config["dataset"]], sort_keys=True)
    if key not in _LAYER_CACHE:
        try:
            from ..data import load_dataset

            bundle = load_dataset(config["dataset"], root=config.get("data_root"), val_size=0.0, seed=0)
            model = build_model(config["model"], num_classes=bundle.num_classes, input_shape=bundle.input_shape,
                                **(config.get("model_kwargs") or {}))
            _LAYER_CACHE[key] = default_margin_layers(model)
        except (ValueError, TypeError, OSError):
            _LAYER_CACHE[key] = None
    return _LAYER_CACHE[key]


_LAYER_CACHE: dict[str, list[str] | None] = {}


def _with_studies(options: StudyOptions, studies: Sequence[str]) -> StudyOptions:
    return dataclasses.replace(options, studies=tuple(studies))


def _schedule(
    out: Path, plan: Plan, pending: list[Cell], finished: set[str], jobs: int, threads: int, display: _Progress,
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
        display.finished(cell, outcome["seconds"], outcome["status"])

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
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_set_threads, initargs=(threads,)) as pool:
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


def options_from_dict(data: Mapping[str, Any]) -> StudyOptions:
    """Rebuild :class:`StudyOptions` from :meth:`StudyOptions.to_dict` output (lists back to tuples)."""
    known = {f.name for f in dataclasses.fields(StudyOptions)}
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known}
    return StudyOptions(**values)


def load_plan(out_dir: str | os.PathLike[str]) -> Plan:
    """The plan of the study in ``out_dir``, rebuilt from its ``study.json``."""
    path = Path(out_dir) / "study.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(Path(out_dir))!r} holds no study (no study.json). Give the --out folder of a `deepmargin experiment` run."
        )
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        options = options_from_dict(saved["options"])
        return build_plan(options, saved=saved)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{str(path)!r} is not a study file written by deepmargin ({type(exc).__name__}: {exc}).") from exc


def merge_and_report(out_dir: str | os.PathLike[str], *, report: bool = True) -> dict[str, Path]:
    """Rebuild ``rows.csv`` / ``rows.jsonl`` from every finished cell in ``out_dir`` (all shards), then the report.

    Returns the files written, by role; ``"missing"`` is not a file but the count of cells not finished.
    """
    out = Path(out_dir)
    plan = load_plan(out)
    rows = collect_rows(plan, out)
    write_rows(out / "rows", rows, fieldnames=ROW_COLUMNS)
    files: dict[str, Any] = {"rows": out / "rows.csv", "rows_jsonl": out / "rows.jsonl"}
    missing = [c.id for c in plan.cells.values() if not cell_result_path(out, c).exists()]
    if missing:
        logger.warning("%d of %d cells are not finished yet (e.g. %s): the rows and the report cover the finished ones",
                       len(missing), len(plan.cells), missing[0])
    if report:
        from ..reports.study import write_report

        files.update(write_report(out, rows=rows))
    files["missing"] = len(missing)
    return files
