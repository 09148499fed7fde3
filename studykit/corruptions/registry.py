"""`corrupt(x, name, severity)` and `list_corruptions(kind)`: the table from names to the
batched corruption functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from studykit.corruptions.blur import (
    _defocus_blur,
    _gaussian_blur_corruption,
    _glass_blur,
    _motion_blur_corruption,
    _zoom_blur,
)
from studykit.corruptions.digital import (
    _brightness,
    _contrast,
    _elastic_transform,
    _jpeg_compression,
    _pixelate,
    _saturate,
)
from studykit.corruptions.noise import _gaussian_noise, _impulse_noise, _shot_noise, _speckle_noise
from studykit.corruptions.params import (
    _KINDS,
    _NEEDS_RGB,
    _PARAMS,
    _SEVERITIES,
    BENCHMARK_CORRUPTIONS,
    EXTRA_CORRUPTIONS,
)
from studykit.corruptions.weather import _fog, _frost, _snow, _spatter

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- public API

_FUNCTIONS: dict[str, Callable[[torch.Tensor, Any, torch.Generator | None], torch.Tensor]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "glass_blur": _glass_blur,
    "motion_blur": _motion_blur_corruption,
    "zoom_blur": _zoom_blur,
    "snow": _snow,
    "frost": _frost,
    "fog": _fog,
    "brightness": _brightness,
    "contrast": _contrast,
    "elastic_transform": _elastic_transform,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
    "speckle_noise": _speckle_noise,
    "gaussian_blur": _gaussian_blur_corruption,
    "spatter": _spatter,
    "saturate": _saturate,
}


def list_corruptions(kind: str = "benchmark") -> list[str]:
    """Names of the corruptions, in the reference's order.

    Args:
        kind: ``"benchmark"`` (the 15 of CIFAR-10-C), ``"extra"`` (the 4 held-out validation
            corruptions) or ``"all"`` (benchmark then extra).

    Returns:
        The corruption names, usable with :func:`corrupt`.

    Raises:
        ValueError: if ``kind`` is not one of the three.
    """
    if kind == "benchmark":
        return list(BENCHMARK_CORRUPTIONS)
    if kind == "extra":
        return list(EXTRA_CORRUPTIONS)
    if kind == "all":
        return list(BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS)
    raise ValueError(f"unknown corruption kind {kind!r}; choose one of: {', '.join(_KINDS)}")


def corrupt(
    x: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Apply one CIFAR-10-C corruption at one severity to a batch of images.

    Args:
        x: float images in [0, 1], NCHW, on any device. Three channels are required by
            snow, frost, brightness, spatter and saturate; the others also take one.
        name: a corruption from :func:`list_corruptions` (``"all"``).
        severity: 1 (mildest) to 5.
        generator: source of every random draw, on the CPU or the images' device; random
            layers are drawn on its device and moved to ``x``'s. ``None`` uses torch's
            default CPU generator (so ``torch.manual_seed`` makes the call reproducible).

    Returns:
        The corrupted images, clamped to [0, 1], with ``x``'s shape, dtype and device.
        ``jpeg_compression`` values are multiples of 1/255.

    Raises:
        ValueError: for an unknown name, a severity outside 1..5, or unsuitable images.

    Shape:
        - x: (N, C, H, W), C = 3 (or 1 where noted above)
        - output: (N, C, H, W)

    Example:
        >>> x = torch.rand(8, 3, 32, 32)
        >>> g = torch.Generator().manual_seed(0)
        >>> corrupt(x, "fog", 3, generator=g).shape
        torch.Size([8, 3, 32, 32])
    """
    if name not in _FUNCTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose one of: {', '.join(_FUNCTIONS)}")
    if isinstance(severity, bool) or severity not in _SEVERITIES:
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a float NCHW tensor, got {got}")
    channels = (3,) if name in _NEEDS_RGB else (1, 3)
    if x.shape[1] not in channels:
        allowed = " or ".join(map(str, channels))
        raise ValueError(f"{name} needs {allowed} channels, got {x.shape[1]}")
    if x.shape[0] == 0:
        return x.clone()
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    param = _PARAMS[name][int(severity) - 1]
    logger.debug("corrupt %s severity %d on %s", name, severity, tuple(x.shape))
    out = _FUNCTIONS[name](x.to(work), param, generator)
    return out.clamp(0, 1).to(x.dtype)
