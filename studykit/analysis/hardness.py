"""AugMax Fig. 1 and Sec. 3.2: the same images under four augmentations (standard, AugMix, PGD,
AugMax) through one model, and how diverse and how hard each kind is.

Wang et al. (NeurIPS 2021) argue that AugMix images are diverse but easy, PGD images hard but
not diverse, and AugMax images both. `augmentation_views` makes the four kinds from one set of
base images (the AugMax one as training makes it, with its early stop, and optionally a full
search beside it); `diversity_and_hardness` measures them on the model's penultimate features.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from studykit.analysis import as_float_images, penultimate
from studykit.attacks import pgd
from studykit.augmax_search import augmax_search
from studykit.augment import augmix, augmix_chains, sample_augmix_params
from studykit.data import random_crop_flip
from studykit.devices import model_device
from studykit.methods.augmax import AugMaxConfig
from studykit.models import unwrap_model

__all__ = ["FULL_SEARCH_VIEW", "augmentation_views", "diversity_and_hardness"]

_AUGMAX = AugMaxConfig()  # the search AugMax trains with (the paper's CIFAR values)
FULL_SEARCH_VIEW = "augmax, full search"  # every step, no early stop: harder than training's


def augmentation_views(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seed: int = 0,
    pgd_eps: float = 8 / 255,
    pgd_steps: int = 10,
    augmax_steps: int = _AUGMAX.steps,
    full_search: bool = True,
) -> dict[str, torch.Tensor]:
    """The image kinds of AugMax Fig. 1 for the same images, through one (standard) model.

    Every view starts from the same base images: ``x`` randomly cropped (pad 4) and flipped,
    the standard augmentation the model was trained with, so the views differ only in what is
    applied on top. ``standard``: the base itself; ``augmix``: one AugMix view of it; ``pgd``:
    Linf PGD on it (8/255, step 2/255, 10 steps, random start); ``augmax``: the AugMax image
    training uses, AugMax's adversarial mixing of random AugMix chains of it with the search
    of ``methods.augmax.AugMaxConfig`` (``augmax_steps`` steps of 0.1, each sample stopping
    once an update fools the model, Algorithm 1 with k = 1). With ``full_search``, a fifth view,
    ``FULL_SEARCH_VIEW``: the same chains from the same start searched for all
    ``augmax_steps`` steps without the early stop, harder than what AugMax trains on. Attacks
    run in eval mode; the model's mode is restored.

    Shape:
        - x: (N, 3, H, W) uint8 or float in [0, 1]; each output: (N, 3, H, W) float in [0, 1].
    """
    device = model_device(model)
    xf = as_float_images(x).to(device)
    y = y.to(device)
    g = torch.Generator().manual_seed(seed)
    base = random_crop_flip(xf, generator=g)
    views = {"standard": base, "augmix": augmix(base, generator=g)}
    views["pgd"] = pgd(model, base, y, eps=pgd_eps, steps=pgd_steps, generator=g)
    params = sample_augmix_params(base.shape[0], generator=g).to(device)
    chains = augmix_chains(base, params)
    start = g.get_state()  # the full search starts where the training view's does
    s = augmax_search(model, base, y, chains, steps=augmax_steps, step_size=_AUGMAX.step_size,
                      early_stop=_AUGMAX.early_stop, stop_rule=_AUGMAX.stop_rule, generator=g)
    views["augmax"] = s.images(base, chains).detach()
    if full_search:
        g_full = torch.Generator().set_state(start)
        s = augmax_search(model, base, y, chains, steps=augmax_steps,
                          step_size=_AUGMAX.step_size, early_stop=None, generator=g_full)
        views[FULL_SEARCH_VIEW] = s.images(base, chains).detach()
    return views


@torch.no_grad()
def diversity_and_hardness(
    model: nn.Module, views: Mapping[str, torch.Tensor], y: torch.Tensor, *,
    reference: str = "standard", batch_size: int = 500,
) -> pd.DataFrame:
    """How hard and how diverse each kind of image is for ``model`` (AugMax Sec. 3.2's two axes).

    ``accuracy`` and ``loss`` (CE) measure hardness. ``spread`` measures diversity: the root mean
    squared distance of penultimate features to their class centroid, divided by the same for
    the ``reference`` view. ``centroid_shift``: distance of each class centroid from the
    reference view's, averaged over classes, in the same units.

    Returns:
        One row per view: ``view, accuracy, loss, spread, centroid_shift``.
    """
    device = model_device(model)
    y = y.to(device)
    feats, rows = {}, []
    for name, x in views.items():
        f = penultimate(model, x, batch_size=batch_size).to(device)
        logits = unwrap_model(model).fc(f)
        feats[name] = f
        rows.append({"view": name, "accuracy": float((logits.argmax(1) == y).float().mean() * 100),
                     "loss": float(F.cross_entropy(logits, y))})
    classes = y.unique()

    def spread(f: torch.Tensor) -> float:
        return float(torch.cat([(f[y == c] - f[y == c].mean(0)).pow(2).sum(1) for c in classes])
                     .mean().sqrt())

    base = spread(feats[reference])
    ref_centroids = torch.stack([feats[reference][y == c].mean(0) for c in classes])
    for row in rows:
        f = feats[row["view"]]
        row["spread"] = spread(f) / base
        cents = torch.stack([f[y == c].mean(0) for c in classes])
        row["centroid_shift"] = float((cents - ref_centroids).norm(dim=1).mean()) / base
    return pd.DataFrame(rows)
