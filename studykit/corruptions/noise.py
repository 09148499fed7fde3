"""Noise corruptions: Gaussian, shot (Poisson), impulse (salt and pepper) and speckle.
"""

from __future__ import annotations

import torch

from studykit.corruptions.filters import _randn, _uniform
from studykit.devices import generator_device

# ----------------------------------------------------------------------------- noise


def _gaussian_noise(x, std, generator):
    return x + std * _randn(tuple(x.shape), generator).to(x)


def _shot_noise(x, c, generator):
    rate = (x * c).to(device=generator_device(generator), dtype=torch.float32)
    return torch.poisson(rate, generator=generator).to(x) / c


def _impulse_noise(x, amount, generator):
    flipped = _uniform(tuple(x.shape), 0, 1, generator) < amount
    salted = _uniform(tuple(x.shape), 0, 1, generator) < 0.5
    flipped, salted = flipped.to(x.device), salted.to(x.device)
    return torch.where(flipped, salted.to(x.dtype), x)


def _speckle_noise(x, std, generator):
    return x + x * std * _randn(tuple(x.shape), generator).to(x)


