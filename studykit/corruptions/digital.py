"""Digital corruptions: brightness, saturate and contrast (colour), elastic transform, pixelate
and JPEG compression.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

from studykit.corruptions.filters import (
    _filter_separable,
    _gaussian_kernel1d,
    _pil_box_matrix,
    _uniform,
)
from studykit.devices import generator_device

# ----------------------------------------------------------------------------- colour


def _hsv_adjust(
    x: torch.Tensor,
    saturation: Callable[[torch.Tensor], torch.Tensor] | None = None,
    value: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Change HSV saturation/value keeping the hue, as skimage's rgb2hsv -> hsv2rgb.

    Every channel of an HSV colour is v * (1 - s * f) with f in [0, 1] set by the hue
    alone, so f = (v - rgb) / (max - min) carries the hue exactly (f = (0, 1, 1) for grey,
    which skimage gives hue 0, i.e. red once saturated).
    """
    v = x.amax(1, keepdim=True)
    delta = v - x.amin(1, keepdim=True)
    s = torch.where(v > 0, delta / v.clamp(min=1e-12), torch.zeros_like(v))
    grey_f = torch.tensor([0.0, 1.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    f = torch.where(delta > 0, (v - x) / delta.clamp(min=1e-12), grey_f)
    if saturation is not None:
        s = saturation(s)
    if value is not None:
        v = value(v)
    return v * (1 - s * f)


def _brightness(x, c, generator):
    return _hsv_adjust(x, value=lambda v: (v + c).clamp(0, 1))


def _saturate(x, p, generator):
    return _hsv_adjust(x, saturation=lambda s: (s * p[0] + p[1]).clamp(0, 1))


def _contrast(x, c, generator):
    mean = x.mean((2, 3), keepdim=True)
    return (x - mean) * c + mean


# ----------------------------------------------------------------------------- digital


def _elastic_transform(x, p, generator):
    b, _, h, w = x.shape
    px = min(h, w) / 32  # the CIFAR constants are pixels of a 32x32 image
    alpha, sigma, affine = (v * px for v in p)
    f64 = torch.float64
    # random affine: jitter three anchor points around the centre (cv2.getAffineTransform)
    cx, cy, s = float(w // 2), float(h // 2), float(min(h, w) // 3)
    src = torch.tensor([[cx + s, cy + s], [cx + s, cy - s], [cx - s, cy - s]], dtype=f64)
    src = src.to(generator_device(generator))
    dst = src + _uniform((b, 3, 2), -affine, affine, generator, f64)
    # warpAffine samples the source at M^-1(x, y): solve dst -> src directly
    ones = torch.ones(b, 3, 1, dtype=f64, device=src.device)
    inv = torch.linalg.solve(torch.cat([dst, ones], 2), src.expand(b, 3, 2))  # (b, 3, 2)
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=f64, device=src.device),
        torch.arange(w, dtype=f64, device=src.device),
        indexing="ij",
    )
    pix = torch.stack([xx, yy, torch.ones_like(xx)], -1).reshape(1, h * w, 3)
    coords = (pix @ inv).reshape(b, h, w, 2)
    # align_corners=True + reflection = OpenCV's BORDER_REFLECT_101
    grid = torch.stack(
        [coords[..., 0] * (2 / max(w - 1, 1)) - 1, coords[..., 1] * (2 / max(h - 1, 1)) - 1], -1
    )
    x = F.grid_sample(x, grid.to(x), mode="bilinear", padding_mode="reflection",
                      align_corners=True)  # fmt: skip
    if alpha == 0:
        return x
    # smoothed uniform displacement (skimage gaussian, mode='reflect', truncate=3)
    field = _uniform((b, 2, h, w), -1, 1, generator, f64)
    k = _gaussian_kernel1d(sigma, 3.0)
    if k is not None:
        field = _filter_separable(field, k, k, "symmetric")
    col = xx + alpha * field[:, 0]
    row = yy + alpha * field[:, 1]
    # align_corners=False + reflection = scipy map_coordinates(mode='reflect')
    grid = torch.stack([(2 * col + 1) / w - 1, (2 * row + 1) / h - 1], -1)
    return F.grid_sample(x, grid.to(x), mode="bilinear", padding_mode="reflection",
                         align_corners=False)  # fmt: skip


def _pixelate(x, c, generator):
    h, w = x.shape[-2:]
    sh, sw = int(h * c), int(w * c)
    down_h = _pil_box_matrix(h, sh).to(x)
    down_w = _pil_box_matrix(w, sw).to(x)
    up_h = _pil_box_matrix(sh, h).to(x)
    up_w = _pil_box_matrix(sw, w).to(x)
    return up_h @ (down_h @ x @ down_w.T) @ up_w.T


def _jpeg_compression(x, quality, generator):
    # torchvision is imported here so that importing studykit stays light
    from torchvision.io import decode_jpeg, encode_jpeg

    # Always libjpeg on CPU: nvjpeg (GPU) encodes differently, which would make the CPU
    # and CUDA results disagree, and libjpeg is the encoder PIL uses in the reference.
    images = (x.detach() * 255).round().clamp(0, 255).to(device="cpu", dtype=torch.uint8)
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its codecs in favour of TorchCodec (not a dependency)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        encoded = encode_jpeg(list(images), quality=int(quality))
        decoded = decode_jpeg(encoded)
    return torch.stack(decoded).to(device=x.device, dtype=x.dtype) / 255


