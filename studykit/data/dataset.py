"""`ImageDataset`: uint8 NCHW train and test images with integer labels, kept on the CPU.

A leaf: every loader (synthetic, CIFAR, npz) returns one, and nothing here imports a loader.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from studykit.rng import seeded_generator

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
        idx_train = _balanced_indices(self.y_train, n_train, seeded_generator(seed, "subset", "train"))
        idx_test = _balanced_indices(self.y_test, n_test, seeded_generator(seed, "subset", "test"))
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


def dataset_fingerprint(dataset: ImageDataset) -> str:
    """Short hash of the dataset name and its test images: the corrupted-set cache key."""
    h = hashlib.sha256(dataset.name.encode())
    h.update(str(tuple(dataset.x_test.shape)).encode())
    h.update(dataset.x_test.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


