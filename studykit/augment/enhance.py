"""Pillow's ``ImageEnhance`` ops (brightness, contrast, saturation, sharpness) on uint8 levels,
batched with a factor per image: RandAugment's enhancement ops.

Each op blends the image with a "degenerate" image, ``out = degenerate + factor * (image -
degenerate)``, in float32 and truncated to uint8 with clipping, as ``Image.blend`` computes it:

* brightness: a black image (``ImageEnhance.Brightness``);
* contrast: a grey image at the rounded mean of the image's luma (``ImageEnhance.Contrast``);
* saturation: the image's own luma in every channel (``ImageEnhance.Color``);
* sharpness: the image smoothed by Pillow's 3x3 ``SMOOTH`` kernel (1 1 1 / 1 5 1 / 1 1 1, over
  13, rounded), its one-pixel border left as it is (``ImageEnhance.Sharpness``).

Luma is ITU-R 601-2 in Pillow's fixed point: ``(19595 R + 38470 G + 7471 B + 2**15) >> 16``.
A factor of 1 returns the image; below 1 it moves towards the degenerate image, above 1 away
from it. Images have one channel (grey: saturation leaves them alone) or three (RGB).
"""

from __future__ import annotations

import torch
from torch import Tensor

from studykit.augment._common import _check_images, _per_sample
from studykit.augment.colour import _from_levels, _to_levels

# ---------------------------------------------------------------------------------------------
# Kernels on uint8 levels, shared with the RandAugment engine. None of them reads a value back
# to the host, so a GPU step never waits.


def _blend_u8(degenerate: Tensor, image: Tensor, factor: Tensor) -> Tensor:
    """``Image.blend(degenerate, image, factor)`` of uint8 levels (broadcast): uint8."""
    d = degenerate.to(torch.float32)
    # Pillow: (float) in1 + alpha * (float) (in2 - in1), then cast to uint8 (clipped outside
    # [0, 255], truncated inside); float32 throughout, as its C code.
    out = image.to(torch.float32).sub_(d).mul_(factor).add_(d)
    return out.clamp_(0.0, 255.0).to(torch.int32).to(torch.uint8)


def _luma_u8(s: Tensor) -> Tensor:
    """Pillow's ``convert("L")`` of uint8 images: (N, 1, H, W) uint8 (grey images as they are)."""
    if s.shape[1] == 1:
        return s
    v = s.to(torch.int32)
    luma = (v[:, 0] * 19595 + v[:, 1] * 38470 + v[:, 2] * 7471 + 32768) >> 16
    return luma.unsqueeze(1).to(torch.uint8)


def _mean_luma(s: Tensor) -> Tensor:
    """``int(mean luma + 0.5)`` per image, as ``ImageEnhance.Contrast``: float32 (N,)."""
    luma = _luma_u8(s)
    total = luma.to(torch.float64).sum((1, 2, 3))  # whole numbers: exact in float64
    return torch.floor(total / luma[0].numel() + 0.5).to(torch.float32)


def _ramp(s: Tensor) -> Tensor:
    return torch.arange(256, device=s.device, dtype=torch.uint8)


def _brightness_lut(s: Tensor, factor: Tensor) -> Tensor:
    """Brightness as a LUT per image: uint8 (N, 256); factor (N,)."""
    ramp = _ramp(s).expand(s.shape[0], 256)
    return _blend_u8(torch.zeros_like(ramp), ramp, factor.view(-1, 1))


def _contrast_lut(s: Tensor, factor: Tensor) -> Tensor:
    """Contrast as a LUT per image: uint8 (N, 256); factor (N,)."""
    ramp = _ramp(s).expand(s.shape[0], 256)
    return _blend_u8(_mean_luma(s).view(-1, 1), ramp, factor.view(-1, 1))


def _lut_per_image_u8(s: Tensor, lut: Tensor) -> Tensor:
    """s[n, c] -> lut[n, s[n, c]] for a LUT per image (N, 256): uint8, same shape as s."""
    n = s.shape[0]
    index = s.reshape(n, -1).long()
    return torch.gather(lut, 1, index).view(s.shape)


def _saturation_u8(s: Tensor, factor: Tensor) -> Tensor:
    """``ImageEnhance.Color``: factor (N, 1, 1, 1) float32."""
    return _blend_u8(_luma_u8(s), s, factor)


def _smooth_u8(s: Tensor) -> Tensor:
    """Pillow's ``ImageFilter.SMOOTH`` of uint8 images (border pixels unchanged): uint8."""
    h, w = s.shape[2:]
    out = s.clone()
    if h < 3 or w < 3:
        return out
    v = s.to(torch.int32)
    rows = v[:, :, :-2] + v[:, :, 1:-1] + v[:, :, 2:]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]  # 3x3 sums of the interior
    total = box + 4 * v[:, :, 1:-1, 1:-1]  # the centre weighs 5
    # Pillow rounds total / 13 to the nearest level (never a tie: 13 is odd).
    out[:, :, 1:-1, 1:-1] = torch.div(total + 6, 13, rounding_mode="floor").to(torch.uint8)
    return out


def _sharpness_u8(s: Tensor, factor: Tensor) -> Tensor:
    """``ImageEnhance.Sharpness``: factor (N, 1, 1, 1) float32."""
    return _blend_u8(_smooth_u8(s), s, factor)


# ---------------------------------------------------------------------------------------------
# The ops on float images.


def _check_channels(x: Tensor) -> None:
    if x.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels (grey or RGB); got {x.shape[1]}")


def _enhance(x: Tensor, factor: float | Tensor, kernel) -> Tensor:
    _check_images(x)
    _check_channels(x)
    f = _per_sample(factor, x, "factor", dtype=torch.float32)
    return _from_levels(kernel(_to_levels(x), f), x.dtype)


def brightness(x: Tensor, factor: float | Tensor) -> Tensor:
    """Scale every level by ``factor`` (``ImageEnhance.Brightness``): 0 is black, 1 the image.

    Args:
        x: images in [0, 1], grey or RGB.
        factor: enhancement factor, one per image or one for all.

    Returns:
        The images, multiples of 1/255 in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - factor: scalar or :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    return _enhance(x, factor, lambda v, f: _lut_per_image_u8(v, _brightness_lut(v, f.view(-1))))


def contrast(x: Tensor, factor: float | Tensor) -> Tensor:
    """Blend with the image's mean grey (``ImageEnhance.Contrast``): 0 is flat grey, 1 the image.

    Args:
        x: images in [0, 1], grey or RGB.
        factor: enhancement factor, one per image or one for all.

    Returns:
        The images, multiples of 1/255 in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - factor: scalar or :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    return _enhance(x, factor, lambda v, f: _lut_per_image_u8(v, _contrast_lut(v, f.view(-1))))


def saturation(x: Tensor, factor: float | Tensor) -> Tensor:
    """Blend with the image's luma (``ImageEnhance.Color``): 0 is grey, 1 the image.

    RandAugment calls this op "color".

    Args:
        x: images in [0, 1], grey (left as they are) or RGB.
        factor: enhancement factor, one per image or one for all.

    Returns:
        The images, multiples of 1/255 in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - factor: scalar or :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    return _enhance(x, factor, _saturation_u8)


def sharpness(x: Tensor, factor: float | Tensor) -> Tensor:
    """Blend with the smoothed image (``ImageEnhance.Sharpness``): 0 blurs, 2 sharpens.

    Args:
        x: images in [0, 1], grey or RGB.
        factor: enhancement factor, one per image or one for all.

    Returns:
        The images, multiples of 1/255 in [0, 1]; the one-pixel border is unchanged.

    Shape:
        - x: :math:`(N, C, H, W)`
        - factor: scalar or :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    return _enhance(x, factor, _sharpness_u8)
