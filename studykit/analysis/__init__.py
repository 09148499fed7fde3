"""Analysis of trained models.

- :mod:`~studykit.analysis.features`: penultimate features and 2-D projections (AugMax Fig. 1).
- :mod:`~studykit.analysis.bn_stats`: normalization statistics (AugMax Table 1) and
  :mod:`~studykit.analysis.bn_variance`, the same measured on AugMix and AugMax batches.
- :mod:`~studykit.analysis.divergence`: feature divergence per stage (AdvBN Eq. 4-5, Fig. 5).
- :mod:`~studykit.analysis.ssim`: per-image SSIM (AdA Fig. 1).
- :mod:`~studykit.analysis.hardness`: how hard each augmentation's images are for a model
  (AugMax Fig. 1's order).

Every function that runs a model puts it in eval mode, runs without gradients on the model's
device, and restores every submodule's train/eval flag afterwards. Images may be uint8 (0-255)
or float in [0, 1].
"""

from studykit.analysis.batches import as_float_images
from studykit.analysis.bn_stats import batch_statistics, bn_running_variance, normalization_layers
from studykit.analysis.divergence import (
    feature_divergence,
    feature_divergences,
    symmetric_kl_gaussian,
)
from studykit.analysis.features import (
    PROJECTION_METHODS,
    Projection,
    TemplatePlane,
    penultimate,
    project,
    project_views,
    template_plane,
)
from studykit.analysis.ssim import ssim

__all__ = [
    "PROJECTION_METHODS",
    "Projection",
    "TemplatePlane",
    "as_float_images",
    "batch_statistics",
    "bn_running_variance",
    "feature_divergence",
    "feature_divergences",
    "normalization_layers",
    "penultimate",
    "project",
    "project_views",
    "ssim",
    "symmetric_kl_gaussian",
    "template_plane",
]
