"""Atomic file writing, shared by training (checkpoints, metrics), reports and the CLI.

Every result file is written to a temporary file beside its destination and moved onto it with
``os.replace``, so an interruption or an error never leaves a half-written or corrupted file, and
an existing file survives a failed write. New files get the usual permissions (``0o666`` less
the umask; a replaced file keeps its own).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_text", "read_json_object", "save_figure"]


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], None], *, binary: bool = False) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, then ``os.replace`` it onto ``path``.

    A crash or an error inside ``write`` leaves any existing file at ``path`` untouched and
    removes the temporary file. Parent folders are created.

    Args:
        path: destination file.
        write: writes the whole content to the open handle it is given.
        binary: open the temporary file in binary mode (default: text, UTF-8, ``newline=''``).

    Returns:
        ``path`` as a ``Path``.

    Example:
        >>> import tempfile, os
        >>> p = atomic_write(os.path.join(tempfile.mkdtemp(), "a.txt"), lambda h: h.write("hello"))
        >>> p.read_text()
        'hello'
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"The output file {str(path)!r} is a directory; give a file path (e.g. "
                                f"{str(path / 'out.json')!r}) instead.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        text = {} if binary else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, "wb" if binary else "w", **text) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _file_mode(path: Path) -> int:
    """Permissions for a new file at ``path``: those of the file it replaces, else ``0o666`` less the umask."""
    with contextlib.suppress(OSError):
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def names_working_directory(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is empty or names the working directory itself (``"."``, ``"./"``): what an
    empty ``--out`` becomes. An output folder of a run or a study must not be it.

    Example:
        >>> [names_working_directory(p) for p in ("", " ", ".", "./", "runs/x")]
        [True, True, True, True, False]
    """
    text = os.fspath(path)
    return not text.strip() or not Path(text).parts


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(text))


def save_figure(fig: Any, path: str | os.PathLike[str], *, dpi: int = 120) -> Path:
    """Save a matplotlib ``Figure`` atomically, in the format named by the file's suffix."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    return atomic_write(path, lambda handle: fig.savefig(handle, format=fmt, dpi=dpi), binary=True)


def read_json_object(path: str | os.PathLike[str], what: str) -> dict:
    """The JSON object in ``path``; ``what`` names the file in errors (e.g. ``"preset file"``).

    Raises:
        FileNotFoundError: no such file. ValueError: not valid JSON, or not a JSON object.
    """
    import json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"The {what} {str(path)!r} does not exist.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"The {what} {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"The {what} {str(path)!r} must hold a JSON object. Got a {type(data).__name__} instead.")
    return data
