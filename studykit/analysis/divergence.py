"""Feature divergence between two image sets, per stage: AdvBN (Shu et al. 2021) Eq. 4-5, after
Pan et al. (2018, IBN-Net).

Each channel of a stage's output on dataset A is modelled as a Gaussian with the channel's
mean and variance over all images and positions; the divergence of A and B is the symmetric KL
divergence of the two Gaussians, averaged over the channels (AdvBN Fig. 5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
import torch.nn as nn

from studykit.analysis.batches import _batches, _eval_mode
from studykit.analysis.bn_stats import _MomentAccumulator
from studykit.devices import model_device
from studykit.models import unwrap_model


# --------------------------------------------------------------------------------------------
# Feature divergence (AdvBN Eq. 4-5)
# --------------------------------------------------------------------------------------------
def symmetric_kl_gaussian(
    mu1: torch.Tensor | float,
    var1: torch.Tensor | float,
    mu2: torch.Tensor | float,
    var2: torch.Tensor | float,
    *,
    eps: float = 0.0,
) -> torch.Tensor:
    """Symmetric KL divergence KL(P||Q) + KL(Q||P) of univariate Gaussians, elementwise.

    With P = N(mu1, var1) and Q = N(mu2, var2) (AdvBN Eq. 5 summed both ways, Eq. 4), the log
    terms cancel::

        KL(P||Q) + KL(Q||P) = (var1 + d^2) / (2 var2) + (var2 + d^2) / (2 var1) - 1,  d = mu1 - mu2

    Args:
        mu1: mean of P.
        var1: variance of P (not the standard deviation).
        mu2: mean of Q.
        var2: variance of Q.
        eps: added to both variances, so that constant channels (e.g. dead ReLUs: variance 0
            in both) give 0 instead of NaN.

    Returns:
        The divergences, broadcast over the inputs, in float64 for Python numbers (else the
        inputs' promoted dtype).
    """
    tensors = [
        t if isinstance(t, torch.Tensor) else torch.as_tensor(t, dtype=torch.float64)
        for t in (mu1, var1, mu2, var2)
    ]
    m1, v1, m2, v2 = tensors
    v1, v2 = v1 + eps, v2 + eps
    d2 = (m1 - m2).square()
    return (v1 + d2) / (2 * v2) + (v2 + d2) / (2 * v1) - 1


def _stage_moments(
    model: nn.Module, x: torch.Tensor, stages: Sequence[str], batch_size: int, device: torch.device
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    accumulators = {stage: _MomentAccumulator() for stage in stages}
    for xb in _batches(x, batch_size, device):
        for stage in stages:
            accumulators[stage].add(model.forward_until(xb, stage))
    return {stage: acc.mean_var() for stage, acc in accumulators.items()}


def feature_divergence(
    model: nn.Module,
    x_a: torch.Tensor,
    x_b: torch.Tensor,
    *,
    stages: Sequence[str] | None = None,
    batch_size: int = 500,
    eps: float = 1e-5,
) -> pd.DataFrame:
    """Feature divergence between two image sets at each stage (AdvBN Eq. 4-5, Fig. 5).

    At the output of each stage (``model.forward_until``), each channel's features over
    (N, H, W) are modeled by a Gaussian per dataset, with the population mean and variance;
    the divergence is the symmetric KL of the two Gaussians (`symmetric_kl_gaussian`) averaged
    over channels. The model runs in eval mode without gradients; its flags are restored.

    Args:
        model: a model with ``stages`` and ``forward_until`` (from `create_model`; wrappers
            are unwrapped).
        x_a: images of dataset A, uint8 or float in [0, 1].
        x_b: images of dataset B (any number of images of the same size).
        stages: stage names (default: all of ``model.stages``).
        batch_size: images per forward pass.
        eps: added to the variances (see `symmetric_kl_gaussian`).

    Returns:
        One row per stage, in the given order, with columns ``stage``, ``depth`` (1-based
        index in ``model.stages``), ``channels`` and ``divergence``.

    Raises:
        ValueError: for an unknown stage or a model without stages.

    Shape:
        - x_a: (N_a, C, H, W)
        - x_b: (N_b, C, H, W)
    """
    inner = unwrap_model(model)
    all_stages = tuple(getattr(inner, "stages", ()))
    if not all_stages or not callable(getattr(inner, "forward_until", None)):
        raise ValueError(f"{type(inner).__name__} has no stages/forward_until to split at")
    stages = all_stages if stages is None else tuple(stages)
    for stage in stages:
        if stage not in all_stages:
            raise ValueError(f"unknown stage {stage!r}; choose one of: {', '.join(all_stages)}")
    device = model_device(inner)
    with _eval_mode(inner):
        moments_a = _stage_moments(inner, x_a, stages, batch_size, device)
        moments_b = _stage_moments(inner, x_b, stages, batch_size, device)
    rows = []
    for stage in stages:
        (mu_a, var_a), (mu_b, var_b) = moments_a[stage], moments_b[stage]
        kl = symmetric_kl_gaussian(mu_a, var_a, mu_b, var_b, eps=eps)
        rows.append({"stage": stage, "depth": all_stages.index(stage) + 1,
                     "channels": int(mu_a.numel()), "divergence": float(kl.mean())})
    return pd.DataFrame(rows, columns=["stage", "depth", "channels", "divergence"])




def feature_divergences(
    models: Mapping[str, nn.Module],
    x: torch.Tensor,
    others: Mapping[str, torch.Tensor],
    **kwargs: Any,
) -> pd.DataFrame:
    """``feature_divergence`` between ``x`` and each image set of ``others``, for every model.

    Args:
        models: label -> model.
        x: the reference images (e.g. clean test images).
        others: pair name -> images compared with ``x`` (e.g. ``"clean vs contrast"``).
        **kwargs: passed to ``feature_divergence`` (``stages``, ``batch_size``, ``eps``).

    Returns:
        ``feature_divergence``'s rows for each pair (in order) and model (in order), with the
        columns ``pair`` and ``model`` added.
    """
    rows = [feature_divergence(model, x, x_other, **kwargs).assign(pair=pair, model=label)
            for pair, x_other in others.items() for label, model in models.items()]
    return pd.concat(rows, ignore_index=True)
