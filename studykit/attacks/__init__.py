"""Adversarial attacks in [0, 1] pixel space.

- :mod:`~studykit.attacks.pgd`: one PGD loop for Linf and L2 (random start, FAT early stop).
- :mod:`~studykit.attacks.spatial`: worst-of-k rotations and translations.
- :mod:`~studykit.attacks.stadv`: StAdv, a bounded per-pixel flow field found by gradient ascent.
- :mod:`~studykit.attacks.curves`: accuracy over eps and gradient-masking checks.
- :mod:`~studykit.attacks.mode`: `attack_mode`, the model state every inner maximization uses.

``eps`` and ``step_size`` are in [0, 1] pixel units; the model normalizes its own inputs.
"""

from studykit.attacks.curves import adversarial_accuracy, gradient_masking_warnings
from studykit.attacks.mode import attack_mode
from studykit.attacks.pgd import NORMS, PGD_PRESETS, default_step_size, pgd, pgd_preset
from studykit.attacks.spatial import affine_transform, sample_spatial_params, spatial_worst_of_k
from studykit.attacks.stadv import flow_loss, flow_warp, stadv, stadv_flow

__all__ = [
    "NORMS",
    "PGD_PRESETS",
    "adversarial_accuracy",
    "affine_transform",
    "attack_mode",
    "default_step_size",
    "flow_loss",
    "flow_warp",
    "gradient_masking_warnings",
    "pgd",
    "pgd_preset",
    "sample_spatial_params",
    "spatial_worst_of_k",
    "stadv",
    "stadv_flow",
]
