"""Weather corruptions: snow, frost, fog and spatter (water or mud).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from studykit.corruptions.filters import (
    _box_blur3,
    _clipped_zoom,
    _filter2d_conv,
    _filter_separable,
    _gaussian_blur,
    _motion_blur,
    _plasma_fractal,
    _plasma_size,
    _randn,
    _uniform,
)
from studykit.corruptions.frost import frost_layer

# ----------------------------------------------------------------------------- weather


def _grey(x: torch.Tensor) -> torch.Tensor:
    # cv2.COLOR_RGB2GRAY
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _snow(x, p, generator):
    loc, scale, zoom, thresh, radius, sigma, blend = p
    b, _, h, w = x.shape
    layer = _randn((b, 1, h, w), generator) * scale + loc
    layer = _clipped_zoom(layer, zoom)
    layer = torch.where(layer < thresh, torch.zeros_like(layer), layer)
    layer = torch.floor(layer.clamp(0, 1) * 255) / 255  # uint8 PNG in the reference
    angle = _uniform((b,), -135, -45, generator, torch.float64)
    layer = _motion_blur(layer, radius, sigma, angle).to(x)
    x = blend * x + (1 - blend) * torch.maximum(x, _grey(x) * 1.5 + 0.5)
    return x + layer + layer.flip(-2, -1)


def _frost(x, p, generator):
    b, _, h, w = x.shape
    return p[0] * x + p[1] * frost_layer(b, h, w, generator).to(x)


def _fog(x, p, generator):
    strength, decay = p
    b, _, h, w = x.shape
    plasma = _plasma_fractal(b, _plasma_size(h, w), decay, generator)[:, None, :h, :w].to(x)
    max_val = x.amax((1, 2, 3), keepdim=True)
    return (x + strength * plasma) * max_val / (max_val + strength)


# ----------------------------------------------------------------------------- spatter


def _canny(img: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """OpenCV's Canny (aperture 3, L1 gradient) on integer-valued (b, 1, h, w) images."""
    smooth = torch.tensor([1.0, 2.0, 1.0])
    diff = torch.tensor([-1.0, 0.0, 1.0])
    gx = _filter_separable(img, smooth, diff, "replicate")  # integer sums: exact
    gy = _filter_separable(img, diff, smooth, "replicate")
    mag = gx.abs() + gy.abs()
    m = F.pad(mag, (1, 1, 1, 1))  # OpenCV compares with zero magnitude outside the image
    h, w = img.shape[-2:]

    def nb(dr: int, dc: int) -> torch.Tensor:
        return m[..., 1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]

    ax, ay = gx.abs(), gy.abs()
    # OpenCV's fixed-point sector test: tan(22.5 deg) * 2^15 = 13573
    horizontal = ay * 32768 < ax * 13573
    vertical = ay * 32768 > ax * (13573 + 65536)
    same_sign = (gx * gy) >= 0
    keep_h = (mag > nb(0, -1)) & (mag >= nb(0, 1))
    keep_v = (mag > nb(-1, 0)) & (mag >= nb(1, 0))
    keep_d = torch.where(
        same_sign,
        (mag > nb(-1, -1)) & (mag > nb(1, 1)),
        (mag > nb(-1, 1)) & (mag > nb(1, -1)),
    )
    keep = torch.where(horizontal, keep_h, torch.where(vertical, keep_v, keep_d)) & (mag > low)
    strong = keep & (mag > high)
    weak = keep & ~strong
    edges = strong
    for _ in range(h * w):  # hysteresis: grow strong edges through 8-connected weak pixels
        grown = edges | (weak & (F.max_pool2d(edges.float(), 3, 1, 1) > 0))
        if torch.equal(grown, edges):
            break
        edges = grown
    return edges


def _chamfer_distance(zero: torch.Tensor, cap: float) -> torch.Tensor:
    """cv2.distanceTransform(DIST_L2, 5) to the True pixels, exact up to ``cap``.

    The 5x5 chamfer mask (1, 1.4, 2.1969) distance is a shortest path; every step costs at
    least 1, so ceil(cap) relaxation sweeps settle all distances up to cap.
    """
    inf = torch.finfo(torch.float32).max / 4
    d = torch.where(zero, 0.0, inf).float()
    h, w = d.shape[-2:]
    cost = {1: 1.0, 2: 1.4, 5: 2.1969}  # OpenCV's mask for DIST_L2, size 5
    offsets = [(dr, dc) for dr in range(-2, 3) for dc in range(-2, 3)]
    steps = [(dr, dc, cost[dr * dr + dc * dc]) for dr, dc in offsets if dr * dr + dc * dc in cost]
    for _ in range(math.ceil(cap)):
        pad = F.pad(d, (2, 2, 2, 2), value=inf)
        new = d
        for dr, dc, c in steps:
            new = torch.minimum(new, pad[..., 2 + dr : 2 + dr + h, 2 + dc : 2 + dc + w] + c)
        if torch.equal(new, d):
            break
        d = new
    return d


def _equalize_hist(img: torch.Tensor) -> torch.Tensor:
    """cv2.equalizeHist per image on integer-valued (b, 1, h, w) images in 0..255."""
    b = img.shape[0]
    flat = img.reshape(b, -1).long()
    total = flat.shape[1]
    ones = torch.ones(flat.shape, device=img.device)
    hist = torch.zeros(b, 256, device=img.device).scatter_add_(1, flat, ones)
    first = (hist > 0).float().argmax(1, keepdim=True)
    first_count = hist.gather(1, first)
    scale = 255.0 / (total - first_count).clamp(min=1)
    lut = ((hist.cumsum(1) - first_count) * scale).round().clamp(0, 255)
    bins = torch.arange(256, device=img.device)[None]
    lut = torch.where(bins <= first, torch.zeros_like(lut), lut)
    out = lut.gather(1, flat).reshape(img.shape)
    constant = (first_count == total).view(b, 1, 1, 1)  # OpenCV leaves flat images unchanged
    return torch.where(constant, img, out.to(img.dtype))


def _water_layer(liquid: torch.Tensor) -> torch.Tensor:
    """The reference's water-spatter shading of a thresholded liquid layer, in [0, 1]."""
    liquid8 = torch.floor(liquid.clamp(0, 1) * 255)
    edges = _canny(liquid8, 50, 150)
    dist = _chamfer_distance(edges, 20.0).clamp(max=20)  # cv2.threshold(..., THRESH_TRUNC)
    dist = torch.floor(_box_blur3(dist))  # .astype(np.uint8)
    dist = _equalize_hist(dist)
    emboss = torch.tensor([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])
    dist = _filter2d_conv(dist, emboss, "reflect101").round().clamp(0, 255)  # CV_8U output
    dist = _box_blur3(dist).round()
    m = liquid8 * dist
    peak = m.amax((1, 2, 3), keepdim=True)
    return torch.where(peak > 0, m / peak.clamp(min=1e-12), torch.zeros_like(m))


def _spatter(x, p, generator):
    loc, scale, sigma, thresh, intensity, mud = p
    b, _, h, w = x.shape
    liquid = _gaussian_blur(_randn((b, 1, h, w), generator) * scale + loc, sigma)
    liquid = torch.where(liquid < thresh, torch.zeros_like(liquid), liquid)
    if not mud:
        m = (_water_layer(liquid) * intensity).to(x)
        colour = torch.tensor([175.0, 238.0, 238.0]) / 255  # pale turquoise
        return x + m * colour.to(x).view(1, 3, 1, 1)
    m = _gaussian_blur((liquid > thresh).float(), intensity)
    m = torch.where(m < 0.8, torch.zeros_like(m), m).to(x)
    colour = torch.tensor([63.0, 42.0, 20.0]) / 255  # mud brown
    return x * (1 - m) + m * colour.to(x).view(1, 3, 1, 1)


