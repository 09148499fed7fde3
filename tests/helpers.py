"""Small helpers shared by test modules (pytest puts ``tests/`` on ``sys.path``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
