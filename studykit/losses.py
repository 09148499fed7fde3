"""Losses shared by several methods.

``jsd_consistency`` is AugMix's Jensen-Shannon consistency term (Hendrycks et al., ICLR 2020),
used as is by AugMax and RobustAugMix:

    p_i = softmax(logits_i),  M = clamp(mean_i p_i, 1e-7, 1),
    JSD = mean_i KL(p_i || M),  KL(p || M) = sum_c p_c (log p_c - log M_c), averaged over the batch

which is what ``F.kl_div(log M, p_i, reduction="batchmean")`` computes, averaged over the views.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def jsd_consistency(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Jensen-Shannon consistency between the predictions of several views of a batch.

    Args:
        logits: one (N, K) tensor per view (clean first by convention; the order does not
            matter).

    Returns:
        A scalar: the mean over views of KL(p_i || M), per-sample summed and batch-averaged.
    """
    if len(logits) < 2:
        raise ValueError(f"jsd_consistency needs at least 2 views, got {len(logits)}")
    probs = [F.softmax(z.float(), dim=1) for z in logits]
    log_m = torch.clamp(torch.stack(probs).mean(0), 1e-7, 1).log()
    return sum(F.kl_div(log_m, p, reduction="batchmean") for p in probs) / len(probs)
