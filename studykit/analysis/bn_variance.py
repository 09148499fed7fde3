"""AugMax Table 1 at DuBIN's placement layers: BN running variances and a scale-free measure.

Wang et al. (NeurIPS 2021) report, for AugMax-DuBN and AugMax-DuBIN (WRN-40-2, CIFAR-100), the
running variances of the clean BN (sigma_c^2) and the auxiliary BN (sigma_a^2), and find both
smaller with DuBIN. The comparison is meaningful only at the layers where the two models
differ: the placement layers, DuBIN in one model and DuBN in the other (every other layer is
DuBN in both). `placement_table` reports those layers one by one.

A running variance also scales with the weights of the convolution before it, so two models
can differ in it without their features differing in kind. Beside it the table gives a
scale-free measure of the same question (how different the instances of a batch are): the
instance heterogeneity of the layer's input (the variance across samples of the per-sample
channel means) divided by its batch variance, on clean images through the main BN and on
AugMax images through the auxiliary BN (``studykit.analysis.batch_statistics``; by the law of
total variance it lies in [0, 1]).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from studykit.analysis import batch_statistics
from studykit.analysis.bn_stats import bn_running_variance
from studykit.augmax_search import augmax_search
from studykit.augment import augmix_chains, sample_augmix_params
from studykit.models import unwrap_model
from studykit.normalization import DuBIN, bn_route

__all__ = ["augmax_images", "placement_layers", "placement_table"]


def placement_layers(models: Mapping[str, nn.Module]) -> list[str]:
    """Names of the layers that are DuBIN in any of ``models``, in module order."""
    names: list[str] = []
    for model in models.values():
        for name, module in unwrap_model(model).named_modules():
            if isinstance(module, DuBIN) and name not in names:
                names.append(name)
    return names


@torch.no_grad()
def augmax_images(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int = 10,
                  seed: int = 0, batch_size: int = 500) -> torch.Tensor:
    """AugMax images of ``x`` for ``model`` (searched through its auxiliary BN, in eval mode,
    k = 1 early stop), as in training; float in [0, 1], on the model's device."""
    device = next(unwrap_model(model).parameters()).device
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size].to(device)
        xb = xb.float() / 255 if xb.dtype == torch.uint8 else xb.float()
        yb = y[i:i + batch_size].to(device)
        chains = augmix_chains(xb, sample_augmix_params(xb.shape[0], generator=g).to(device))
        with bn_route(model, "aug"):
            s = augmax_search(model, xb, yb, chains, steps=steps, generator=g)
        out.append(s.images(xb, chains))
    return torch.cat(out)


def placement_table(
    models: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor, *,
    layers: Sequence[str] | None = None, steps: int = 10, seed: int = 0,
) -> pd.DataFrame:
    """Per model and placement layer: running variances and instance heterogeneity ratios.

    Args:
        models: e.g. ``{"dubn": augmax_dubn_model, "dubin": augmax_dubin_model}``.
        x, y: test images (uint8 or float in [0, 1]) and labels for the heterogeneity measure.
        layers: layer names; default `placement_layers` of ``models``.
        steps: AugMax search steps for the auxiliary-route images.

    Returns:
        One row per (model, layer): ``model, layer, kind, clean_var, aux_var`` (mean running
        variance of the main / auxiliary BN; for DuBIN, of its BN half), ``het_clean`` and
        ``het_augmax`` (instance heterogeneity / batch variance of the layer's input).
    """
    layers = list(layers) if layers is not None else placement_layers(models)
    if not layers:
        raise ValueError("no placement layers: none of the models has a DuBIN layer; "
                         "pass layers=[...]")
    rows = []
    for key, model in models.items():
        running = bn_running_variance(model).set_index("layer")
        missing = [name for name in layers if name not in running.index]
        if missing:
            raise ValueError(f"model {key!r} has no normalization layer {missing[0]!r}; "
                             f"choose from: {', '.join(running.index)}")
        x_aug = augmax_images(model, x, y, steps=steps, seed=seed)
        with bn_route(model, "clean"):
            clean = batch_statistics(model, {"clean": x}, layers=layers).set_index("layer")
        with bn_route(model, "aug"):
            aug = batch_statistics(model, {"augmax": x_aug}, layers=layers).set_index("layer")
        for name in layers:
            rows.append({
                "model": key, "layer": name, "kind": running.loc[name, "kind"],
                "clean_var": running.loc[name, "clean_var"],
                "aux_var": running.loc[name, "aux_var"],
                "het_clean": clean.loc[name, "instance_heterogeneity"]
                / clean.loc[name, "batch_var"],
                "het_augmax": aug.loc[name, "instance_heterogeneity"]
                / aug.loc[name, "batch_var"],
            })
    return pd.DataFrame(rows)
