"""Per-image SSIM, batched and differentiable (AdA Fig. 1 and its SSIM line search).
"""

from __future__ import annotations

import torch

from studykit.analysis.batches import as_float_images


# --------------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------------
def ssim(x: torch.Tensor, y: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """Per-image structural similarity (kornia.metrics.ssim, Gaussian window, data range 1).

    Batched and differentiable: the SSIM map, averaged over channels and positions per image.

    Args:
        x: images, uint8 or float in [0, 1].
        y: images of the same shape.
        window_size: side of the Gaussian window (odd).

    Returns:
        SSIM per image (1 for identical images).

    Shape:
        - x, y: (N, C, H, W)
        - output: (N,)
    """
    from kornia.metrics import ssim as kornia_ssim

    x, y = as_float_images(x), as_float_images(y)
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(
            f"x and y must be (N, C, H, W) of one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return kornia_ssim(x, y, window_size, max_val=1.0).mean(dim=(1, 2, 3))
