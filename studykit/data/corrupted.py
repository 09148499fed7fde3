"""`load_corrupted`: a CIFAR-C style test set, the released Hendrycks ``.npy`` files when present,
otherwise generated with `studykit.corruptions.corrupt` and cached per dataset, corruption,
severity and seed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from studykit.corruptions import corrupt, list_corruptions
from studykit.corruptions.frost import frost_cache_tag
from studykit.data.dataset import ImageDataset, dataset_fingerprint
from studykit.data.loaders import _CIFAR
from studykit.rng import seeded_generator
from studykit.runs import RunStoreError, save_torch_atomic

logger = logging.getLogger(__name__)
_RELEASED_PER_SEVERITY = 10_000




# --------------------------------------------------------------------------------------------
# Corrupted test sets


@dataclass(frozen=True, eq=False)
class CorruptedSet:
    """One corruption at one severity applied to a dataset's test set.

    Attributes:
        name: Corruption name (``"gaussian_noise"``...).
        severity: 1 to 5.
        x: Corrupted images, uint8.
        y: Labels, int64.
        source: ``"released"`` (read from the Hendrycks ``.npy`` files) or ``"generated"``.

    Shape:
        - x: :math:`(M, 3, H, W)`, y: :math:`(M,)`
    """

    name: str
    severity: int
    x: torch.Tensor
    y: torch.Tensor
    source: str

    def __repr__(self) -> str:
        return (
            f"CorruptedSet(name={self.name!r}, severity={self.severity}, n={self.x.shape[0]}, "
            f"source={self.source!r})"
        )


def _released(dataset: ImageDataset, name: str, severity: int, root: Path) -> CorruptedSet | None:
    if dataset.name not in _CIFAR:
        return None
    folder = root / _CIFAR[dataset.name]["corrupted"]
    x_path, y_path = folder / f"{name}.npy", folder / "labels.npy"
    if not (x_path.exists() and y_path.exists()):
        return None
    x_all = np.load(x_path, mmap_mode="r")
    y_all = np.load(y_path, mmap_mode="r")
    if dataset.test_indices is not None:
        idx = dataset.test_indices.numpy()
    elif dataset.x_test.shape[0] == _RELEASED_PER_SEVERITY:
        idx = np.arange(_RELEASED_PER_SEVERITY)
    else:
        logger.warning(
            "%s has %d test images, not the %d of %s; generating %s instead",
            dataset.name,
            dataset.x_test.shape[0],
            _RELEASED_PER_SEVERITY,
            x_path,
            name,
        )
        return None
    rows = (severity - 1) * _RELEASED_PER_SEVERITY + idx
    if x_all.ndim != 4 or x_all.shape[0] < severity * _RELEASED_PER_SEVERITY:
        raise ValueError(
            f"{x_path} has shape {x_all.shape}; expected ({5 * _RELEASED_PER_SEVERITY}, H, W, 3)"
        )
    y = torch.from_numpy(np.asarray(y_all[rows]).astype(np.int64))
    if not torch.equal(y, dataset.y_test):
        raise ValueError(
            f"labels in {y_path} do not match {dataset.name}'s test labels; is {folder} the "
            f"corrupted version of this dataset?"
        )
    x = torch.from_numpy(np.ascontiguousarray(x_all[rows])).permute(0, 3, 1, 2).contiguous()
    return CorruptedSet(name, severity, x, y, "released")


def load_corrupted(
    dataset: ImageDataset,
    name: str,
    severity: int,
    *,
    root: str | os.PathLike = "data",
    seed: int = 0,
    cache: bool = True,
    device: torch.device | str | None = None,
    batch_size: int = 1000,
    progress: bool = True,
) -> CorruptedSet:
    """A dataset's test set under one corruption at one severity, CIFAR-C style.

    For ``cifar10``/``cifar100``, when ``<root>/CIFAR-10-C/<name>.npy`` (or ``CIFAR-100-C``) and
    ``labels.npy`` exist, the matching rows of the released file are read (memory-mapped; rows
    ``[(severity - 1) * 10000, severity * 10000)``, or the subset's rows of them). Otherwise the
    test images are corrupted with `studykit.corruptions.corrupt` in batches on `device`, from a
    generator seeded by (seed, name, severity), and converted back to uint8 by truncation as the
    released files were (``floor(x * 255)``, with a tolerance of 1/1000 of a level for float
    round-off). Generated sets are cached in
    ``<root>/cache/corrupted/<dataset_fingerprint>/<name>-<severity>-seed<seed>.pt`` (frost
    adds ``studykit.corruptions.frost.frost_cache_tag()``: which frost made them). The
    random draws come from one CPU generator, so CPU and CUDA agree up to float round-off; they
    do depend on `batch_size`, and whichever call fills the cache fixes the images for later
    ones.

    Args:
        dataset: The dataset whose test set is corrupted.
        name: Corruption name, one of ``studykit.corruptions.list_corruptions("all")``.
        severity: 1 to 5.
        root: Data folder holding ``CIFAR-10-C/`` etc. and ``cache/``.
        seed: Seed of the corruption randomness.
        cache: Read and write the generated-set cache.
        device: Where to run the corruption (default CPU).
        batch_size: Images per corruption call.
        progress: A progress bar while a set is generated.

    Returns:
        The `CorruptedSet` (images on the CPU).

    Raises:
        ValueError: Unknown corruption or severity out of range.

    Shape:
        - x: :math:`(M, 3, H, W)` uint8, as ``dataset.x_test``.
    """
    if severity not in range(1, 6):
        raise ValueError(f"severity must be one of 1, 2, 3, 4, 5; got {severity!r}")
    root = Path(root)
    released = _released(dataset, name, severity, root)
    if released is not None:
        return released

    allowed = list_corruptions("all")
    if name not in allowed:
        raise ValueError(f"unknown corruption {name!r}; choose one of: {', '.join(allowed)}")
    stem = f"{name}-{severity}-seed{seed}"
    if name == "frost":  # photographs or synthesized texture (and its version) made the images
        stem += "-" + frost_cache_tag()
    path = root / "cache" / "corrupted" / dataset_fingerprint(dataset) / f"{stem}.pt"
    if cache and path.exists():
        try:
            state = torch.load(path, weights_only=True)
            if state["x"].shape == dataset.x_test.shape:
                return CorruptedSet(name, severity, state["x"], state["y"], "generated")
            logger.warning("ignoring cache %s: shape %s", path, tuple(state["x"].shape))
        except Exception as err:  # a damaged cache is regenerated, not fatal
            logger.warning("ignoring unreadable cache %s: %s", path, err)

    from tqdm.auto import tqdm

    device = torch.device("cpu" if device is None else device)
    # A CPU generator: `corrupt` draws its random layers there, so CPU and CUDA agree.
    generator = seeded_generator("corrupted", seed, name, severity)
    x_out = torch.empty_like(dataset.x_test)
    total = dataset.x_test.shape[0]
    with tqdm(total=total, desc=f"{name} s{severity}", unit="img", leave=False,
              disable=not progress) as bar:
        for start in range(0, total, batch_size):
            x = dataset.x_test[start : start + batch_size].to(device).float().div_(255)
            x = corrupt(x, name, severity, generator)
            x = torch.floor(x.clamp(0, 1) * 255 + 1e-3).clamp_(max=255).to(torch.uint8)
            x_out[start : start + x.shape[0]] = x.cpu()
            bar.update(x.shape[0])
    y = dataset.y_test.clone()
    if cache:
        try:
            save_torch_atomic(path, {"x": x_out, "y": y}, "corrupted set")
        except RunStoreError as e:  # a full or read-only data folder: made, only not cached
            logger.warning("%s; continuing without a cache", e)
    return CorruptedSet(name, severity, x_out, y, "generated")


