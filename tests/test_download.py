"""download=True: verified, resumable, atomic downloads, tested against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import pickle
import socket
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from deepmargin.data import DatasetFileError, DownloadError, load_dataset
from deepmargin.data import download as dl
from deepmargin.data.download import DownloadSource, RemoteFile, download_dataset, download_file

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "no_proxy", "NO_PROXY")


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class _Server:
    """A tiny file server. ``files`` maps a file name to its bytes; ``drop`` maps a name to the
    number of bytes after which the next responses for it break off (one entry used per request);
    ``ranges`` says whether Range requests are honoured; ``requests`` records (path, Range header)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop: dict[str, list[int]] = {}
        self.ranges = True
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep the test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                header = self.headers.get("Range")
                server.requests.append((self.path, header))
                name = self.path.rsplit("/", 1)[-1]
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                start = 0
                if header and server.ranges:
                    start = int(header.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.drop.get(name)
                if cut:
                    self.wfile.write(body[: cut.pop(0)])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests talk to 127.0.0.1 directly, whatever proxies the machine has configured."""
    for var in _PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    yield srv
    srv.close()


def _down_url() -> str:
    """A 127.0.0.1 URL where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _no_part_files(folder: Path) -> bool:
    return not list(folder.glob("*.part"))


PAYLOAD = np.random.default_rng(0).integers(0, 256, size=300_000, dtype=np.uint8).tobytes()


# --- download_file -------------------------------------------------------------------------


def test_success_and_not_fetched_again(server: _Server, tmp_path: Path) -> None:
    server.files["a.bin"] = PAYLOAD
    path = download_file("a.bin", _md5(PAYLOAD), tmp_path / "sub", [server.url], progress=False)
    assert path == tmp_path / "sub" / "a.bin" and path.read_bytes() == PAYLOAD
    assert _no_part_files(path.parent) and len(server.requests) == 1
    assert download_file("a.bin", _md5(PAYLOAD), tmp_path / "sub", [server.url], progress=False) == path
    assert len(server.requests) == 1  # present with the right checksum: no request


def test_file_with_wrong_checksum_is_replaced(server: _Server, tmp_path: Path) -> None:
    server.files["a.bin"] = PAYLOAD
    (tmp_path / "a.bin").write_bytes(b"old")
    download_file("a.bin", _md5(PAYLOAD), tmp_path, [server.url], progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_checksum_mismatch_removes_the_file(server: _Server, tmp_path: Path) -> None:
    server.files["a.bin"] = PAYLOAD
    expected = _md5(b"something else")
    with pytest.raises(DownloadError) as info:
        download_file("a.bin", expected, tmp_path, [server.url], progress=False)
    message = str(info.value)
    assert "a.bin" in message and expected in message and _md5(PAYLOAD) in message and str(tmp_path) in message
    assert not (tmp_path / "a.bin").exists() and _no_part_files(tmp_path)


def test_dropped_connection_then_a_second_call_resumes(server: _Server, tmp_path: Path) -> None:
    server.files["a.bin"] = PAYLOAD
    server.drop["a.bin"] = [100_000]
    with pytest.raises(DownloadError, match="a.bin"):
        download_file("a.bin", _md5(PAYLOAD), tmp_path, [server.url], retries=0, progress=False)
    assert not (tmp_path / "a.bin").exists()  # never a half file under the final name
    assert (tmp_path / "a.bin.part").stat().st_size == 100_000
    download_file("a.bin", _md5(PAYLOAD), tmp_path, [server.url], retries=0, progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD and _no_part_files(tmp_path)
    assert server.requests[-1][1] == "bytes=100000-"


def test_dropped_connection_is_resumed_within_one_call(server: _Server, tmp_path: Path) -> None:
    server.files["a.bin"] = PAYLOAD
    server.drop["a.bin"] = [50_000, 70_000]
    download_file("a.bin", _md5(PAYLOAD), tmp_path, [server.url], retries=3, progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert [r for _, r in server.requests] == [None, "bytes=50000-", "bytes=120000-"]


def test_server_without_ranges_restarts(server: _Server, tmp_path: Path) -> None:
    server.files["a.bin"] = PAYLOAD
    server.ranges = False
    server.drop["a.bin"] = [100_000]
    download_file("a.bin", _md5(PAYLOAD), tmp_path, [server.url], progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD and _no_part_files(tmp_path)


def test_stale_part_file_is_discarded(server: _Server, tmp_path: Path) -> None:
    server.files["a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(b"\xff" * 1000)  # left by a transfer of other bytes
    download_file("a.bin", _md5(PAYLOAD), tmp_path, [server.url], progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert [r for _, r in server.requests] == ["bytes=1000-", None]

    (tmp_path / "b.bin.part").write_bytes(b"\x00" * (len(PAYLOAD) + 5))  # longer than the file: 416
    server.files["b.bin"] = PAYLOAD
    download_file("b.bin", _md5(PAYLOAD), tmp_path, [server.url], progress=False)
    assert (tmp_path / "b.bin").read_bytes() == PAYLOAD


def test_server_down(tmp_path: Path) -> None:
    url = _down_url()
    with pytest.raises(DownloadError) as info:
        download_file("a.bin", _md5(PAYLOAD), tmp_path, [url], progress=False)
    message = str(info.value)
    assert "Could not download a.bin" in message and url + "a.bin" in message and _md5(PAYLOAD) in message
    assert not (tmp_path / "a.bin").exists() and _no_part_files(tmp_path)


def test_first_mirror_fails_second_serves(server: _Server, tmp_path: Path) -> None:
    server.files["a.bin"] = PAYLOAD
    other = _Server()  # up, but without the file: 404
    try:
        mirrors = [_down_url(), other.url, server.url]
        download_file("a.bin", _md5(PAYLOAD), tmp_path, mirrors, progress=False)
    finally:
        other.close()
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert other.requests == [("/a.bin", None)] and server.requests == [("/a.bin", None)]


def test_proxy_from_the_environment_is_used(server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.files["a.bin"] = PAYLOAD
    monkeypatch.setenv("http_proxy", server.url)
    monkeypatch.setenv("no_proxy", "")
    download_file("a.bin", _md5(PAYLOAD), tmp_path, ["http://mirror.invalid/data/"], progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert server.requests == [("http://mirror.invalid/data/a.bin", None)]  # the proxy got the full URL


def test_progress_bar(server: _Server, tmp_path: Path) -> None:
    server.files["a.bin"] = PAYLOAD
    download_file("a.bin", _md5(PAYLOAD), tmp_path, [server.url], progress=True)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


@pytest.mark.parametrize(
    "kwargs,match",
    [({"mirrors": []}, "'mirrors' parameter of download_file"), ({"retries": -1}, "'retries' parameter of download_file")],
)
def test_download_file_arguments(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"mirrors": ["http://127.0.0.1:1/"], **kwargs}
    with pytest.raises(ValueError, match=match):
        download_file("a.bin", "0" * 32, tmp_path, **args)


# --- datasets ------------------------------------------------------------------------------


def _idx_gz(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.tobytes(), mtime=0)


def _serve_mnist(server: _Server, monkeypatch: pytest.MonkeyPatch, name: str = "mnist") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(30, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(30, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(10, dtype=np.uint8),
    }
    files = []
    for stem, array in arrays.items():
        data = _idx_gz(array, 2051 if array.ndim == 3 else 2049)
        server.files[stem + ".gz"] = data
        files.append(RemoteFile(stem + ".gz", _md5(data)))
    source = dataclasses.replace(dl.DOWNLOAD_SOURCES[name], files=tuple(files), mirrors=(server.url,))
    monkeypatch.setitem(dl.DOWNLOAD_SOURCES, name, source)
    return arrays


@pytest.mark.parametrize("name,folder", [("mnist", "mnist"), ("fashion-mnist", "fashion-mnist")])
def test_load_dataset_downloads_idx(server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, folder: str) -> None:
    arrays = _serve_mnist(server, monkeypatch, name)
    with pytest.raises(DatasetFileError, match="download=True"):
        load_dataset(name, root=tmp_path, val_size=0)
    assert server.requests == []  # nothing downloads without download=True
    bundle = load_dataset(name, root=tmp_path, val_size=0, download=True)
    assert len(server.requests) == 4 and _no_part_files(tmp_path / folder)
    assert torch.equal(bundle.test.y, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"].astype(np.int64)))
    assert torch.equal(bundle.train.x[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]).float() / 255)
    again = load_dataset(name, root=tmp_path, val_size=0, download=True)  # verified, not fetched
    assert len(server.requests) == 4 and torch.equal(again.train.x, bundle.train.x)
    assert torch.equal(load_dataset(name, root=tmp_path, val_size=0).train.x, bundle.train.x)


def test_only_missing_or_wrong_files_are_fetched(server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _serve_mnist(server, monkeypatch)
    download_dataset("mnist", tmp_path, progress=False)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(b"corrupt")
    server.requests.clear()
    load_dataset("mnist", root=tmp_path, download=True)
    assert sorted(p for p, _ in server.requests) == ["/t10k-labels-idx1-ubyte.gz", "/train-labels-idx1-ubyte.gz"]


def test_files_found_elsewhere_are_not_downloaded(server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = _serve_mnist(server, monkeypatch)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem, array in arrays.items():
        (raw / (stem + ".gz")).write_bytes(server.files[stem + ".gz"])
    load_dataset("mnist", root=tmp_path, download=True)
    assert server.requests == [] and not (tmp_path / "mnist").exists()


def test_default_root_is_the_user_cache(server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _serve_mnist(server, monkeypatch)
    monkeypatch.delenv("DEEPMARGIN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    load_dataset("mnist", download=True)
    assert (tmp_path / "cache" / "deepmargin" / "mnist" / "train-images-idx3-ubyte.gz").is_file()
    assert len(load_dataset("mnist", val_size=0).test) == 10  # the folder exists now: found without download
    monkeypatch.setenv("DEEPMARGIN_DATA", str(tmp_path / "env"))
    load_dataset("mnist", download=True)
    assert (tmp_path / "env" / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()


def test_dataset_error_says_what_to_put_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = dataclasses.replace(dl.DOWNLOAD_SOURCES["mnist"], mirrors=(_down_url(),))
    monkeypatch.setitem(dl.DOWNLOAD_SOURCES, "mnist", source)
    with pytest.raises(DownloadError) as info:
        load_dataset("mnist", root=tmp_path, download=True)
    message = str(info.value)
    assert f"put them in {tmp_path / 'mnist'}" in message
    for remote in source.files:
        assert f"{remote.name} (MD5 {remote.md5})" in message
    assert isinstance(info.value, DatasetFileError)


def _cifar_batch(seed: int, n: int) -> bytes:
    rng = np.random.default_rng(seed)
    batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), b"labels": [int(v) for v in rng.integers(0, 10, n)]}
    return pickle.dumps(batch, protocol=2)


def _serve_cifar(server: _Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    members = {f"data_batch_{i}": _cifar_batch(i, 4) for i in range(1, 6)}
    members["test_batch"] = _cifar_batch(9, 3)
    members["batches.meta"] = pickle.dumps({b"label_names": [b"a"] * 10}, protocol=2)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in {**members, "readme.html": b"<html></html>"}.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    server.files["cifar-10-python.tar.gz"] = buffer.getvalue()
    source = dataclasses.replace(
        dl.DOWNLOAD_SOURCES["cifar10"],
        files=(RemoteFile("cifar-10-python.tar.gz", _md5(buffer.getvalue())),),
        mirrors=(server.url,),
        members={name: _md5(data) for name, data in members.items()},
    )
    monkeypatch.setitem(dl.DOWNLOAD_SOURCES, "cifar10", source)
    return members


def test_load_dataset_downloads_and_extracts_cifar10(server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _serve_cifar(server, monkeypatch)
    bundle = load_dataset("cifar10", root=tmp_path, val_size=0, download=True)
    assert len(bundle.train) == 20 and len(bundle.test) == 3 and bundle.input_shape == (3, 32, 32)
    extracted = tmp_path / "cifar-10-batches-py"
    assert sorted(p.name for p in extracted.iterdir()) == sorted(["batches.meta", *[f"data_batch_{i}" for i in range(1, 6)], "test_batch"])
    assert (tmp_path / "cifar-10-python.tar.gz").is_file() and len(server.requests) == 1
    (tmp_path / "cifar-10-python.tar.gz").unlink()  # the verified batches suffice
    load_dataset("cifar10", root=tmp_path, download=True)
    assert len(server.requests) == 1
    (extracted / "test_batch").write_bytes(b"broken")  # a wrong batch is extracted again
    assert len(load_dataset("cifar10", root=tmp_path, val_size=0, download=True).test) == 3
    assert len(server.requests) == 2


def test_cifar_member_with_wrong_checksum(server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _serve_cifar(server, monkeypatch)
    source = dl.DOWNLOAD_SOURCES["cifar10"]
    members = dict(source.members, test_batch="0" * 32)
    monkeypatch.setitem(dl.DOWNLOAD_SOURCES, "cifar10", dataclasses.replace(source, members=members))
    with pytest.raises(DownloadError, match="test_batch has MD5 .*expected 0{32}"):
        load_dataset("cifar10", root=tmp_path, download=True)
    assert not (tmp_path / "cifar-10-batches-py" / "test_batch").exists()
    assert _no_part_files(tmp_path / "cifar-10-batches-py")


def test_download_flag_is_checked_and_ignored_without_files() -> None:
    with pytest.raises(TypeError, match="'download' parameter of load_dataset must be a bool"):
        load_dataset("digits", download="yes")  # type: ignore[arg-type]
    assert len(load_dataset("digits", download=True).test) == 359


def test_download_dataset_unknown_name() -> None:
    with pytest.raises(ValueError, match="'name' parameter of download_dataset"):
        download_dataset("digits")


def test_published_table() -> None:
    assert set(dl.DOWNLOAD_SOURCES) == {"mnist", "fashion-mnist", "cifar10"}
    for source in dl.DOWNLOAD_SOURCES.values():
        assert all(len(f.md5) == 32 and int(f.md5, 16) >= 0 for f in source.files)
        assert source.mirrors and all(m.endswith("/") for m in source.mirrors)
    assert [f.name for f in dl.DOWNLOAD_SOURCES["mnist"].files] == [f.name for f in dl.DOWNLOAD_SOURCES["fashion-mnist"].files]
    assert dl.DOWNLOAD_SOURCES["mnist"].mirrors[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
