"""The frost layer of the ``frost`` corruption: a texture synthesized to match the
statistics of the reference's frost photographs.

Hendrycks & Dietterich (2019), "Benchmarking Neural Network Robustness to Common Corruptions
and Perturbations", blend each image with frost, ``c0 * x + c1 * frost`` (the constants live
with the other CIFAR-10-C parameters in ``studykit.corruptions``). Their frost is a random crop
of one of five photographs (``frost1.png`` ... ``frost5.jpg`` of hendrycks/robustness; a sixth
file is listed but never drawn), shrunk to 0.2x for CIFAR. The kit does not ship them;
:func:`synthesized_frost` is a procedural texture calibrated to the photographs' crop
statistics (pooled mean about 0.64, spread of the per-crop mean about 0.15, one strongly cyan
photograph), see ``CORRUPTIONS.md``.

Every random draw comes from the ``generator`` passed in (torch's default CPU generator when it
is ``None``) and happens on the generator's device, so a seeded CPU generator gives the same
layer on CPU and CUDA. The layer is returned on the generator's device.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["FROST_STYLES", "FrostStyle", "synthesized_frost"]


class FrostStyle(NamedTuple):
    """How one photograph's crops look: RGB level, texture amplitude, crop-to-crop spread."""

    rgb: tuple[float, float, float]
    texture: float
    spread: float


# One "photo style" per reference photograph, drawn uniformly per image like the reference's
# file: RGB level (the crop mean), texture amplitude (pixel std inside a crop) and the std of
# the crop mean around the level. Levels follow the photographs' per-file means: frost1
# strongly cyan, frost2/frost3 bright near duplicates, frost5 the darkest; frost4's level is
# the one that brings the pooled mean to the photographs' 0.64.
FROST_STYLES: tuple[FrostStyle, ...] = (
    FrostStyle(rgb=(0.30, 0.57, 0.65), texture=0.10, spread=0.05),  # frost1: cyan
    FrostStyle(rgb=(0.78, 0.80, 0.83), texture=0.08, spread=0.04),  # frost2: bright
    FrostStyle(rgb=(0.77, 0.80, 0.84), texture=0.08, spread=0.04),  # frost3: frost2's twin
    FrostStyle(rgb=(0.62, 0.66, 0.71), texture=0.10, spread=0.05),  # frost4
    FrostStyle(rgb=(0.40, 0.44, 0.48), texture=0.09, spread=0.05),  # frost5: dark
)


# ----------------------------------------------------------------------------- randomness


def _device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, dtype=torch.float32):
    return torch.rand(shape, generator=generator, device=_device(generator), dtype=dtype)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=_device(generator))


# ----------------------------------------------------------------------------- synthesized


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (n, 1, h, w) maps, radius 3 sigma, edge-replicated border."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))


def _value_noise(n: int, h: int, w: int, cells: int, generator) -> torch.Tensor:
    """Bicubic interpolation of a random grid with about ``cells`` cells along the long side."""
    step = max(h, w) / cells
    grid = _rand((n, 1, math.ceil(h / step) + 3, math.ceil(w / step) + 3), generator)
    big = F.interpolate(grid, scale_factor=step, mode="bicubic", align_corners=False)
    return big[:, :, int(step) : int(step) + h, int(step) : int(step) + w]


def _ice_pattern(n: int, h: int, w: int, generator: torch.Generator | None) -> torch.Tensor:
    """Grey frost structure, (n, 1, h, w), zero mean and unit std per image.

    A low-frequency density (thick and thin frost, two octaves of value noise) modulates a
    network of bright ridges: the zero crossings of smoothed noise at two scales, like the
    edges of ice crystals.
    """
    s = max(h, w) / 32  # the photographs' structure scale at CIFAR size
    density = 0.65 * _value_noise(n, h, w, 2, generator) + 0.35 * _value_noise(
        n, h, w, 4, generator
    )
    ridges = torch.zeros(n, 1, h, w, device=_device(generator))
    for sigma, weight in ((2.0, 0.6), (1.0, 0.4)):
        noise = _blur(_randn((n, 1, h, w), generator), sigma * s)
        noise = noise / noise.std(dim=(2, 3), keepdim=True).clamp(min=1e-6)
        ridges += weight * (1 - 1.5 * noise.abs()).clamp(min=0) ** 2
    pattern = 0.6 * density + ridges * (0.3 + 0.7 * density)
    pattern = pattern - pattern.mean(dim=(2, 3), keepdim=True)
    return pattern / pattern.std(dim=(2, 3), keepdim=True).clamp(min=1e-6)


def synthesized_frost(n: int, h: int, w: int, generator: torch.Generator | None) -> torch.Tensor:
    """Procedural stand-in for crops of the reference's frost photographs.

    Each image draws one of the :data:`FROST_STYLES` uniformly, as the reference draws one of
    its five photographs; the style sets the crop's RGB level (plus a per-image offset of std
    ``spread``, the crop-to-crop variation inside one photograph) and the contrast of the ice
    pattern laid over it. Over many 32x32 crops the pooled mean is about 0.64 and the std of the
    per-crop mean about 0.15, as for the photographs; one style in five is strongly cyan
    (R about 0.30, B about 0.65). ``benchmarks/frost_statistics.py`` prints these numbers.

    Args:
        n: Number of layers (one per image).
        h: Height.
        w: Width.
        generator: Source of every draw; the layer is made on its device.

    Returns:
        float32 RGB layers in [0, 1] on the generator's device.

    Shape:
        - output: (n, 3, h, w)
    """
    device = _device(generator)
    style = torch.randint(len(FROST_STYLES), (n,), generator=generator, device=device)
    offset = _randn((n, 1, 1, 1), generator)
    pattern = _ice_pattern(n, h, w, generator)
    rgb = torch.tensor([s.rgb for s in FROST_STYLES], device=device)[style]
    texture = torch.tensor([s.texture for s in FROST_STYLES], device=device)[style]
    spread = torch.tensor([s.spread for s in FROST_STYLES], device=device)[style]
    level = rgb.view(n, 3, 1, 1) + spread.view(n, 1, 1, 1) * offset
    return (level + texture.view(n, 1, 1, 1) * pattern).clamp(0, 1)
