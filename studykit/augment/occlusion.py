"""Cutout, CutMix and Gaussian noise (MaxUp's augmentations), batched with replayable
per-sample parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from studykit.augment._common import _check_images, _per_sample
from studykit.augment.augmix_params import _gamma
from studykit.devices import generator_device

# ---------------------------------------------------------------------------------------------
# Cutout, CutMix, Gaussian noise (MaxUp's augmentations).


def sample_cutout_centers(
    n: int, height: int, width: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """Cutout square centres, uniform over the pixels (DeVries & Taylor 2017).

    Returns:
        int64 ``(row, column)`` per image on the generator's device.

    Shape:
        - output: :math:`(N, 2)`
    """
    dev = generator_device(generator)
    rows = torch.randint(0, height, (n,), generator=generator, device=dev)
    cols = torch.randint(0, width, (n,), generator=generator, device=dev)
    return torch.stack([rows, cols], 1)


def _box_mask(h: int, w: int, y0: Tensor, y1: Tensor, x0: Tensor, x1: Tensor) -> Tensor:
    """(N, 1, H, W) bool mask of the boxes [y0, y1) x [x0, x1)."""
    rows = torch.arange(h, device=y0.device).view(1, h, 1)
    cols = torch.arange(w, device=y0.device).view(1, 1, w)
    y0, y1, x0, x1 = (t.view(-1, 1, 1) for t in (y0, y1, x0, x1))
    return ((rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)).unsqueeze(1)


def apply_cutout(x: Tensor, centers: Tensor, size: int = 16, fill: float = 0.0) -> Tensor:
    """Fill a ``size`` x ``size`` square around each centre, clipped at the image border.

    As the reference Cutout: rows ``[r - size // 2, r + size // 2)`` and the same for columns,
    clipped to the image, so squares near the border are smaller.

    Args:
        x: images.
        centers: ``(row, column)`` per image from :func:`sample_cutout_centers`.
        size: side of the square (CIFAR-10: 16, CIFAR-100: 8).
        fill: value written into the square (0 = black in [0, 1] pixel space).

    Returns:
        The images with the squares filled.

    Shape:
        - x: :math:`(N, C, H, W)`
        - centers: :math:`(N, 2)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    if size < 1:
        raise ValueError(f"size must be >= 1; got {size}")
    h, w = x.shape[2:]
    centers = centers.to(x.device)
    r, c = centers[:, 0], centers[:, 1]
    half = size // 2
    mask = _box_mask(
        h,
        w,
        (r - half).clamp(0, h),
        (r - half + size).clamp(0, h),
        (c - half).clamp(0, w),
        (c - half + size).clamp(0, w),
    )
    return x.masked_fill(mask, fill)


def cutout(
    x: Tensor, size: int = 16, *, generator: torch.Generator | None = None, fill: float = 0.0
) -> Tensor:
    """Cutout (DeVries & Taylor 2017): one ``size`` x ``size`` square per image, filled.

    Args:
        x: images in [0, 1].
        size: side of the square (CIFAR-10: 16).
        generator: random source for the centres.
        fill: fill value (0 = black).

    Returns:
        The images with one square filled each.

    Shape:
        - x: :math:`(N, C, H, W)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    centers = sample_cutout_centers(x.shape[0], x.shape[2], x.shape[3], generator=generator)
    return apply_cutout(x, centers, size, fill)


@dataclass(frozen=True)
class CutMixParams:
    """CutMix draws for a batch (per-sample boxes, one permutation).

    Attributes:
        perm: partner image of each image, int64, :math:`(N,)`.
        boxes: ``(y0, y1, x0, x1)`` pasted from the partner, int64, :math:`(N, 4)`.
        lam: weight of each image's own label, the kept area fraction, float32, :math:`(N,)`.
    """

    perm: Tensor
    boxes: Tensor
    lam: Tensor


def sample_cutmix_params(
    n: int,
    height: int,
    width: int,
    *,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
) -> CutMixParams:
    """Draw CutMix boxes as Yun et al. (2019), one box and ratio per image.

    ``lam ~ Beta(alpha, alpha)``; the box has sides ``int(H sqrt(1 - lam))`` by
    ``int(W sqrt(1 - lam))`` around a uniform centre, clipped to the image; the returned ``lam``
    is recomputed from the clipped area (``1 - area / (H W)``), as the reference does.

    Args:
        n: batch size.
        height: image height.
        width: image width.
        alpha: Beta concentration (CutMix: 1).
        generator: random source; draws on its device.

    Returns:
        The parameters on the generator's device.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0; got {alpha}")
    dev = generator_device(generator)
    perm = torch.randperm(n, generator=generator, device=dev)
    ab = _gamma(alpha, (2, n), generator, dev)
    lam0 = ab[0] / (ab[0] + ab[1])
    cut = torch.sqrt(1.0 - lam0)
    ch, cw = (height * cut).long(), (width * cut).long()
    cy = torch.randint(0, height, (n,), generator=generator, device=dev)
    cx = torch.randint(0, width, (n,), generator=generator, device=dev)
    y0, y1 = (cy - ch // 2).clamp(0, height), (cy + ch // 2).clamp(0, height)
    x0, x1 = (cx - cw // 2).clamp(0, width), (cx + cw // 2).clamp(0, width)
    lam = 1.0 - ((y1 - y0) * (x1 - x0)).double() / (height * width)
    return CutMixParams(perm=perm, boxes=torch.stack([y0, y1, x0, x1], 1), lam=lam.float())


def apply_cutmix(x: Tensor, params: CutMixParams) -> Tensor:
    """Paste each image's box from its partner image.

    Args:
        x: images.
        params: from :func:`sample_cutmix_params`.

    Returns:
        The mixed images.

    Shape:
        - x: :math:`(N, C, H, W)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    perm, boxes = params.perm.to(x.device), params.boxes.to(x.device)
    mask = _box_mask(x.shape[2], x.shape[3], *boxes.unbind(1))
    return torch.where(mask, x[perm], x)


def cutmix(
    x: Tensor, y: Tensor, alpha: float = 1.0, *, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CutMix (Yun et al. 2019) with a box per image; loss = lam CE(y_a) + (1 - lam) CE(y_b).

    Args:
        x: images.
        y: labels.
        alpha: Beta concentration.
        generator: random source.

    Returns:
        ``(x_mixed, y_a, y_b, lam)``: ``y_a = y``, ``y_b`` the partner's labels and ``lam`` the
        fraction of each image's own pixels kept.

    Shape:
        - x: :math:`(N, C, H, W)`
        - y: :math:`(N,)`
        - x_mixed: :math:`(N, C, H, W)`; y_a, y_b, lam: :math:`(N,)`
    """
    _check_images(x)
    params = sample_cutmix_params(
        x.shape[0], x.shape[2], x.shape[3], alpha=alpha, generator=generator
    )
    perm = params.perm.to(y.device)
    return apply_cutmix(x, params), y, y[perm], params.lam.to(x.device)


def gaussian_noise(
    x: Tensor,
    sigma: float | Tensor,
    *,
    generator: torch.Generator | None = None,
    clip: bool = False,
) -> Tensor:
    """Add ``N(0, sigma^2)`` noise per pixel (MaxUp+Gauss, randomized smoothing).

    The noise is drawn on the generator's device and moved to x's device. Randomized smoothing
    does not clip, so neither does this unless ``clip=True``.

    Args:
        x: images in [0, 1].
        sigma: noise standard deviation in [0, 1] pixel units, per image or one for all.
        generator: random source.
        clip: clamp the result to [0, 1].

    Returns:
        The noisy images.

    Shape:
        - x: :math:`(N, C, H, W)`
        - sigma: scalar or :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    s = _per_sample(sigma, x, "sigma")
    if bool((s < 0).any()):
        raise ValueError(f"sigma must be >= 0; got {sigma}")
    noise = torch.randn(x.shape, generator=generator, device=generator_device(generator),
                        dtype=x.dtype)
    out = x + s * noise.to(x.device)
    return out.clamp(0.0, 1.0) if clip else out
