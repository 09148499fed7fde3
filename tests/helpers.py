"""Small helpers shared by test modules (pytest puts ``tests/`` on ``sys.path``)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from studykit.paths import real_data_npz

REPO = Path(__file__).resolve().parents[1]
# The real-data file, found as notebook 00 finds it: $STUDYKIT_SHARED_NPZ, else the shared folder
# next to the checkout (studykit.paths.real_data_npz).
SHARED_DATA = real_data_npz()


def toy_batch(n: int = 32, *, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The tests' toy images: ``n`` seeded RGB images in [0, 1] of ``size`` x ``size`` and their
    labels, 4 classes (``y = arange(n) % 4``). Each image is dim noise (0-0.4) with a bright
    square (+0.6) in the quadrant of its class, so a small CNN learns the problem in a few dozen
    full-batch steps (`fit_batch`) and an attack has a margin to reduce; tests that only need
    some images take ``toy_batch(n)[0]``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 0.4
    y = torch.arange(n) % 4
    half, lo, hi = size // 2, size // 8, 3 * size // 8
    for i in range(n):
        r, c = divmod(int(y[i]), 2)
        x[i, :, half * r + lo : half * r + hi, half * c + lo : half * c + hi] += 0.6
    return x, y


def fit_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int,
              lr: float = 0.05) -> nn.Module:
    """``steps`` full-batch SGD steps (momentum 0.9) of cross-entropy on one batch; returns
    the model in eval mode, so tests can attack a model that classifies the batch well."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
