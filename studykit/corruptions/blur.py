"""Blur corruptions: defocus, glass, motion, zoom and Gaussian.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from studykit.corruptions.filters import (
    _clipped_zoom,
    _filter2d,
    _filter_separable,
    _gaussian_blur,
    _motion_blur,
    _uniform,
)
from studykit.devices import generator_device

# ----------------------------------------------------------------------------- blur


@functools.lru_cache(maxsize=16)
def _disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """The reference's anti-aliased disk, cropped to its non-zero support."""
    half, ksize = (8, 3) if radius <= 8 else (int(radius), 5)
    coords = torch.arange(-half, half + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    disk = (xx**2 + yy**2 <= radius**2).to(torch.float64)
    disk = disk / disk.sum()
    # cv2.GaussianBlur(ksize, sigma): exp(-(i - (k-1)/2)^2 / 2 sigma^2), normalized
    t = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    g = torch.exp(-(t**2) / (2 * alias_blur**2))
    g = g / g.sum()
    k = _filter_separable(disk[None, None], g, g, "reflect101")[0, 0]
    support = int(torch.nonzero(k.abs() > 0).sub(half).abs().max())
    return k[half - support : half + support + 1, half - support : half + support + 1]


def _defocus_blur(x, p, generator):
    return _filter2d(x, _disk_kernel(*p), "reflect101")


def _glass_blur(x, p, generator):
    sigma, d, iterations = p
    b, c, h, w = x.shape
    x = _gaussian_blur(x, sigma)
    # np.uint8 truncation in the reference; the tolerance keeps k/255 * 255 at k
    x = torch.floor(x * 255 + 1e-4) / 255
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    # the reference visits rows and columns d+1 .. size-d (range(size - d, d, -1))
    nh, nw = h - 2 * d, w - 2 * d
    for _ in range(iterations if nh > 0 and nw > 0 else 0):
        shift = torch.randint(-d, d, (b, 2, nh, nw), generator=generator,
                              device=generator_device(generator))  # fmt: skip
        shift = F.pad(shift, (d + 1, w - d - 1 - nw, d + 1, h - d - 1 - nh)).to(x.device)
        src = (rows[:, None] + shift[:, 1]) * w + (cols[None, :] + shift[:, 0])
        idx = src.reshape(b, 1, h * w).expand(b, c, h * w)
        x = x.reshape(b, c, h * w).gather(2, idx).reshape(b, c, h, w)
    return _gaussian_blur(x, sigma)


def _motion_blur_corruption(x, p, generator):
    angle = _uniform((x.shape[0],), -45, 45, generator, torch.float64)
    return _motion_blur(x, p[0], p[1], angle)


def _zoom_blur(x, z_max, generator):
    factors = np.arange(1, z_max, 0.01)  # numpy's float end point decides 1.06/1.11 inclusion
    out = x.clone()
    for zoom in factors:
        out.add_(_clipped_zoom(x, float(zoom)))
    return out / (len(factors) + 1)


def _gaussian_blur_corruption(x, sigma, generator):
    return _gaussian_blur(x, sigma)


