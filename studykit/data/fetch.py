"""``studykit fetch``: the real datasets for users who are online.

Each dataset is a list of files with a published checksum (the ``DATASETS`` table): the CIFAR
archives, the CIFAR-10-C / CIFAR-100-C tar files, the two CIFAR-10.1 v6 arrays, and the frost
photographs. A file downloads to ``<name>.part`` with a progress bar; an interrupted download
resumes from where it stopped (an HTTP range request; a server that ignores it sends the whole
file again), the checksum is verified before anything is kept (a mismatch removes the partial
file), and the file moves into place atomically. Archives are unpacked into a temporary folder
inside the data folder and renamed into place, so a half-unpacked archive is never mistaken for
a dataset. A file already there with the right checksum is not fetched again.

A server cannot hang a download or fill the disk: a download slower than ``MIN_RATE`` bytes a
second over ``RATE_WINDOW`` seconds stops (the partial file resumes later), one that sends
more than the file's published size (plus a margin) stops and is removed, free space is
checked before downloading and before unpacking, and an archive member that is a link, a
device, setuid or would land outside the data folder is refused.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import stat
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from studykit.digests import file_digest
from studykit.paths import data_root

log = logging.getLogger(__name__)

CHUNK = 1 << 20
# Limits a download must keep within: no read waits longer than READ_TIMEOUT seconds, at least
# MIN_RATE bytes a second arrive over every RATE_WINDOW seconds (a server dripping a byte
# every few seconds never trips the read timeout), and no more than the published size plus
# a margin (1 %, at least SIZE_MARGIN bytes) is written.
READ_TIMEOUT = 60.0
MIN_RATE = 1024
RATE_WINDOW = 60.0
SIZE_MARGIN = 1 << 20
# Free space kept besides what a download or an unpacked archive needs.
SPACE_MARGIN = 16 << 20
# Pythons before 3.10.12 and 3.11.4 lack tarfile's extraction filters: `unpack` then checks
# every member itself.
_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")
# A mirror serving the same files by name ($STUDYKIT_FETCH_MIRROR/<file name>); the published
# checksums still decide what is kept.
MIRROR_ENV = "STUDYKIT_FETCH_MIRROR"


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch.

    Attributes:
        url: where it is published.
        filename: its name in the data folder (``subdir/name`` allowed).
        algorithm: ``md5``, ``sha256`` or ``git-blob`` (sha1 of ``b"blob <size>\\0" + data``,
            the id GitHub shows; CIFAR-10.1's images publish only that).
        digest: the expected hex digest.
        unpack: a tar archive to unpack into the data folder after checking it.
        size: its published size in bytes (None: unknown); a download stops past it (plus a
            margin), and it is what free space is checked against when the server does not
            say.
    """

    url: str
    filename: str
    algorithm: str
    digest: str
    unpack: bool = False
    size: int | None = None

    @property
    def max_bytes(self) -> int | None:
        """The most a download of this file may write: its size plus a margin."""
        return None if self.size is None else self.size + max(self.size // 100, SIZE_MARGIN)


def _frost_files() -> list[RemoteFile]:
    from studykit.corruptions.frost import FROST_PHOTOGRAPHS, FROST_URL

    return [RemoteFile(FROST_URL + name, f"frost/{name}", "sha256", digest,
                       size=_FROST_SIZES[name]) for name, digest in FROST_PHOTOGRAPHS.items()]


# Published sizes: the CIFAR archives and the frost photographs byte for byte; CIFAR-10.1's
# arrays from their shapes (2,000 images and int32 labels, 128-byte headers); the CIFAR-C tar
# files about (19 arrays of 50,000 x 32 x 32 x 3 bytes, labels and tar headers: 2.92 GB).
_FROST_SIZES = {"frost1.png": 1_199_930, "frost2.png": 299_002, "frost3.png": 299_002,
                "frost4.jpg": 36_734, "frost5.jpg": 155_150}
_CIFAR_C_SIZE = 2_920_000_000


DATASETS: dict[str, list[RemoteFile]] = {
    "cifar10": [RemoteFile("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                           "cifar-10-python.tar.gz", "md5",
                           "c58f30108f718f92721af3b95e74349a", unpack=True, size=170_498_071)],
    "cifar100": [RemoteFile("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                            "cifar-100-python.tar.gz", "md5",
                            "eb9058c3a382ffc7106e4002c42a8d85", unpack=True, size=169_001_437)],
    "cifar10-c": [RemoteFile("https://zenodo.org/records/2535967/files/CIFAR-10-C.tar?download=1",
                             "CIFAR-10-C.tar", "sha256",
                             "c72763e101c723b7c507b96205f7e938912a5d587376173b825850cf3cb876a7",
                             unpack=True, size=_CIFAR_C_SIZE)],
    "cifar100-c": [RemoteFile(
        "https://zenodo.org/records/3555552/files/CIFAR-100-C.tar?download=1",
        "CIFAR-100-C.tar", "md5", "11f0ed0f1191edbf9fa23466ae6021d3", unpack=True,
        size=_CIFAR_C_SIZE)],
    "cifar10.1": [
        RemoteFile("https://github.com/modestyachts/CIFAR-10.1/raw/master/datasets/"
                   "cifar10.1_v6_data.npy", "CIFAR-10.1/cifar10.1_v6_data.npy", "git-blob",
                   "24349cc5f3fb59648d75cd8015b5a184b1f5c250", size=6_144_128),
        RemoteFile("https://github.com/modestyachts/CIFAR-10.1/raw/master/datasets/"
                   "cifar10.1_v6_labels.npy", "CIFAR-10.1/cifar10.1_v6_labels.npy", "sha256",
                   "ae40beda001693674edc94d925ee8268cfe68905f8f9aff800c8dcdfcd6c9448",
                   size=8_128),
    ],
}
FETCHABLE = (*DATASETS, "frost")


class FetchError(OSError):
    """A download that failed (offline, a server error): one line naming the URL."""


def _content_length(response: http.client.HTTPResponse, url: str) -> int | None:
    raw = response.headers.get("Content-Length")
    if raw is None:
        return None
    try:
        length = int(raw)
    except ValueError:
        length = -1
    if length < 0:
        raise FetchError(f"could not download {url}: the server sent the invalid "
                         f"Content-Length {raw!r}")
    return length


def _check_space(folder: Path, need: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if need + SPACE_MARGIN > free:
        raise FetchError(f"not enough free space for {what} in {folder}: it needs "
                         f"{need / 1e6:,.1f} MB (and {SPACE_MARGIN >> 20} MB to spare), "
                         f"{free / 1e6:,.1f} MB are free")


class _RateGuard:
    """Stops a download that falls below `MIN_RATE` bytes a second over `RATE_WINDOW`
    seconds."""

    def __init__(self, url: str) -> None:
        self.url, self.start, self.bytes = url, time.monotonic(), 0

    def add(self, n: int, hint: str) -> None:
        self.bytes += n
        elapsed = time.monotonic() - self.start
        if elapsed < RATE_WINDOW:
            return
        if self.bytes < MIN_RATE * elapsed:
            raise FetchError(f"could not download {self.url}: too slow ({self.bytes:,} bytes in "
                             f"the last {elapsed:.0f} s, below {MIN_RATE:,} bytes/s){hint}")
        self.start, self.bytes = time.monotonic(), 0


def download(spec: RemoteFile, dest: Path, *, progress: bool = True,
             timeout: float | None = None) -> Path:
    """Fetch ``spec`` to ``dest``: resume a ``.part`` file, verify, move into place.

    Free space for the rest of the file is checked first; the download stops when a read waits
    longer than ``timeout`` (default `READ_TIMEOUT`) seconds, when it falls below `MIN_RATE`
    over `RATE_WINDOW` (the partial file is kept: the same call resumes it), or when the server
    announces or sends more than ``spec.max_bytes`` (the partial file is removed).

    Raises:
        FetchError: the server could not be reached, answered with an error or an invalid
            Content-Length, was too slow or sent too much; or the disk is too full.
        ValueError: the checksum does not match (the partial file is removed).
    """
    if dest.is_file() and file_digest(dest, spec.algorithm) == spec.digest:
        log.info("%s is already there (checksum ok)", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(spec.url, headers={"User-Agent": "studykit-fetch"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    limit = spec.max_bytes
    try:
        with urllib.request.urlopen(request, timeout=timeout or READ_TIMEOUT) as response:
            resumed = have > 0 and response.status == 206
            if have and not resumed:
                log.info("%s does not resume downloads; starting %s again", spec.url, dest.name)
                have = 0
            length = _content_length(response, spec.url)
            total = have + length if length is not None else None
            if total is not None and limit is not None and total > limit:
                raise FetchError(f"could not download {spec.url}: the server announces "
                                 f"{total:,} bytes, more than its published size "
                                 f"{spec.size:,}")
            expected = total if total is not None else spec.size
            if expected is not None:
                _check_space(part.parent, max(expected - have, 0), dest.name)
            hint = f"; the same command resumes from {part}"
            guard = _RateGuard(spec.url)
            with open(part, "ab" if resumed else "wb") as fh, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                desc=dest.name, disable=not progress, leave=False,
            ) as bar:
                written = have
                while True:
                    try:
                        chunk = response.read1(CHUNK)
                    except http.client.IncompleteRead as err:  # keep what came, to resume
                        fh.write(err.partial)
                        raise
                    if not chunk:
                        break
                    fh.write(chunk)
                    written += len(chunk)
                    if limit is not None and written > limit:
                        break
                    bar.update(len(chunk))
                    guard.add(len(chunk), hint)
            if limit is not None and written > limit:
                part.unlink()
                raise FetchError(f"could not download {spec.url}: the server sent more than "
                                 f"its published size {spec.size:,} bytes; stopped at "
                                 f"{written:,} and removed the partial file")
            if total is not None and part.stat().st_size < total:
                # http.client ends a read quietly when the server closes early
                raise OSError(f"connection closed after {part.stat().st_size:,} of "
                              f"{total:,} bytes")
    except FetchError:
        raise
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # asked past the end: the .part may be complete already
            pass
        else:
            raise FetchError(f"could not download {spec.url}: HTTP {err.code} {err.reason}"
                             f"{'; the partial file is kept and resumes' if have else ''}"
                             ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", None) or f"{type(err).__name__}: {err}"
        hint = f"; the same command resumes from {part}" if part.exists() else ""
        raise FetchError(f"could not download {spec.url} ({reason}){hint}") from None
    got = file_digest(part, spec.algorithm)
    if got != spec.digest:
        part.unlink()
        raise ValueError(f"{spec.url} has {spec.algorithm} {got}, expected {spec.digest}; "
                         "the download was removed")
    os.replace(part, dest)
    log.info("downloaded %s (%s ok)", dest, spec.algorithm)
    return dest


def _kind(m: tarfile.TarInfo) -> str:
    kinds = ((m.issym, "symbolic link"), (m.islnk, "hard link"), (m.ischr, "character device"),
             (m.isblk, "block device"), (m.isfifo, "FIFO"))
    return next((name for test, name in kinds if test()), "special file")


def _extract_checked(tar: tarfile.TarFile, members: list[tarfile.TarInfo], dest: Path,
                     archive: Path) -> None:
    """Extract ``members`` into ``dest`` where tarfile has no extraction filter: only files
    and folders, none setuid or setgid, every one inside ``dest`` (resolved paths compared
    with ``Path.is_relative_to``, not by a string prefix); all are checked before any is
    written, and files are written with plain permissions, owned by this user."""
    base = dest.resolve()
    for m in members:
        target = (base / m.name).resolve()
        if os.path.isabs(m.name) or not target.is_relative_to(base):
            raise ValueError(f"{archive}: member {m.name!r} would be written outside the "
                             "folder it is unpacked into; refusing the archive")
        if not (m.isfile() or m.isdir()):
            raise ValueError(f"{archive}: member {m.name!r} is a {_kind(m)}; only files and "
                             "folders are unpacked, refusing the archive")
        if m.mode & (stat.S_ISUID | stat.S_ISGID):
            raise ValueError(f"{archive}: member {m.name!r} has the setuid or setgid bit; "
                             "refusing the archive")
    for m in members:
        target = (base / m.name).resolve()
        if m.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        src = tar.extractfile(m)
        assert src is not None  # a regular file
        with src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
        target.chmod(0o755 if m.mode & 0o111 else 0o644)


def unpack(archive: Path, root: Path) -> list[Path]:
    """Unpack a tar archive into ``root`` through a temporary folder, then rename each top-level
    entry into place (replacing an older copy). Returns the entries.

    Raises:
        ValueError: the archive is damaged, or holds a member that is a link or a special file,
            is setuid, or would land outside ``root`` (tarfile's ``data`` filter, or the same
            checks made here where Python lacks it).
        FetchError: not enough free space for its contents.
    """
    tmp = root / f".unpack-{archive.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        try:
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                _check_space(root, sum(m.size for m in members if m.isfile()),
                             f"the contents of {archive.name}")
                if _HAS_DATA_FILTER:
                    tar.extractall(tmp, filter="data")
                else:
                    _extract_checked(tar, members, tmp, archive)
        except tarfile.TarError as e:  # damaged, or refused by the data filter
            raise ValueError(f"{archive}: cannot unpack it ({type(e).__name__}: "
                             f"{' '.join(str(e).split())}); refusing the archive") from None
        placed = []
        for entry in sorted(tmp.iterdir()):
            final = root / entry.name
            if final.exists():
                shutil.rmtree(final) if final.is_dir() else final.unlink()
            os.replace(entry, final)
            placed.append(final)
        return placed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch(name: str, root: str | os.PathLike | None = None, *, progress: bool = True,
          datasets: Mapping[str, Sequence[RemoteFile]] | None = None) -> list[Path]:
    """Download (and unpack) dataset ``name`` into ``root`` (default: the data folder).

    Args:
        name: one of ``FETCHABLE`` (or of ``datasets``).
        root: the data folder.
        progress: progress bars.
        datasets: a table other than ``DATASETS`` (tests serve their own files).

    Returns:
        The files and folders now in place.
    """
    table = dict(datasets) if datasets is not None else {**DATASETS, "frost": _frost_files()}
    mirror = os.environ.get(MIRROR_ENV)
    if name not in table:
        raise ValueError(f"unknown dataset to fetch {name!r}; choose one of: "
                         f"{', '.join(table)}")
    root = Path(root) if root is not None else data_root()
    placed: list[Path] = []
    for spec in table[name]:
        if mirror:  # the same file, checked against the same checksum, from elsewhere
            spec = replace(spec, url=f"{mirror.rstrip('/')}/{Path(spec.filename).name}")
        path = download(spec, root / spec.filename, progress=progress)
        placed.extend(unpack(path, root) if spec.unpack else [path])
    return placed
