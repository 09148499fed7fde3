"""Spatial worst-of-k: random rotations and translations, the worst of k per image (Engstrom
et al., 2019, the CIFAR10-STA evaluation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studykit.attacks.mode import _unwrap, attack_mode
from studykit.attacks.pgd import _check_count, _per_sample
from studykit.devices import generator_device

# ---------------------------------------------------------------------------------------------
# Spatial worst-of-k.


def sample_spatial_params(
    n: int,
    k: int,
    *,
    max_rotation: float = 30.0,
    max_translation: float = 3.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw k random rotations and translations per sample, for :func:`affine_transform`.

    Rotation angles are uniform in ``[-max_rotation, max_rotation]`` degrees; translations
    are continuous, uniform in ``[-max_translation, max_translation]`` pixels per axis.

    Args:
        n: batch size.
        k: trials per sample.
        max_rotation: largest rotation in degrees (CIFAR10-STA: 30).
        max_translation: largest translation in pixels (CIFAR10-STA: 3).
        generator: random source; draws happen on its device (CPU when ``None``).

    Returns:
        ``(angles, translations)`` on the generator's device.

    Shape:
        - angles: :math:`(k, N)` in degrees
        - translations: :math:`(k, N, 2)` as ``(dx, dy)`` pixels
    """
    device = generator_device(generator)
    angles = (2 * torch.rand(k, n, generator=generator, device=device) - 1) * max_rotation
    shifts = (2 * torch.rand(k, n, 2, generator=generator, device=device) - 1) * max_translation
    return angles, shifts


def affine_transform(x: Tensor, angles: Tensor, translations: Tensor) -> Tensor:
    """Rotate about the image centre and translate, bilinear with zero (black) fill.

    Args:
        x: images in [0, 1].
        angles: rotation per sample in degrees (counter-clockwise on screen for positive).
        translations: ``(dx, dy)`` per sample in pixels.

    Returns:
        The transformed images, in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - angles: :math:`(N,)`
        - translations: :math:`(N, 2)`
        - output: :math:`(N, C, H, W)`
    """
    n, _, h, w = x.shape
    rad = torch.deg2rad(angles.to(device=x.device, dtype=x.dtype))
    shifts = translations.to(device=x.device, dtype=x.dtype)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # affine_grid maps output to input coordinates in [-1, 1] per axis; the h/w factors keep
    # the rotation rigid on non-square images, and 2/size converts pixels to that range.
    theta = torch.stack(
        [
            torch.stack([cos, -sin * h / w, -2 * shifts[:, 0] / w], dim=1),
            torch.stack([sin * w / h, cos, -2 * shifts[:, 1] / h], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp(0, 1)


def spatial_worst_of_k(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    k: int = 10,
    max_rotation: float = 30.0,
    max_translation: float = 3.0,
    generator: torch.Generator | None = None,
    eval_mode: bool = True,
) -> Tensor:
    """Worst-of-k random spatial attack (Engstrom et al., 2019; the CIFAR10-STA evaluation).

    Each sample gets ``k`` random rotation + translation trials (drawn by
    :func:`sample_spatial_params`, applied by :func:`affine_transform` on the whole batch per
    trial); per sample the trial with the highest cross-entropy is kept. The identity is not
    among the trials (k random transforms, as in the benchmark), so the result's loss can be
    below the clean image's loss.

    Args:
        model: classifier taking [0, 1] images.
        x: clean images in [0, 1].
        y: labels.
        k: number of random trials per sample (CIFAR10-STA: 10).
        max_rotation: largest rotation in degrees (30).
        max_translation: largest translation in pixels (3).
        generator: random source (see :func:`sample_spatial_params`); same seed, same result.
        eval_mode: run the model in eval mode (default); modes are restored either way.

    Returns:
        The worst transformed images, detached, in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - y: :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    _check_count("k", k)
    if k == 0:
        raise ValueError("k must be an integer >= 1, got 0")
    x = x.detach()
    model = _unwrap(model)
    angles, shifts = sample_spatial_params(
        x.shape[0],
        k,
        max_rotation=max_rotation,
        max_translation=max_translation,
        generator=generator,
    )
    worst = x.clone()
    worst_loss = torch.full((x.shape[0],), -math.inf, device=x.device)
    with attack_mode(model, eval_mode=eval_mode), torch.no_grad():
        for trial in range(k):
            x_t = affine_transform(x, angles[trial], shifts[trial])
            loss = F.cross_entropy(model(x_t), y, reduction="none").float()
            better = loss > worst_loss
            worst = torch.where(_per_sample(better, x_t), x_t, worst)
            worst_loss = torch.where(better, loss, worst_loss)
    return worst


