"""Normalization statistics: the running variance of every BatchNorm, with the clean (main) and
auxiliary BN of a dual layer side by side (AugMax Table 1), and `batch_statistics`, the same
quantities measured model-agnostically on given batches (the variance each normalization layer
sees in a batch, and how much the instance statistics differ within it).
"""

from __future__ import annotations

import fnmatch
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
import torch
import torch.nn as nn

from studykit.analysis.batches import _batches, _eval_mode
from studykit.devices import model_device
from studykit.models import unwrap_model
from studykit.normalization import IBN, DualBN, DuBIN

log = logging.getLogger(__name__)

# Leaf modules that normalize their input with statistics (BN, IN, GN, LN).
_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
)


# --------------------------------------------------------------------------------------------
# Normalization statistics
# --------------------------------------------------------------------------------------------
def _is_norm_module(module: nn.Module) -> bool:
    """A norm leaf (BN/IN/GN/LN), or a container whose every leaf is one (DualBN, DuBIN, IBN)."""
    if isinstance(module, _NORM_TYPES):
        return True
    leaves = [m for m in module.modules() if next(m.children(), None) is None]
    return (
        bool(leaves) and module is not leaves[0] and all(isinstance(m, _NORM_TYPES) for m in leaves)
    )


def normalization_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The outermost normalization layers of a model, by qualified name, in module order.

    A normalization layer is a BatchNorm/InstanceNorm/GroupNorm/LayerNorm, or a container made
    only of them (a dual BN, DuBIN, IBN); for a container, the container is listed, not its
    parts.

    Args:
        model: any module (wrappers are unwrapped).

    Returns:
        ``{name: module}``.
    """
    inner = unwrap_model(model)
    layers: dict[str, nn.Module] = {}
    for name, module in inner.named_modules():
        if any(name.startswith(outer + ".") for outer in layers):
            continue
        if _is_norm_module(module):
            layers[name] = module
    return layers


def _mean_running_var(bn: nn.Module) -> float:
    var = getattr(bn, "running_var", None)
    return math.nan if var is None else float(var.detach().float().mean())


def bn_running_variance(model: nn.Module) -> pd.DataFrame:
    """Mean running variance of the main and auxiliary BN of every normalization layer.

    One row per layer with running statistics: plain batch norms (kind ``"bn"``), `DualBN`
    (``"dubn"``), `DuBIN` (``"dubin"``: the statistics of its dual BN half) and `IBN`
    (``"ibn"``: its BN half). Batch norms without running statistics are left out. For
    kinds with a single BN its statistics are the clean column and ``aux_var`` is NaN.
    AugMax Table 1 reports ``clean_var`` (sigma_c^2) and ``aux_var`` (sigma_a^2).

    Args:
        model: any module (wrappers are unwrapped).

    Returns:
        A DataFrame with columns ``layer`` (module name), ``kind``, ``num_features``
        (channels with batch statistics), ``clean_var`` and ``aux_var``, in module order.
    """
    rows: list[dict] = []
    inside: list[str] = []
    for name, module in unwrap_model(model).named_modules():
        if any(name.startswith(prefix + ".") for prefix in inside):
            continue
        if isinstance(module, (DualBN, DuBIN, IBN)):
            inside.append(name)
        if isinstance(module, DuBIN):
            kind, clean, aux = "dubin", module.BN.bn_clean, module.BN.bn_aug
        elif isinstance(module, DualBN):
            kind, clean, aux = "dubn", module.bn_clean, module.bn_aug
        elif isinstance(module, IBN):
            kind, clean, aux = "ibn", module.BN, None
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            kind, clean, aux = "bn", module, None
        else:
            continue
        if getattr(clean, "running_var", None) is None:
            continue
        rows.append(
            {
                "layer": name,
                "kind": kind,
                "num_features": clean.num_features,
                "clean_var": _mean_running_var(clean),
                "aux_var": math.nan if aux is None else _mean_running_var(aux),
            }
        )
    columns = ["layer", "kind", "num_features", "clean_var", "aux_var"]
    return pd.DataFrame(rows, columns=columns)


def _select_layers(
    layers: dict[str, nn.Module], patterns: Iterable[str] | str | None
) -> dict[str, nn.Module]:
    if patterns is None:
        return layers
    if isinstance(patterns, str):
        patterns = [patterns]
    selected: dict[str, nn.Module] = {}
    for pattern in patterns:
        matches = [name for name in layers if fnmatch.fnmatchcase(name, pattern)]
        if not matches:
            raise ValueError(
                f"layer {pattern!r} matches no normalization layer; "
                f"choose from: {', '.join(layers)}"
            )
        selected.update((name, layers[name]) for name in matches)
    return {name: module for name, module in layers.items() if name in selected}


class _MomentAccumulator:
    """Per-channel sums over (N, spatial) and the per-sample channel means, in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.sum: torch.Tensor | None = None
        self.sum_sq: torch.Tensor | None = None
        self.sample_means: list[torch.Tensor] = []
        self.sample_vars: list[torch.Tensor] = []

    def add(self, h: torch.Tensor) -> None:
        h = h.detach().double()
        h = h.reshape(h.shape[0], h.shape[1], -1)  # (N, C, L)
        s, s2 = h.sum(dim=(0, 2)), h.square().sum(dim=(0, 2))
        self.sum = s if self.sum is None else self.sum + s
        self.sum_sq = s2 if self.sum_sq is None else self.sum_sq + s2
        self.count += h.shape[0] * h.shape[2]
        self.sample_means.append(h.mean(dim=2).cpu())
        self.sample_vars.append(h.var(dim=2, unbiased=False).cpu())

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.sum / self.count
        var = (self.sum_sq / self.count - mean.square()).clamp_min(0)
        return mean.cpu(), var.cpu()


def batch_statistics(
    model: nn.Module,
    batches: Mapping[str, torch.Tensor],
    *,
    layers: Iterable[str] | str | None = None,
    batch_size: int = 500,
) -> pd.DataFrame:
    """Statistics of the input of every normalization layer, for several named batches.

    A model-agnostic view of AugMax Table 1: how much the inputs of each normalization layer
    vary within a batch of clean, AugMix, AugMax or PGD images, and how much of that is due to
    the instances differing from each other (what instance normalization removes). Forward hooks
    read each layer's input; they are removed afterwards, also on an exception. For a container
    layer (dual BN, DuBIN) the hook sees the container's input, whatever route it takes.

    For the input h of a layer, with channels c, samples n and positions p (H x W) and all
    variances the population (biased) ones:

    - ``batch_var`` = mean_c Var_{n,p}[h_ncp]: the per-channel variance over the batch and the
      positions, as a BatchNorm in train mode would compute it, averaged over channels;
    - ``instance_var`` = mean_c mean_n Var_p[h_ncp]: the variance within each instance (what an
      InstanceNorm would compute), averaged over samples and channels;
    - ``instance_heterogeneity`` = mean_c Var_n[mean_p h_ncp]: the variance across samples of
      the per-sample channel means, averaged over channels: zero when every sample has the same
      channel means.

    By the law of total variance ``batch_var = instance_var + instance_heterogeneity``. A batch
    is one population even when it runs in chunks of ``batch_size``.

    Args:
        model: any module (wrappers are unwrapped); runs in eval mode without gradients, and
            its train/eval flags are restored afterwards.
        batches: named image batches, e.g. ``{"clean": x, "augmax": x_augmax}``, uint8 or float
            in [0, 1].
        layers: names or shell-style patterns (``"layer1.*"``) of normalization layers (as in
            `normalization_layers`); None for all.
        batch_size: images per forward pass.

    Returns:
        A tidy table with one row per (batch, layer), batches in the given order and layers in
        module order; columns ``layer``, ``batch``, ``batch_var``, ``instance_var``,
        ``instance_heterogeneity``.

    Raises:
        ValueError: when the model has no normalization layer or ``layers`` matches none.

    Shape:
        - each batch: (N, C, H, W)
    """
    inner = unwrap_model(model)
    all_layers = normalization_layers(inner)
    if not all_layers:
        raise ValueError(f"{type(inner).__name__} has no normalization layer")
    selected = _select_layers(all_layers, layers)
    device = model_device(inner)
    rows: list[dict[str, Any]] = []
    for batch_name, x in batches.items():
        accumulators = {name: _MomentAccumulator() for name in selected}
        handles = []
        try:
            for name, module in selected.items():

                def hook(_module, inputs, _output, acc=accumulators[name]) -> None:
                    acc.add(inputs[0])

                handles.append(module.register_forward_hook(hook))
            with _eval_mode(inner):
                for xb in _batches(x, batch_size, device):
                    inner(xb)
        finally:
            for handle in handles:
                handle.remove()
        for name, acc in accumulators.items():
            if acc.count == 0:
                log.warning("normalization layer %s was not called on batch %r", name, batch_name)
                rows.append(
                    {
                        "layer": name,
                        "batch": batch_name,
                        "batch_var": math.nan,
                        "instance_var": math.nan,
                        "instance_heterogeneity": math.nan,
                    }
                )
                continue
            _, var = acc.mean_var()
            sample_means = torch.cat(acc.sample_means)  # (N, C)
            rows.append(
                {
                    "layer": name,
                    "batch": batch_name,
                    "batch_var": float(var.mean()),
                    "instance_var": float(torch.cat(acc.sample_vars).mean()),
                    "instance_heterogeneity": float(sample_means.var(dim=0, unbiased=False).mean()),
                }
            )
    columns = ["layer", "batch", "batch_var", "instance_var", "instance_heterogeneity"]
    return pd.DataFrame(rows, columns=columns)


