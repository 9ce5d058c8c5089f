"""Fetch the standard dataset files (MNIST, Fashion-MNIST, CIFAR-10) into a data root, verified.

Nothing here runs unless asked: :func:`~deepmargin.data.load_dataset` calls
:func:`download_dataset` only with ``download=True``.

Each file is checked against the MD5 published by its provider (the values in
:data:`DOWNLOAD_SOURCES`, as given on the MNIST / Fashion-MNIST / CIFAR-10 pages and widely used
by other loaders). A file is written to ``NAME.part`` in its final folder and renamed with
:func:`os.replace` only after its checksum matched, so an interrupted or corrupt transfer never
leaves a file under the final name. An interrupted transfer is resumed with an HTTP ``Range``
request from the size of ``NAME.part`` (or restarted when the server does not support it); a
file that fails its checksum is removed. Mirrors are tried in order. Proxies come from the usual
``http_proxy`` / ``https_proxy`` / ``no_proxy`` environment variables (urllib's default
``ProxyHandler``). A tqdm progress bar is shown when stderr is a terminal, log lines otherwise.

Layout under the data root (what :func:`~deepmargin.data.load_dataset` searches):
``mnist/`` and ``fashion-mnist/`` hold the four IDX ``.gz`` files; CIFAR-10's
``cifar-10-python.tar.gz`` is kept in the root and its batches are extracted to
``cifar-10-batches-py/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import shutil
import socket
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from .errors import DownloadError

__all__ = [
    "DATA_ENV_VAR",
    "DOWNLOAD_SOURCES",
    "DownloadSource",
    "RemoteFile",
    "default_data_root",
    "download_dataset",
    "download_file",
    "file_md5",
]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20  # bytes per read / write / hash update

#: Environment variable giving the data root when ``root=None`` (re-exported by ``deepmargin.data``).
DATA_ENV_VAR = "DEEPMARGIN_DATA"


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: its name (on the server and on disk) and its published MD5."""

    name: str
    md5: str


@dataclass(frozen=True)
class DownloadSource:
    """Where a dataset's files come from and where they go under the data root.

    Attributes:
        folder: subfolder of the data root the files are written to (``""``: the root itself).
        files: the files, each with its MD5.
        mirrors: base URLs tried in order; a file's URL is ``mirror + name``.
        extract_to: for an archive: subfolder of the root its members are extracted to.
        members: for an archive: member file name -> MD5 of the files to extract (the member's
            path inside the archive must be ``extract_to/name``).
    """

    folder: str
    files: tuple[RemoteFile, ...]
    mirrors: tuple[str, ...]
    extract_to: str | None = None
    members: Mapping[str, str] = field(default_factory=dict)


#: The files of each downloadable dataset with their published MD5s and mirrors, in order.
DOWNLOAD_SOURCES: dict[str, DownloadSource] = {
    "mnist": DownloadSource(
        folder="mnist",
        files=(
            RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    ),
    "fashion-mnist": DownloadSource(
        folder="fashion-mnist",
        files=(
            RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
    "cifar10": DownloadSource(
        folder="",
        files=(RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        extract_to="cifar-10-batches-py",
        members={
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
            "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
        },
    ),
}


def default_data_root() -> Path:
    """The per-user data folder used when neither ``root=`` nor ``$DEEPMARGIN_DATA`` is given.

    ``$XDG_CACHE_HOME/deepmargin`` when that variable is set, else ``~/.cache/deepmargin``.

    Example:
        >>> default_data_root().name
        'deepmargin'
    """
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache) if cache else Path.home() / ".cache").expanduser() / "deepmargin"


def file_md5(path: str | os.PathLike[str]) -> str:
    """The MD5 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _has_md5(path: Path, md5: str) -> bool:
    try:
        return path.is_file() and file_md5(path) == md5.lower()
    except OSError:
        return False


# --- one file ------------------------------------------------------------------------------


class _Truncated(OSError):
    """The server closed the connection before the announced end of the file."""


def _describe(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        reason = err.reason
        return f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
    return f"{type(err).__name__}: {err}"


@contextlib.contextmanager
def _locked(folder: Path, name: str) -> Iterator[None]:
    """Hold an exclusive lock on ``folder/.name.lock`` (POSIX) so that two processes do not write
    the same ``.part`` file at once; the second one waits and then finds the finished file."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    with open(folder / f".{name}.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _progress_bar(name: str, total: int | None, initial: int, progress: bool) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=name, unit="B", unit_scale=True, unit_divisor=1024, leave=False, file=sys.stderr)


def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"\s*bytes\s+(\d+)-", value or "")
    return int(match.group(1)) if match else None


def _open(url: str, offset: int, timeout: float) -> Any:
    """Open ``url``, asking for the bytes from ``offset`` on when ``offset > 0``."""
    request = urllib.request.Request(url, headers={"User-Agent": "deepmargin-data/1", "Accept-Encoding": "identity"})
    if offset > 0:
        request.add_header("Range", f"bytes={offset}-")
    # build_opener keeps urllib's default ProxyHandler, so http(s)_proxy / no_proxy are honoured
    return urllib.request.build_opener().open(request, timeout=timeout)


def _fetch(url: str, part: Path, *, timeout: float, progress: bool) -> int:
    """Append ``url``'s bytes to ``part`` (resuming from its size when the server allows a range).

    Returns:
        The offset the transfer started from (``0`` when it restarted or was fresh).

    Raises:
        urllib.error.URLError, OSError, http.client.HTTPException: connection problems; whatever
            arrived before the failure stays in ``part``.
    """
    offset = part.stat().st_size if part.is_file() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or offset == 0:
            raise
        err.close()
        logger.info("%s: the server refused to resume at byte %d; starting again", url, offset)
        part.unlink()
        offset = 0
        response = _open(url, 0, timeout)
    with response:
        status = getattr(response, "status", 200)
        if offset > 0 and (status != 206 or _content_range_start(response.headers.get("Content-Range")) != offset):
            logger.info("%s: the server does not resume at byte %d; starting again", url, offset)
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None and length.isdigit() else None
        if offset > 0:
            logger.info("resuming %s at byte %d", url, offset)
        else:
            logger.info("downloading %s%s", url, f" ({total} bytes)" if total is not None else "")
        received = offset
        bar = _progress_bar(part.name[: -len(".part")], total, offset, progress)
        try:
            with open(part, "ab" if offset > 0 else "wb") as out:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    if total is not None and received != total:
        raise _Truncated(f"connection closed after {received} of {total} bytes")
    return offset


def download_file(
    name: str,
    md5: str,
    folder: str | os.PathLike[str],
    mirrors: Sequence[str],
    *,
    timeout: float = 60.0,
    retries: int = 3,
    progress: bool | None = None,
) -> Path:
    """Make sure ``folder/name`` exists with MD5 ``md5``, fetching it from the first mirror that works.

    A file already there with the right checksum is not fetched again (one with a wrong
    checksum is replaced). The bytes go to ``folder/name.part`` and are renamed to
    ``folder/name`` only once their checksum matched; a transfer cut off mid-file is resumed
    (HTTP ``Range``) up to ``retries`` times on the same mirror, else the next mirror is tried;
    a ``.part`` left by an earlier interrupted call is resumed too. A file that fails its
    checksum is removed. Proxies: urllib's defaults from the environment.

    Args:
        name: file name on the server (``mirror + name``) and on disk.
        md5: expected MD5 hex digest.
        folder: target folder (created if missing).
        mirrors: base URLs, tried in order.
        timeout: seconds to wait for a connection or for data before giving up on an attempt.
        retries: extra attempts on one mirror after a transfer broke off with some data received.
        progress: tqdm progress bar; ``None``: only when stderr is a terminal (else log lines).

    Returns:
        The path of the verified file.

    Raises:
        DownloadError: no mirror delivered a file with the right checksum. The message names
            the file, its checksum, the folder and what each attempt gave.

    Example:
        >>> download_file(
        ...     "t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", "data/mnist",
        ...     ["https://ossci-datasets.s3.amazonaws.com/mnist/"],
        ... )  # doctest: +SKIP
        PosixPath('data/mnist/t10k-labels-idx1-ubyte.gz')
    """
    if not mirrors:
        raise ValueError(f"The 'mirrors' parameter of download_file must be a non-empty sequence of URLs. Got {mirrors!r} instead.")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"The 'retries' parameter of download_file must be an int >= 0. Got {retries!r} instead.")
    md5 = md5.lower()
    folder = Path(folder)
    final = folder / name
    if _has_md5(final, md5):
        logger.debug("%s is present with the right checksum; not downloading it", final)
        return final
    folder.mkdir(parents=True, exist_ok=True)
    show = sys.stderr.isatty() if progress is None else bool(progress)
    with _locked(folder, name):
        if _has_md5(final, md5):  # another process finished it while this one waited
            return final
        if final.exists():
            logger.warning("%s does not have the expected MD5 %s; downloading it again", final, md5)
        part = folder / f"{name}.part"
        attempts: list[str] = []
        for mirror in mirrors:
            url = mirror + name if mirror.endswith("/") else f"{mirror}/{name}"
            tries = 0
            while True:
                before = part.stat().st_size if part.is_file() else 0
                try:
                    start = _fetch(url, part, timeout=timeout, progress=show)
                except (urllib.error.URLError, OSError, http.client.HTTPException, socket.timeout) as err:
                    attempts.append(f"{url}: {_describe(err)}")
                    after = part.stat().st_size if part.is_file() else 0
                    if isinstance(err, urllib.error.HTTPError) or after <= before or tries >= retries:
                        break  # nothing arrived (server down, 404, ...): next mirror
                    tries += 1
                    logger.info("%s broke off after %d bytes; resuming (attempt %d of %d)", url, after, tries, retries)
                    continue
                found = file_md5(part)
                if found == md5:
                    os.replace(part, final)
                    logger.info("saved %s (md5 %s)", final, md5)
                    return final
                part.unlink()
                attempts.append(f"{url}: the file has MD5 {found}, expected {md5} (removed)")
                if start > 0 and tries < retries:  # a stale .part may have spoiled the resumed file
                    tries += 1
                    continue
                break
    tried = "; ".join(attempts)
    raise DownloadError(
        f"Could not download {name} (MD5 {md5}) into {folder}: no mirror gave a file with that checksum. Tried: {tried}."
    )


# --- a dataset -----------------------------------------------------------------------------


def _manual_hint(dataset: str, source: DownloadSource, root: Path) -> str:
    where = root / source.folder if source.folder else root
    files = ", ".join(f"{f.name} (MD5 {f.md5})" for f in source.files)
    urls = " or ".join(source.mirrors)
    hint = f"To install {dataset!r} by hand, get {files} from {urls} and put them in {where}"
    if source.extract_to is not None:
        hint += f" (or extract the archive there, so that {root / source.extract_to} holds {', '.join(source.members)})"
    return hint + "; files already there with the right checksum are not fetched again."


def _extract_members(archive: Path, root: Path, source: DownloadSource) -> None:
    """Extract ``source.members`` (and nothing else) from a tar archive into ``root/extract_to``,
    each through a ``.part`` file, verified against its MD5 before it gets its final name."""
    target = root / str(source.extract_to)
    target.mkdir(parents=True, exist_ok=True)
    wanted = {name: md5.lower() for name, md5 in source.members.items() if not _has_md5(target / name, md5.lower())}
    if not wanted:
        return
    logger.info("extracting %s into %s", archive, target)
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if not member.isfile() or len(parts) != 2 or parts[0] != source.extract_to or parts[1] not in wanted:
                    continue
                name = parts[1]
                part = target / f"{name}.part"
                reader: BinaryIO | None = tar.extractfile(member)
                if reader is None:
                    continue
                with reader, open(part, "wb") as out:
                    shutil.copyfileobj(reader, out, _CHUNK)
                found = file_md5(part)
                if found != wanted[name]:
                    part.unlink()
                    raise DownloadError(
                        f"{archive} member {member.name} has MD5 {found}, expected {wanted[name]} (removed). "
                        f"Delete {archive} and download it again."
                    )
                os.replace(part, target / name)
                del wanted[name]
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DownloadError(f"Could not extract {archive}: {type(err).__name__}: {err}. Delete it and download it again.") from err
    if wanted:
        raise DownloadError(
            f"{archive} lacks the members {', '.join(f'{source.extract_to}/{n}' for n in wanted)}. Delete it and download it again."
        )


def download_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    timeout: float = 60.0,
    retries: int = 3,
    progress: bool | None = None,
) -> Path:
    """Fetch and verify the files of ``name`` (``"mnist"``, ``"fashion-mnist"`` or ``"cifar10"``).

    Files already present with the right checksum are not fetched again; a CIFAR-10 whose
    extracted batches all have the right checksums needs no archive.

    Args:
        name: a key of :data:`DOWNLOAD_SOURCES`.
        root: data root; ``None``: ``$DEEPMARGIN_DATA``, else :func:`default_data_root`.
        timeout, retries, progress: as for :func:`download_file`.

    Returns:
        The folder that now holds the dataset's files as the readers expect them
        (``root/mnist``, ``root/fashion-mnist``, ``root/cifar-10-batches-py``).

    Raises:
        ValueError: unknown ``name``.
        DownloadError: offline, every mirror failed, or a checksum did not match. The message
            names the files, their checksums and the folder to put them in by hand.

    Example:
        >>> download_dataset("mnist", "~/data")  # doctest: +SKIP
        PosixPath('/home/me/data/mnist')
    """
    source = DOWNLOAD_SOURCES.get(name) if isinstance(name, str) else None
    if source is None:
        raise ValueError(f"The 'name' parameter of download_dataset must be a str in {tuple(DOWNLOAD_SOURCES)}. Got {name!r} instead.")
    if root is None:
        env = os.environ.get(DATA_ENV_VAR)
        root = Path(env) if env else default_data_root()
    root = Path(root).expanduser()
    folder = root / source.folder if source.folder else root
    if source.extract_to is not None and all(_has_md5(root / source.extract_to / m, md5.lower()) for m, md5 in source.members.items()):
        logger.debug("%s: %s holds every file with the right checksum; not downloading", name, root / source.extract_to)
        return root / source.extract_to
    try:
        for remote in source.files:
            path = download_file(remote.name, remote.md5, folder, source.mirrors, timeout=timeout, retries=retries, progress=progress)
            if source.extract_to is not None:
                _extract_members(path, root, source)
    except DownloadError as err:
        raise DownloadError(f"Dataset {name!r}: {err} {_manual_hint(name, source, root)}") from err
    return root / source.extract_to if source.extract_to is not None else folder
