"""The on-disk cache of the generated ``synthetic`` dataset (``<data>/synthetic/*.pt``).

Generation takes seconds; the cache makes it once per seed, size and generator version. Two
processes that want the same set on a fresh machine take turns on a lock file, so it is
generated once; a damaged cache file is regenerated; a read-only data folder means no cache.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from studykit.data.dataset import ImageDataset
from studykit.data.synthetic import GENERATOR_VERSION, SYNTHETIC_CLASSES, make_synthetic
from studykit.locks import file_lock
from studykit.runs import save_torch_atomic

log = logging.getLogger(__name__)


def cache_path(root: Path, seed: int, n_train: int, n_test: int) -> Path:
    return root / "synthetic" / f"synthetic-s{seed}-n{n_train}-{n_test}-v{GENERATOR_VERSION}.pt"


def _read(path: Path) -> ImageDataset | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, weights_only=True)
        return ImageDataset("synthetic", state["x_train"], state["y_train"], state["x_test"],
                            state["y_test"], SYNTHETIC_CLASSES)
    except Exception as err:  # a damaged cache is regenerated, not fatal
        log.warning("ignoring unreadable cache %s: %s", path, err)
        return None


def load_synthetic(root: Path | None, seed: int, n_train: int, n_test: int) -> ImageDataset:
    """The synthetic set from the cache under ``root`` (made and stored when missing);
    ``root=None`` generates without caching."""
    if root is None:
        return make_synthetic(n_train, n_test, seed=seed)
    path = cache_path(root, seed, n_train, n_test)
    data = _read(path)
    if data is not None:
        return data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    if not os.access(path.parent, os.W_OK):
        log.info("data folder %s is not writable: generating without a cache", path.parent)
        return make_synthetic(n_train, n_test, seed=seed)
    with file_lock(path.with_name(path.name + ".lock"), what=f"synthetic cache {path.name}"):
        data = _read(path)  # another process may have made it while this one waited
        if data is not None:
            return data
        data = make_synthetic(n_train, n_test, seed=seed)
        state = {k: getattr(data, k) for k in ("x_train", "y_train", "x_test", "y_test")}
        save_torch_atomic(path, state, "synthetic cache")
        log.info("cached synthetic dataset at %s", path)
    return data
