"""Colour ops of the AugMix set (autocontrast, equalize, posterize, solarize) as lookup tables
on uint8 levels, equal to ``PIL.ImageOps`` bit for bit on uint8 images.

A float pixel's level is ``floor(255 x + 1e-3)`` (exact for ``uint8 / 255`` images); see
:mod:`studykit.augment.chains` for how the chains use the in-place ``_name_u8_`` kernels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from studykit.augment._common import _check_images, _per_sample

_LEVEL_EPS = 1e-3  # tolerance of the uint8 level read-out, see the module docstring

# ---------------------------------------------------------------------------------------------
# Colour ops: lookup tables on the uint8 levels, as PIL.ImageOps. The `_name_u8_` kernels work
# in place on a contiguous uint8 batch (what the chains keep between ops, as PIL does); the
# public functions take and return float images.


def _to_levels(x: Tensor) -> Tensor:
    """uint8 levels floor(255 x + eps) of float images (see the module docstring)."""
    # via int32: a direct float -> uint8 cast is slow on the CPU
    v = x.mul(255.0).add_(_LEVEL_EPS).clamp_(0.0, 255.0).to(torch.int32).to(torch.uint8)
    return v.contiguous()


def _from_levels(v: Tensor, dtype: torch.dtype) -> Tensor:
    return v.to(dtype).div_(255.0)


def _apply_lut_u8_(s: Tensor, lut: Tensor, index: Tensor) -> None:
    """s[n, c] = lut[n * C + c, s[n, c]] for a per-plane LUT of shape (N * C, 256)."""
    torch.gather(lut.to(torch.uint8), 1, index, out=s.view(index.shape))


def _plane_index(s: Tensor) -> Tensor:
    return s.reshape(s.shape[0] * s.shape[1], -1).long()


def _autocontrast_lut(v: Tensor) -> Tensor:
    """Pillow's autocontrast LUT of each plane of ``v`` (planes, pixels): float64 (planes, 256)."""
    lo = v.amin(1, keepdim=True).double()
    hi = v.amax(1, keepdim=True).double()
    flat = hi <= lo
    # A tensor numerator: `255.0 / t` is computed as 255 * (1 / t), which rounds differently
    # from Python's 255.0 / (hi - lo), and Pillow's int() truncation sees that last bit.
    scale = torch.full_like(hi, 255.0) / torch.where(flat, torch.ones_like(hi), hi - lo)
    offset = -lo * scale
    ramp = torch.arange(256, device=v.device, dtype=torch.float64)
    lut = (ramp * scale + offset).trunc_().clamp_(0.0, 255.0)
    return torch.where(flat, ramp, lut)


def _autocontrast_u8_(s: Tensor) -> None:
    v = s.view(s.shape[0] * s.shape[1], -1)
    _apply_lut_u8_(s, _autocontrast_lut(v), v.long())


def _equalize_lut(v: Tensor, index: Tensor) -> Tensor:
    """Pillow's equalize LUT of each plane of ``v`` (planes, pixels), given ``index = v.long()``:
    float32 (planes, 256)."""
    planes, pixels = index.shape
    # float32 counts and LUT arithmetic are exact for planes of up to 2**24 pixels.
    hist = torch.zeros(planes, 256, device=v.device, dtype=torch.float32)
    hist.scatter_add_(1, index, torch.ones(1, 1, device=v.device).expand_as(index))
    # Pillow: step = (sum of the histogram - count of the brightest used level) // 255;
    # level i -> (step // 2 + number of pixels below i) // step, at most 255; step 0: unchanged.
    brightest = v.amax(1, keepdim=True).long()
    step = torch.floor((pixels - hist.gather(1, brightest)) / 255.0)
    below = hist.cumsum(1).sub_(hist)
    lut = below.add_(torch.floor(step / 2)).div_(step.clamp(min=1.0)).floor_().clamp_(max=255.0)
    ramp = torch.arange(256, device=v.device, dtype=lut.dtype)
    return torch.where(step == 0, ramp, lut)


def _equalize_u8_(s: Tensor) -> None:
    index = _plane_index(s)
    _apply_lut_u8_(s, _equalize_lut(s.view(index.shape), index), index)


def _posterize_u8_(s: Tensor, bits: Tensor) -> None:
    """bits: (N, 1, 1, 1) integers 1..8."""
    mask = (255 - (2 ** (8 - bits.long()) - 1)).to(torch.uint8)  # PIL: ~(2 ** (8 - bits) - 1)
    s.bitwise_and_(mask)


def _solarize_u8_(s: Tensor, threshold: Tensor) -> None:
    """threshold: (N, 1, 1, 1); levels >= threshold become 255 - level (= level XOR 255)."""
    flip = (s >= threshold.to(torch.int16)).to(torch.uint8).mul_(255)
    s.bitwise_xor_(flip)


def autocontrast(x: Tensor) -> Tensor:
    """Stretch each channel of each image so its darkest level is 0 and its brightest 255.

    ``PIL.ImageOps.autocontrast`` with ``cutoff=0``: per channel, ``lo``/``hi`` are the smallest
    and largest levels, and level ``v`` becomes ``int(v * scale + offset)`` with ``scale = 255 /
    (hi - lo)`` and ``offset = -lo * scale`` in float64, as Pillow computes it (so, like Pillow,
    the brightest level becomes 254 when that sum lands just below 255, e.g. for lo = 0,
    hi = 249); a flat channel is left unchanged.

    Args:
        x: images in [0, 1].

    Returns:
        The stretched images, multiples of 1/255 in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    v = _to_levels(x)
    _autocontrast_u8_(v)
    return _from_levels(v, x.dtype)


def equalize(x: Tensor) -> Tensor:
    """Equalize the histogram of each channel of each image, as ``PIL.ImageOps.equalize``.

    Pillow's LUT: ``step = (number of pixels - count of the brightest used level) // 255``;
    level ``i`` maps to ``min(255, (step // 2 + number of pixels below level i) // step)``; a
    channel with ``step == 0`` (at most one used level, or too few pixels) is left unchanged.

    Args:
        x: images in [0, 1].

    Returns:
        The equalized images, multiples of 1/255 in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    v = _to_levels(x)
    _equalize_u8_(v)
    return _from_levels(v, x.dtype)


def posterize(x: Tensor, bits: int | Tensor) -> Tensor:
    """Keep the top ``bits`` bits of every uint8 level (``PIL.ImageOps.posterize``).

    Args:
        x: images in [0, 1].
        bits: bits kept, 1..8, one per image or one for all.

    Returns:
        The posterized images, multiples of 1/255 in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - bits: scalar or :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    b = _per_sample(bits, x, "bits", dtype=torch.float64)
    if bool(((b < 1) | (b > 8) | (b != b.round())).any()):
        raise ValueError(f"bits must be whole numbers in 1..8; got {bits}")
    v = _to_levels(x)
    _posterize_u8_(v, b)
    return _from_levels(v, x.dtype)


def solarize(x: Tensor, threshold: float | Tensor) -> Tensor:
    """Invert every uint8 level ``>= threshold`` (``PIL.ImageOps.solarize``): ``v -> 255 - v``.

    Args:
        x: images in [0, 1].
        threshold: threshold on the 0..255 level scale (AugMix: 180..254), one per image or one
            for all; 256 leaves the image unchanged (up to the uint8 quantization).

    Returns:
        The solarized images, multiples of 1/255 in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - threshold: scalar or :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    t = _per_sample(threshold, x, "threshold", dtype=torch.float64).ceil().clamp(-1, 256)
    v = _to_levels(x)
    _solarize_u8_(v, t)
    return _from_levels(v, x.dtype)


