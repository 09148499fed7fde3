"""The on-disk cache of the generated ``synthetic`` dataset (``<data>/synthetic/*.pt``).

Generation takes seconds; the cache makes it once per seed, size and generator version. Two
processes that want the same set on a fresh machine take turns on a lock file, so it is
generated once; a damaged cache file (unreadable, or holding other sizes or dtypes than its
name says) is regenerated, with one warning; a read-only or full data folder means no cache.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from studykit.data.dataset import ImageDataset
from studykit.data.synthetic import GENERATOR_VERSION, SYNTHETIC_CLASSES, make_synthetic
from studykit.locks import file_lock
from studykit.runs import RunStoreError, save_torch_atomic

log = logging.getLogger(__name__)
_warned: set[str] = set()


def cache_path(root: Path, seed: int, n_train: int, n_test: int) -> Path:
    return root / "synthetic" / f"synthetic-s{seed}-n{n_train}-{n_test}-v{GENERATOR_VERSION}.pt"


def _read(path: Path, n_train: int, n_test: int) -> ImageDataset | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, weights_only=True)
        data = ImageDataset("synthetic", state["x_train"], state["y_train"], state["x_test"],
                            state["y_test"], SYNTHETIC_CLASSES)
        sizes = (data.x_train.shape[0], data.x_test.shape[0])
        if sizes != (n_train, n_test):
            raise ValueError(f"it holds {sizes[0]} + {sizes[1]} images, its name "
                             f"{n_train} + {n_test}")
        for y in (data.y_train, data.y_test):
            if y.numel() and not 0 <= int(y.min()) <= int(y.max()) < len(SYNTHETIC_CLASSES):
                raise ValueError(f"labels outside 0..{len(SYNTHETIC_CLASSES) - 1}")
        return data
    except Exception as err:  # a damaged cache is regenerated, not fatal
        if str(path) not in _warned:  # read twice (before and under the lock): warned once
            _warned.add(str(path))
            log.warning("ignoring unreadable cache %s: %s", path, err)
        return None


def load_synthetic(root: Path | None, seed: int, n_train: int, n_test: int) -> ImageDataset:
    """The synthetic set from the cache under ``root`` (made and stored when missing);
    ``root=None`` generates without caching."""
    if root is None:
        return make_synthetic(n_train, n_test, seed=seed)
    path = cache_path(root, seed, n_train, n_test)
    data = _read(path, n_train, n_test)
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
        data = _read(path, n_train, n_test)  # another process may have made it meanwhile
        if data is not None:
            return data
        data = make_synthetic(n_train, n_test, seed=seed)
        state = {k: getattr(data, k) for k in ("x_train", "y_train", "x_test", "y_test")}
        try:
            save_torch_atomic(path, state, "synthetic cache")
        except RunStoreError as e:  # a full disk: the data is made, only not cached
            log.warning("%s; continuing without a cache", e)
        else:
            log.info("cached synthetic dataset at %s", path)
    return data
