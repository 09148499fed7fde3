"""studykit.evaluation: accuracy on clean and corrupted test sets, the corruption summaries
(RA, mCE, CE), the spatial worst-of-k accuracy and the AutoAttack wrapper.

The AutoAttack wrapper is checked against an exactly solvable case: a linear classifier under
Linf. For logits W x + b the worst perturbation against class j inside the Linf ball and the
[0, 1] box is separable per pixel, so whether an image can be flipped is known exactly;
AutoAttack's accuracy must equal that robust accuracy, and be at most what PGD-10 leaves.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers import toy_batch
from torch import nn

from studykit import attacks, evaluation
from studykit.corruptions import BENCHMARK_CORRUPTIONS
from studykit.data import ImageDataset, load_corrupted
from studykit.models import create_model


@pytest.fixture
def autoattack():
    return pytest.importorskip("pyautoattack")


class Quadrant(nn.Module):
    """Predicts the class of `toy_batch` from the brightest quadrant: exact on clean toy images."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        q = [x[..., r * h:(r + 1) * h, c * w:(c + 1) * w].mean((1, 2, 3))
             for r in (0, 1) for c in (0, 1)]
        return torch.stack(q, 1) * 10


def _toy_dataset(n: int = 12, size: int = 16) -> ImageDataset:
    x, y = toy_batch(n, size=size, seed=0)
    u8 = (x * 255).round().to(torch.uint8)
    return ImageDataset("toy", u8.clone(), y.clone(), u8, y, ("a", "b", "c", "d"))


# --------------------------------------------------------------------------------------------
# Clean and corrupted accuracy
# --------------------------------------------------------------------------------------------
def test_accuracy_is_exact_for_any_batch_size_and_dtype_and_restores_the_mode():
    x, y = toy_batch(10, size=16)
    model = Quadrant().train()
    assert evaluation.accuracy(model, x, y) == 100.0
    y_wrong = y.clone()
    y_wrong[:3] = (y_wrong[:3] + 1) % 4
    for bs in (1, 3, 256):
        assert evaluation.accuracy(model, x, y_wrong, batch_size=bs) == pytest.approx(70.0)
    u8 = (x * 255).round().to(torch.uint8)
    assert evaluation.accuracy(model, u8, y_wrong) == pytest.approx(70.0)
    assert model.training  # evaluated in eval mode, its mode given back
    assert evaluation.accuracy(model, x[:0], y[:0]) == 0.0


def test_clean_accuracy_uses_the_test_split():
    ds = _toy_dataset()
    ds.y_train[:] = (ds.y_train + 1) % 4  # a wrong training split must not matter
    assert evaluation.clean_accuracy(Quadrant(), ds) == 100.0


def test_corruption_table_has_one_row_per_pair_with_the_corrupted_sets_accuracy(tmp_path):
    ds, model = _toy_dataset(), Quadrant()
    table = evaluation.corruption_table(model, ds, corruptions=["gaussian_noise", "fog"],
                                        severities=(1, 5), root=tmp_path, progress=False)
    assert list(table.columns) == ["corruption", "severity", "accuracy", "source"]
    assert list(zip(table["corruption"], table["severity"])) == [
        ("gaussian_noise", 1), ("gaussian_noise", 5), ("fog", 1), ("fog", 5)]
    assert set(table["source"]) == {"generated"}
    for row in table.itertuples():
        cs = load_corrupted(ds, row.corruption, row.severity, root=tmp_path)
        assert row.accuracy == pytest.approx(evaluation.accuracy(model, cs.x, cs.y))
    # The strongest noise costs the quadrant rule accuracy; the weakest costs less or none.
    noise = table[table["corruption"] == "gaussian_noise"].set_index("severity")["accuracy"]
    assert noise[5] <= noise[1]


# --------------------------------------------------------------------------------------------
# RA, mCE, CE
# --------------------------------------------------------------------------------------------
def _table(acc_of: dict[str, float], extra: dict[str, float] | None = None) -> pd.DataFrame:
    """A corruption table whose accuracy at severity s is acc_of[name] - s (so the mean over
    severities 1-5 is acc_of[name] - 3)."""
    rows = [{"corruption": n, "severity": s, "accuracy": a - s, "source": "generated"}
            for n, a in {**acc_of, **(extra or {})}.items() for s in range(1, 6)]
    return pd.DataFrame(rows)


def test_robust_accuracy_and_mce_average_the_benchmark_corruptions_only():
    acc = {n: 60.0 + i for i, n in enumerate(BENCHMARK_CORRUPTIONS)}
    table = _table(acc, extra={"speckle_noise": 0.0})  # an extra corruption is left out
    expected = sum(a - 3 for a in acc.values()) / len(acc)
    assert evaluation.robust_accuracy(table) == pytest.approx(expected)
    assert evaluation.mean_corruption_error(table) == pytest.approx(100 - expected)
    two = ["fog", "snow"]
    assert evaluation.robust_accuracy(table, two) == pytest.approx(
        sum(acc[n] - 3 for n in two) / 2)
    with pytest.raises(ValueError, match="lacks corruption"):
        evaluation.robust_accuracy(table[table["corruption"] != "fog"])


def test_corruption_errors_are_error_ratios_to_the_baseline():
    names = ["fog", "snow"]
    model = _table({"fog": 90.0, "snow": 70.0})  # errors summed over severities: 65, 165
    base = _table({"fog": 80.0, "snow": 80.0})  # 115 each
    ce = evaluation.corruption_errors(model, base, names)
    assert list(ce.index) == names
    assert ce["fog"] == pytest.approx(100 * 65 / 115)
    assert ce["snow"] == pytest.approx(100 * 165 / 115)
    assert evaluation.normalized_mce(model, base, names) == pytest.approx(ce.mean())
    assert evaluation.normalized_mce(base, base, names) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="no error"):
        evaluation.corruption_errors(model, _table({"fog": 105.0, "snow": 80.0}), names)


def test_accuracy_by_severity_pivots_in_list_order_with_a_mean_row():
    piv = evaluation.accuracy_by_severity(_table({"fog": 90.0, "snow": 70.0}))
    assert list(piv.index) == ["snow", "fog", "mean"]  # CIFAR-C's order, not the table's
    assert list(piv.columns) == [1, 2, 3, 4, 5]
    assert piv.loc["fog", 2] == 88.0 and piv.loc["mean", 1] == pytest.approx(79.0)


# --------------------------------------------------------------------------------------------
# Spatial worst-of-k
# --------------------------------------------------------------------------------------------
def test_spatial_loss_is_the_max_over_its_k_transforms():
    torch.manual_seed(0)
    model = create_model("small_cnn", 4, width=8).eval()
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8) % 4
    worst = attacks.spatial_worst_of_k(model, x, y, k=5, generator=torch.Generator().manual_seed(1))
    angles, shifts = attacks.sample_spatial_params(8, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        losses = torch.stack([F.cross_entropy(model(attacks.affine_transform(x, angles[t],
                                                                               shifts[t])),
                                              y, reduction="none") for t in range(5)])
        got = F.cross_entropy(model(worst), y, reduction="none")
    assert torch.allclose(got, losses.max(0).values, atol=1e-5)
    acc = evaluation.spatial_accuracy(model, x, y, k=5, seed=1)
    assert acc == pytest.approx(100 * float((model(worst).argmax(1) == y).float().mean()))
    assert math.isfinite(acc)


# --------------------------------------------------------------------------------------------
# AutoAttack
# --------------------------------------------------------------------------------------------
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


def test_autoattack_finds_every_flippable_image_of_a_linear_model(autoattack):
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


def test_autoattack_rejects_a_bad_norm_and_attacks_without_custom(autoattack):
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    x, y = torch.rand(4, 3, 2, 2), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="'Linf2'"):
        evaluation.autoattack_accuracy(model, x, y, eps=0.1, norm="Linf2")
    with pytest.raises(ValueError, match="version='custom'"):
        evaluation.autoattack_accuracy(model, x, y, eps=0.1, attacks=["apgd-ce"])


def test_spatial_accuracy_leaves_a_train_mode_model_and_its_bn_buffers_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))
    with torch.no_grad():  # running statistics away from their defaults, so a BN update shows
        model(torch.rand(16, 3, 16, 16) * 3)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = toy_batch(12, size=16, seed=1)
    acc = evaluation.spatial_accuracy(model, x, y, k=3, seed=0)
    assert model.training and all(m.training for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    model.eval()
    assert acc == evaluation.spatial_accuracy(model, x, y, k=3, seed=0)  # scored in eval mode


def test_autoattack_takes_a_non_contiguous_batch(autoattack):
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(3 * 8 * 8, 10)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(10, 3 * 8 * 8, generator=g) * 0.05)
    model = nn.Sequential(nn.Flatten(), lin).eval()
    # channels-last, as the evaluation's own batches are: apgd-t's .view() fails on it
    x = torch.rand(16, 3, 8, 8, generator=g).contiguous(memory_format=torch.channels_last)
    assert not x.is_contiguous()
    with torch.no_grad():
        y = model(x.contiguous()).argmax(1)
    kwargs = dict(eps=0.05, version="custom", attacks=["apgd-t"], batch_size=16)
    got = evaluation.autoattack_accuracy(model, x, y, **kwargs)
    assert got == evaluation.autoattack_accuracy(model, x.contiguous(), y, **kwargs)
