"""Feature divergence between two datasets, per layer (AdvBN, Shu et al. 2021, Sec. 5.3, Eq. 4-5,
after Pan et al. 2018, IBN-Net).

Each channel i of a layer's features on dataset A is modelled as a normal distribution with the
channel's mean and standard deviation over all images and positions; the divergence of A and B
is the symmetric KL divergence averaged over the C channels:

    D(F_A || F_B) = 1/C sum_i [ KL(F_A^i || F_B^i) + KL(F_B^i || F_A^i) ]
    KL(F_A^i || F_B^i) = log(s_B / s_A) + (s_A^2 + (mu_A - mu_B)^2) / (2 s_B^2) - 1/2

The layers are the outputs of the model's stages (``model.stages``), which for a fine-tuned AdvBN
model are the layers before and after its cut.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

_VAR_FLOOR = 1e-8  # a dead channel (constant 0 after a ReLU) would divide by zero


@torch.no_grad()
def layer_statistics(model: nn.Module, x: torch.Tensor, *, stages: Sequence[str] | None = None,
                     batch_size: int = 500) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel mean and standard deviation of each stage's output over a set of images.

    Accumulated in float64 over batches (eval mode, modes restored).

    Args:
        model: a `studykit.models.ImageClassifier` (route dual BNs before calling).
        x: images, uint8 or float in [0, 1].
        stages: stage names (default: all of ``model.stages``).
        batch_size: images per forward.

    Returns:
        ``{stage: (mean, std)}``, each a float64 tensor (C,).

    Shape:
        - x: (N, 3, H, W)
    """
    stages = list(stages or model.stages)
    device = next(model.parameters()).device
    sums: dict[str, list[torch.Tensor]] = {}
    count: dict[str, int] = {}
    was = model.training
    model.eval()
    try:
        for i in range(0, x.shape[0], batch_size):
            h = x[i:i + batch_size].to(device)
            h = model.normalize(h.float() / 255 if h.dtype == torch.uint8 else h.float())
            for name in model.stages[: model.stages.index(stages[-1]) + 1]:
                h = getattr(model, name)(h)
                if name in stages:
                    f = h.double().transpose(0, 1).flatten(1)  # (C, N * H * W)
                    s = sums.setdefault(name, [torch.zeros(f.shape[0], dtype=torch.float64,
                                                           device=device) for _ in range(2)])
                    s[0] += f.sum(1)
                    s[1] += (f * f).sum(1)
                    count[name] = count.get(name, 0) + f.shape[1]
    finally:
        model.train(was)
    out = {}
    for name in stages:
        s, n = sums[name], count[name]
        mean = s[0] / n
        var = (s[1] / n - mean * mean).clamp_min(0)
        out[name] = (mean.cpu(), var.sqrt().cpu())
    return out


def symmetric_kl(mean_a: torch.Tensor, std_a: torch.Tensor, mean_b: torch.Tensor,
                 std_b: torch.Tensor) -> float:
    """Eq. 4-5: symmetric KL of per-channel normals, averaged over channels.

    Shape:
        - every input: (C,)
    """
    va = std_a.double().pow(2).clamp_min(_VAR_FLOOR)
    vb = std_b.double().pow(2).clamp_min(_VAR_FLOOR)
    d2 = (mean_a.double() - mean_b.double()).pow(2)
    kl_ab = 0.5 * torch.log(vb / va) + (va + d2) / (2 * vb) - 0.5
    kl_ba = 0.5 * torch.log(va / vb) + (vb + d2) / (2 * va) - 0.5
    return float((kl_ab + kl_ba).mean())


def feature_divergence(model: nn.Module, x_a: torch.Tensor, x_b: torch.Tensor, *,
                       stages: Sequence[str] | None = None, batch_size: int = 500
                       ) -> pd.DataFrame:
    """Divergence of the features of ``x_a`` and ``x_b`` at each stage of ``model``.

    Returns:
        Columns ``layer``, ``depth`` (1-based stage index), ``divergence``.

    Shape:
        - x_a: (N, 3, H, W); x_b: (M, 3, H, W)
    """
    a = layer_statistics(model, x_a, stages=stages, batch_size=batch_size)
    b = layer_statistics(model, x_b, stages=stages, batch_size=batch_size)
    rows = [{"layer": name, "depth": model.stages.index(name) + 1,
             "divergence": symmetric_kl(*a[name], *b[name])} for name in a]
    return pd.DataFrame(rows)
