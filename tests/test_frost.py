"""Tests for studykit.frost: the synthesized texture's statistics against the reference
photographs' (CORRUPTIONS.md) and reproducibility."""

from __future__ import annotations

import pytest
import torch

from studykit.corruptions import _PARAMS, corrupt
from studykit.frost import synthesized_frost


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- synthesized


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    return synthesized_frost(2000, 32, 32, gen(0))


def test_synthesized_matches_photograph_statistics(crops):
    crop_means = crops.mean((1, 2, 3))
    assert 0.60 < crops.mean() < 0.68  # photographs: about 0.64
    assert 0.11 < crop_means.std() < 0.19  # photographs: about 0.15
    r, g, b = crops.mean((0, 2, 3))
    assert r < g < b and 0.5 < r and b < 0.8  # pale blue overall, not a colour wash


def test_synthesized_has_a_cyan_photograph(crops):
    rgb = crops.mean((2, 3))
    cyan = (rgb[:, 0] < 0.4) & (rgb[:, 2] > 0.55)
    # one style in five, like frost1 (R about 0.30, B about 0.65)
    assert 0.12 < cyan.float().mean() < 0.28
    assert rgb[cyan, 0].mean() < 0.35 and rgb[cyan, 2].mean() > 0.6


def test_synthesized_spans_the_photographs_levels(crops):
    crop_means = crops.mean((1, 2, 3))
    assert (crop_means < 0.48).float().mean() > 0.1  # the dark frost5
    assert (crop_means > 0.75).float().mean() > 0.25  # the bright frost2 and frost3


def test_synthesized_keeps_ice_structure(crops):
    # ridges: texture inside each crop, brightest pixels well above the crop's level
    assert crops.std((2, 3)).mean() > 0.05
    grey = crops.mean(1)
    assert (grey.amax((1, 2)) - grey.mean((1, 2))).mean() > 0.15
    # and spatially coherent, not white noise
    step = (grey[:, 1:] - grey[:, :-1]).abs().mean()
    assert step < 0.8 * (grey - grey.roll(16, 1)).abs().mean()


@pytest.mark.parametrize("size", [(32, 32), (24, 40), (64, 64), (5, 7)])
def test_synthesized_shape_range_determinism(size):
    h, w = size
    a = synthesized_frost(6, h, w, gen(3))
    assert a.shape == (6, 3, h, w) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, synthesized_frost(6, h, w, gen(3)))
    assert not torch.equal(a, synthesized_frost(6, h, w, gen(4)))


def test_corrupt_blends_the_synthesized_frost():
    x = torch.rand(4, 3, 32, 32, generator=gen(1))
    c0, c1 = _PARAMS["frost"][2]
    expected = (c0 * x + c1 * synthesized_frost(4, 32, 32, gen(2))).clamp(0, 1)
    assert torch.allclose(corrupt(x, "frost", 3, generator=gen(2)), expected)
