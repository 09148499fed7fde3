"""``studykit fetch`` against a loopback HTTP server started by the test: a good file lands
with its checksum verified, a bad one is rejected and removed, an interrupted one resumes."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from studykit.data import fetch as fetch_mod
from studykit.data.fetch import FetchError, RemoteFile, fetch, file_digest

REPO = Path(__file__).resolve().parents[1]


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` (name -> bytes) with Range support; ``cut`` (name -> n) sends only the
    first n bytes of a full response and drops the connection, once."""

    files: dict[str, bytes] = {}
    cut: dict[str, int] = {}
    ranges: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        name = self.path.lstrip("/")
        if name not in self.files:
            self.send_error(404)
            return
        data = self.files[name]
        start = 0
        rng = self.headers.get("Range")
        if rng:
            self.ranges.append(rng)
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name in self.cut:
            self.wfile.write(body[: self.cut.pop(name)])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    _Handler.files, _Handler.cut, _Handler.ranges = {}, {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()
    httpd.server_close()


def _archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, payload in (("toy-batches/data_batch_1", os.urandom(200_000)),
                              ("toy-batches/readme.txt", b"toy dataset\n")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def test_good_archive_lands_verified_and_unpacked(tmp_path, server):
    url, handler = server
    data = _archive()
    handler.files["toy.tar.gz"] = data
    spec = RemoteFile(f"{url}/toy.tar.gz", "toy.tar.gz", "md5", hashlib.md5(data).hexdigest(),
                      unpack=True)
    placed = fetch("toy", tmp_path, progress=False, datasets={"toy": [spec]})
    assert (tmp_path / "toy.tar.gz").read_bytes() == data
    assert (tmp_path / "toy-batches" / "readme.txt").read_text() == "toy dataset\n"
    assert tmp_path / "toy-batches" in placed
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".unpack-*"))
    # Already there with the right checksum: not fetched again.
    handler.files.clear()
    fetch("toy", tmp_path, progress=False, datasets={"toy": [spec]})


def test_bad_checksum_is_rejected_and_removed(tmp_path, server):
    url, handler = server
    handler.files["labels.npy"] = b"not the published file"
    spec = RemoteFile(f"{url}/labels.npy", "sub/labels.npy", "sha256", "0" * 64)
    with pytest.raises(ValueError, match="expected 0000.*removed"):
        fetch("x", tmp_path, progress=False, datasets={"x": [spec]})
    assert not (tmp_path / "sub" / "labels.npy").exists()
    assert not list((tmp_path / "sub").glob("*.part"))


def test_interrupted_download_resumes_with_a_range_request(tmp_path, server):
    url, handler = server
    data = os.urandom(3 * fetch_mod.CHUNK + 12345)
    handler.files["big.bin"] = data
    handler.cut["big.bin"] = 2 * fetch_mod.CHUNK + 7
    blob = hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()
    spec = RemoteFile(f"{url}/big.bin", "big.bin", "git-blob", blob)
    with pytest.raises(FetchError, match="resumes from"):
        fetch("big", tmp_path, progress=False, datasets={"big": [spec]})
    part = tmp_path / "big.bin.part"
    assert part.stat().st_size == 2 * fetch_mod.CHUNK + 7
    fetch("big", tmp_path, progress=False, datasets={"big": [spec]})
    assert handler.ranges == [f"bytes={2 * fetch_mod.CHUNK + 7}-"]
    assert (tmp_path / "big.bin").read_bytes() == data and not part.exists()
    assert file_digest(tmp_path / "big.bin", "git-blob") == blob


def test_unreachable_server_is_one_line(tmp_path):
    spec = RemoteFile("http://127.0.0.1:9/none.bin", "none.bin", "md5", "0" * 32)
    with pytest.raises(FetchError, match="could not download http://127.0.0.1:9/none.bin"):
        fetch("n", tmp_path, progress=False, datasets={"n": [spec]})


def test_fetch_command_rejects_a_wrong_file_from_a_mirror(tmp_path, server):
    """The command with the real table, served by the loopback mirror: the file served is not
    CIFAR-10, so its md5 fails, it is removed, and the command says so in one line."""
    url, handler = server
    handler.files["cifar-10-python.tar.gz"] = b"something else entirely"
    env = dict(os.environ, STUDYKIT_FETCH_MIRROR=url, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "studykit", "fetch", "cifar10", "--root",
                        str(tmp_path), "-q"], capture_output=True, text=True, timeout=120,
                       env=env, cwd=REPO)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "c58f30108f718f92721af3b95e74349a" in lines[0], r.stderr
    assert "removed" in lines[0] and "Traceback" not in r.stderr
    assert not list(tmp_path.iterdir())


def test_cifar10_1_loader_checks_the_published_checksums(tmp_path):
    import numpy as np

    from studykit.data.cifar10_1 import cifar10_1_available, load_cifar10_1

    with pytest.raises(FileNotFoundError, match="studykit fetch cifar10.1"):
        load_cifar10_1(tmp_path)
    folder = tmp_path / "CIFAR-10.1"
    folder.mkdir()
    np.save(folder / "cifar10.1_v6_data.npy", np.zeros((4, 32, 32, 3), np.uint8))
    np.save(folder / "cifar10.1_v6_labels.npy", np.arange(4))
    assert cifar10_1_available(tmp_path)
    with pytest.raises(ValueError, match="expected 24349cc5"):
        load_cifar10_1(tmp_path)  # not the published images
    x, y = load_cifar10_1(tmp_path, verify=False)
    assert x.shape == (4, 3, 32, 32) and x.dtype.is_floating_point is False
    assert y.tolist() == [0, 1, 2, 3]
