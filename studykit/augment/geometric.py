"""Affine ops of the AugMix set (rotate, shear, translate) with Pillow's
``Image.transform(AFFINE, BILINEAR)`` semantics, batched with per-sample magnitudes.

The output pixel centre ``(x + 0.5, y + 0.5)`` maps to the input point ``(a x' + b y' + c,
d x' + e y' + f)``; a point outside the image is black, a point inside is interpolated bilinearly
with edge clamping. Whole-pixel translations are exact copies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from studykit.augment._common import _check_images, _per_sample

#: The ops that resample the image.
AFFINE_OPS: tuple[str, ...] = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
# ---------------------------------------------------------------------------------------------
# Affine ops (Pillow's Image.transform AFFINE + BILINEAR semantics).


def _pil_grid(coeffs: Tensor, h: int, w: int, dtype: torch.dtype) -> Tensor:
    """grid_sample grid (align_corners=False, zero padding) reproducing Pillow's resampling.

    Pillow reads output pixel (i, j) at u = a (i + .5) + b (j + .5) + c (same for v with d, e, f)
    and gives black outside [0, W) x [0, H) and edge-clamped bilinear values inside. In
    grid_sample's normalized coordinates g = 2 u / W - 1 that is: |g| >= 1 -> black (sent far
    out, where zero padding applies), otherwise clamp g to the outer pixel centres.
    """
    dev = coeffs.device
    # Per image and axis (x, y): g = p (i + .5) + q (j + .5) + r, with (p, q, r) the
    # coefficients of that axis scaled by 2 / size, and r shifted by -1. The sizes stay Python
    # numbers: a tensor built from them would be a host-to-device copy (a sync) on a GPU.
    pqr = coeffs.reshape(-1, 2, 3).to(torch.float64, copy=True)
    pqr[:, 0].mul_(2.0 / w)
    pqr[:, 1].mul_(2.0 / h)
    pqr[:, :, 2] -= 1.0
    p, q, r = pqr.to(dtype)[..., None, None].unbind(2)  # each (n, 2, 1, 1)
    xs = (torch.arange(w, device=dev, dtype=dtype) + 0.5).view(1, 1, 1, w)
    ys = (torch.arange(h, device=dev, dtype=dtype) + 0.5).view(1, 1, h, 1)
    grid = (p * xs + r) + q * ys  # (n, 2, H, W), contiguous along W
    # Outside (|g| >= 1; u = 0 exactly counts as outside, a measure-zero case for AugMix):
    # push at least 5 further out; inside: clamp to the outer pixel centres. Arithmetic rather
    # than a boolean mask, which is several times slower on the CPU.
    far = grid.abs().floor_()
    if h == w:
        grid.clamp_(-1.0 + 1.0 / w, 1.0 - 1.0 / w)
    else:
        for axis, extent in enumerate((w, h)):
            grid[:, axis].clamp_(-1.0 + 1.0 / extent, 1.0 - 1.0 / extent)
    # grid_sample reads the permuted (n, H, W, 2) view as fast as a contiguous grid.
    return grid.sub_(far, alpha=5.0).permute(0, 2, 3, 1)


def affine(x: Tensor, coeffs: Tensor) -> Tensor:
    """Resample each image with its own Pillow-convention affine map, bilinear, black outside.

    Output pixel ``(i, j)`` (column, row) reads the input at ``u = a (i + .5) + b (j + .5) + c``,
    ``v = d (i + .5) + e (j + .5) + f`` in continuous pixel coordinates (pixel ``k`` spans
    ``[k, k + 1)``). Points outside ``[0, W) x [0, H)`` are 0; points inside are interpolated
    bilinearly between the neighbouring pixel centres with edge clamping, as Pillow's
    ``Image.transform(size, Image.AFFINE, (a, b, c, d, e, f), Image.BILINEAR)``. Unlike Pillow,
    the result is not truncated to uint8.

    Args:
        x: images.
        coeffs: ``(a, b, c, d, e, f)`` per image (output -> input, pixels).

    Returns:
        The resampled images.

    Shape:
        - x: :math:`(N, C, H, W)`
        - coeffs: :math:`(N, 6)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    n, _, h, w = x.shape
    if coeffs.shape != (n, 6):
        raise ValueError(f"coeffs must have shape ({n}, 6); got {tuple(coeffs.shape)}")
    if n == 0:
        return x.clone()
    grid = _pil_grid(coeffs.to(x.device), h, w, x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _rotate_coeffs(degrees: Tensor, h: int, w: int) -> Tensor:
    # Pillow's Image.rotate: counter-clockwise by `degrees` about (W/2, H/2).
    rad = -torch.deg2rad(degrees.double())
    cos, sin = torch.cos(rad), torch.sin(rad)
    cx, cy = w / 2.0, h / 2.0
    c = cos * -cx + sin * -cy + cx
    f = -sin * -cx + cos * -cy + cy
    return torch.stack([cos, sin, c, -sin, cos, f], 1)


def _affine_param(x: Tensor, value: float | Tensor, name: str) -> Tensor:
    return _per_sample(value, x, name, dtype=torch.float64).view(-1)


def _coeffs(values: Tensor, slot: int) -> Tensor:
    """Identity coefficients with slot (0..5 of a, b, c, d, e, f) set per image."""
    out = torch.zeros(values.shape[0], 6, device=values.device, dtype=torch.float64)
    out[:, 0], out[:, 4] = 1.0, 1.0  # filled on the device (no host-to-device copy)
    out[:, slot] = values
    return out


def rotate(x: Tensor, degrees: float | Tensor) -> Tensor:
    """Rotate counter-clockwise about the image centre, bilinear, black fill (``Image.rotate``).

    Args:
        x: images in [0, 1].
        degrees: angle per image (or one for all); AugMix uses whole degrees in -8..8.

    Returns:
        The rotated images in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - degrees: scalar or :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    deg = _affine_param(x, degrees, "degrees")
    return affine(x, _rotate_coeffs(deg, x.shape[2], x.shape[3]))


def shear_x(x: Tensor, s: float | Tensor) -> Tensor:
    """Shear along x about the top-left corner: Pillow affine ``(1, s, 0, 0, 1, 0)``, bilinear.

    Args:
        x: images in [0, 1].
        s: shear factor per image (or one for all); AugMix: +-0.003..0.09.

    Returns:
        The sheared images in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - s: scalar or :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    return affine(x, _coeffs(_affine_param(x, s, "s"), 1))


def shear_y(x: Tensor, s: float | Tensor) -> Tensor:
    """Shear along y about the top-left corner: Pillow affine ``(1, 0, 0, s, 1, 0)``, bilinear.

    Args:
        x: images in [0, 1].
        s: shear factor per image (or one for all); AugMix: +-0.003..0.09.

    Returns:
        The sheared images in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - s: scalar or :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    return affine(x, _coeffs(_affine_param(x, s, "s"), 3))


def translate_x(x: Tensor, px: float | Tensor) -> Tensor:
    """Translate by reading ``px`` pixels to the right: Pillow affine ``(1, 0, px, 0, 1, 0)``.

    A positive ``px`` moves the content left, as in the reference; vacated pixels are black.
    Whole-pixel offsets (AugMix's) are exact copies.

    Args:
        x: images in [0, 1].
        px: offset in pixels per image (or one for all); AugMix: whole pixels in -3..3.

    Returns:
        The translated images in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - px: scalar or :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    return affine(x, _coeffs(_affine_param(x, px, "px"), 2))


def translate_y(x: Tensor, px: float | Tensor) -> Tensor:
    """Translate by reading ``px`` pixels below: Pillow affine ``(1, 0, 0, 0, 1, px)``.

    A positive ``px`` moves the content up, as in the reference; vacated pixels are black.
    Whole-pixel offsets (AugMix's) are exact copies.

    Args:
        x: images in [0, 1].
        px: offset in pixels per image (or one for all); AugMix: whole pixels in -3..3.

    Returns:
        The translated images in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - px: scalar or :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    return affine(x, _coeffs(_affine_param(x, px, "px"), 5))


def _shift_(s: Tensor, dim: int, t: int) -> None:
    """In place: s[..., i, ...] = s[..., i + t, ...] along dim (-1 or -2), zero where out of range.

    A whole-pixel Pillow translation: pixel centres map onto pixel centres, so bilinear
    resampling is an exact copy.
    """
    size = s.shape[dim]
    if abs(t) >= size:
        s.zero_()
    elif t > 0:
        s.narrow(dim, 0, size - t).copy_(s.narrow(dim, t, size - t).clone())
        s.narrow(dim, size - t, t).zero_()
    elif t < 0:
        s.narrow(dim, -t, size + t).copy_(s.narrow(dim, 0, size + t).clone())
        s.narrow(dim, 0, -t).zero_()

