"""Batched building blocks of the corruptions: random draws on the caller's generator,
separable and 2-D filtering with the reference's border modes, zooms and resampling matrices,
and the plasma fractal.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from studykit.devices import generator_device

# ----------------------------------------------------------------------------- randomness



def _randn(shape: tuple[int, ...], generator: torch.Generator | None, dtype=torch.float32):
    return torch.randn(shape, generator=generator, device=generator_device(generator), dtype=dtype)


def _uniform(
    shape: tuple[int, ...],
    low: float,
    high: float,
    generator: torch.Generator | None,
    dtype=torch.float32,
) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=generator_device(generator), dtype=dtype)
    return low + (high - low) * u


# ----------------------------------------------------------------------------- filtering


def _border_index(n: int, before: int, after: int, mode: str, device) -> torch.Tensor:
    """Source index of every position of an axis of length ``n`` padded by before/after."""
    i = torch.arange(-before, n + after, device=device)
    if mode == "replicate":  # scipy/skimage 'nearest', ImageMagick 'edge'
        return i.clamp(0, n - 1)
    if mode == "symmetric":  # scipy 'reflect': d c b a | a b c d
        i = i.remainder(2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)
    if mode == "reflect101":  # OpenCV's default border: d c b | a b c d
        if n == 1:
            return torch.zeros_like(i)
        i = i.remainder(2 * n - 2)
        return torch.where(i >= n, 2 * n - 2 - i, i)
    raise ValueError(f"unknown border mode {mode!r}")


def _pad(x: torch.Tensor, ph: int, pw: int, mode: str) -> torch.Tensor:
    """Pad the last two dims by ph rows and pw columns on each side (any pad size)."""
    if ph:
        x = x.index_select(-2, _border_index(x.shape[-2], ph, ph, mode, x.device))
    if pw:
        x = x.index_select(-1, _border_index(x.shape[-1], pw, pw, mode, x.device))
    return x


def _filter2d_conv(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel with a small odd-sized 2-D kernel (as ``cv2.filter2D``).

    Exact for integer images and integer kernels, which the Canny/emboss steps rely on.
    """
    kh, kw = kernel.shape
    shape = x.shape
    y = _pad(x.reshape(-1, 1, shape[-2], shape[-1]), kh // 2, kw // 2, mode)
    y = F.conv2d(y, kernel.to(device=x.device, dtype=x.dtype)[None, None])
    return y.reshape(shape)


@functools.lru_cache(maxsize=256)
def _filter_matrix(n: int, kernel: tuple[float, ...], mode: str) -> torch.Tensor:
    """(n, n) matrix of a 1-D correlation with ``kernel`` and the given border mode."""
    r = len(kernel) // 2
    source = _border_index(n, r, r, mode, "cpu")
    cols = source[torch.arange(n)[:, None] + torch.arange(len(kernel))[None, :]]
    rows = torch.arange(n)[:, None].expand_as(cols)
    weights = torch.tensor(kernel, dtype=torch.float64).expand_as(cols)
    m = torch.zeros(n, n, dtype=torch.float64)
    return m.index_put_((rows, cols), weights, accumulate=True)


def _filter_separable(x: torch.Tensor, k_rows: torch.Tensor, k_cols: torch.Tensor, mode: str):
    """Correlate the last two dims with 1-D kernels, as two small matrix products.

    On CIFAR-sized images a dense (n, n) banded matrix (border folded in) is much faster
    on CPU than a single-channel conv2d and is exact up to float round-off.
    """
    h, w = x.shape[-2:]
    mh = _filter_matrix(h, tuple(k_rows.tolist()), mode).to(device=x.device, dtype=x.dtype)
    mw = _filter_matrix(w, tuple(k_cols.tolist()), mode).to(device=x.device, dtype=x.dtype)
    return mh @ x @ mw.T


def _filter2d(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate with a 2-D kernel split into separable (rank-1) terms by SVD."""
    u, sv, vh = torch.linalg.svd(kernel.to(torch.float64))
    out = None
    for i in range(int((sv > 1e-12 * sv[0]).sum())):
        term = _filter_separable(x, u[:, i] * sv[i], vh[i], mode)
        out = term if out is None else out + term
    return out


def _gaussian_kernel1d(sigma: float, truncate: float) -> torch.Tensor | None:
    """scipy.ndimage's Gaussian: radius int(truncate * sigma + .5); None means identity."""
    radius = int(truncate * sigma + 0.5)
    if sigma <= 0 or radius == 0:
        return None
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _gaussian_blur(
    x: torch.Tensor, sigma: float, truncate: float = 4.0, mode: str = "replicate"
) -> torch.Tensor:
    """``skimage.filters.gaussian`` over the last two dims (default border: 'nearest')."""
    k = _gaussian_kernel1d(sigma, truncate)
    return x if k is None else _filter_separable(x, k, k, mode)


def _box_blur3(x: torch.Tensor) -> torch.Tensor:
    """``cv2.blur(x, (3, 3))``: 3x3 mean with a reflect-101 border."""
    k = torch.full((3,), 1.0 / 3.0, dtype=torch.float64)
    return _filter_separable(x, k, k, "reflect101")


# ----------------------------------------------------------------------------- geometry


@functools.lru_cache(maxsize=256)
def _clipped_zoom_matrix(n: int, zoom: float) -> torch.Tensor:
    """(n, n) linear-interpolation matrix of the reference's ``clipped_zoom`` on one axis.

    The centre crop of ceil(n / zoom) pixels is zoomed by scipy.ndimage.zoom (order 1,
    corner-aligned grid: output size round(crop * zoom)) and the first n pixels after a
    trim of (size - n) // 2 are kept, which is what the reference returns.
    """
    crop = math.ceil(n / zoom)
    top = (n - crop) // 2
    out = int(round(crop * zoom))
    trim = (out - n) // 2
    j = torch.arange(n, dtype=torch.float64) + trim
    src = j * ((crop - 1) / (out - 1)) if out > 1 else torch.zeros(n, dtype=torch.float64)
    lo = src.floor().clamp(max=crop - 1)
    frac = src - lo
    lo = lo.long()
    hi = (lo + 1).clamp(max=crop - 1)
    m = torch.zeros(n, n, dtype=torch.float64)
    rows = torch.arange(n)
    m.index_put_((rows, top + lo), 1 - frac, accumulate=True)
    m.index_put_((rows, top + hi), frac, accumulate=True)
    return m


def _clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    mh = _clipped_zoom_matrix(h, float(zoom)).to(device=x.device, dtype=x.dtype)
    mw = _clipped_zoom_matrix(w, float(zoom)).to(device=x.device, dtype=x.dtype)
    return mh @ x @ mw.T


@functools.lru_cache(maxsize=64)
def _pil_box_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of PIL's ``Image.resize(..., BOX)`` along one axis.

    PIL gives weight 1 to every input pixel whose centre lies in the output pixel's box
    (half-open), then normalizes; when upsampling, the box is one input pixel wide.
    """
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for xx in range(n_out):  # builds a cached matrix once per size pair, not per image
        center = (xx + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        for i in range(lo, hi):
            t = (i - center + 0.5) / filterscale
            if -0.5 < t <= 0.5:
                m[xx, i] = 1.0
        m[xx] /= m[xx].sum().clamp(min=1.0)
    return m


def _motion_blur(x: torch.Tensor, radius: float, sigma: float, angle_deg: torch.Tensor):
    """ImageMagick's ``MotionBlurImage`` with one angle (degrees) per image.

    Tap i (weight exp(-i^2 / 2 sigma^2), normalized, i < 2 ceil(radius) + 1) samples the
    pixel at column + ceil(i cos(a) - .5), row + ceil(i sin(a) - .5), clamped to the edge.
    Each tap is one batched gather with per-image offsets: the same as a grouped conv2d
    with per-image line kernels, without the mostly-zero (4r+1)^2 kernels.
    """
    b, c, h, w = x.shape
    width = 2 * math.ceil(radius) + 1
    theta = torch.deg2rad(angle_deg.to(torch.float64))
    taps = torch.arange(width, dtype=torch.float64, device=theta.device)
    weights = torch.exp(-(taps**2) / (2 * sigma**2)).cpu()
    weights = weights / weights.sum()
    dx = torch.ceil(taps[None] * torch.cos(theta)[:, None] - 0.5).long().to(x.device)
    dy = torch.ceil(taps[None] * torch.sin(theta)[:, None] - 0.5).long().to(x.device)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    flat = x.reshape(b, c, h * w)
    out = torch.zeros_like(flat)
    keep = weights >= 1e-7 * weights[0]  # far taps of small sigmas are below float32 round-off
    for t in torch.nonzero(keep).flatten().tolist():
        r = (rows[None, :] + dy[:, t, None]).clamp(0, h - 1)
        q = (cols[None, :] + dx[:, t, None]).clamp(0, w - 1)
        idx = (r[:, :, None] * w + q[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
        out.add_(flat.gather(2, idx), alpha=float(weights[t]))
    return out.reshape(b, c, h, w)


def _plasma_size(h: int, w: int) -> int:
    # The reference uses a 32x32 map for CIFAR; larger images get the next power of two.
    return 1 << max(5, math.ceil(math.log2(max(h, w))))


def _plasma_fractal(
    n: int, size: int, decay: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Diamond-square height maps, one per image, each rescaled to [0, 1].

    Returns:
        float64 tensor (n, size, size) on the generator's device.
    """
    m = torch.zeros(n, size, size, dtype=torch.float64, device=generator_device(generator))
    step, wibble = size, 100.0

    def wibbled_mean(total: torch.Tensor) -> torch.Tensor:
        noise = _uniform(tuple(total.shape), -wibble, wibble, generator, torch.float64)
        return total / 4 + wibble * noise

    while step >= 2:
        half = step // 2
        # squares: centre of each square = mean of its 4 corners + noise
        corners = m[:, 0::step, 0::step]
        total = corners + corners.roll(-1, 1)
        total = total + total.roll(-1, 2)
        m[:, half::step, half::step] = wibbled_mean(total)
        # diamonds: edge midpoints = mean of the 2 adjacent corners and 2 adjacent centres
        centres = m[:, half::step, half::step]
        corners = m[:, 0::step, 0::step]
        total = centres + centres.roll(1, 1) + corners + corners.roll(-1, 2)
        m[:, 0::step, half::step] = wibbled_mean(total)
        total = centres + centres.roll(1, 2) + corners + corners.roll(-1, 1)
        m[:, half::step, 0::step] = wibbled_mean(total)
        step //= 2
        wibble /= decay
    m = m - m.amin((1, 2), keepdim=True)
    return m / m.amax((1, 2), keepdim=True)


