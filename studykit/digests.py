"""Checksums of files, read in chunks: the published ones a download is checked against
(md5, sha256, Git's blob id) and the sha256 the run store records for each checkpoint."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


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
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
