"""``studykit fetch`` against a hostile mirror on the loopback interface (127.0.0.1 only): a
server that drips, sends an endless body, announces more than the published size or an invalid
Content-Length, or a disk too full, each ends in one line in bounded time; and the unpacker
(with tarfile's data filter, and the fallback for Pythons without it) refuses crafted
archives: device files, FIFOs, links, setuid bits, paths escaping its folder."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import shutil
import tarfile
import threading
import time
from pathlib import Path

import pytest

from studykit import cli
from studykit.data import fetch as fetch_mod
from studykit.data.fetch import RemoteFile

DATA_FILE = "cifar10.1_v6_data.npy"  # the first file of `studykit fetch cifar10.1`
PUBLISHED = fetch_mod.DATASETS["cifar10.1"][0].size
DEADLINE = 20.0  # no handler runs longer than this, whatever the client does


class _Hostile(http.server.BaseHTTPRequestHandler):
    mode = "drip"
    served: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        start = time.monotonic()
        name = self.path.lstrip("/")
        try:
            if name in self.served:
                self._send(200, {"Content-Length": str(len(self.served[name]))})
                self.wfile.write(self.served[name])
            elif self.mode == "drip":  # one byte every 0.2 s: never a read timeout
                self._send(200, {"Content-Length": "1000"})
                while time.monotonic() - start < DEADLINE:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            elif self.mode == "endless":  # no length, no end
                self._send(200, {"Connection": "close"})
                block = b"\0" * (1 << 16)
                while time.monotonic() - start < DEADLINE:
                    self.wfile.write(block)
            elif self.mode == "announces too much":
                self._send(200, {"Content-Length": str(10**12)})
                self.wfile.write(b"\0" * 1000)
            elif self.mode == "bad length":
                self._send(200, {"Content-Length": "abc"})
                self.wfile.write(b"\0" * 1000)
            elif self.mode == "published size":
                self._send(200, {"Content-Length": str(PUBLISHED)})
                self.wfile.write(b"\0" * 1000)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def _send(self, code: int, headers: dict[str, str]) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture()
def mirror(monkeypatch, tmp_path):
    _Hostile.mode, _Hostile.served = "drip", {}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    monkeypatch.setenv(fetch_mod.MIRROR_ENV, url)
    # Limits scaled down so that each case ends within seconds.
    monkeypatch.setattr(fetch_mod, "READ_TIMEOUT", 5.0)
    monkeypatch.setattr(fetch_mod, "RATE_WINDOW", 1.0)
    monkeypatch.setattr(fetch_mod, "MIN_RATE", 1000)
    yield url, _Hostile
    httpd.shutdown()
    httpd.server_close()


def _fetch(capsys, root: Path, name: str = "cifar10.1") -> tuple[int, str, float]:
    t0 = time.monotonic()
    code = cli.main(["fetch", name, "--root", str(root), "-q"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("studykit: error: "), err
    assert "Traceback" not in err
    return code, lines[0], time.monotonic() - t0


def test_a_dripping_server_is_dropped_and_the_download_resumes_later(tmp_path, capsys, mirror):
    url, handler = mirror
    code, line, seconds = _fetch(capsys, tmp_path)
    assert code == 1 and seconds < 10
    assert "too slow" in line and f"{url}/{DATA_FILE}" in line and "resumes" in line
    part = tmp_path / "CIFAR-10.1" / f"{DATA_FILE}.part"
    assert 0 < part.stat().st_size < 1000  # kept, to resume


def test_an_endless_body_stops_past_the_published_size(tmp_path, capsys, mirror):
    _, handler = mirror
    handler.mode = "endless"
    code, line, seconds = _fetch(capsys, tmp_path)
    assert code == 1 and seconds < DEADLINE
    assert "more than its published size" in line and f"{PUBLISHED:,}" in line
    assert not list(tmp_path.rglob("*.part"))  # removed: never a full disk of garbage


def test_a_body_announced_larger_than_published_is_refused_before_reading(tmp_path, capsys,
                                                                          mirror):
    _, handler = mirror
    handler.mode = "announces too much"
    code, line, _ = _fetch(capsys, tmp_path)
    assert code == 1 and "announces 1,000,000,000,000 bytes" in line
    part = tmp_path / "CIFAR-10.1" / f"{DATA_FILE}.part"
    assert not part.exists() or part.stat().st_size == 0


def test_an_invalid_content_length_is_one_line_naming_the_url(tmp_path, capsys, mirror):
    url, handler = mirror
    handler.mode = "bad length"
    code, line, _ = _fetch(capsys, tmp_path)
    assert code == 1 and "'abc'" in line and f"{url}/{DATA_FILE}" in line


def test_free_space_is_checked_before_downloading(tmp_path, capsys, mirror, monkeypatch):
    _, handler = mirror
    handler.mode = "published size"
    monkeypatch.setattr(fetch_mod.shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 4 * 2**20, 4 * 2**20))
    code, line, _ = _fetch(capsys, tmp_path)
    assert code == 1 and "not enough free space" in line and DATA_FILE in line
    assert not list(tmp_path.rglob("*.part")) or all(
        p.stat().st_size == 0 for p in tmp_path.rglob("*.part"))


def test_every_table_entry_has_a_published_size():
    for name in fetch_mod.FETCHABLE:
        table = fetch_mod._frost_files() if name == "frost" else fetch_mod.DATASETS[name]
        for spec in table:
            assert spec.size and spec.max_bytes > spec.size, spec


# --------------------------------------------------------------------------------------------
# unpacking crafted archives


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, **kw) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = kind, mode
    for k, v in kw.items():
        setattr(info, k, v)
    return info


def _crafted(archive_name: str) -> dict[str, list[tuple[tarfile.TarInfo, bytes]]]:
    escape = f"../.unpack-{archive_name}-{os.getpid()}X/evil.txt"  # shares the temp prefix
    return {
        "character device": [(_info("set/null", tarfile.CHRTYPE, devmajor=1, devminor=3), b"")],
        "block device": [(_info("set/disk", tarfile.BLKTYPE, devmajor=8, devminor=0), b"")],
        "FIFO": [(_info("set/pipe", tarfile.FIFOTYPE), b"")],
        "setuid": [(_info("set/tool", mode=0o4755), b"#!/bin/sh\n")],
        "setgid": [(_info("set/tool", mode=0o2755), b"#!/bin/sh\n")],
        "escape by prefix": [(_info(escape), b"outside")],
        "escape by dots": [(_info("set/../../evil.txt"), b"outside")],
        "absolute path": [(_info("/tmp/studykit-evil.txt"), b"outside")],
        "symbolic link": [(_info("set/link", tarfile.SYMTYPE, linkname="/etc/passwd"), b"")],
        "hard link": [(_info("set/hard", tarfile.LNKTYPE, linkname="/etc/passwd"), b"")],
    }


CRAFTED = list(_crafted("x.tar"))


@pytest.mark.parametrize("data_filter", [False, True], ids=["fallback", "data filter"])
@pytest.mark.parametrize("case", CRAFTED)
def test_crafted_archive_is_refused_and_nothing_escapes(tmp_path, monkeypatch, case,
                                                        data_filter):
    if data_filter and not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile extraction filters")
    monkeypatch.setattr(fetch_mod, "_HAS_DATA_FILTER", data_filter)
    root = tmp_path / "data"
    root.mkdir()
    archive = _tar(root / "x.tar", _crafted("x.tar")[case])
    if data_filter and case in ("setuid", "setgid"):  # the filter clears the bits instead
        placed = fetch_mod.unpack(archive, root)
        assert not (root / "set" / "tool").stat().st_mode & 0o6000
        assert placed == [root / "set"]
    elif data_filter and case == "absolute path":  # the filter makes it relative instead
        assert fetch_mod.unpack(archive, root) == [root / "tmp"]
        assert (root / "tmp" / "studykit-evil.txt").read_bytes() == b"outside"
    else:
        with pytest.raises(ValueError, match="refusing the archive") as err:
            fetch_mod.unpack(archive, root)
        assert "\n" not in str(err.value) and str(archive) in str(err.value)
        assert sorted(p.name for p in root.iterdir()) == ["x.tar"]
    assert not list(tmp_path.rglob("evil.txt")) and not Path("/tmp/studykit-evil.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_fallback_unpacker_extracts_a_plain_archive(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch_mod, "_HAS_DATA_FILTER", False)
    archive = _tar(tmp_path / "ok.tar", [
        (_info("set", tarfile.DIRTYPE, mode=0o777), b""),
        (_info("set/a.txt", mode=0o666, uid=0, gid=0), b"alpha\n"),
        (_info("set/sub/run.sh", mode=0o777), b"#!/bin/sh\n"),
    ])
    placed = fetch_mod.unpack(archive, tmp_path)
    assert placed == [tmp_path / "set"]
    assert (tmp_path / "set" / "a.txt").read_text() == "alpha\n"
    assert (tmp_path / "set" / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "set" / "sub" / "run.sh").stat().st_mode & 0o777 == 0o755
    assert not list(tmp_path.glob(".unpack-*"))


def test_fetch_command_refuses_a_crafted_archive_in_one_line(tmp_path, capsys, mirror,
                                                            monkeypatch):
    url, handler = mirror
    archive = _tar(tmp_path / "cifar-10-python.tar.gz",
                   [(_info("cifar-10-batches-py/null", tarfile.CHRTYPE, devmajor=1,
                           devminor=3), b"")])
    data = archive.read_bytes()
    archive.unlink()
    handler.served["cifar-10-python.tar.gz"] = data
    spec = RemoteFile(f"{url}/cifar-10-python.tar.gz", "cifar-10-python.tar.gz", "md5",
                      hashlib.md5(data).hexdigest(), unpack=True, size=len(data))
    monkeypatch.setitem(fetch_mod.DATASETS, "cifar10", [spec])
    root = tmp_path / "data"
    code, line, _ = _fetch(capsys, root, "cifar10")
    assert code == 2 and "refusing the archive" in line and "null" in line, line
    assert not (root / "cifar-10-batches-py").exists()


def test_unpack_checks_free_space_for_the_contents(tmp_path, monkeypatch):
    archive = _tar(tmp_path / "big.tar", [(_info("set/a.bin"), b"\0" * 4096)])
    monkeypatch.setattr(fetch_mod, "SPACE_MARGIN", 0)
    monkeypatch.setattr(fetch_mod.shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 100, 100))
    with pytest.raises(fetch_mod.FetchError, match="not enough free space for the contents"):
        fetch_mod.unpack(archive, tmp_path)
    assert not (tmp_path / "set").exists()
