"""Datasets, on-device loaders and corrupted test sets.

Datasets (`load_dataset` names, see `list_datasets`):

- ``synthetic``: the embedded default. 32x32 RGB images of ten shapes (the class) rendered with
  random colour, texture, scale, rotation, shear, shading, a textured background, clutter and
  sensor noise; generated from a seed in seconds (`studykit.synthetic.make_synthetic`, also
  importable from here) and cached on disk.
- ``cifar10`` / ``cifar100``: through torchvision (``<root>/cifar-10-batches-py`` etc.).
- ``npz:<path>``: any ``.npz`` with uint8 NHWC ``x_train``/``x_test`` and integer labels
  (`load_npz`).

Images are stored as uint8 NCHW tensors on the CPU. `DeviceLoader` moves them to the device once
and does shuffling, random crop and flip there in batches. `load_corrupted` returns a CIFAR-C style
test set: the released Hendrycks ``.npy`` files when present, otherwise generated with
`studykit.corruptions.corrupt` and cached per dataset, corruption, severity and seed.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from studykit.rng import seeded_generator

# The generator lives in studykit.synthetic; these names stay importable from here too.
from studykit.synthetic import GENERATOR_VERSION, SYNTHETIC_CLASSES, make_synthetic  # noqa: F401

logger = logging.getLogger(__name__)

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

_CIFAR = {
    "cifar10": {
        "title": "CIFAR-10",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "folder": "cifar-10-batches-py",
        "check": "data_batch_1",
        "corrupted": "CIFAR-10-C",
    },
    "cifar100": {
        "title": "CIFAR-100",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "folder": "cifar-100-python",
        "check": "train",
        "corrupted": "CIFAR-100-C",
    },
}

_RELEASED_PER_SEVERITY = 10_000


def _generator(*parts: object) -> torch.Generator:
    return seeded_generator(*parts)


def _atomic_save(obj: object, path: Path) -> None:
    """`torch.save` to a temporary file next to `path`, then rename, so readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# --------------------------------------------------------------------------------------------
# Dataset container


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image classification dataset held as uint8 tensors on the CPU.

    Attributes:
        name: Dataset name (``"synthetic"``, ``"cifar10"``, ``"npz:<stem>"``...).
        x_train: Training images, uint8.
        y_train: Training labels, int64 in ``[0, num_classes)``.
        x_test: Test images, uint8.
        y_test: Test labels, int64.
        classes: Class names in label order.
        test_indices: Where each test image sits in the full, official test set (``None`` when
            the test set is the full one). `subset` fills it in; `load_corrupted` uses it to pick
            the matching rows of released CIFAR-C files.

    Shape:
        - x_train: :math:`(N, 3, H, W)`, y_train: :math:`(N,)`
        - x_test: :math:`(M, 3, H, W)`, y_test: :math:`(M,)`
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    test_indices: torch.Tensor | None = field(default=None)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(
                    f"x_{split} must be uint8 (N, 3, H, W); got {x.dtype} {tuple(x.shape)}"
                )
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise ValueError(
                    f"y_{split} must be int64 ({x.shape[0]},); got {y.dtype} {tuple(y.shape)}"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"train and test images differ in shape: {tuple(self.x_train.shape[1:])} vs "
                f"{tuple(self.x_test.shape[1:])}"
            )

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, train={self.x_train.shape[0]}, "
            f"test={self.x_test.shape[0]}, image_size={self.image_size}, "
            f"num_classes={self.num_classes})"
        )

    @property
    def num_classes(self) -> int:
        """Number of classes (the length of `classes`)."""
        return len(self.classes)

    @property
    def image_size(self) -> int:
        """Image height in pixels (images are square in every dataset here)."""
        return int(self.x_train.shape[-2])

    def subset(
        self, n_train: int | None = None, n_test: int | None = None, seed: int = 0
    ) -> ImageDataset:
        """A deterministic random subset with classes as balanced as the data allows.

        Classes are taken round-robin in a seeded random order, so every class gets
        ``n // num_classes`` or one more image while it has enough of them. The kept images stay
        in their original order.

        Args:
            n_train: Training images to keep; ``None`` keeps all.
            n_test: Test images to keep; ``None`` keeps all.
            seed: Seed of the selection.

        Returns:
            A new `ImageDataset` with the same name and classes.
        """
        idx_train = _balanced_indices(self.y_train, n_train, _generator(seed, "subset", "train"))
        idx_test = _balanced_indices(self.y_test, n_test, _generator(seed, "subset", "test"))
        test_indices = self.test_indices
        if idx_test is not None:
            test_indices = idx_test if test_indices is None else test_indices[idx_test]
        return ImageDataset(
            name=self.name,
            x_train=self.x_train if idx_train is None else self.x_train[idx_train],
            y_train=self.y_train if idx_train is None else self.y_train[idx_train],
            x_test=self.x_test if idx_test is None else self.x_test[idx_test],
            y_test=self.y_test if idx_test is None else self.y_test[idx_test],
            classes=self.classes,
            test_indices=test_indices,
        )


def _balanced_indices(
    y: torch.Tensor, n: int | None, generator: torch.Generator
) -> torch.Tensor | None:
    """Sorted indices of `n` samples taken round-robin over classes in a random order."""
    total = y.shape[0]
    if n is None or n == total:
        return None
    if not 0 < n <= total:
        raise ValueError(f"subset size must be in [1, {total}]; got {n}")
    perm = torch.randperm(total, generator=generator)
    labels = y[perm]
    # Rank of each sample among its class in the permuted order (0 for the first one seen).
    order = torch.sort(labels, stable=True).indices
    sorted_labels = labels[order]
    counts = torch.bincount(sorted_labels)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(total) - starts[sorted_labels]
    key = rank * (int(counts.numel()) + 1) + labels
    chosen = perm[torch.argsort(key)[:n]]
    return torch.sort(chosen).values


# --------------------------------------------------------------------------------------------
# Synthetic shapes (generated by studykit.synthetic, cached here)


def _load_synthetic(root: Path | None, seed: int, n_train: int, n_test: int) -> ImageDataset:
    from studykit.synthetic_cache import load_synthetic

    return load_synthetic(root, seed, n_train, n_test)


# --------------------------------------------------------------------------------------------
# CIFAR and npz


def _cifar_missing_message(name: str, root: Path) -> str:
    info = _CIFAR[name]
    archive = info["url"].rsplit("/", 1)[-1]
    return (
        f"{info['title']} not found under {root / info['folder']}. Download {info['url']} "
        f"(md5 {info['md5']}) and extract it into {root} "
        f"(`tar -xzf {archive} -C {root}`), so that {root / info['folder'] / info['check']} "
        f"exists; or put {archive} itself in {root} and call "
        f"load_dataset({name!r}, {str(root)!r}, download=True), which checks the md5 and "
        f"extracts it without a network."
    )


def _load_cifar(name: str, root: Path, download: bool) -> ImageDataset:
    info = _CIFAR[name]
    if (root / info["url"].rsplit("/", 1)[1]).exists():
        # A user-supplied archive: torchvision checks its md5 and extracts it with no network.
        download = True
    if not download and not (root / info["folder"] / info["check"]).exists():
        raise FileNotFoundError(_cifar_missing_message(name, root))
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except (RuntimeError, OSError) as err:  # missing/corrupt files, or a download that failed
        raise FileNotFoundError(_cifar_missing_message(name, root)) from err
    classes = CIFAR10_CLASSES if name == "cifar10" else tuple(train.classes)
    return ImageDataset(
        name,
        torch.from_numpy(train.data).permute(0, 3, 1, 2).contiguous(),
        torch.as_tensor(train.targets, dtype=torch.int64),
        torch.from_numpy(test.data).permute(0, 3, 1, 2).contiguous(),
        torch.as_tensor(test.targets, dtype=torch.int64),
        classes,
    )


def list_datasets() -> list[str]:
    """Names `load_dataset` accepts (``npz:<path>`` stands for any ``.npz`` file)."""
    return ["synthetic", "cifar10", "cifar100", "npz:<path>"]


def load_dataset(
    name: str,
    root: str | os.PathLike | None = "data",
    *,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
    download: bool = False,
) -> ImageDataset:
    """Load a dataset by name.

    Args:
        name: ``"synthetic"``, ``"cifar10"``, ``"cifar100"`` or ``"npz:<path>"``.
        root: Data folder: CIFAR lives in ``<root>/cifar-10-batches-py`` etc., and the synthetic
            set is cached in ``<root>/synthetic/``. ``None`` disables the synthetic cache.
        seed: For ``synthetic`` the generation seed; for the others, the seed of the subset.
        n_train: Training images (default: all; 50,000 for ``synthetic``).
        n_test: Test images (default: all; 10,000 for ``synthetic``).
        download: Let torchvision download CIFAR when it is missing.

    Returns:
        The `ImageDataset`. A synthetic set is generated at exactly the requested size; the
        others are class-balanced random subsets (`ImageDataset.subset`) when sizes are given.

    Raises:
        ValueError: Unknown name.
        FileNotFoundError: CIFAR or npz files missing; the message says what to fetch and where.
    """
    root_path = None if root is None else Path(root)
    if name == "synthetic":
        return _load_synthetic(
            root_path,
            seed,
            50_000 if n_train is None else n_train,
            10_000 if n_test is None else n_test,
        )
    if name in _CIFAR:
        data = _load_cifar(name, Path("data") if root_path is None else root_path, download)
    elif name.startswith("npz:") and len(name) > 4:
        from studykit.npz import load_npz

        data = load_npz(name[4:])
    else:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(list_datasets())}")
    if n_train is not None or n_test is not None:
        data = data.subset(n_train, n_test, seed=seed)
    return data


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


def dataset_fingerprint(dataset: ImageDataset) -> str:
    """Short hash of the dataset name and its test images: the corrupted-set cache key."""
    h = hashlib.sha256(dataset.name.encode())
    h.update(str(tuple(dataset.x_test.shape)).encode())
    h.update(dataset.x_test.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


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
    adds ``studykit.frost.frost_cache_tag()``: which frost made them). The
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

    corruptions = importlib.import_module("studykit.corruptions")
    allowed = corruptions.list_corruptions("all")
    if name not in allowed:
        raise ValueError(f"unknown corruption {name!r}; choose one of: {', '.join(allowed)}")
    stem = f"{name}-{severity}-seed{seed}"
    if name == "frost":  # photographs or synthesized texture (and its version) made the images
        stem += "-" + importlib.import_module("studykit.frost").frost_cache_tag()
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
    generator = _generator("corrupted", seed, name, severity)
    x_out = torch.empty_like(dataset.x_test)
    total = dataset.x_test.shape[0]
    with tqdm(total=total, desc=f"{name} s{severity}", unit="img", leave=False) as bar:
        for start in range(0, total, batch_size):
            x = dataset.x_test[start : start + batch_size].to(device).float().div_(255)
            x = corruptions.corrupt(x, name, severity, generator)
            x = torch.floor(x.clamp(0, 1) * 255 + 1e-3).clamp_(max=255).to(torch.uint8)
            x_out[start : start + x.shape[0]] = x.cpu()
            bar.update(x.shape[0])
    y = dataset.y_test.clone()
    if cache:
        _atomic_save({"x": x_out, "y": y}, path)
    return CorruptedSet(name, severity, x_out, y, "generated")


# --------------------------------------------------------------------------------------------
# Loader


class DeviceLoader:
    """Batches of a uint8 image tensor kept on the device, augmented there.

    The images move to `device` once. In training mode each epoch draws a permutation, a random
    crop offset (zero padding of `crop_padding` pixels on every side) and a horizontal flip per
    sample from a CPU `torch.Generator` seeded from (seed, epoch), so CPU and CUDA runs see the
    same stream and a loader restored at epoch e (`load_state_dict`) yields what an uninterrupted
    one yields from epoch e on. Crop and flip are one gather per batch. In eval mode there is no
    shuffling and no augmentation.

    Args:
        x: Images, uint8.
        y: Labels, int64.
        batch_size: Samples per batch.
        device: Where the data lives and batches are made.
        train: Shuffle and augment.
        seed: Seed of the shuffling and augmentation.
        drop_last: Drop the last incomplete batch (default: True when training, else False).
        crop_padding: Zero padding for the random crop; 0 disables cropping.
        flip: Random horizontal flips.

    Shape:
        - x: :math:`(N, 3, H, W)`, y: :math:`(N,)`
        - yields: float32 :math:`(B, 3, H, W)` in [0, 1] and int64 :math:`(B,)`, on `device`.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        device: torch.device | str = "cpu",
        train: bool = True,
        seed: int = 0,
        drop_last: bool | None = None,
        crop_padding: int = 4,
        flip: bool = True,
    ) -> None:
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"x must be uint8 (N, C, H, W); got {x.dtype} {tuple(x.shape)}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"y must have shape ({x.shape[0]},); got {tuple(y.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0; got {crop_padding}")
        self.device = torch.device(device)
        self.x = x.to(self.device)
        self.y = y.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.drop_last = train if drop_last is None else drop_last
        self.crop_padding = crop_padding
        self.flip = flip
        self.epoch = 0

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch whose stream the next pass draws from."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict:
        """The resumable state: ``{"epoch": int, "seed": int}``."""
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict`'s epoch and seed."""
        self.epoch = int(state["epoch"])
        self.seed = int(state["seed"])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, _, h, w = self.x.shape
        p = self.crop_padding
        if self.train:
            g = _generator("loader", self.seed, self.epoch)
            order = torch.randperm(n, generator=g)
            offsets = torch.randint(0, 2 * p + 1, (n, 2), generator=g)
            flips = torch.rand(n, generator=g) < 0.5
        else:
            order = torch.arange(n)
        rows_base = torch.arange(h, device=self.device)
        cols_base = torch.arange(w, device=self.device)
        for i in range(len(self)):
            sel = order[i * self.batch_size : (i + 1) * self.batch_size]
            idx = sel.to(self.device)
            xb = self.x[idx]
            if self.train and (p > 0 or self.flip):
                xb = self._augment(
                    xb,
                    offsets[sel].to(self.device),
                    flips[sel].to(self.device),
                    rows_base,
                    cols_base,
                )
            yield xb.float().div_(255), self.y[idx]
        self.epoch += 1

    def _augment(
        self,
        xb: torch.Tensor,
        offsets: torch.Tensor,
        flips: torch.Tensor,
        rows_base: torch.Tensor,
        cols_base: torch.Tensor,
    ) -> torch.Tensor:
        return _crop_flip(xb, offsets, flips, self.crop_padding, self.flip, rows_base, cols_base)


def _crop_flip(
    xb: torch.Tensor,
    offsets: torch.Tensor,
    flips: torch.Tensor,
    padding: int,
    flip: bool,
    rows_base: torch.Tensor,
    cols_base: torch.Tensor,
) -> torch.Tensor:
    """Crop from the zero-padded batch at per-sample offsets, then flip, in one gather."""
    b, c, h, w = xb.shape
    if padding > 0:
        xb = F.pad(xb, (padding, padding, padding, padding))
    rows = offsets[:, :1] + rows_base  # (B, H) rows of the padded image
    cols = offsets[:, 1:] + cols_base  # (B, W)
    if flip:
        cols = torch.where(flips[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=xb.device).view(b, 1, 1, 1)
    ci = torch.arange(c, device=xb.device).view(1, c, 1, 1)
    return xb[bi, ci, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


def random_crop_flip(
    x: torch.Tensor, *, generator: torch.Generator | None = None, padding: int = 4,
    flip: bool = True,
) -> torch.Tensor:
    """The standard CIFAR augmentation on a batch, in input order: a random crop of the
    zero-padded image and a random horizontal flip per sample (as `DeviceLoader` does).

    Args:
        x: images (uint8 or float).
        generator: CPU generator of the offsets and flips.
        padding: zero padding on each side.
        flip: random horizontal flips.

    Shape:
        - x, output: :math:`(N, C, H, W)`
    """
    n, _, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator).to(x.device)
    flips = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    return _crop_flip(x, offsets, flips, padding, flip, torch.arange(h, device=x.device),
                      torch.arange(w, device=x.device))


def load_npz(path: str | os.PathLike) -> ImageDataset:
    """``studykit.npz.load_npz`` (kept here for existing imports)."""
    from studykit.npz import load_npz as _load

    return _load(path)
