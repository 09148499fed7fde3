"""CIFAR-10.1 v6 (Recht et al. 2018): 2,000 new test images drawn like CIFAR-10's, a test of
distribution shift without any corruption. Optional: used when its two files are in
``data/CIFAR-10.1/`` (``studykit fetch cifar10.1`` puts them there, checksums verified)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from studykit.data.fetch import DATASETS
from studykit.digests import file_digest
from studykit.paths import data_root

FOLDER = "CIFAR-10.1"


def cifar10_1_files(root: str | os.PathLike | None = None) -> dict[str, Path]:
    base = Path(root) if root is not None else data_root()
    return {spec.filename.split("/")[-1]: base / spec.filename for spec in DATASETS["cifar10.1"]}


def cifar10_1_available(root: str | os.PathLike | None = None) -> bool:
    return all(p.is_file() for p in cifar10_1_files(root).values())


def load_cifar10_1(root: str | os.PathLike | None = None, *,
                   verify: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The CIFAR-10.1 v6 images (uint8, (2000, 3, 32, 32)) and labels (int64, (2000,)).

    Raises:
        FileNotFoundError: the files are missing (the message says how to fetch them).
        ValueError: a file's checksum is not the published one.
    """
    base = Path(root) if root is not None else data_root()
    if not cifar10_1_available(root):
        raise FileNotFoundError(f"CIFAR-10.1 v6 is not in {base / FOLDER}; run "
                                "'studykit fetch cifar10.1' (needs internet)")
    if verify:
        for spec in DATASETS["cifar10.1"]:
            got = file_digest(base / spec.filename, spec.algorithm)
            if got != spec.digest:
                raise ValueError(f"{base / spec.filename} has {spec.algorithm} {got}, expected "
                                 f"{spec.digest}; delete it and fetch it again")
    files = cifar10_1_files(root)
    x = np.load(files["cifar10.1_v6_data.npy"], allow_pickle=False)
    y = np.load(files["cifar10.1_v6_labels.npy"], allow_pickle=False)
    return (torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(),
            torch.from_numpy(y.astype(np.int64)))
