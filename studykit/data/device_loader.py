"""`DeviceLoader`: the training and test images moved to the device once, shuffled, cropped and
flipped there in batches (no CPU workers, no PIL).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from studykit.rng import seeded_generator

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
        drop_last: Drop the last incomplete batch (default: True when training, else False),
            unless it is the only one: with fewer images than a batch, an epoch is that one
            batch, never no step at all.
        crop_padding: Zero padding for the random crop; 0 disables cropping.
        flip: Random horizontal flips.
        rank: This process's rank in a data-parallel training (``studykit.distributed``).
        world_size: Processes in it: every epoch's permutation is the same on each rank, and
            rank ``r`` takes the ``r``-th of ``world_size`` contiguous slices of every global
            batch of `batch_size` (which must divide by ``world_size``); every rank takes the
            same number of steps.

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
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"x must be uint8 (N, C, H, W); got {x.dtype} {tuple(x.shape)}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"y must have shape ({x.shape[0]},); got {tuple(y.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0; got {crop_padding}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, "
                             f"world_size={world_size}")
        if batch_size % world_size:
            raise ValueError(f"batch_size={batch_size} does not divide over {world_size} "
                             f"processes; use a multiple of {world_size}")
        self.rank, self.world_size = rank, world_size
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
        if self.drop_last and n >= self.batch_size:
            return n // self.batch_size
        return math.ceil(n / self.batch_size)

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
            g = seeded_generator("loader", self.seed, self.epoch)
            order = torch.randperm(n, generator=g)
            offsets = torch.randint(0, 2 * p + 1, (n, 2), generator=g)
            flips = torch.rand(n, generator=g) < 0.5
        else:
            order = torch.arange(n)
        rows_base = torch.arange(h, device=self.device)
        cols_base = torch.arange(w, device=self.device)
        for i in range(len(self)):
            sel = order[i * self.batch_size : (i + 1) * self.batch_size]
            if self.world_size > 1:  # this rank's slice of the global batch
                sel = sel.tensor_split(self.world_size)[self.rank]
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


