"""One training process per run folder: an exclusive lock held for the whole of :func:`~deepmargin.training.train`.

Two runs writing into the same folder would interleave their ``metrics.jsonl`` rows and overwrite
each other's checkpoints. :class:`RunFolderLock` takes an exclusive ``flock`` on the file
``LOCK_NAME`` in the run folder without waiting: a second process is refused at once with
:class:`RunFolderBusyError`, which names the folder and the process holding it. The operating
system drops the lock when its process ends, however it ends (a killed run leaves no stale lock);
a run that ends normally, or with an exception, releases it and removes the file, so a finished
run folder holds only the run's files (and a folder the lock created for a run refused before it
wrote anything is removed again).

The file is removed while the lock is still held, and a process that has just locked checks that
the path still names the file it locked (otherwise it locks again): two processes can therefore
never both hold a folder, even when one of them opened the old file just before it was removed.

On a platform without ``fcntl`` (Windows), or a file system that does not support locks, the run
goes on unlocked, with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path
from types import TracebackType

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "RunFolderBusyError", "RunFolderLock"]

logger = logging.getLogger(__name__)

#: The lock file a training process keeps in its run folder while it runs.
LOCK_NAME = ".lock"

_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


class RunFolderBusyError(BlockingIOError):
    """Another process is training into the run folder (an ``OSError``)."""


class RunFolderLock:
    """The exclusive, non-blocking lock of a run folder (a context manager).

    Args:
        folder: the run folder (created when missing).

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> with RunFolderLock(folder) as lock:
        ...     try:
        ...         RunFolderLock(folder).acquire()
        ...     except RunFolderBusyError:
        ...         print("busy")
        busy
        >>> lock.held
        False
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._created = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunFolderLock:
        """Take the lock, or raise :class:`RunFolderBusyError` at once when another process holds it."""
        if self._fd is not None:
            return self
        self._created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover - Windows
            logger.warning("cannot lock run folder %s on this platform; make sure no other process trains into it",
                           self.folder)
            return self
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the folder's creator removed it again, empty
                self.folder.mkdir(parents=True, exist_ok=True)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise RunFolderBusyError(
                    f"Run folder {str(self.folder)!r} is in use by another training process"
                    f"{f' (pid {holder})' if holder else ''}, which holds {str(self.path)!r}. Wait for that run to "
                    "finish (or stop it), or train into another folder (--out)."
                ) from None
            except OSError as exc:
                os.close(fd)
                if exc.errno not in _UNSUPPORTED:
                    raise
                logger.warning("the file system of %s does not support locks (%s); make sure no other process "
                               "trains into it", self.folder, exc)
                return self
            except BaseException:
                os.close(fd)
                raise
            if _names(self.path, fd):
                break
            os.close(fd)  # the previous holder removed the file we locked: lock the current one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (nothing to do when not held); a folder the lock
        created is removed too when nothing was written into it (a run refused before it started)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
            if self._created:
                with contextlib.suppress(OSError):  # not empty: the run wrote into it
                    self.folder.rmdir()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> RunFolderLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` is still the file open as ``fd``."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _read_holder(fd: int) -> str:
    """The process id the holder wrote into the lock file ('' when unknown)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""
