"""Per-image SSIM, batched and differentiable (AdA Fig. 1 and its SSIM line search).
"""

from __future__ import annotations

import torch

from studykit.analysis.batches import as_float_images


# --------------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------------
def ssim(x: torch.Tensor, y: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """Per-image structural similarity of Wang et al. (2004): Gaussian window (sigma 1.5),
    K1 = 0.01, K2 = 0.03, data range 1.

    Batched and differentiable: the SSIM map (``kornia.metrics.ssim``) averaged over channels
    and over the valid positions only, those where the whole window lies inside the image (a
    (H - window_size + 1) x (W - window_size + 1) region, 22 x 22 for CIFAR's 32 x 32 and the
    11-tap window), as Wang et al.'s code, scikit-image's ``structural_similarity`` (Gaussian
    weights, population covariance) and ``tf.image.ssim`` average it. Padded borders do not
    enter the mean.

    Args:
        x: images, uint8 or float in [0, 1].
        y: images of the same shape.
        window_size: side of the Gaussian window (odd, at most H and W).

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
    if window_size % 2 == 0 or window_size < 1 or window_size > min(x.shape[-2:]):
        raise ValueError(f"window_size must be odd and at most the image side "
                         f"{min(x.shape[-2:])}, got {window_size}")
    return kornia_ssim(x, y, window_size, max_val=1.0, padding="valid").mean(dim=(1, 2, 3))
