"""``studykit fetch``: the real datasets for users who are online.

Each dataset is a list of files with a published checksum (the ``DATASETS`` table): the CIFAR
archives, the CIFAR-10-C / CIFAR-100-C tar files, the two CIFAR-10.1 v6 arrays, and the frost
photographs. A file downloads to ``<name>.part`` with a progress bar; an interrupted download
resumes from where it stopped (an HTTP range request; a server that ignores it sends the whole
file again), the checksum is verified before anything is kept (a mismatch removes the partial
file), and the file moves into place atomically. Archives are unpacked into a temporary folder
inside the data folder and renamed into place, so a half-unpacked archive is never mistaken for
a dataset. A file already there with the right checksum is not fetched again.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from studykit.paths import data_root

log = logging.getLogger(__name__)

CHUNK = 1 << 20
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
    """

    url: str
    filename: str
    algorithm: str
    digest: str
    unpack: bool = False


def _frost_files() -> list[RemoteFile]:
    from studykit.corruptions.frost import FROST_PHOTOGRAPHS, FROST_URL

    return [RemoteFile(FROST_URL + name, f"frost/{name}", "sha256", digest)
            for name, digest in FROST_PHOTOGRAPHS.items()]


DATASETS: dict[str, list[RemoteFile]] = {
    "cifar10": [RemoteFile("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                           "cifar-10-python.tar.gz", "md5",
                           "c58f30108f718f92721af3b95e74349a", unpack=True)],
    "cifar100": [RemoteFile("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                            "cifar-100-python.tar.gz", "md5",
                            "eb9058c3a382ffc7106e4002c42a8d85", unpack=True)],
    "cifar10-c": [RemoteFile("https://zenodo.org/records/2535967/files/CIFAR-10-C.tar?download=1",
                             "CIFAR-10-C.tar", "sha256",
                             "c72763e101c723b7c507b96205f7e938912a5d587376173b825850cf3cb876a7",
                             unpack=True)],
    "cifar100-c": [RemoteFile(
        "https://zenodo.org/records/3555552/files/CIFAR-100-C.tar?download=1",
        "CIFAR-100-C.tar", "md5", "11f0ed0f1191edbf9fa23466ae6021d3", unpack=True)],
    "cifar10.1": [
        RemoteFile("https://github.com/modestyachts/CIFAR-10.1/raw/master/datasets/"
                   "cifar10.1_v6_data.npy", "CIFAR-10.1/cifar10.1_v6_data.npy", "git-blob",
                   "24349cc5f3fb59648d75cd8015b5a184b1f5c250"),
        RemoteFile("https://github.com/modestyachts/CIFAR-10.1/raw/master/datasets/"
                   "cifar10.1_v6_labels.npy", "CIFAR-10.1/cifar10.1_v6_labels.npy", "sha256",
                   "ae40beda001693674edc94d925ee8268cfe68905f8f9aff800c8dcdfcd6c9448"),
    ],
}
FETCHABLE = (*DATASETS, "frost")


class FetchError(OSError):
    """A download that failed (offline, a server error): one line naming the URL."""


def _hasher(algorithm: str, size: int):
    if algorithm == "git-blob":
        h = hashlib.sha1()
        h.update(f"blob {size}\0".encode())
        return h
    if algorithm in ("md5", "sha256"):
        return hashlib.new(algorithm)
    raise ValueError(f"unknown checksum algorithm {algorithm!r}; use md5, sha256 or git-blob")


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of ``path`` under ``algorithm`` (``md5``, ``sha256``, ``git-blob``)."""
    h = _hasher(algorithm, path.stat().st_size)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download(spec: RemoteFile, dest: Path, *, progress: bool = True,
             timeout: float = 60.0) -> Path:
    """Fetch ``spec`` to ``dest``: resume a ``.part`` file, verify, move into place.

    Raises:
        FetchError: the server could not be reached or answered with an error.
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
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = have > 0 and response.status == 206
            if have and not resumed:
                log.info("%s does not resume downloads; starting %s again", spec.url, dest.name)
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            with open(part, "ab" if resumed else "wb") as fh, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                desc=dest.name, disable=not progress, leave=False,
            ) as bar:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except http.client.IncompleteRead as err:  # keep what came, to resume
                        fh.write(err.partial)
                        raise
                    if not chunk:
                        break
                    fh.write(chunk)
                    bar.update(len(chunk))
            if total is not None and part.stat().st_size < total:
                # http.client ends a read quietly when the server closes early
                raise OSError(f"connection closed after {part.stat().st_size:,} of "
                              f"{total:,} bytes")
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


def unpack(archive: Path, root: Path) -> list[Path]:
    """Unpack a tar archive into ``root`` through a temporary folder, then rename each top-level
    entry into place (replacing an older copy). Returns the entries."""
    tmp = root / f".unpack-{archive.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:  # Python without extraction filters: refuse unsafe members ourselves
                for m in tar.getmembers():
                    target = (tmp / m.name).resolve()
                    if not str(target).startswith(str(tmp.resolve())) or m.issym() or m.islnk():
                        raise ValueError(f"{archive}: unsafe member {m.name!r}")
                tar.extractall(tmp)
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
