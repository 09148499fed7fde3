"""The frost layer of the ``frost`` corruption.

Hendrycks & Dietterich (2019) blend each image with a crop of a frost photograph,
``c0 * x + c1 * frost``; this module makes the frost layer. The photographs are not shipped
with the kit, so the layer is a procedurally synthesized texture.
"""

from __future__ import annotations

import torch

from studykit.corruptions import _gaussian_blur, _plasma_fractal, _plasma_size, _randn, _rng_device

__all__ = ["synthesized_frost"]


def synthesized_frost(n: int, h: int, w: int, generator: torch.Generator | None) -> torch.Tensor:
    """Procedural stand-in for the reference's frost photographs, (n, 3, h, w) in [0, 1].

    A plasma-fractal density (thick and thin frost) modulates a network of bright ridges
    (the zero crossings of smoothed noise at two scales, like ice-crystal edges); the grey
    texture is tinted pale blue; mean about 0.5, standard deviation about 0.12.
    """
    size = _plasma_size(h, w)
    density = _plasma_fractal(n, size, 2.0, generator)[:, None, :h, :w].float()
    veins = torch.zeros(n, 1, h, w, device=_rng_device(generator))
    for sigma, weight in ((2.0, 0.6), (1.0, 0.4)):
        noise = _gaussian_blur(_randn((n, 1, h, w), generator), sigma, mode="symmetric")
        noise = noise / noise.std(dim=(2, 3), keepdim=True).clamp(min=1e-6)
        veins += weight * (1 - 1.5 * noise.abs()).clamp(min=0) ** 2
    grey = 0.3 + 0.3 * density + 0.7 * veins * (0.3 + 0.7 * density)
    tint = torch.tensor([0.85, 0.93, 1.0], device=grey.device).view(1, 3, 1, 1)
    return (grey * tint).clamp(0, 1)
