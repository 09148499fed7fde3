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


def load_npz(path: str | os.PathLike) -> ImageDataset:
    """Load a dataset from an ``.npz`` file.

    The file holds ``x_train`` and ``x_test`` (uint8, NHWC with 3 channels, RGB), ``y_train`` and
    ``y_test`` (integer labels from 0), and optionally ``classes`` (class names in label order;
    otherwise the names are ``"0"``, ``"1"``, ...).

    Args:
        path: The ``.npz`` file.

    Returns:
        An `ImageDataset` named ``"npz:<file stem>"``.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: Not an npz file, an array is missing or empty, or has the wrong dtype or
            shape.

    Shape:
        - x_train in the file: :math:`(N, H, W, 3)`; in the dataset :math:`(N, 3, H, W)`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"npz dataset not found: {path}")
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
        if y.size and y.min() < 0:
            raise ValueError(f"{path}: y_{split} has negative label {int(y.min())}")
        tensors[f"x_{split}"] = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        tensors[f"y_{split}"] = torch.from_numpy(y.astype(np.int64))
    max_label = max(int(arrays["y_train"].max(initial=-1)), int(arrays["y_test"].max(initial=-1)))
    if names is not None:
        classes = tuple(str(c) for c in names.tolist())
        if len(classes) <= max_label:
            raise ValueError(
                f"{path}: classes has {len(classes)} names but labels go up to {max_label}"
            )
    else:
        classes = tuple(str(i) for i in range(max_label + 1))
    return ImageDataset(f"npz:{path.stem}", classes=classes, **tensors)
