"""A study directory on disk: its file locks, the checks of ``study.json`` before a run continues, and
``--overwrite``.

``study.json`` records the options, protocol, grid, presets, data facts and package versions of a
study; a later run in the same directory must ask for the same (:func:`prepare_dir`,
:func:`check_resolved`), or ``--overwrite`` deletes what the study wrote (:func:`delete_study`).
While a process works on a cell it holds an ``flock`` on ``CELL/.cell.lock`` (:data:`CELL_LOCK`,
:func:`locked`; a training run holds its own ``.lock`` in its folder besides); ``study.json`` is read
and extended under ``.study.lock``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import shutil
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .presets import preset_family
from .protocol import DEFAULT_FAMILY
from .studies import ALL_STUDIES, Plan, StudyOptions, build_plan

__all__ = [
    "CELL_LOCK", "FREE_OPTIONS", "STUDY_FILES", "as_written", "check_resolved", "delete_study", "load_plan", "locked", "options_from_dict",
    "prepare_dir", "versions",
]

#: The lock file of a cell being computed, in its folder. Not ``.lock``: that is the run-folder lock
#: :func:`deepmargin.training.train` takes itself (and removes when it ends).
CELL_LOCK = ".cell.lock"
#: Lock files of other processes that may be working in a study: a training run's (``.lock``,
#: also the cell lock of studies written before :data:`CELL_LOCK`).
_OTHER_LOCKS = (".lock",)
#: Options that may change between runs of one study directory.
FREE_OPTIONS = frozenset({"device", "data_root", "studies"})
#: What ``--overwrite`` deletes (only what a study writes).
STUDY_FILES = ("train", "eval", "compare", "cost", "shards", "figures", "rows.csv", "rows.jsonl", "report.md", "report.html",
               "study.json", "cells.json")


def as_written(value: Any) -> Any:
    """``value`` as it reads back from a JSON file the studies wrote: tuples as lists, non-finite
    floats as the strings ``"inf"``, ``"-inf"``, ``"nan"`` (what ``training.records.write_json`` stores).

    Example:
        >>> as_written({"eps": (0.1, float("inf"))})
        {'eps': [0.1, 'inf']}
    """

    from ..training.records import json_safe

    return json.loads(json.dumps(json_safe(value)))


def versions() -> dict[str, str]:
    """The versions of the packages that determine the numbers (recorded in ``study.json``)."""
    import platform

    import numpy
    import sklearn
    import torch

    from .. import __version__

    return {"deepmargin": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "scikit-learn": sklearn.__version__, "python": platform.python_version()}


@contextlib.contextmanager
def locked(path: Path, *, blocking: bool) -> Iterator[bool]:
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


def _options_key(options: StudyOptions) -> dict[str, Any]:
    """The options that must match, as they read back from ``study.json``."""
    return {k: v for k, v in as_written(options.to_dict()).items() if k not in FREE_OPTIONS}


def delete_study(out: Path) -> None:
    """``--overwrite``: delete what a study wrote in ``out`` -- only when ``out`` holds a study, and
    never while another process works on one of its cells."""
    if not (out / "study.json").exists():
        return
    for lock in (path for name in (CELL_LOCK, *_OTHER_LOCKS) for path in sorted(out.rglob(name))):
        with locked(lock, blocking=False) as free:
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


def prepare_dir(out: Path, options: StudyOptions, overwrite: bool) -> tuple[str, ...]:
    """Check ``out/study.json`` against ``options`` (not with ``overwrite``); returns the studies the
    directory holds after this run."""
    path = out / "study.json"
    if overwrite or not path.exists():
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


def check_resolved(out: Path, plan: Plan) -> None:
    """Refuse a grid file or a preset file whose content changed since the study in ``out`` was started."""
    path = out / "study.json"
    if not path.exists():
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    now = plan.describe()
    families = {DEFAULT_FAMILY, *plan.presets, *(preset_family(p.fields) for p in plan.presets.values())}
    for key in ("grid", "presets", "protocol", "data"):
        old, new = saved.get(key), as_written(now[key])
        if key == "grid" and isinstance(old, dict):  # only the families this study's presets use
            old = {k: v for k, v in old.items() if k in families}
            new = {k: v for k, v in new.items() if k in families}
        if key == "presets" and isinstance(old, dict):  # what trains, not the descriptions
            common = set(old) & set(new)
            old, new = {k: old[k].get("fields") for k in common}, {k: new[k].get("fields") for k in common}
        elif key in ("data", "protocol") and isinstance(old, dict):  # fields a newer version added take their defaults
            common = set(old) & set(new)
            old, new = {k: old[k] for k in common}, {k: new[k] for k in common}
        # order matters for the grid (it names the cells and breaks ties): compare the JSON text
        if old is not None and json.dumps(old) != json.dumps(new):
            raise ValueError(
                f"The {key} of the study in {str(out)!r} changed since it was started (a grid, preset or data file was "
                f"edited, or another deepmargin version): {json.dumps(old)} (saved) != {json.dumps(new)} (now). "
                "Restore it, use another --out, or --overwrite."
            )


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
