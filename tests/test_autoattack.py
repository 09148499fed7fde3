"""The AutoAttack wrapper against an exactly solvable case: a linear classifier under Linf.

For logits W x + b the worst perturbation against class j inside the Linf ball and the [0, 1]
box is separable per pixel, so whether an image can be flipped is known exactly; AutoAttack's
accuracy must equal that robust accuracy, and be at most what PGD-10 leaves.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from studykit import evaluation

pytest.importorskip("pyautoattack")


def _exact_linf_robust(model: nn.Linear, x: torch.Tensor, y: torch.Tensor,
                       eps: float) -> torch.Tensor:
    """Per image: True when no delta with |delta|_inf <= eps and x + delta in [0, 1] changes
    the prediction away from y (ties count as flipped)."""
    xf = x.flatten(1)
    lo = torch.clamp(-xf, min=-eps)  # lowest allowed delta per pixel
    hi = torch.clamp(1 - xf, max=eps)
    logits = model(xf)
    w = model.weight
    robust = logits.argmax(1) == y
    for j in range(w.shape[0]):
        d = w[j] - w[y]  # (N, D): gain of class j over the label per unit of delta
        gain = torch.maximum(d * lo, d * hi).sum(1)
        margin = logits.gather(1, y[:, None])[:, 0] - logits[:, j] - gain
        robust &= (j == y) | (margin > 0)
    return robust


def test_autoattack_finds_every_flippable_image_of_a_linear_model():
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(3 * 8 * 8, 10)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(10, 3 * 8 * 8, generator=g) * 0.05)
        lin.bias.zero_()
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = torch.rand(48, 3, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)  # every image clean-correct
        # eps at the median of the exact flip radii: about half the images are robust
        radii = torch.linspace(0, 0.2, 81)
        acc = torch.stack([_exact_linf_robust(lin, x, y, float(e)).float().mean() for e in radii])
    eps = float(radii[(acc <= 0.5).nonzero()[0, 0]])
    with torch.no_grad():
        exact = 100.0 * float(_exact_linf_robust(lin, x, y, eps).float().mean())
    assert 20.0 < exact < 80.0
    aa = evaluation.autoattack_accuracy(model, x, y, eps=eps, version="custom",
                                        attacks=["apgd-ce", "apgd-t"], batch_size=48)
    assert aa == pytest.approx(exact, abs=100.0 / 48 + 1e-6)  # at most one image apart
    pgd = evaluation.adversarial_curve(model, x, y, norm="linf", eps_list=[eps],
                                       steps=10, seed=0, progress=False)["accuracy"].iloc[0]
    assert aa <= pgd + 1e-6
    assert model.training is False


def test_autoattack_rejects_a_bad_norm_and_attacks_without_custom():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    x, y = torch.rand(4, 3, 2, 2), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="'Linf2'"):
        evaluation.autoattack_accuracy(model, x, y, eps=0.1, norm="Linf2")
    with pytest.raises(ValueError, match="version='custom'"):
        evaluation.autoattack_accuracy(model, x, y, eps=0.1, attacks=["apgd-ce"])
