"""Datasets from ``.npz`` files: ``load_dataset("npz:<path>")``.

Every problem with the file is a one-line ``ValueError`` naming the file and what it must hold,
raised before any run folder exists.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from studykit.data.dataset import ImageDataset

# Labels of a file without a ``classes`` array name classes "0", "1", ...: up to this many.
MAX_UNNAMED_CLASSES = 100_000


def npz_label(dataset: str) -> str:
    """A dataset as tables and scorecards name it: its key, or ``npz:<path>/<file name>`` for an
    npz file, so that no machine's folder lands in a committed table."""
    if isinstance(dataset, str) and dataset.startswith("npz:"):
        return f"npz:<path>/{Path(dataset[4:]).name}"
    return dataset


class NpzNotFound(FileNotFoundError, ValueError):
    """The npz file named does not exist: a missing file (FileNotFoundError) and a bad value
    of the ``dataset`` parameter (ValueError: exit status 2 on the command line)."""


def load_npz(path: str | os.PathLike) -> ImageDataset:
    """Load a dataset from an ``.npz`` file.

    The file holds ``x_train`` and ``x_test`` (uint8, NHWC with 3 channels, RGB), ``y_train`` and
    ``y_test`` (integer labels from 0, of any integer dtype: CIFAR's own are uint8; read as
    int64), and optionally ``classes`` (class names in label order; otherwise the names are
    ``"0"``, ``"1"``, ... up to the largest label, which must then be below
    ``MAX_UNNAMED_CLASSES``).

    Args:
        path: The ``.npz`` file.

    Returns:
        An `ImageDataset` named ``"npz:<file stem>"``.

    Raises:
        NpzNotFound: The file does not exist (a FileNotFoundError and a ValueError).
        ValueError: Not an npz file, an array is missing or empty, has the wrong dtype or
            shape, or a label is out of range.

    Shape:
        - x_train in the file: :math:`(N, H, W, 3)`; in the dataset :math:`(N, 3, H, W)`.
    """
    path = Path(path)
    if not path.exists():
        raise NpzNotFound(f"npz dataset not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not an .npz file (a zip archive of arrays, as written by "
                         "numpy.savez); it must hold x_train, y_train, x_test, y_test")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test")
                       if k not in data.files]
            if missing:
                raise ValueError(
                    f"{path} lacks arrays {missing}; it must hold x_train, y_train, x_test, "
                    f"y_test (and optionally classes); found {sorted(data.files)}"
                )
            arrays, names = {}, None
            for k in ("x_train", "y_train", "x_test", "y_test", "classes"):
                if k in data.files:
                    try:
                        arrays[k] = data[k]
                    except ValueError:  # numpy refuses pickled object arrays
                        raise ValueError(f"{path}: array {k} holds pickled Python objects; "
                                         "only plain numeric (or string) arrays are read"
                                         ) from None
            names = arrays.pop("classes", None)
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise ValueError(f"{path} is a damaged .npz file ({type(e).__name__}: {e})") from None
    tensors = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(
                f"{path}: x_{split} must be uint8 NHWC with 3 channels (N, H, W, 3); "
                f"got {x.dtype} {x.shape}"
            )
        if not np.issubdtype(y.dtype, np.integer) or y.shape != (x.shape[0],):
            raise ValueError(
                f"{path}: y_{split} must be integer labels of shape ({x.shape[0]},); "
                f"got {y.dtype} {y.shape}"
            )
        if x.shape[0] == 0:
            raise ValueError(f"{path}: x_{split} holds no images; each split needs at least one")
        if int(y.min()) < 0:
            raise ValueError(f"{path}: y_{split} has negative label {int(y.min())}")
        tensors[f"x_{split}"] = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    # Python ints: no overflow whatever the labels' dtype (uint8, uint64, ...).
    max_label = max(int(arrays["y_train"].max()), int(arrays["y_test"].max()))
    if names is not None:
        classes = tuple(str(c) for c in names.tolist())
        if len(classes) <= max_label:
            raise ValueError(
                f"{path}: classes has {len(classes)} names but labels go up to {max_label}"
            )
    elif max_label >= MAX_UNNAMED_CLASSES:
        raise ValueError(f"{path}: labels go up to {max_label}; without a classes array naming "
                         f"the classes, labels must be below {MAX_UNNAMED_CLASSES} (add classes, "
                         "one name per label, or number the labels from 0)")
    else:
        classes = tuple(str(i) for i in range(max_label + 1))
    for split in ("train", "test"):  # in range now: int64, what the loaders and losses take
        tensors[f"y_{split}"] = torch.from_numpy(arrays[f"y_{split}"].astype(np.int64))
    return ImageDataset(f"npz:{path.stem}", classes=classes, **tensors)
